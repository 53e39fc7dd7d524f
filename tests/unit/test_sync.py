"""UserSync and the storage streaming over an in-memory container: order rule, resync reasons, status, blocks.

No Azurite and no sleeps: Graph is a script of delta pages, the container is
``FakeContainer`` (tiny blocks and chunks where it matters), and clocks are injected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceModifiedError, ServiceRequestError
from testkit.fake_storage import FakeContainer

from graphusers.errors import PermissionDeniedError, ResyncRequiredError, StorageError
from graphusers.graph import DeltaPage
from graphusers.storage import BlockWriter, SyncStore
from graphusers.sync import DELTA_TOKEN_MAX_AGE, UserSync, _compose, read_status

SELECT = ("id", "displayName", "mail")
LINK = "https://graph.example/v1.0/users/delta?$deltatoken="


def user(uid: str, name: str | None = None, mail: str | None = None) -> dict[str, Any]:
    return {"id": uid, "displayName": name or f"User {uid}", "mail": mail or f"{uid}@example.com"}


def removed(uid: str, reason: str = "deleted") -> dict[str, Any]:
    return {"id": uid, "@removed": {"reason": reason}}


class FakeGraph:
    """Answers delta rounds from a script: ``rounds[link]`` is a list of pages (lists of entries) or an exception."""

    def __init__(self) -> None:
        self.rounds: dict[str | None, list[list[dict[str, Any]]] | Exception] = {}
        self.requests_sent = 0
        self.asked: list[str | None] = []
        self.issued = 0

    def is_own_url(self, url: str) -> bool:
        return url.startswith("https://graph.example/")

    def iter_delta(self, delta_link: str | None, select: tuple[str, ...], page_size: int) -> Iterator[DeltaPage]:
        self.asked.append(delta_link)
        script = self.rounds[delta_link]
        self.requests_sent += 1
        if isinstance(script, Exception):
            raise script
        self.issued += 1
        for number, value in enumerate(script):
            if number:
                self.requests_sent += 1
            last = number == len(script) - 1
            yield DeltaPage(
                value=value, next_link=None if last else f"{LINK}next", delta_link=f"{LINK}{self.issued}" if last else None
            )


class Clock:
    """A clock the test moves; every reading advances it by ``step``."""

    def __init__(self, start: float = 1_800_000_000.0, step: float = 0.0) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def make(
    graph: FakeGraph,
    container: FakeContainer,
    *,
    select: tuple[str, ...] = SELECT,
    bits: int = 1 << 16,
    wall: Clock | None = None,
    clock: Clock | None = None,
) -> UserSync:
    return UserSync(
        graph,  # type: ignore[arg-type]
        SyncStore(container, block_size=64),
        select,
        wall=wall or Clock(),
        clock=clock or Clock(),
        seen_filter_bits=bits,
        full_round="delta",  # these fakes script delta rounds; listing rounds have their own tests
    )


def lines(container: FakeContainer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in container.text("users.jsonl").splitlines()]


def by_id(container: FakeContainer) -> dict[str, dict[str, Any]]:
    records = lines(container)
    assert len(records) == len({r["id"] for r in records}), "duplicate lines"
    return {r["id"]: r for r in records}


# -- the order rule --------------------------------------------------------------------------------------------

FULL_CASES = {
    "removed then live, on an earlier page": ([[user("a"), removed("b", "changed")], [user("b")]], {"a", "b"}),
    "live then removed": ([[user("a"), user("b")], [removed("a")]], {"b"}),
    "removed only": ([[removed("a"), user("b")]], {"b"}),
    "live, removed, live": ([[user("a"), removed("a", "changed")], [user("a", name="Back")]], {"a"}),
    "removed, live, removed": ([[removed("a"), user("a")], [removed("a")], [user("b")]], {"b"}),
    "two live copies": ([[user("a", name="One")], [{"id": "a", "mail": "two@example.com"}]], {"a"}),
}


@pytest.mark.parametrize("bits", [1 << 16, 8], ids=["filter", "every-id-looks-repeated"])
@pytest.mark.parametrize("case", FULL_CASES, ids=list(FULL_CASES))
def test_full_round_last_occurrence_wins(case: str, bits: int) -> None:
    """A full round applies entries in order; the result is the same whether the id filter is exact or saturated."""
    pages, present = FULL_CASES[case]
    graph, container = FakeGraph(), FakeContainer(chunk_size=7)
    graph.rounds[None] = pages
    summary = make(graph, container, bits=bits).run()
    assert summary.status == "succeeded" and summary.mode == "full" and summary.reason == "initial"
    assert set(by_id(container)) == present and summary.users == len(present)
    if case == "live, removed, live":
        assert by_id(container)["a"]["displayName"] == "Back"
    if case == "two live copies":
        assert by_id(container)["a"] == {"id": "a", "displayName": "One", "mail": "two@example.com"}
    assert all(list(r) == list(SELECT) for r in lines(container))


def test_incremental_round_last_occurrence_wins() -> None:
    """Against a stored snapshot: partial records merge, removals of either reason remove, re-adds come back."""
    graph, container = FakeGraph(), FakeContainer(chunk_size=5)
    graph.rounds[None] = [[user("a"), user("b"), user("c"), user("d")]]
    sync = make(graph, container)
    sync.run()
    graph.rounds[f"{LINK}1"] = [
        [{"id": "a", "displayName": "A1"}, removed("b", "changed")],
        [{"id": "a", "mail": None}, user("b", name="Restored"), removed("c")],
        [{"id": "c", "displayName": "gone anyway"}, removed("c", "changed"), user("e"), removed("zzz")],
    ]
    summary = sync.run()
    assert (summary.mode, summary.added, summary.updated, summary.removed) == ("incremental", 1, 2, 1)
    users = by_id(container)
    assert users["a"] == {"id": "a", "displayName": "A1", "mail": None}
    assert users["b"]["displayName"] == "Restored" and "c" not in users and set(users) == {"a", "b", "d", "e"}
    log_name = next(n for n in container.blobs if n.startswith("changes/"))
    log = [json.loads(line) for line in container.text(log_name).splitlines()]
    assert {entry["id"]: entry["change"] for entry in log} == {"a": "updated", "b": "updated", "c": "removed", "e": "added"}
    assert next(e for e in log if e["id"] == "c")["reason"] == "changed"


def test_no_changes_rewrites_nothing() -> None:
    """An empty round keeps users.jsonl as it is and writes no change log."""
    graph, container = FakeGraph(), FakeContainer()
    graph.rounds[None] = [[user("a")]]
    sync = make(graph, container)
    sync.run()
    etag = container.blobs["users.jsonl"].etag
    graph.rounds[f"{LINK}1"] = [[]]
    assert sync.run().users == 1
    assert container.blobs["users.jsonl"].etag == etag and not any(n.startswith("changes/") for n in container.blobs)


# -- resync reasons --------------------------------------------------------------------------------------------


def _synced(select: tuple[str, ...] = SELECT, wall: Clock | None = None) -> tuple[FakeGraph, FakeContainer, UserSync]:
    graph, container = FakeGraph(), FakeContainer()
    graph.rounds[None] = [[user("a"), user("b")]]
    sync = make(graph, container, select=select, wall=wall)
    sync.run()
    return graph, container, sync


@pytest.mark.parametrize("status,code", [(410, "resyncRequired"), (400, "syncStateNotFound")])
def test_expired_state_resyncs_in_the_same_run(status: int, code: str) -> None:
    """Graph saying the delta state expired starts a full round at once; the summary says why."""
    graph, container, sync = _synced()
    graph.rounds[f"{LINK}1"] = ResyncRequiredError("expired", status=status, graph_code=code)
    graph.rounds[None] = [[user("b"), user("c")]]
    summary = sync.run()
    assert (summary.status, summary.mode, summary.reason) == ("succeeded", "full", "expired")
    assert set(by_id(container)) == {"b", "c"} and graph.asked[-2:] == [f"{LINK}1", None]


def test_old_delta_token_resyncs_without_asking() -> None:
    """A deltaLink older than Graph keeps tokens is not sent; the run is a full one, reason "expired"."""
    wall = Clock()
    graph, _, sync = _synced(wall=wall)
    wall.now += DELTA_TOKEN_MAX_AGE + 1
    graph.rounds[None] = [[user("a")]]
    assert (sync.run().reason, graph.asked[-1]) == ("expired", None)


def test_select_change_and_request_force_full_rounds() -> None:
    """A different USER_SELECT and an explicit request each start a full round with their reason."""
    graph, container, _ = _synced()
    wider = (*SELECT, "jobTitle")
    summary = make(graph, container, select=wider).run()
    assert (summary.mode, summary.reason) == ("full", "query-changed")
    assert all(list(r) == list(wider) and r["jobTitle"] is None for r in lines(container))
    again = make(graph, container, select=wider)
    graph.rounds[f"{LINK}2"] = [[]]
    assert again.run().mode == "incremental"
    assert (again.run(full=True).reason, graph.asked[-1]) == ("requested", None)


# -- status, staging, failures ---------------------------------------------------------------------------------


def test_status_records_every_outcome_without_touching_the_snapshot() -> None:
    """succeeded, skipped and failed runs each become lastRun; lastSuccess keeps the last success."""
    graph, container = FakeGraph(), FakeContainer()
    store = SyncStore(container)
    assert read_status(store) is None
    graph.rounds[None] = PermissionDeniedError("Microsoft Graph denied access: User.Read.All is needed.")
    sync = make(graph, container)
    with pytest.raises(PermissionDeniedError):
        sync.run()
    status = read_status(store)
    assert status is not None and status["lastSuccess"] is None
    assert status["lastRun"]["error"] == {
        "code": "permission_denied",
        "message": "Microsoft Graph denied access: User.Read.All is needed.",
    }
    graph.rounds[None] = [[user("a")]]
    ok = sync.run()
    snapshot = (container.blobs["users.jsonl"].etag, container.blobs["state.json"].etag)
    held = container.get_blob_client("sync.lock").acquire_lease()
    skipped = sync.run()
    held.release()
    status = read_status(store)
    assert status is not None and status["lastRun"]["status"] == "skipped" and status["lastRun"]["runId"] == skipped.runId
    assert status["lastSuccess"] == ok.as_dict()
    assert (container.blobs["users.jsonl"].etag, container.blobs["state.json"].etag) == snapshot


def test_status_write_retries_a_concurrent_change() -> None:
    """A status.json that changed between read and write is read again, not overwritten blindly."""
    graph, container = FakeGraph(), FakeContainer()
    graph.rounds[None] = [[user("a")]]
    container.failures[("write", "status.json")] = ResourceModifiedError("changed")
    summary = make(graph, container).run()
    assert json.loads(container.text("status.json"))["lastRun"]["runId"] == summary.runId


def test_stale_staging_is_removed() -> None:
    """Staging blobs of runs that died are deleted by the next run that holds the lock."""
    graph, container = FakeGraph(), FakeContainer()
    container.upload_blob("staging/full-0123456789ab.jsonl", b'{"id":"x"}\n')
    graph.rounds[None] = [[user("a")]]
    make(graph, container).run()
    assert set(container.blobs) == {"sync.lock", "users.jsonl", "state.json", "status.json"}


def test_state_write_failure_after_commit_says_the_snapshot_moved() -> None:
    """The error and the status say users.jsonl was replaced; the next run completes that commit from its intent."""
    graph, container, sync = _synced()
    graph.rounds[f"{LINK}1"] = [[user("c"), {"id": "a", "displayName": "A2"}]]
    container.failures[("write", "state.json")] = ServiceRequestError("reset")
    with pytest.raises(StorageError) as info:
        sync.run()
    assert "replaced" in info.value.message
    assert "users.jsonl was replaced" in json.loads(container.text("status.json"))["lastRun"]["message"]
    graph.rounds[f"{LINK}2"] = [[]]  # the failed run's deltaLink, which the completed commit stores
    summary = sync.run()
    assert summary.status == "succeeded" and "Completed the commit of run" in summary.message
    logs = [n for n in container.blobs if n.startswith("changes/")]
    assert len(logs) == 1
    log = {e["id"]: e for e in map(json.loads, container.text(logs[0]).splitlines())}
    assert log["c"]["change"] == "added" and log["a"]["properties"]["displayName"] == "A2"
    assert graph.asked[-1] == f"{LINK}2", "the round was not replayed: state.json moved to its deltaLink"
    assert not [n for n in container.blobs if n.startswith("staging/")]


def test_compose_keeps_additions() -> None:
    """Folding a replay's log into the first: additions stay additions, later values and removals win."""
    first: list[dict[str, Any]] = [
        {"change": "added", "id": "a", "properties": {"id": "a", "x": 1}},
        {"change": "updated", "id": "b", "properties": {"id": "b", "x": 1}},
    ]
    second: list[dict[str, Any]] = [
        {"change": "updated", "id": "a", "properties": {"id": "a", "x": 2}},
        {"change": "removed", "id": "b", "reason": "deleted"},
        {"change": "added", "id": "c", "properties": {"id": "c"}},
    ]
    assert _compose(first, second) == [
        {"change": "added", "id": "a", "properties": {"id": "a", "x": 2}},
        {"change": "removed", "id": "b", "reason": "deleted"},
        {"change": "added", "id": "c", "properties": {"id": "c"}},
    ]


