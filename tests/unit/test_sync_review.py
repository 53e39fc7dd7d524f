"""Review of the fenced sync (issue 22): crashes and stalls the explorer's schedules do not reach.

Same store and fakes as ``test_sync_overlap.py``: ``FakeContainer`` follows Blob Storage's
documented rules, a hook raises ``Crash`` where the worker dies.
"""

from __future__ import annotations

import json
import threading

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ServiceRequestError
from testkit.fake_storage import FakeContainer
from testkit.interleave import Crash, Step, counter
from testkit.sync_fakes import SELECT, Clock, PagedGraph, tenant_pages

from graphusers.errors import StorageError
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


def _three_way(r1_at: Step, r2_at: Step) -> tuple[FakeContainer, dict[str, object]]:
    """R1 runs to ``r1_at`` and stalls; its lease lapses; R2 runs to ``r2_at``; R1 does that one step and runs
    on (until a renewal fails); then R2 runs to its end. Both outcomes (a summary or an exception)."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    r1_paused, r1_go, r1_done = threading.Event(), threading.Event(), threading.Event()
    r2_paused, r2_go = threading.Event(), threading.Event()
    roles: dict[int, str] = {}
    results: dict[str, object] = {}

    def hook(op: str, name: str) -> None:
        role = roles.get(threading.get_ident())
        if role == "R1" and r1_at(op, name):
            r1_paused.set()
            assert r1_go.wait(30)
        if role == "R2" and r2_at(op, name):
            r2_paused.set()
            assert r2_go.wait(30)

    def run(role: str) -> None:
        roles[threading.get_ident()] = role
        try:
            results[role] = _sync(graph, container).run()
        except Exception as exc:  # the outcome is what the test looks at
            results[role] = exc
        if role == "R1":
            r1_done.set()

    container.hook = hook
    one = threading.Thread(target=run, args=("R1",), daemon=True)
    one.start()
    assert r1_paused.wait(30)
    container.lapse()
    two = threading.Thread(target=run, args=("R2",), daemon=True)
    two.start()
    assert r2_paused.wait(30)
    r1_go.set()
    assert r1_done.wait(30)
    r2_go.set()
    two.join(30)
    container.hook = None
    return container, results


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


def test_a_stalled_run_cannot_rewrite_the_checkpoint_of_a_round_another_run_resumed() -> None:
    """Three ways: R1 commits its staging blob and stalls before writing the checkpoint that counts it; its
    lease lapses; R2 takes the lock and resumes the round; R1 wakes and writes that checkpoint (If-Match the
    version it wrote last, which nobody has replaced yet); R2 goes on.

    R2 holds the lock: a write from R1 after R2 took the round over must fail, not make R2 fail (and the
    round start over) on its next checkpoint. The checkpoint is the fencing token, so taking the round
    over has to move it.
    """
    container, results = _three_way(
        counter("write", CHECKPOINT_BLOB, 2),  # page 2's blocks are committed, its checkpoint is not
        counter("stage", "staging/full-", 1),  # R2 resumed the round and stages its first block
    )
    r2 = results["R2"]
    assert getattr(r2, "status", None) == "succeeded", f"R2 (the lock holder) failed: {r2!r}; R1: {results['R1']!r}"
    assert sorted(_ids(container)) == [f"u{n:04d}" for n in range(100)]


def test_a_stalled_run_cannot_write_the_first_checkpoint_over_a_round_another_run_started() -> None:
    """Three ways: R1 commits its first staging blocks and stalls before its first checkpoint (If-None-Match);
    R2 takes the lock, removes R1's staging blob as left by a dead run and starts its own round; R1 wakes and
    creates the checkpoint (nothing forbids it: none exists yet), naming a staging blob that is gone.

    R2 then fails on its own first checkpoint (409), and its round is lost: the lock holder lost to a run
    that had lost the lock.
    """
    container, results = _three_way(
        counter("write", CHECKPOINT_BLOB, 1),
        counter("stage", "staging/full-", 1),
    )
    r2 = results["R2"]
    assert getattr(r2, "status", None) == "succeeded", f"R2 (the lock holder) failed: {r2!r}; R1: {results['R1']!r}"
    assert sorted(_ids(container)) == [f"u{n:04d}" for n in range(100)]


@pytest.mark.parametrize(
    "refusal",
    [
        ResourceModifiedError("The condition specified using HTTP conditional header(s) is not met."),
        ResourceExistsError("The specified blob already exists."),
    ],
    ids=["412", "409"],
)
def test_a_refused_checkpoint_write_is_not_reported_as_a_changed_snapshot_or_an_outage(refusal: Exception) -> None:
    """The round's checkpoint write is refused (another run wrote one: 412 on If-Match, 409 on If-None-Match).
    users.jsonl was never touched and storage answered: the error must say neither "the user snapshot changed"
    nor "Blob Storage is unavailable"."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    container.failures[("write", CHECKPOINT_BLOB)] = refusal
    with pytest.raises(StorageError) as caught:
        _sync(graph, container).run()
    assert "users.jsonl" not in container.blobs
    message = caught.value.message
    assert "snapshot changed" not in message and "unavailable" not in message, message
    assert "another sync run" in message.lower(), message


def test_a_checkpoint_left_by_a_failed_delete_is_not_reported_as_a_round_that_started_over() -> None:
    """A full round commits; deleting its checkpoint fails (a reset), deleting its staging blob works. The next
    run is an ordinary incremental one: it must not say an unfinished round "could not be resumed" and
    "started over"."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    container.failures[("delete", CHECKPOINT_BLOB)] = ServiceRequestError("connection reset")
    assert _sync(graph, container).run().status == "succeeded"
    assert CHECKPOINT_BLOB in container.blobs
    summary = _sync(graph, container).run()
    assert (summary.status, summary.mode) == ("succeeded", "incremental")
    assert "started over" not in summary.message, summary.message
    assert CHECKPOINT_BLOB not in container.blobs


def test_the_fake_store_refuses_block_ids_of_another_length_in_one_blob() -> None:
    """Blob Storage: for one blob, every block id has the same length (Put Block's blockid parameter,
    https://learn.microsoft.com/rest/api/storageservices/put-block). The fake must not be kinder."""
    from azure.core.exceptions import HttpResponseError

    blob = FakeContainer().get_blob_client("staging/full-x.jsonl")
    blob.stage_block("QUFBQQ==", b"a\n")
    with pytest.raises(HttpResponseError) as staged:
        blob.stage_block("QUFBQUFBQQ==", b"b\n")
    assert staged.value.status_code == 400
    blob.commit_block_list([type("B", (), {"id": "QUFBQQ=="})()])
    with pytest.raises(HttpResponseError) as committed:  # the committed blocks count too
        blob.stage_block("QUFBQUFBQQ==", b"b\n")
    assert committed.value.status_code == 400
