"""Defect 5: Blob Storage calls are bounded by the invocation's deadline, and a stall cannot pile up runner threads."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from testkit.triggers import http_get

from devtools.azurite import ACCOUNT, KEY
from graphusers import deadline

DEADLINE = 1.5
CALLERS = 50


class StallingStorage:
    """A loopback port that accepts every connection and never answers: a storage account that stalls."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never read, never answered

    @property
    def connection_string(self) -> str:
        return f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalling(monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingStorage]:
    server = StallingStorage()
    monkeypatch.setenv("AzureWebJobsStorage", server.connection_string)
    monkeypatch.setenv("USER_SYNC_CONTAINER", "user-sync")
    monkeypatch.setenv("HTTP_DEADLINE_SECONDS", str(DEADLINE))
    yield server
    server.close()


def _busy_runners() -> int:
    runners = deadline._runners
    return runners.alive - runners._idle


def test_concurrent_status_calls_against_stalled_storage_keep_threads_bounded(
    stalling: StallingStorage, triggers: dict[str, Callable[..., Any]]
) -> None:
    """50 concurrent GET /api/sync/status while storage stalls: every caller gets 503 by the deadline, runner
    threads never pass MAX_RUNNERS, and once the deadline has passed no runner is still stuck in a Blob call."""
    statuses: list[int] = []
    peak = [0]
    barrier = threading.Barrier(CALLERS + 1)

    def call() -> None:
        barrier.wait()
        statuses.append(triggers["sync_status"](http_get("sync/status")).status_code)

    callers = [threading.Thread(target=call) for _ in range(CALLERS)]
    for t in callers:
        t.start()
    barrier.wait()
    started = time.monotonic()
    while any(t.is_alive() for t in callers):
        peak[0] = max(peak[0], sum(t.name == "http-invocation" for t in threading.enumerate()))
        time.sleep(0.02)
    answered = time.monotonic() - started
    assert statuses == [503] * CALLERS
    assert answered < DEADLINE + deadline.GRACE_SECONDS + 1.0
    assert peak[0] <= deadline.MAX_RUNNERS and deadline._runners.alive <= deadline.MAX_RUNNERS
    assert len(stalling.accepted) >= 1, "no Blob request reached the stalling storage"
    # The stuck Blob calls end by their own deadline (read timeout = time left, no retry that cannot fit),
    # not after the SDK's 60 s read timeout times its retries.
    settle = time.monotonic() + 2 * DEADLINE
    while _busy_runners() and time.monotonic() < settle:
        time.sleep(0.05)
    assert _busy_runners() == 0, f"{_busy_runners()} runner threads are still stuck in storage calls"


def test_a_stalled_blob_call_ends_at_the_deadline_with_503(
    stalling: StallingStorage, triggers: dict[str, Callable[..., Any]]
) -> None:
    """One status call: 503 with Retry-After, and its runner thread is free again within the deadline and grace."""
    started = time.monotonic()
    resp = triggers["sync_status"](http_get("sync/status"))
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1
    assert json.loads(resp.get_body())["error"]["code"] in ("deadline_exceeded", "storage_unavailable")
    settle = time.monotonic() + DEADLINE
    while _busy_runners() and time.monotonic() < settle:
        time.sleep(0.05)
    assert _busy_runners() == 0 and time.monotonic() - started < 2 * DEADLINE + deadline.GRACE_SECONDS


def test_runners_past_the_cap_refuse_at_once_with_503() -> None:
    """With every runner busy and the cap reached, the next invocation gets 503 without waiting or a new thread."""
    from graphusers.deadline import RunnersBusyError, _Runners

    runners, release = _Runners(limit=2), threading.Event()

    def hold() -> None:
        release.wait(10)

    for _ in range(2):
        runners.start(hold, threading.Event(), "test-runner")
    try:
        with pytest.raises(RunnersBusyError) as info:
            runners.start(lambda: None, threading.Event(), "test-runner")
        assert info.value.retry_after >= 1 and runners.alive == 2
    finally:
        release.set()
