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
import sys
import time
from pathlib import Path

from devtools.azurite import Azurite
from devtools.emulator_process import EmulatorProcess
from devtools.harness import RuntimeHost

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"


def say(text: str) -> None:
    print(text, flush=True)


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
    RUN.mkdir(exist_ok=True)
    say(f"==> Starting the emulated tenant with {args.users} synthetic users")
    emulator = EmulatorProcess(args.users, port=args.port, state_dir=RUN / "emulator",
                               log_path=RUN / "emulator.log")
    try:
        emulator.start()
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    host: RuntimeHost | None = None
    azurite: Azurite | None = None
    try:
        assert emulator.proc is not None
        say(f"    Entra, managed identity, Key Vault and Graph at {emulator.url} (pid {emulator.proc.pid})")
        say("==> Starting Azurite (Blob and Queue storage)")
        azurite = Azurite()
        say(f"    blob :{azurite.blob_port}, queue :{azurite.queue_port} (pid {azurite.proc.pid})")
        settings = {**emulator.settings, "AzureWebJobsStorage": azurite.connection_string}
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

        counts = emulator.control("GET", "requests")
        say("==> Requests each dependency received")
        for service in ("identity", "keyvault-challenge", "keyvault", "discovery", "token", "graph"):
            say(f"    {service:<19} {counts.get(service, 0)}")
        say("\nDemo finished. Worker log: .run/worker.log; emulator log: .run/emulator.log")
        if args.serve:
            say(f"The emulator and Azurite keep running ({emulator.url}); in another terminal: func start. "
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
        emulator.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
