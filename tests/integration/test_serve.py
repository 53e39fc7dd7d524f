"""./scripts/serve from the project root: the app over HTTP as `func start` serves it, then a clean stop."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
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
    assert run is not None, body
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
        summary = wait_for_run(serve.base, serve, timeout=30)
        assert (summary["mode"], summary["users"]) == ("full", 25)
        assert "INFO function_app: Sync from timer" in serve.output()  # the timer function ran
        assert "next run at" not in serve.output()  # --no-timer: no scheduled run


def wait_for_run(base: str, serve: ServeProcess, after: str | None = None, timeout: float = 60) -> dict[str, Any]:
    """The last run's summary once a run other than ``after`` has finished."""
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(f"{base}/api/sync/status", timeout=30)
        # 200 with lastRun null: a first round is under way (its progress is shown), none finished yet.
        run: dict[str, Any] | None = status.json().get("lastRun") if status.status_code == 200 else None
        if run is not None and run["runId"] != after:
            return run
        assert time.monotonic() < deadline, f"no sync finished within {timeout:.0f} s:\n{serve.output()[-3000:]}"
        time.sleep(0.5)


def error_of(resp: requests.Response) -> dict[str, str]:
    """The API's error shape, or fail."""
    assert resp.headers["Content-Type"].startswith("application/json"), (resp.status_code, resp.headers, resp.text[:200])
    detail: dict[str, str] = resp.json()["error"]
    assert set(detail) == {"code", "message"}
    return detail


