"""Defects found in review: a half-failed checkpoint cleanup, a deeply nested queue message, a huge Retry-After."""

from __future__ import annotations

import azure.functions as func
import pytest
from azure.core.exceptions import ServiceRequestError
from testkit.fake_storage import FakeContainer
from testkit.sync_fakes import PagedGraph, make, snapshot, tenant_pages

from graphusers.errors import UnavailableError
from graphusers.storage import CHECKPOINT_BLOB


def test_checkpoint_delete_failure_does_not_stall_later_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed round that fails to delete its checkpoint after committing users.jsonl still succeeds,
    and the next run, finding a checkpoint whose staged lines are gone, drops it instead of failing on it."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    graph.fail_at = 6
    with pytest.raises(UnavailableError):
        make(graph, container).run()  # leaves a checkpoint after page 6
    container.failures[("delete", CHECKPOINT_BLOB)] = ServiceRequestError("connection reset")
    # One transient failure deleting the checkpoint after the commit: the run still succeeds.
    assert make(graph, container).run().status == "succeeded"
    assert ("delete", CHECKPOINT_BLOB) not in container.failures, "the injected failure was not hit"
    summary = make(graph, container).run()
    assert summary.status == "succeeded"
    assert set(snapshot(container)) == {f"u{n:04d}" for n in range(100)}


def test_deeply_nested_queue_message_means_an_incremental_run() -> None:
    """A hand-queued message of nested JSON arrays raises RecursionError (not ValueError) in json.loads:
    the queue trigger fails before syncing, 5 times, and the message goes to the poison queue instead of
    being read as a normal run, as other unreadable bodies are."""
    from function_app import _queued_mode

    msg = func.QueueMessage(id="m1", body=b"[" * 50_000)
    assert _queued_mode(msg) == "incremental"


@pytest.mark.parametrize(("given", "sent"), [(0, 1), (7.2, 7), (300, 300), (10**24, 300)])
def test_retry_after_passed_on_is_between_1_and_300_seconds(given: float, sent: int) -> None:
    """A dependency's huge Retry-After (a 429 asking for years) is capped before it reaches a caller."""
    assert UnavailableError("x", retry_after=given).retry_after == sent
