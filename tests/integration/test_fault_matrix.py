"""The fault matrix rows not covered elsewhere (README, "Fault matrix", lists every row and its test)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from testkit.triggers import http_get
from testkit.wiring import wire

from emulator import Emulator, Fault
from emulator.server import http_date
from graphusers.graph import RetryPolicy, UsersQuery


def call(triggers: dict[str, Any], params: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    resp = triggers["list_users"](http_get("users", params or {"top": "5"}))
    return resp.status_code, json.loads(resp.get_body()), dict(resp.headers)


def page_requests(emu: Emulator) -> list[str]:
    """Which page each Graph request asked for: 'first' or its $skiptoken."""
    out = []
    for r in emu.log:
        if r.service == "graph":
            out.append(r.path.split("$skiptoken=")[1] if "$skiptoken=" in r.path else "first")
    return out


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_as_told_then_succeeds(emu: Emulator, triggers: dict[str, Any], form: str) -> None:
    """Graph 429 with Retry-After in either form: the client waits that long, then succeeds."""
    wired = wire()
    value = "7" if form == "seconds" else http_date(7)
    emu.inject(Fault("graph", status=429, headers={"Retry-After": value}))
    status, body, _ = call(triggers)
    assert status == 200 and len(body["value"]) == 5
    assert len(wired.sleeps) == 1 and 5.0 <= wired.sleeps[0] <= 7.0


def test_429_total_wait_is_bounded_then_503(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Repeated throttling: waits add up to at most the budget, then 503 with Retry-After to the caller."""
    wired = wire(retry=RetryPolicy(total=10, max_wait=30))
    emu.inject(Fault("graph", status=429, count=None, headers={"Retry-After": "10"}))
    status, body, headers = call(triggers)
    assert status == 503 and body["error"]["code"] == "service_unavailable" and headers["Retry-After"] == "10"
    assert sum(wired.sleeps) <= 30 and wired.sleeps == [10.0, 10.0, 10.0]


@pytest.mark.parametrize("kind", ["503", "504", "reset", "read-timeout"])
def test_transient_failures_retry_with_backoff_and_resume_at_the_failed_page(emu: Emulator, kind: str) -> None:
    """503, 504, a reset or a read timeout on page 2: backoff with jitter, then page 2 again, not page 1."""
    wired = wire(read_timeout=0.5, retry=RetryPolicy(jitter=0.25))
    fault = {"503": Fault("graph", status=503, path=r"skiptoken"),
             "504": Fault("graph", status=504, path=r"skiptoken"),
             "reset": Fault("graph", kind="reset", path=r"skiptoken"),
             "read-timeout": Fault("graph", kind="delay", delay=1.5, path=r"skiptoken")}[kind]
    emu.inject(fault)
    pages = list(wired.services.graph.iter_pages(UsersQuery(top=100)))
    assert sum(len(p.value) for p in pages) == 250
    # The log is in order of answers: the slow one is logged when it finally answers.
    deadline = time.monotonic() + 5
    while len(page_requests(emu)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = Counter(page_requests(emu))
    assert sorted(counts.values()) == [1, 1, 2] and counts["first"] == 1  # page 2 twice, pages 1 and 3 once
    assert len(wired.sleeps) == 1 and 0.5 <= wired.sleeps[0] <= 0.5 * 1.25


def test_token_expiring_mid_paging_refreshes_once_and_repeats_the_page(emu: Emulator) -> None:
    """A 401 InvalidAuthenticationToken on page 2: one new token, then page 2 again."""
    wired = wire()
    emu.inject(Fault("graph", status=401, path=r"skiptoken"))
    pages = list(wired.services.graph.iter_pages(UsersQuery(top=100)))
    assert sum(len(p.value) for p in pages) == 250
    requested = page_requests(emu)
    assert requested[1] == requested[2] and requested.count("first") == 1
    assert emu.count("token") == 2 and emu.count("keyvault") == 1 and wired.sleeps == []


def test_token_endpoint_5xx_gives_503_and_recovers_by_itself(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Entra's token endpoint failing: 503 JSON with Retry-After; once it is back, calls succeed with no restart."""
    wire(cooldown=1.0)
    emu.inject(Fault("token", status=503, headers={"Retry-After": "1"}))
    status, body, headers = call(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable" and int(headers["Retry-After"]) >= 1
    # MSAL itself remembers a 5xx for Retry-After seconds, and the app fails fast for its cool-down.
    time.sleep(1.2)
    status, body, _ = call(triggers)
    assert status == 200 and len(body["value"]) == 5
    assert emu.count("token") == 2


def test_token_endpoint_unreachable_is_503(emu: Emulator, triggers: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An authority nobody answers on: 503 JSON with Retry-After, no traceback."""
    monkeypatch.setenv("AUTHORITY_HOST", "https://127.0.0.1:9")
    wire()
    status, body, headers = call(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable" and int(headers["Retry-After"]) >= 1


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A loopback TCP listener that records every connection it gets (it never answers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}", connections
    stop.set()
    t.join()
    server.close()


@pytest.mark.parametrize("kind", ["malformed", "no-value", "foreign-link"])
def test_bad_graph_pages_are_clear_errors_and_the_token_stays_home(
    emu: Emulator, triggers: dict[str, Any], listener: tuple[str, list[object]], kind: str,
) -> None:
    """Malformed JSON, a page without value, a nextLink to another host: 502 JSON; nothing reaches the other host."""
    wire()
    other, connections = listener
    emu.inject(Fault("graph", kind=kind, body={"link": f"{other}/v1.0/users?$skiptoken=steal"}))
    status, body, _ = call(triggers)
    assert status == 502 and body["error"]["code"] == "graph_error"
    assert "malformed" in body["error"]["message"] or "value" in body["error"]["message"] \
        or "another host" in body["error"]["message"]
    time.sleep(0.3)
    assert connections == []