def test_serve_log_is_one_line_per_request_and_every_error_is_json() -> None:
    """Issue 23's serve log and answers: no URL, id, UPN or ANSI code in the log, caller mistakes below ERROR, JSON errors."""
    with ServeProcess("--users", "12", "--no-timer") as serve:
        base, port = serve.base, serve.port
        sent: list[str] = []  # "METHOD route status" of each request, as the log must show it

        def expect(line: str, resp: requests.Response) -> requests.Response:
            words = line.split()
            assert [resp.request.method, str(resp.status_code)] == [words[0], words[-1]], (line, resp.text[:300])
            sent.append(line)
            return resp

        page = expect("GET /api/users 200", requests.get(f"{base}/api/users", params={"top": "2"}, timeout=60))
        upn = page.json()["value"][0]["userPrincipalName"]
        expect("GET /api/users/{id} 200", requests.get(f"{base}/api/users/{upn}", timeout=60))
        bad_filter = expect("GET /api/users 400", requests.get(f"{base}/api/users", params={"filter": "foo eq 1"}, timeout=60))
        assert "Microsoft Graph rejected the query" in error_of(bad_filter)["message"]
        twice = expect("GET /api/users 400", requests.get(f"{base}/api/users?top=2&top=3", timeout=60))
        assert "'top' is given more than once" in error_of(twice)["message"]
        umlaut = expect("GET /api/users/{id} 400", requests.get(f"{base}/api/users/jürgen@contoso.com", timeout=60))
        assert "non-ASCII character 'ü'" in error_of(umlaut)["message"]
        empty_object = expect("POST /api/sync 202", requests.post(f"{base}/api/sync", json={}, timeout=60))
        check_response("POST", empty_object)
        missing = expect("GET (no route) 404", requests.get(f"{base}/api/nothing-here", timeout=30))
        assert error_of(missing)["code"] == "not_found"
        wrong = expect("DELETE (wrong method) 405", requests.delete(f"{base}/api/health", timeout=30))
        assert error_of(wrong)["code"] == "method_not_allowed" and wrong.headers["Allow"] == "GET"
        long_url = expect("GET (URL too long) 414", requests.get(f"{base}/api/users", params={"filter": "x" * 4100}, timeout=30))
        assert error_of(long_url)["code"] == "uri_too_long"
        foreign = expect(
            "GET (foreign Host) 403", requests.get(f"{base}/api/health", headers={"Host": f"evil.example:{port}"}, timeout=30)
        )
        assert error_of(foreign)["code"] == "host_not_allowed"
        named = requests.get(f"http://localhost:{port}/api/health", timeout=30)
        assert named.status_code == 200

        # 200 MB announced, none sent: the answer comes from the header alone (a server that read
        # the body would wait here for bytes that never come).
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(
                f"POST /api/sync HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), answer[:300]
        assert json.loads(body)["error"]["code"] == "payload_too_large"
        sent.append("POST /api/sync 413")
        wait_for_run(base, serve)
        output = serve.output()

    request_lines = [
        line.split(" INFO serve: ", 1)[1].rsplit(" (", 1)[0]
        for line in output.splitlines()
        if " INFO serve: " in line and line.endswith(" ms)") and "/api/health 200" not in line
    ]
    assert [line for line in request_lines if "/api/sync/status" not in line] == sent
    assert "\x1b[" not in output  # no colour codes in a file
    assert "Function name: " not in output  # the runtime's own per-invocation line
    assert "Successfully indexed function app: 8 functions" in output
    assert max(len(line) for line in output.splitlines()) < 600, max(output.splitlines(), key=len)[:300]
    for private in (upn, "foo eq 1", "top=2", "jürgen", "nothing-here"):
        assert private not in output, private
    assert " ERROR " not in output  # every request above was the caller's mistake or fine
    assert " INFO graphusers.graph: Graph answered 400 Request_UnsupportedQuery" in output


def test_storage_is_kept_between_starts_and_the_snapshot_command_shows_it(tmp_path: Path) -> None:
    """--data-dir keeps the snapshot across a restart, ./scripts/snapshot shows it, --clean starts afresh."""
    data = tmp_path / "azurite"

    def snapshot(*args: str) -> str:
        done = subprocess.run(
            ["./scripts/snapshot", "--data-dir", str(data), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    with ServeProcess("--users", "15", "--no-timer", "--data-dir", str(data)) as serve:
        base = serve.base
        assert requests.post(f"{base}/api/sync", timeout=30).status_code == 202
        first = wait_for_run(base, serve)
        assert (first["mode"], first["users"]) == ("full", 15)
        # The banner's own instruction for changing the emulated tenant.
        found = re.search(r"--cacert (\S+) -X POST (\S+)/_emulator/users -d '\{\"add\": 1\}'", serve.output())
        assert found, serve.output()[-3000:]
        ca, emulator = ROOT / found[1], found[2]
        assert requests.post(f"{emulator}/_emulator/users", data=b'{"add": 1}', verify=str(ca), timeout=30).ok
        assert requests.post(f"{base}/api/sync", timeout=30).status_code == 202
        second = wait_for_run(base, serve, after=first["runId"])
        assert (second["mode"], second["added"], second["users"]) == ("incremental", 1, 16), second
        # While serve runs, the snapshot comes from its Azurite.
        summary = snapshot()
        assert "users.jsonl: 16 users" in summary and "newest changes/: changes/" in summary and ", 1 changes" in summary
        change = json.loads(snapshot("changes"))
        assert change["change"] == "added" and change["properties"]["id"] == change["id"]

    with ServeProcess("--users", "15", "--no-timer", "--data-dir", str(data)) as serve:
        status = requests.get(f"{serve.base}/api/sync/status", timeout=30)
        assert status.status_code == 200 and last_run(status.json())["runId"] == second["runId"]
    # Stopped: the command starts Azurite on the folder itself.
    assert len(snapshot("users").splitlines()) == 16
    exported = tmp_path / "export"
    snapshot("--export", str(exported))
    assert {p.name for p in exported.iterdir()} >= {"users.jsonl", "status.json", "state.json", "changes"}

    with ServeProcess("--users", "15", "--no-timer", "--data-dir", str(data), "--clean") as serve:
        assert requests.get(f"{serve.base}/api/sync/status", timeout=30).status_code == 404
