"""./scripts/serve: the function app on http://127.0.0.1:7071, as `func start` runs it, without Core Tools.

Runs the functions on the real Functions Python runtime (azure-functions-runtime,
in a worker process driven with the host's messages) behind a Werkzeug HTTP
server, and does locally what the Functions host does:

  * every HTTP route at the same URL, function keys not enforced (as Core Tools
    does locally), the runtime's own status, headers and body;
  * the timer on its NCRONTAB schedule (--no-timer: never; --run-timer-now: once at start);
  * the sync queue from Azurite: base64 messages, dequeue count, retries, and the
    <queue>-poison queue after host.json's maxDequeueCount (5) failures.

Starts: by default the emulated tenant (python -m emulator) and Azurite; with
--real, no emulator: the settings come from local.settings.json and Key Vault is
read with your Azure login (az login), and Azurite is started only when
AzureWebJobsStorage is UseDevelopmentStorage=true.

Leaves behind: .run/serve-worker.log (the app's log), .run/emulator.log and, with
the emulator, .run/local.settings.emulator.json (the settings it ran with).
local.settings.json is only ever read. Ctrl-C or SIGTERM stops every process it
started, within 10 s.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from devtools.azurite import Azurite
from devtools.emulator_process import EmulatorProcess
from devtools.harness import HarnessError, RuntimeHost, timespan_seconds
from devtools.ncrontab import Schedule
from devtools.processes import script_parser

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"
EMULATOR_SETTINGS = RUN / "local.settings.emulator.json"

logger = logging.getLogger("serve")

# Key Vault DNS suffixes per cloud.
# https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#dns-suffixes-for-object-identifiers
VAULT_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".vault.microsoftazure.de")
# The host refuses URLs longer than 4 KB; serve is no kinder.
# https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger#limits
MAX_URL_BYTES = 4096
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def write_settings_file(path: Path, settings: Mapping[str, str]) -> Path:
    """Write a local.settings.json-shaped file with these values."""
    values = {"FUNCTIONS_WORKER_RUNTIME": "python", **settings}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2) + "\n")
    return path


# -- real-tenant mode: check the settings before starting anything ----------


def run_az(*args: str) -> tuple[int, str]:
    """Run the Azure CLI; (exit code, stdout or stderr). 127 when it is not installed."""
    az = shutil.which("az")
    if az is None:
        return 127, "az: not found"
    try:
        done = subprocess.run([az, *args], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return 124, "az did not answer within 60 s"
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


def check_real_settings(path: Path, az: Callable[..., tuple[int, str]] = run_az) -> tuple[dict[str, str], list[str]]:
    """The settings in ``path`` and the problems that would stop a real-tenant run, each with its fix."""
    if not path.exists():
        return {}, [
            f"{path.name} does not exist: cp local.settings.example.json {path.name}, then fill in "
            "GRAPH_TENANT_ID, GRAPH_CLIENT_ID and KEY_VAULT_URL (docs/real-tenant.md)"
        ]
    try:
        values = {str(k): str(v) for k, v in json.loads(path.read_text()).get("Values", {}).items()}
    except (ValueError, AttributeError) as exc:
        return {}, [f"{path.name} is not valid JSON ({exc}): fix it, or copy local.settings.example.json again"]
    from graphusers.config import load_settings, placeholder_problem
    from graphusers.errors import ConfigError

    # Every value, not only those load_settings reads: the worker and the host read the rest.
    problems = [
        f"{name} in {path.name} {problem}"
        for name, value in values.items()
        if (problem := placeholder_problem(name, value)) is not None
    ]
    if problems:
        return values, problems

    try:
        settings = load_settings(values)
    except ConfigError as exc:
        return values, [f"{path.name}: {exc.message}"]
    if settings.key_vault_url:
        host = settings.key_vault_url.split("/")[2].split(":")[0].lower()
        if not host.endswith(VAULT_SUFFIXES):
            problems.append(
                f"KEY_VAULT_URL={settings.key_vault_url!r} is not a Key Vault URL: use the vault's 'Vault URI' "
                "(az keyvault show --name <vault> --query properties.vaultUri -o tsv), e.g. https://<vault>.vault.azure.net/"
            )
    if values.get("AZURE_CLIENT_SECRET") or values.get("AZURE_FEDERATED_TOKEN_FILE"):
        return values, problems  # a service principal signs in to Key Vault, not the developer
    code, out = az("account", "show", "--output", "json")
    if code == 127:
        problems.append(
            "The Azure CLI (az) is not installed, and Key Vault needs a sign-in: install it "
            "(https://learn.microsoft.com/cli/azure/install-azure-cli), then az login --tenant "
            f"{settings.tenant_id}"
        )
    elif code != 0:
        problems.append(f"You are not logged in with the Azure CLI: run az login --tenant {settings.tenant_id}")
    else:
        account = json.loads(out)
        tenant = str(account.get("tenantId", ""))
        if _GUID.match(settings.tenant_id) and tenant.lower() != settings.tenant_id.lower():
            problems.append(
                f"az is logged in to tenant {tenant}, but GRAPH_TENANT_ID is {settings.tenant_id}: "
                f"run az login --tenant {settings.tenant_id}"
            )
    return values, problems


# -- the host's loops ---------------------------------------------------------


class Serve:
    """The running app: worker, HTTP server, timer and queue loops, and the processes they need."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = threading.Event()
        self.emulator: EmulatorProcess | None = None
        self.azurite: Azurite | None = None
        self.host: RuntimeHost | None = None
        self.server: Any = None
        self.threads: list[threading.Thread] = []
        self._queue_wake: dict[str, threading.Event] = {}

    # -- start --------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        args = self.args
        if args.real:
            values, problems = check_real_settings(args.settings)
            if problems:
                for problem in problems:
                    logger.error("%s", problem)
                raise SystemExit(2)
            if values.get("AzureWebJobsStorage", "").replace(" ", "") in ("UseDevelopmentStorage=true", ""):
                self.azurite = Azurite()
                logger.info(
                    "Azurite (blob :%d, queue :%d) stands in for UseDevelopmentStorage=true",
                    self.azurite.blob_port,
                    self.azurite.queue_port,
                )
                values["AzureWebJobsStorage"] = self.azurite.connection_string
            return values
        logger.info("Starting the emulated tenant with %d synthetic users", args.users)
        self.emulator = EmulatorProcess(args.users, state_dir=RUN / "emulator", log_path=RUN / "emulator.log")
        self.emulator.start()
        logger.info("Entra, managed identity, Key Vault and Graph at %s", self.emulator.url)
        self.azurite = Azurite()
        logger.info("Azurite: blob :%d, queue :%d", self.azurite.blob_port, self.azurite.queue_port)
        settings = {**self.emulator.settings, "AzureWebJobsStorage": self.azurite.connection_string}
        write_settings_file(EMULATOR_SETTINGS, settings)
        logger.info("Settings in %s (local.settings.json is not touched)", EMULATOR_SETTINGS.relative_to(ROOT))
        return settings

    def start(self) -> None:
        from werkzeug.serving import make_server

        RUN.mkdir(exist_ok=True)
        base = f"http://127.0.0.1:{self.args.port}"
        # Bind first: a port in use is the most common start-up failure, and cheap to find.
        try:
            self.server = make_server("127.0.0.1", self.args.port, self.wsgi, threaded=True)
        except OSError as exc:
            raise SystemExit(
                f"Port {self.args.port} is in use ({exc.strerror}): stop what listens there (func start?) or pass --port"
            ) from exc
        settings = self.settings()
        logger.info("Starting a Functions Python worker (azure-functions-runtime) on function_app.py")
        self.host = RuntimeHost(
            ROOT,
            settings,
            log_path=RUN / "serve-worker.log",
            enforce_keys=False,
            base_url=f"http://localhost:{self.args.port}",
            echo=print_line,
        )
        self.host.on_enqueue = self._wake_queue
        self.host.start()
        self._spawn(self.server.serve_forever, "http")
        say("")
        say(f"Functions ({'real tenant' if self.args.real else 'emulated tenant'}):")
        for fn in self.host.functions.values():
            trig = fn.trigger
            if trig["type"] == "httpTrigger":
                say(f"    {fn.name}: [{','.join(trig['methods'])}] {base}/api/{trig['route']}")
            elif trig["type"] == "queueTrigger":
                say(f"    {fn.name}: queueTrigger on {trig['queueName']!r}")
                self._spawn(functools.partial(self._queue_loop, fn.name, trig["queueName"]), fn.name)
            elif trig["type"] == "timerTrigger":
                state = "off (--no-timer)" if self.args.no_timer else "on"
                say(f"    {fn.name}: timerTrigger {trig['schedule']!r} ({state})")
                if not self.args.no_timer or self.args.run_timer_now:
                    self._spawn(functools.partial(self._timer_loop, fn.name, trig["schedule"]), fn.name)
        say("")
        say("Try:")
        say(f"    curl -s '{base}/api/users?top=3'")
        say(f"    curl -s -X POST {base}/api/sync && curl -s {base}/api/sync/status")
        say("Requests for every endpoint: api.http. Ctrl-C stops.")
        say("")
        if self.args.real:
            self._probe()

    def _probe(self) -> None:
        """One first request in real-tenant mode, so that a wrong setting shows now, not at the first curl."""
        assert self.host is not None
        result = self.host.http("GET", "/api/users", query={"top": "1"})
        if result.status == 200:
            logger.info("First request GET /api/users?top=1 answered 200: the real tenant is reachable")
        else:
            logger.error(
                "First request GET /api/users?top=1 answered %d %s; the log lines above name the setting or permission to fix",
                result.status,
                result.body.decode(errors="replace")[:300],
            )

    def _spawn(self, target: Callable[[], object], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    # -- HTTP -----------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        assert self.host is not None
        if len(request.full_path.encode()) > MAX_URL_BYTES:
            return Response(b"", status=414)(environ, start_response)
        try:
            result = self.host.http(
                request.method,
                request.path,
                query=dict(request.args.items()),
                headers=dict(request.headers.items()),
                body=request.get_data(),
            )
            response = Response(result.body, status=result.status, headers=list(result.headers.items()))
        except HarnessError as exc:
            # The host answers 500 with no body when a function raises.
            logger.error("%s %s failed in the runtime: %s", request.method, request.path, exc)
            response = Response(b"", status=500)
        return response(environ, start_response)

    # -- timer and queue ----------------------------------------------------

    def _timer_loop(self, name: str, expression: str) -> None:
        assert self.host is not None
        if self.args.run_timer_now:
            self._fire(name)
        if self.args.no_timer:
            return
        schedule = Schedule(expression)
        while True:
            due = schedule.next_after(datetime.now().astimezone())
            logger.info("Timer %s: next run at %s", name, due.isoformat(timespec="seconds"))
            if self.stopping.wait(max(0.0, (due - datetime.now().astimezone()).total_seconds())):
                return
            self._fire(name)

    def _fire(self, name: str) -> None:
        assert self.host is not None
        try:
            self.host.timer(name)
        except HarnessError as exc:
            logger.error("Timer %s failed: %s", name, str(exc).splitlines()[0])

    def _wake_queue(self, queue: str) -> None:
        event = self._queue_wake.get(queue)
        if event is not None:
            event.set()

    def _queue_loop(self, name: str, queue: str) -> None:
        """Poll like the host's queue listener: 100 ms after a message, then back off to maxPollingInterval.

        A message the app itself enqueued (an output binding) wakes the listener at once, as in the host.
        https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#polling-algorithm
        """
        assert self.host is not None
        wake = self._queue_wake.setdefault(queue, threading.Event())
        longest = timespan_seconds(self.host.queue_settings["maxPollingInterval"])
        delay = 0.0
        while not self.stopping.is_set():
            try:
                handled = self.host.run_queue(name)
            except HarnessError as exc:
                logger.error("Queue %s: %s failed: %s", queue, name, str(exc).splitlines()[0])
                handled = 1
            except Exception as exc:  # storage down: keep polling, as the host does
                logger.warning("Queue %s: polling failed: %s", queue, exc)
                handled = 0
            delay = 0.1 if handled else min(longest, max(0.2, delay * 2))
            wake.wait(delay)
            wake.clear()

    # -- stop -------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        for event in self._queue_wake.values():
            event.set()
        if self.server is not None:
            # shutdown() waits for serve_forever(), which never ran if start-up failed before it.
            if any(t.name == "http" for t in self.threads):
                self.server.shutdown()
            self.server.server_close()
        if self.host is not None:
            self.host.stop()
        if self.azurite is not None:
            self.azurite.stop()
        if self.emulator is not None:
            self.emulator.stop()


_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def print_line(line: str) -> None:
    say(f"[worker] {line}")


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("scripts/serve", __doc__)
    parser.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1 (default 7071, as func start)")
    parser.add_argument(
        "--real", action="store_true", help="use local.settings.json and your Azure login instead of the emulator"
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=ROOT / "local.settings.json",
        help="with --real: the settings file (default local.settings.json)",
    )
    parser.add_argument("--no-timer", action="store_true", help="do not run the timer on its schedule")
    parser.add_argument("--run-timer-now", action="store_true", help="run the timer once at start")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # azure-core logs each storage request's headers at INFO; the queue listener polls often.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both end in the finally block below, which stops what was started.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serve = Serve(args)
    try:
        serve.start()
        while not stop.wait(1):
            pass
        logger.info("Stopping")
        return 0
    except (RuntimeError, HarnessError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        started = time.monotonic()
        serve.stop()
        logger.info("Stopped everything it started (%.1f s)", time.monotonic() - started)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