def test_line_separators_are_escaped_in_every_line() -> None:
    """U+2028/U+2029 leave as JSON escapes in the snapshot and the change log."""
    graph, container, sync = _synced()
    graph.rounds[f"{LINK}1"] = [[{"id": "a", "displayName": "x\u2028y"}, user("z", name="p\u2029q")]]
    sync.run()
    for name in ("users.jsonl", next(n for n in container.blobs if n.startswith("changes/"))):
        text = container.text(name)
        assert "\u2028" not in text and "\u2029" not in text and len(text.splitlines()) == text.count("\n")
    assert by_id(container)["a"]["displayName"] == "x\u2028y" and by_id(container)["z"]["displayName"] == "p\u2029q"


# -- logging and progress ------------------------------------------------------------------------------------------


def test_logs_carry_ids_and_counts_only(caplog: pytest.LogCaptureFixture) -> None:
    """No user property reaches a log line at INFO or above, whatever the run does."""
    marker = "Marker-Person-7731"
    graph, container = FakeGraph(), FakeContainer()
    graph.rounds[None] = [[user("a", name=marker, mail=f"{marker}@x"), removed("b", "changed")], [user("b")]]
    container.upload_blob("staging/full-0123456789ab.jsonl", f'{{"id":"x","displayName":"{marker}"}}\n'.encode())
    sync = make(graph, container, clock=Clock(step=11))
    with caplog.at_level(logging.INFO):
        sync.run()
        graph.rounds[f"{LINK}1"] = [[{"id": "a", "displayName": marker + "2"}]]
        sync.run()
        graph.rounds[f"{LINK}2"] = ResyncRequiredError(f"expired {marker}", status=410, graph_code="resyncRequired")
        graph.rounds[None] = [[user("a", name=marker)]]
        sync.run()
    texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert texts and not [t for t in texts if marker in t]
    assert any("in progress" in t for t in texts)


