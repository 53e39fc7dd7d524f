"""The demo: the app's main job against a local emulated tenant, on the real Functions runtime.

Starts ``python -m emulator`` (a few thousand synthetic users) and Azurite,
writes the settings that point at them to ``.run/local.settings.emulator.json``
(``local.settings.json`` is left as it is), starts a Functions Python worker
through the runtime harness, then lists the indexed functions, runs the timer
job once, calls ``GET /api/users`` and ``GET /api/users/{id}``, and prints what
came back and how many requests each dependency saw. Every process it starts
is stopped before it exits; ``--serve`` keeps the emulator and Azurite up for
``func start``, and ``--write-local-settings`` writes those settings to
``local.settings.json`` for it, only when that file does not exist (``--force``
replaces it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from devtools.azurite import Azurite
from devtools.emulator_process import EmulatorProcess
from devtools.harness import RuntimeHost
from devtools.processes import script_parser
from devtools.serve import EMULATOR_SETTINGS, write_settings_file

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"
LOCAL_SETTINGS = ROOT / "local.settings.json"


def say(text: str) -> None:
    print(text, flush=True)


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """The last run's summary from GET /api/sync/status."""
    last = status.get("lastRun")
    return last if isinstance(last, dict) else {}


def write_local_settings(settings: dict[str, str], *, force: bool, path: Path = LOCAL_SETTINGS) -> str:
    """Write emulator settings to local.settings.json for `func start`, never over an existing file unless forced."""
    if path.exists() and not force:
        return f"left {path.name} as it is (it exists; --force replaces it)"
    write_settings_file(path, settings)
    return f"wrote {path.name} for `func start`"


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("scripts/demo", __doc__)
    parser.add_argument("--port", type=int, default=0, help="emulator port (default: a free one)")
    parser.add_argument(
        "--write-local-settings",
        action="store_true",
        help="also write the emulator settings to local.settings.json (for func start), only when it does not exist",
    )
    parser.add_argument("--force", action="store_true", help="with --write-local-settings: replace an existing file")
    parser.add_argument(
        "--serve", action="store_true", help="keep the emulator and Azurite running after the demo (Ctrl-C stops)"
    )
    args = parser.parse_args(argv)

    # A terminated demo still stops what it started (the finally block below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    RUN.mkdir(exist_ok=True)
    say(f"==> Starting the emulated tenant with {args.users} synthetic users")
    emulator = EmulatorProcess(args.users, port=args.port, state_dir=RUN / "emulator", log_path=RUN / "emulator.log")
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
        path = write_settings_file(EMULATOR_SETTINGS, settings)
        say(f"    wrote {path.relative_to(ROOT)} pointing at them (local.settings.json is not touched)")
        if args.write_local_settings:
            say(f"    {write_local_settings(settings, force=args.force)}")

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
        last = summary(status.json())
        say(
            f"    {last['mode']} sync {last['status']}: {last['users']} users, {last['pages']} pages, "
            f"{last['graphRequests']} Graph requests"
        )

        say("==> POST /api/sync, then the queue trigger runs it (incremental: nothing changed)")
        accepted = host.http("POST", "/api/sync", key=host.function_key)
        say(f"    {accepted.status} {accepted.body.decode()}")
        host.run_queue("user_sync_queue")
        last = summary(host.http("GET", "/api/sync/status", key=host.function_key).json())
        say(
            f"    {last['mode']} sync {last['status']}: +{last['added']} ~{last['updated']} -{last['removed']}, "
            f"{last['graphRequests']} Graph request(s)"
        )

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
            say(
                f"The emulator and Azurite keep running ({emulator.url}); in another terminal: func start "
                "(its settings: --write-local-settings, or copy .run/local.settings.emulator.json). "
                "Ctrl-C stops them."
            )
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
