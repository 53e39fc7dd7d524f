"""Review of the fenced sync (issue 22): crashes and stalls the explorer's schedules do not reach.

Same store and fakes as ``test_sync_overlap.py``: ``FakeContainer`` follows Blob Storage's
documented rules, a hook raises ``Crash`` where the worker dies.
"""

from __future__ import annotations

import json

import pytest
from testkit.fake_storage import FakeContainer
from testkit.interleave import Crash, counter
from testkit.sync_fakes import SELECT, Clock, PagedGraph, tenant_pages

from graphusers.storage import CHECKPOINT_BLOB, SyncStore
from graphusers.sync import UserSync, read_status
from graphusers.sync.requests import SyncRequest, record


def _sync(graph: PagedGraph, container: FakeContainer) -> UserSync:
    # A checkpoint after every page, a few lines a block.
    return UserSync(
        graph,  # type: ignore[arg-type]
        SyncStore(container, block_size=64),
        SELECT,
        wall=Clock(),
        clock=Clock(0.0),
        seen_filter_bits=1 << 16,
        tenant="t1",
        checkpoint_interval=0.0,
    )


def _ids(container: FakeContainer) -> list[str]:
    return [json.loads(line)["id"] for line in container.text("users.jsonl").splitlines()]


def test_a_round_that_committed_is_not_resumed_when_the_worker_died_before_its_checkpoint_went() -> None:
    """The worker dies after state.json recorded a full round and before that round's checkpoint was deleted.

    The round is done: the next run must not take the leftover checkpoint for an unfinished round
    (re-fetching its last pages and rewriting the snapshot as a "resumed" full round), and the
    status must not show it as unfinished once a run has been.
    """
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    kill = counter("delete", "staging/commit-", 1)  # the first tidying after state.json was written

    def hook(op: str, name: str) -> None:
        if kill(op, name):
            raise Crash()

    container.hook = hook
    with pytest.raises(Crash):
        _sync(graph, container).run()
    container.hook = None
    container.lapse()
    assert CHECKPOINT_BLOB in container.blobs  # the crash left it, with its staging blob
    graph.fetched.clear()
    summary = _sync(graph, container).run()
    assert summary.status == "succeeded"
    assert summary.resumed is None, f"a finished round was resumed: {summary.resumed}"
    assert summary.mode == "incremental" and len(graph.fetched) == 1, graph.fetched
    assert sorted(_ids(container)) == [f"u{n:04d}" for n in range(100)]
    status = read_status(SyncStore(container))
    assert status is not None and "unfinishedRound" not in status
    assert not [n for n in container.blobs if n.startswith("staging/")]


def test_a_pending_full_resync_shows_however_many_requests_wait_before_it() -> None:
    """A long run holds the lock while callers POST /api/sync: eleven incremental requests wait, then a full
    one. The status must still say a resync is pending (it lists only the ten oldest unfinished ones)."""
    container = FakeContainer()
    store = SyncStore(container)
    for n in range(11):
        record(store, SyncRequest(f"inc-{n:02d}", "incremental", f"2026-12-04T03:{n:02d}:00Z"))
    record(store, SyncRequest("full-1", "full", "2026-12-04T03:30:00Z"))
    status = read_status(store)
    assert status is not None
    assert status["pendingResync"] is True, "the status says no resync is pending while one is"
    assert "full-1" in [r["requestId"] for r in status["requests"]]
