"""./scripts/serve from the project root: the app over HTTP as `func start` serves it, then a clean stop."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import requests
from testkit.contract import check_response
from testkit.serve import ROOT, ServeProcess, alive, descendants, port_open

pytestmark = [pytest.mark.integration, pytest.mark.harness]


def last_run(body: dict[str, Any]) -> dict[str, Any]:
    """The last run's summary in the status answer."""
    assert set(body) >= {"lastRun", "lastSuccess"}, body
    run: dict[str, Any] = body["lastRun"]
    return run


def test_serve_answers_every_route_runs_the_queue_and_stops_clean() -> None:
    """Health, a page and the next by cursor, one user, POST /api/sync processed from the queue; SIGTERM ends all."""
    settings = ROOT / "local.settings.json"
    before = settings.read_bytes() if settings.exists() else None
    serve = ServeProcess("--users", "40", "--no-timer").start()
    try:
        base = f"{serve.base}/api"
        health = requests.get(f"{base}/health", timeout=30)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert health.headers["Content-Type"].startswith("application/json")

        # Function keys are not enforced locally, as with Core Tools.
        first = requests.get(f"{base}/users", params={"top": "3"}, timeout=60)
        assert first.status_code == 200, first.text
        page = first.json()
        assert len(page["value"]) == 3 and page["nextCursor"]
        second = requests.get(f"{base}/users", params={"cursor": page["nextCursor"]}, timeout=60)
        assert second.status_code == 200, second.text
        assert len(second.json()["value"]) == 3
        assert not {u["id"] for u in page["value"]} & {u["id"] for u in second.json()["value"]}

        user = page["value"][0]
        one = requests.get(f"{base}/users/{user['id']}", timeout=60)
        assert one.status_code == 200 and one.json()["id"] == user["id"]

        assert requests.get(f"{base}/sync/status", timeout=30).status_code == 404  # no sync has run
        accepted = requests.post(f"{base}/sync", timeout=30)
        assert accepted.status_code == 202
        assert accepted.json() == {"status": "queued", "statusUrl": "/api/sync/status", "requestId": accepted.json()["requestId"]}
        deadline = time.monotonic() + 30
        # 200 with lastRun null while the request is pending or running; the run's summary once it finished.
        while (status := requests.get(f"{base}/sync/status", timeout=30)).status_code != 200 or not status.json()["lastRun"]:
            assert time.monotonic() < deadline, f"the queued sync did not run within 30 s:\n{serve.output()[-3000:]}"
            time.sleep(0.5)
        summary = last_run(status.json())
        assert summary["status"] == "succeeded" and summary["users"] == 40

        for method, answer in (
            ("GET", health),
            ("GET", first),
            ("GET", second),
            ("GET", one),
            ("POST", accepted),
            ("GET", status),
        ):
            check_response(method, answer)  # every answer is one openapi.yaml describes
        assert requests.get(f"{base}/nothing-here", timeout=30).status_code == 404
        # The host's 4 KB URL limit holds locally too.
        assert requests.get(f"{base}/users", params={"filter": "x" * 4100}, timeout=30).status_code == 414
        output = serve.output()
        assert f"curl -s 'http://127.0.0.1:{serve.port}/api/users?top=3'" in output
        assert " INFO function_app: Sync requested by queue message" in output  # the app's log, with levels
    finally:
        assert serve.proc is not None
        pid = serve.proc.pid
        children = descendants(pid)
        assert len(children) >= 3  # emulator, Azurite, worker
        serve.proc.send_signal(signal.SIGTERM)
        code = serve.proc.wait(timeout=10)
        serve.proc = None
    assert code == 0, serve.output()[-3000:]
    assert not port_open(serve.port)
    assert not [p for p in children if alive(p)], json.dumps(sorted(children))
    after = settings.read_bytes() if settings.exists() else None
    assert after == before  # serve never writes local.settings.json


def test_serve_refuses_a_port_in_use() -> None:
    """A taken port ends start-up with the port named and nothing left running."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = ServeProcess("--users", "5", "--no-timer")
        serve.port = port
        with pytest.raises(RuntimeError) as info:
            serve.start()
    assert f"Port {port} is in use" in str(info.value)


def test_run_timer_now_runs_one_sync_at_start() -> None:
    """--run-timer-now fires the timer once at start (--no-timer keeps it off the schedule): a full sync runs."""
    with ServeProcess("--users", "25", "--no-timer", "--run-timer-now") as serve:
        deadline = time.monotonic() + 30
        while (status := requests.get(f"{serve.base}/api/sync/status", timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, serve.output()[-3000:]
            time.sleep(0.5)
        summary = last_run(status.json())
        assert (summary["mode"], summary["users"]) == ("full", 25)
        assert "Function name: user_sync_timer" in serve.output()
        assert "next run at" not in serve.output()  # --no-timer: no scheduled run
