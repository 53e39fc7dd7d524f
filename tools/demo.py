"""The demo: the app's main job against a local emulated tenant, on the real Functions runtime.

Starts ``python -m emulator`` (a few thousand synthetic users), writes a
``local.settings.json`` that points at it, starts a Functions Python worker
through the runtime harness, then lists the indexed functions, runs the timer
job once, calls ``GET /api/users`` and ``GET /api/users/{id}``, and prints what
came back and how many requests each dependency saw. Every process it starts
is stopped before it exits; ``--serve`` keeps the emulator and Azurite up for
``func start``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"


def say(text: str) -> None:
    print(text, flush=True)


def start_emulator(users: int, port: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    RUN.mkdir(exist_ok=True)
    ready = RUN / "emulator.json"
    ready.unlink(missing_ok=True)
    log = open(RUN / "emulator.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--users", str(users), "--port", str(port),
         "--state-dir", str(RUN / "emulator"), "--ready-file", str(ready)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited with {proc.returncode}; see {RUN / 'emulator.log'}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit("the emulator did not start within 60 s")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def write_local_settings(settings: dict[str, str]) -> Path:
    path = ROOT / "local.settings.json"
    values = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        **settings,
    }
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000, help="synthetic users in the tenant (default 3000)")
    parser.add_argument("--port", type=int, default=0, help="emulator port (default: a free one)")
    parser.add_argument("--serve", action="store_true",
                        help="keep the emulator and Azurite running after the demo (Ctrl-C stops)")
    args = parser.parse_args(argv)

    # A terminated demo still stops what it started (the finally block below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(ROOT))
    from tests.harness import RuntimeHost
    from tests.support.azurite import Azurite

    say(f"==> Starting the emulated tenant with {args.users} synthetic users")
    emulator, info = start_emulator(args.users, args.port)
    host: RuntimeHost | None = None
    azurite: Azurite | None = None
    try:
        say(f"    Entra, managed identity, Key Vault and Graph at {info['url']} (pid {emulator.pid})")
        say("==> Starting Azurite (Blob and Queue storage)")
        azurite = Azurite()
        say(f"    blob :{azurite.blob_port}, queue :{azurite.queue_port} (pid {azurite.proc.pid})")
        settings = {**info["settings"], "AzureWebJobsStorage": azurite.connection_string}
        path = write_local_settings(settings)
        say(f"    wrote {path.relative_to(ROOT)} pointing at it (for `func start`)")

        say("==> Starting a Functions Python worker (azure-functions-runtime) and indexing function_app.py")
        worker_log = RUN / "worker.log"
        worker_log.unlink(missing_ok=True)
        host = RuntimeHost(ROOT, settings, log_path=worker_log).start()
        for fn in host.functions.values():
            trig = fn.trigger
            if trig["type"] == "httpTrigger":
                where = f"{','.join(trig['methods'])} /api/{trig['route']}  auth={trig['authLevel'].lower()}"
            elif trig["type"] == "queueTrigger":
                where = f"queue {trig['queueName']!r}"
            else:
                where = f"schedule {trig['schedule']!r}"
            say(f"    {fn.name:<16} {trig['type']:<12} {where}")

        say("==> Running the timer job once (user_sync_timer): a full delta sync into Blob Storage")
        host.timer("user_sync_timer")
        status = host.http("GET", "/api/sync/status", key=host.function_key)
        if status.status != 200:
            raise SystemExit(f"GET /api/sync/status answered {status.status}: {status.body.decode()[:500]}")
        last = status.json()
        say(f"    {last['mode']} sync {last['status']}: {last['users']} users, {last['pages']} pages, "
            f"{last['graphRequests']} Graph requests")

        say("==> POST /api/sync, then the queue trigger runs it (incremental: nothing changed)")
        accepted = host.http("POST", "/api/sync", key=host.function_key)
        say(f"    {accepted.status} {accepted.body.decode()}")
        host.run_queue("user_sync_queue")
        last = host.http("GET", "/api/sync/status", key=host.function_key).json()
        say(f"    {last['mode']} sync {last['status']}: +{last['added']} ~{last['updated']} -{last['removed']}, "
            f"{last['graphRequests']} Graph request(s)")

        say("==> GET /api/users?top=5")
        listing = host.http("GET", "/api/users", query={"top": "5"}, key=host.function_key)
        if listing.status != 200:
            raise SystemExit(f"GET /api/users answered {listing.status}: {listing.body.decode()[:500]}")
        body = listing.json()
        for user in body["value"]:
            say(f"    {user['id']}  {user['displayName']:<22} {user['userPrincipalName']}")
        say(f"    nextCursor: {(body['nextCursor'] or '')[:48]}...")

        first = body["value"][0]["id"]
        say(f"==> GET /api/users/{first}")
        one = host.http("GET", f"/api/users/{first}", key=host.function_key)
        if one.status != 200:
            raise SystemExit(f"GET /api/users/{{id}} answered {one.status}: {one.body.decode()[:500]}")
        say("    " + json.dumps(one.json()))

        counts = requests.get(f"{info['url']}/_emulator/requests", verify=info["ca"], timeout=10).json()
        say("==> Requests each dependency received")
        for service in ("identity", "keyvault-challenge", "keyvault", "discovery", "token", "graph"):
            say(f"    {service:<19} {counts.get(service, 0)}")
        say("\nDemo finished. Worker log: .run/worker.log; emulator log: .run/emulator.log")
        if args.serve:
            say(f"The emulator and Azurite keep running ({info['url']}); in another terminal: func start. "
                "Ctrl-C stops them.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        if host is not None:
            host.stop()
        if azurite is not None:
            azurite.stop()
        emulator.terminate()
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