def test_progress_renews_the_lease_by_the_injected_clock() -> None:
    """A long round renews the lock's lease once a page when 25 s pass per page; time comes from the injected clock."""
    from testkit import fake_storage

    renewals: list[int] = []
    real_release = fake_storage.FakeLease.release

    def release(lease: fake_storage.FakeLease) -> None:
        renewals.append(lease.renewals)
        real_release(lease)

    fake_storage.FakeLease.release = release  # type: ignore[method-assign,assignment]
    try:
        for step in (0.0, 25.0):
            graph, container = FakeGraph(), FakeContainer()
            graph.rounds[None] = [[user(str(n))] for n in range(6)]
            make(graph, container, clock=Clock(step=step)).run()
    finally:
        fake_storage.FakeLease.release = real_release  # type: ignore[method-assign]
    # Both renew before each write that matters; the slow one also once per page.
    assert renewals[1] - renewals[0] >= 6 and renewals[0] > 0


# -- storage streaming across blocks and chunks --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_lines_cross_blocks_and_chunks(chunk: int) -> None:
    """Lines written across many 16-byte blocks read back exactly through chunks of any size."""
    container = FakeContainer(chunk_size=chunk)
    store = SyncStore(container, block_size=16)
    records = [json.dumps({"id": str(n), "v": "é" * (n % 5)}, ensure_ascii=False) for n in range(40)]
    writer = store.writer("users.jsonl", "run1")
    for line in records:
        writer.write(line)
    etag = writer.commit(None)
    assert container.blocks_staged > 10 and writer.lines == 40
    assert list(store.iter_lines("users.jsonl", etag)) == records


