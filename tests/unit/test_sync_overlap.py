"""Two sync runs that overlap: the interleaving explorer, and one test for each defect the sync-fencing issue lists.

The store is ``FakeContainer``, which follows Blob Storage's documented rules (ETags and
conditions, Put Block List "Latest", uncommitted blocks discarded on commit, leases that
expire, lost responses whose retry gets 412). A run "stalls past its lease" by being paused
at a storage step while the test lets the lease lapse and runs another one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from testkit import interleave
from testkit.fake_storage import FakeContainer
from testkit.interleave import Crash, Explorer, counter, overlap, scenarios
from testkit.sync_fakes import SELECT, Clock, PagedGraph, make, removed, tenant_pages, user

from graphusers.storage import CHECKPOINT_BLOB, STATE_BLOB, SyncStore
from graphusers.sync import UserSync, read_status

# -- the explorer ----------------------------------------------------------------------------------------------


@pytest.mark.exhaustive
@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.name)
def test_explorer_every_step_of_a_run_against_a_second_run(scenario: interleave.Scenario) -> None:
    """For every storage step of R1: pause it there, lapse its lease, run R2 to the end or kill it before
    each of its writes, resume R1, run once more: the snapshot, the change log and every status hold."""
    explorer = Explorer(scenario)
    ops, writes = explorer.ops_of_a_clean_run()
    failures: list[str] = []
    overlapped = 0
    count = 0
    for pause in range(1, ops + 1):
        for crash in [None, *range(1, writes + 2)]:
            outcome = explorer.schedule(pause, crash)
            count += 1
            overlapped += "R2" in outcome.tags.values() or outcome.errors.get("R2") == "Crash"
            failures += [f"pause={pause} crash={crash}: {v}" for v in outcome.violations]
    print(f"{scenario.name}: {count} schedules ({ops} steps of R1 x {writes + 2} endings of R2)")
    assert not failures, "\n".join(failures[:20])
    assert overlapped == count, "some schedules never ran R2 while R1 was paused"
    assert count >= 200, "the scenario no longer has the steps the docs count (docs/operations.md, Robustness)"


@pytest.mark.exhaustive
@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.name)
def test_explorer_a_lost_response_at_every_conditional_write(scenario: interleave.Scenario) -> None:
    """A write that landed but whose response was lost (the SDK's retry gets 412) is told apart by its metadata."""
    explorer = Explorer(scenario)
    _, writes = explorer.ops_of_a_clean_run()
    failures: list[str] = []
    for lose in range(1, writes + 1):
        outcome = explorer.schedule(pause=10**6, crash=None, lose=lose)
        failures += [f"lose={lose}: {v}" for v in outcome.violations]
        r1 = [s for rid, s in outcome.summaries.items() if outcome.tags[rid] == "R1"]
        if r1 and r1[0]["status"] != "succeeded":
            failures.append(f"lose={lose}: R1 {r1[0]['status']}: {r1[0]['message']}")
    assert writes >= 7
    assert not failures, "\n".join(failures[:20])


@pytest.mark.exhaustive
def test_explorer_finds_runs_that_share_block_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """The explorer has teeth: with the round's id as every run's block prefix (as before fencing) it finds
    snapshots with users missing or doubled."""
    real = SyncStore.writer

    def shared(self: SyncStore, name: str, run_id: str, **kwargs: Any) -> Any:
        prefix = name.removeprefix("staging/full-").removesuffix(".jsonl") if name.startswith("staging/full-") else run_id
        return real(self, name, prefix, **kwargs)

    monkeypatch.setattr(SyncStore, "writer", shared)
    explorer = Explorer(scenarios()[0])
    ops, writes = explorer.ops_of_a_clean_run()
    found = sum(bool(explorer.schedule(p, c).violations) for p in range(8, ops) for c in range(1, writes))
    assert found > 0


# -- defect 1: a committed snapshot with users missing -----------------------------------------------------------


def _sync(graph: PagedGraph, container: FakeContainer, block_size: int, interval: float = 0.0) -> UserSync:
    return UserSync(
        graph,  # type: ignore[arg-type]
        SyncStore(container, block_size=block_size),
        SELECT,
        wall=Clock(),
        clock=Clock(0.0),
        seen_filter_bits=1 << 16,
        tenant="t1",
        checkpoint_interval=interval,
        full_round="delta",  # scripted delta rounds
    )


def _ids(container: FakeContainer) -> list[str]:
    return [json.loads(line)["id"] for line in container.text("users.jsonl").splitlines()]


def test_defect1_a_run_that_lost_its_lock_leaves_no_user_out() -> None:
    """R1 stalls mid-round past its lease; R2 resumes R1's checkpoint, stages and commits more, and dies; R1
    resumes. Whatever R1 does then, no snapshot a succeeded run leaves is missing a user or doubles one."""
    pages = tenant_pages(56, 7)
    expected = sorted(u["id"] for page in pages for u in page)
    graph, container = PagedGraph(pages), FakeContainer()
    results = overlap(
        container,
        lambda: _sync(graph, container, 300).run(),  # about 4-5 lines a block
        lambda: _sync(graph, container, 120).run(),  # about 2 lines a block: other lines under the same numbers
        pause_first=counter("commit", "staging/full-", 3),  # R1 is about to commit its third page
        crash_second=counter("commit", "staging/full-", 3),  # R2 committed two pages of its own, then died
    )
    if getattr(results["first"], "status", None) == "succeeded":
        assert sorted(_ids(container)) == expected, "R1 reported succeeded over a snapshot with users missing"
    final = _sync(PagedGraph(pages), container, 300, 1e9).run()
    assert final.status == "succeeded"
    assert sorted(_ids(container)) == expected


# -- defect 2: a checkpoint that outgrew its staging blob -------------------------------------------------------


def test_defect2_a_checkpoint_that_no_longer_matches_its_staging_blob_is_dropped() -> None:
    """The staging blob holds fewer blocks than the checkpoint counts (a run that lost the race committed it):
    the next run drops the checkpoint and starts over, saying so, instead of failing on every run."""
    from azure.storage.blob import BlobBlock

    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    graph.fail_at = 6
    with pytest.raises(Exception):  # noqa: B017 - Graph's failure, whatever its class
        make(graph, container).run()
    staging = json.loads(container.text(CHECKPOINT_BLOB))["staging"]
    committed = list(container.committed[staging])
    container.get_blob_client(staging).commit_block_list([BlobBlock(block_id=b) for b in committed[:-1]])
    outcomes: list[Any] = []
    for _ in range(2):
        try:
            outcomes.append(make(graph, container).run())
        except Exception as exc:
            outcomes.append(exc)
    first = outcomes[0]
    assert getattr(first, "status", None) == "succeeded", f"the sync never heals: {outcomes}"
    assert "could not be resumed" in first.message and "started over" in first.message
    assert sorted(_ids(container)) == [f"u{n:04d}" for n in range(100)]


# -- defect 3: removals vanish from changes/ --------------------------------------------------------------------


def _changes(container: FakeContainer) -> dict[str, str]:
    names = [n for n in container.blobs if n.startswith("changes/")]
    assert len(names) == 1, names
    return {e["id"]: e["change"] for e in map(json.loads, container.text(names[0]).splitlines())}


def _incremental_setup() -> tuple[PagedGraph, FakeContainer]:
    graph, container = PagedGraph([[user("a"), user("b"), user("c")]]), FakeContainer()
    make(graph, container).run()
    link = json.loads(container.text(STATE_BLOB))["deltaLink"]
    graph.changes[link] = [removed("b"), user("d"), {"id": "a", "displayName": "A2"}]
    return graph, container


def test_defect3_a_failed_change_log_write_keeps_its_removals() -> None:
    """The change log's write fails after users.jsonl was committed: the next run writes the same log, with b's removal."""
    graph, container = _incremental_setup()
    failed = {"done": False}

    def hook(op: str, name: str) -> None:
        if op == "write" and name.startswith("changes/") and not failed["done"]:
            failed["done"] = True
            raise ServiceRequestError("connection reset writing the change log")

    container.hook = hook
    with pytest.raises(Exception):  # noqa: B017 - a StorageError
        make(graph, container).run()
    assert failed["done"]
    assert make(graph, container).run().status == "succeeded"
    assert _changes(container) == {"b": "removed", "d": "added", "a": "updated"}


# -- defect 4: a lost commit response makes the status lie ------------------------------------------------------


def test_defect4_a_lost_commit_response_is_told_apart_by_the_blob_metadata() -> None:
    """Put Block List lands but its response is lost and the retry gets 412: the run knows it replaced users.jsonl."""
    graph, container = _incremental_setup()
    container.lost_responses.add(("commit", "users.jsonl"))
    try:
        make(graph, container).run()
    except Exception:
        pass
    assert ("commit", "users.jsonl") not in container.lost_responses, "the lost response was not simulated"
    last = json.loads(container.text("status.json"))["lastRun"]
    assert set(_ids(container)) == {"a", "c", "d"}
    assert "are unchanged" not in last["message"], last["message"]
    assert "users.jsonl" in last.get("replaced", []), last
    make(graph, container).run()
    assert _changes(container) == {"b": "removed", "d": "added", "a": "updated"}


# -- defect 5: a requested full resync can be lost --------------------------------------------------------------


def test_defect5_a_full_resync_requested_while_a_run_holds_the_lock_runs_after_it() -> None:
    """An incremental run holds the lock; a full resync request is pending (the status says so), is not served
    by that incremental run, and runs after it as a full round."""
    graph, container = _incremental_setup()
    status_during: dict[str, Any] = {}

    def request_full() -> Any:
        summary = make(graph, container).run(full=True)
        status_during.update(read_status(SyncStore(container)) or {})
        return summary

    results = overlap(
        container,
        lambda: make(graph, container).run(),
        request_full,
        pause_first=counter("commit", "users.jsonl", 1),
        lapse=False,  # the first run still holds its lock: the request finds it taken
    )
    assert results["during"]["second"].status == "skipped"
    assert status_during.get("pendingResync") is True
    pending = [r for r in status_during["requests"] if r["mode"] == "full"]
    assert pending and pending[0]["state"] == "pending"
    after = results["first"]
    assert (after.status, after.mode, after.reason) == ("succeeded", "full", "requested")
    final = read_status(SyncStore(container)) or {}
    served = next(r for r in final["requests"] if r["requestId"] == pending[0]["requestId"])
    assert (served["state"], served["runId"]) == ("finished", after.runId)
    assert final["pendingResync"] is False


def test_defect5_a_pending_full_wins_over_a_pending_incremental_and_both_are_served_once() -> None:
    """Two requests pending together (incremental, then full): one full round serves both."""
    from graphusers.sync import SyncRequest
    from graphusers.sync import requests as sync_requests

    graph, container = _incremental_setup()
    store = SyncStore(container)
    store.ensure()
    sync_requests.record(store, SyncRequest("inc1", "incremental", "2027-01-15T08:00:00Z"))
    sync_requests.record(store, SyncRequest("full1", "full", "2027-01-15T08:00:01Z"))
    sync_requests.record(store, SyncRequest("full1", "full", "2027-01-15T08:00:01Z"))  # a redelivery: one request
    summary = make(graph, container).run()
    assert (summary.mode, summary.reason, sorted(summary.requests)) == ("full", "requested", ["full1", "inc1"])
    rows = {r["requestId"]: r for r in (read_status(store) or {})["requests"]}
    assert {k: (v["state"], v["runId"]) for k, v in rows.items()} == {
        "inc1": ("finished", summary.runId),
        "full1": ("finished", summary.runId),
    }


# -- defect 6: the status hides an unfinished first round -------------------------------------------------------


def test_defect6_a_worker_killed_in_the_first_round_shows_its_progress() -> None:
    """The worker dies after 5 of 10 pages of the first round (no status.json): the status shows the round."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    kill = counter("write", CHECKPOINT_BLOB, 6)

    def hook(op: str, name: str) -> None:
        if kill(op, name):
            raise Crash()

    container.hook = hook
    with pytest.raises(Crash):
        _sync(graph, container, 64).run()
    container.hook = None
    assert "status.json" not in container.blobs
    status = read_status(SyncStore(container))
    assert status is not None, "GET /api/sync/status would answer 404 'No sync has run yet'"
    assert status["lastRun"] is None
    assert {k: status["unfinishedRound"][k] for k in ("pages", "users")} == {"pages": 5, "users": 50}
    assert status["unfinishedRound"]["saved"] and status["unfinishedRound"]["round"]


def test_a_staging_blob_that_grew_past_its_checkpoint_resumes_from_the_checkpoint() -> None:
    """The round staged its last page, then the snapshot commit failed: the staging blob holds more blocks
    than the checkpoint counts, the same ones first, so the next run resumes (one page), not starts over."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    container.failures[("commit", "users.jsonl")] = ServiceRequestError("connection reset")
    with pytest.raises(Exception):  # noqa: B017 - a StorageError
        _sync(graph, container, 64).run()
    assert CHECKPOINT_BLOB in container.blobs and "users.jsonl" not in container.blobs
    graph.fetched.clear()
    summary = _sync(graph, container, 64).run()
    assert summary.status == "succeeded" and summary.resumed is not None and summary.pages == 1
    assert len(graph.fetched) == 1
    assert sorted(_ids(container)) == [f"u{n:04d}" for n in range(100)]


def test_an_intent_left_after_its_state_landed_is_removed_by_the_next_run() -> None:
    """A run dies after state.json recorded its commit, before deleting its intent (which holds user data):
    the next run removes it at once, not a day later."""
    graph, container = _incremental_setup()
    kill = counter("delete", "staging/commit-", 1)

    def hook(op: str, name: str) -> None:
        if kill(op, name):
            raise Crash()

    container.hook = hook
    with pytest.raises(Crash):
        make(graph, container).run()
    container.hook = None
    container.lapse()
    assert [n for n in container.blobs if n.startswith("staging/commit-")]
    assert make(graph, container).run().status == "succeeded"
    assert not [n for n in container.blobs if n.startswith("staging/")]
    assert _changes(container) == {"b": "removed", "d": "added", "a": "updated"}
