"""Resumable full rounds, the query fingerprint, rejected delta state, reconciliation and staleness.

Graph is a script of pages with one link per page; the container is the in-memory
``FakeContainer``; clocks are injected. No Azurite and no sleeps.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from testkit.fake_storage import FakeContainer
from testkit.fakes import FakeTokens, ScriptedSession, response
from testkit.sync_fakes import BASE, DAY, SELECT, Clock, PagedGraph, make, removed, snapshot, tenant_pages, user

from graphusers.config import schedule_interval, sync_full_every
from graphusers.errors import ResyncRequiredError, UnavailableError
from graphusers.graph import GraphClient, RetryPolicy
from graphusers.storage import CHECKPOINT_BLOB, SyncStore
from graphusers.sync import read_status


def test_failed_full_round_resumes_from_its_checkpoint() -> None:
    """A round failing at page 7 of 10 keeps a checkpoint; the next run fetches pages 7-10 only, ending exact."""
    graph, container = PagedGraph(tenant_pages(100, 10)), FakeContainer()
    graph.fail_at = 6
    with pytest.raises(UnavailableError):
        make(graph, container).run()
    assert "users.jsonl" not in container.blobs
    status = read_status(SyncStore(container))
    assert status is not None and status["unfinishedRound"]["pages"] == 6
    assert status["unfinishedRound"]["users"] == 60 and status["lastRun"]["status"] == "failed"
    graph.fetched.clear()
    summary = make(graph, container).run()
    assert graph.fetched == [f"{BASE}$skiptoken=1.{n}" for n in range(6, 10)]
    assert (summary.status, summary.mode, summary.reason, summary.pages) == ("succeeded", "full", "initial", 4)
    assert summary.resumed is not None and summary.resumed["pages"] == 6
    assert set(snapshot(container)) == {f"u{n:04d}" for n in range(100)} and summary.users == 100
    assert CHECKPOINT_BLOB not in container.blobs and not [n for n in container.blobs if n.startswith("staging/")]
    assert "unfinishedRound" not in (read_status(SyncStore(container)) or {})


@pytest.mark.parametrize(
    "first,later,present",
    [
        (removed("x"), user("x", "Back"), True),
        (user("x", "Gone"), removed("x"), False),
        (user("x", "One"), {"id": "x", "mail": "two@example.com"}, True),
    ],
)
def test_last_occurrence_rule_holds_across_a_resume(first: dict[str, Any], later: dict[str, Any], present: bool) -> None:
    """An id's entries before and after the resume fold as one round: the last occurrence decides."""
    pages = [[first, user("a")], [user("b")], [later, user("c")]]
    graph, container = PagedGraph(pages), FakeContainer()
    graph.fail_at = 2
    with pytest.raises(UnavailableError):
        make(graph, container).run()
    make(graph, container).run()
    users = snapshot(container)
    assert ("x" in users) is present and {"a", "b", "c"} <= set(users)
    if present and "mail" in later and "displayName" not in later:
        assert users["x"] == {"id": "x", "displayName": "One", "mail": "two@example.com"}


def test_rejected_checkpoint_link_starts_over_and_says_so() -> None:
    """Graph refusing the checkpoint's link: the round starts from page 1 in the same run, and the summary says why."""
    graph, container = PagedGraph(tenant_pages(30, 10)), FakeContainer()
    graph.fail_at = 2
    with pytest.raises(UnavailableError):
        make(graph, container).run()
    graph.rejected.add(f"{BASE}$skiptoken=1.2")
    summary = make(graph, container).run()
    assert summary.status == "succeeded" and summary.resumed is None
    assert "could not be resumed" in summary.message and "started over" in summary.message
    assert len(snapshot(container)) == 30 and summary.pages == 3


def test_checkpoint_link_answered_400_starts_over_instead_of_failing_every_run() -> None:
    """A 400 for the checkpoint's skip token (not a delta-state text) drops the checkpoint: the round starts over."""
    graph, container = PagedGraph(tenant_pages(30, 10)), FakeContainer()
    graph.fail_at = 2
    with pytest.raises(UnavailableError):
        make(graph, container).run()
    graph.bad_request.add(f"{BASE}$skiptoken=1.2")
    summary = make(graph, container).run()
    assert summary.status == "succeeded" and "400 invalid_request" in summary.message
    assert len(snapshot(container)) == 30 and CHECKPOINT_BLOB not in container.blobs