def test_last_line_without_newline_is_read() -> None:
    """A final line with no newline, split over chunks, is still one line."""
    container = FakeContainer(chunk_size=4)
    container.upload_blob("users.jsonl", b'{"id":"a"}\n{"id":"b"}\n{"id":"last"}')
    store = SyncStore(container)
    assert list(store.iter_lines("users.jsonl", store.etag("users.jsonl"))) == ['{"id":"a"}', '{"id":"b"}', '{"id":"last"}']


def test_block_writer_commits_every_block_in_order() -> None:
    """Each block is staged once with a distinct id, and the commit lists them all in order."""
    container = FakeContainer()
    writer = BlockWriter(container.get_blob_client("x"), "run", block_size=8)  # one 8-byte line per block
    for n in range(25):
        writer.write(f"line-{n:02d}")
    writer.commit(None)
    assert container.commits == [("x", 25)]
    assert container.text("x").splitlines() == [f"line-{n:02d}" for n in range(25)]


def test_full_sync_spans_many_blocks() -> None:
    """A full sync whose staging and snapshot each take dozens of 64-byte blocks commits them whole."""
    graph, container = FakeGraph(), FakeContainer(chunk_size=13)
    graph.rounds[None] = [[user(f"{p}-{n}") for n in range(30)] for p in range(4)]
    make(graph, container).run()
    assert len(by_id(container)) == 120
    assert next(c for c in container.commits if c[0] == "users.jsonl")[1] > 30


# -- the Graph client's side of delta ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,code,expired",
    [
        (410, "resyncRequired", True),
        (400, "syncStateNotFound", True),
        (400, "SyncStateNotFound", True),
        (400, "Request_BadRequest", False),
        (404, "syncStateNotFound", True),
    ],
)
def test_graph_maps_every_expired_state_answer(status: int, code: str, expired: bool) -> None:
    """410, or a 4xx with an expired-state code, is ResyncRequiredError; another 400 stays a bad request."""
    from testkit.fakes import FakeTokens, ScriptedSession, response

    from graphusers.errors import InvalidRequestError, NotFoundError
    from graphusers.graph import GraphClient

    session = ScriptedSession(response(status, {"error": {"code": code, "message": "m"}}))
    graph = GraphClient("https://graph.example", FakeTokens(), session=session)
    with pytest.raises((ResyncRequiredError, InvalidRequestError, NotFoundError)) as info:
        list(graph.iter_delta(f"{LINK}x", SELECT, 999))
    assert isinstance(info.value, ResyncRequiredError) == expired
    assert session.calls[0]["headers"]["Prefer"] == "odata.maxpagesize=999, return=minimal"