def test_checkpoint_of_another_query_is_dropped() -> None:
    """A checkpoint made for another $select is not continued: the new round starts from page 1."""
    graph, container = PagedGraph(tenant_pages(30, 10)), FakeContainer()
    graph.fail_at = 2
    with pytest.raises(UnavailableError):
        make(graph, container).run()
    graph.fetched.clear()
    summary = make(graph, container, select=(*SELECT, "jobTitle")).run()
    assert summary.resumed is None and graph.fetched[0] == f"{BASE}$select=..."
    assert all(list(r) == [*SELECT, "jobTitle"] for r in snapshot(container).values())


# -- fingerprint, rejected state --------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["tenant", "select", "endpoint"])
def test_fingerprint_mismatch_is_a_full_round(change: str) -> None:
    """Another tenant, $select or endpoint than the state records: a full round with reason query-changed."""
    graph, container = PagedGraph(tenant_pages(5, 5)), FakeContainer()
    make(graph, container).run()
    kwargs: dict[str, Any] = {}
    if change == "tenant":
        kwargs["tenant"] = "t2"
    elif change == "select":
        kwargs["select"] = (*SELECT, "jobTitle")
    else:
        graph.endpoint = "https://graph.example.us"
    summary = make(graph, container, **kwargs).run()
    assert (summary.mode, summary.reason) == ("full", "query-changed")
    assert make(graph, container, **kwargs).run().mode == "incremental"


def test_state_without_fingerprint_is_read_by_its_select() -> None:
    """A state.json written before fingerprints: same $select goes on incrementally, and gains a fingerprint."""
    graph, container = PagedGraph(tenant_pages(5, 5)), FakeContainer()
    make(graph, container).run()
    store = SyncStore(container)
    state, etag = store.read_json("state.json")
    assert state is not None
    del state["fingerprint"], state["lastFull"]
    store.write_json("state.json", state, etag)
    assert make(graph, container).run().mode == "incremental"
    assert (store.read_json("state.json")[0] or {})["fingerprint"]["tenant"] == "t1"
    state, etag = store.read_json("state.json")
    assert state is not None
    del state["fingerprint"]
    state["select"] = ["id"]
    store.write_json("state.json", state, etag)
    assert make(graph, container).run().reason == "query-changed"


@pytest.mark.parametrize(
    "message",
    [
        "Sync must reach steady state within 30 days.",
        "Both skiptoken and deltatoken can't be in the same request.",
    ],
)
def test_delta_400_that_ends_the_state_is_a_full_round(message: str) -> None:
    """Graph's 400 texts for a state that cannot continue map to a resync, and the sync records the reason."""
    session = ScriptedSession(response(400, {"error": {"code": "BadRequest", "message": message}}))
    client = GraphClient(
        "https://graph.example", FakeTokens(), session=session, retry=RetryPolicy(backoff_factor=0), sleep=lambda s: None
    )
    with pytest.raises(ResyncRequiredError) as caught:
        list(client.iter_delta(f"{BASE}$deltatoken=abc", SELECT, 10))
    graph, container = PagedGraph(tenant_pages(5, 5)), FakeContainer()
    make(graph, container).run()
    graph.changes[f"{BASE}$deltatoken=1"] = caught.value
    summary = make(graph, container).run()
    assert (summary.mode, summary.reason) == ("full", "state-rejected")
    assert message[:20] in summary.message and len(snapshot(container)) == 5


def test_other_400s_stay_errors() -> None:
    """A 400 about the query itself is not a resync: it stays the caller's error."""
    session = ScriptedSession(response(400, {"error": {"code": "BadRequest", "message": "Invalid filter clause"}}))
    client = GraphClient(
        "https://graph.example", FakeTokens(), session=session, retry=RetryPolicy(backoff_factor=0), sleep=lambda s: None
    )
    with pytest.raises(Exception) as caught:
        list(client.iter_delta(f"{BASE}$deltatoken=abc", SELECT, 10))
    assert not isinstance(caught.value, ResyncRequiredError)


def test_429_logs_throttle_headers_and_client_request_id(caplog: pytest.LogCaptureFixture) -> None:
    """Each 429 is logged with Graph's throttle scope and reason and the request's client-request-id."""
    sent: list[str] = []

    def throttled(url: str, kwargs: dict[str, Any]) -> Any:
        sent.append(kwargs["headers"]["client-request-id"])
        return response(
            429,
            {"error": {"code": "TooManyRequests"}},
            {
                "Retry-After": "0",
                "request-id": "rid-1",
                "x-ms-throttle-scope": "Tenant_Application/Read/t/a",
                "x-ms-throttle-reason": "AppLimit\nX",
            },
        )

    session = ScriptedSession(
        throttled,
        response(200, {"value": [], "@odata.deltaLink": f"{BASE}$deltatoken=z"}),
    )
    client = GraphClient(
        "https://graph.example", FakeTokens(), session=session, retry=RetryPolicy(backoff_factor=0), sleep=lambda s: None
    )
    with caplog.at_level(logging.WARNING, logger="graphusers.graph"):
        list(client.iter_delta(f"{BASE}$deltatoken=abc", SELECT, 10))
    line = next(r.getMessage() for r in caplog.records if "429" in r.getMessage())
    crid = sent[0]
    assert "x-ms-throttle-scope=Tenant_Application/Read/t/a" in line and "x-ms-throttle-reason=AppLimit?X" in line
    assert f"client-request-id={crid}" in line and "request-id=rid-1" in line


# -- reconciliation ---------------------------------------------------------------------------------------------


def test_reconciliation_finds_what_delta_lost() -> None:
    """After USER_SYNC_FULL_EVERY a full round runs with a valid deltaLink, and reports the drift it found."""
    wall = Clock()
    pages = tenant_pages(20, 10)
    graph, container = PagedGraph(pages), FakeContainer()
    make(graph, container, wall=wall).run()
    # The tenant changes in ways no delta round reports: one edit, one addition, one removal.
    pages[0][0] = user("u0000", "Edited while a round ran")
    pages[1].append(user("new"))
    del pages[1][0]
    wall.now += 0.5 * DAY
    assert make(graph, container, wall=wall, full_every=DAY).run().mode == "incremental"
    wall.now += 0.6 * DAY
    summary = make(graph, container, wall=wall, full_every=DAY).run()
    assert (summary.mode, summary.reason) == ("full", "reconcile")
    assert summary.drift == {"added": 1, "changed": 1, "removed": 1}
    assert snapshot(container)["u0000"]["displayName"] == "Edited while a round ran"
    wall.now += 0.5 * DAY
    assert make(graph, container, wall=wall, full_every=DAY).run().mode == "incremental"
    wall.now += 10 * DAY
    assert make(graph, container, wall=wall, full_every=None).run().reason == "expired"


@pytest.mark.parametrize("value,seconds", [("", 7 * DAY), ("1.5", 1.5 * DAY), ("0", None), ("week", 7 * DAY), ("-1", 7 * DAY)])
def test_full_every_setting(value: str, seconds: float | None) -> None:
    """USER_SYNC_FULL_EVERY is days; 0 turns reconciliation off; anything else falls back to 7 days."""
    assert sync_full_every({"USER_SYNC_FULL_EVERY": value}) == seconds


# -- staleness --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule,interval",
    [
        ("0 */30 * * * *", 1800),
        ("0 0 * * * *", 3600),
        ("0 0 3 * * *", DAY),
        ("0 0 3 * * MON", 7 * DAY),
        ("0 5,50 * * * *", 45 * 60),
        ("*/10 * * * * *", 10),
        ("0 0 9-17 * * *", 16 * 3600),
    ],
)
def test_schedule_interval(schedule: str, interval: float) -> None:
    """The longest gap between two firings of an NCRONTAB schedule."""
    assert schedule_interval(schedule) == interval


def test_status_turns_stale_after_a_missed_schedule() -> None:
    """Stale once the last success is older than twice the interval; a failing run does not refresh it."""
    wall = Clock()
    graph, container = PagedGraph(tenant_pages(5, 5)), FakeContainer()
    make(graph, container, wall=wall).run()
    store = SyncStore(container)
    assert read_status(store, interval=1800, wall=wall)["stale"] is False  # type: ignore[index]
    wall.now += 3500
    assert read_status(store, interval=1800, wall=wall)["stale"] is False  # type: ignore[index]
    graph.changes[f"{BASE}$deltatoken=1"] = UnavailableError("down", retry_after=1)
    with pytest.raises(UnavailableError):
        make(graph, container, wall=wall).run()
    wall.now += 200
    body = read_status(store, interval=1800, wall=wall)
    assert body is not None and body["stale"] is True and body["lastRun"]["status"] == "failed"
    assert "stale" not in (read_status(store) or {})
