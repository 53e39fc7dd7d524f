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

It answers only to its own Host (127.0.0.1:<port> or localhost:<port>; 403 to any
other, which a web page using DNS rebinding would send), answers every error it
produces itself as the API's JSON error (404 no such route, 405 wrong method,
413 a body over 64 KiB, unread; 414 a URL over 4 KB), and serves the API's page at
/docs (openapi.yaml rendered by Swagger UI from node_modules, offline).

Leaves behind: .run/serve-worker.log (the app's full log; the terminal gets one
line per request), .run/emulator.log, the storage under .run/azurite (emulated
tenant) or .run/azurite-real (--real with UseDevelopmentStorage=true), kept for
the next start (--clean empties it first, --in-memory keeps nothing; read it with
./scripts/snapshot) and, with the emulator, .run/local.settings.emulator.json (the
settings it ran with). local.settings.json is only ever read. Ctrl-C or SIGTERM
stops every process it started, within 10 s.
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


class _HashUserKeys(logging.Filter):
    """Hashes user keys in a record's message (werkzeug's request lines), as the app's own logs do."""

    def filter(self, record: logging.LogRecord) -> bool:
        from graphusers.transport import hash_user_keys

        try:
            record.msg, record.args = hash_user_keys(record.getMessage()), None
        except Exception:  # a record that does not format is logging's to report, not the filter's
            pass
        return True


# Key Vault DNS suffixes per cloud.
# https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#dns-suffixes-for-object-identifiers
VAULT_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".vault.microsoftazure.de")
# The host refuses URLs longer than 4 KB; serve is no kinder.
# https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger#limits
MAX_URL_BYTES = 4096
# The host reads bodies up to 100 MB (same page); no function of this app takes more than
# the API's cap (graphusers.api.MAX_BODY_BYTES), so serve reads no further than that.
MAX_BODY_BYTES = 65536
# Swagger UI's files (swagger-ui-dist, pinned in package-lock.json) that /docs serves, and nothing else.
SWAGGER_UI = ROOT / "node_modules" / "swagger-ui-dist"
DOCS_ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>graphusers HTTP API</title>
<link rel="icon" href="/docs/favicon-32x32.png">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/docs.js"></script>
</body>
</html>
"""
# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
# "Try it out" sends to this server, whatever port it runs on (openapi.yaml's server is :7071).
DOCS_SCRIPT = """window.ui = SwaggerUIBundle({
  url: "/api/openapi.yaml",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  docExpansion: "list",
  deepLinking: true,
  requestInterceptor: (request) => {
    request.url = request.url.replace(/^http:\\/\\/127\\.0\\.0\\.1:7071(?=\\/)/, window.location.origin);
    return request;
  },
});
"""
# The page may load only what this server sends: nothing from the network, no inline script.
DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The runtime logs one line per invocation; serve's own request line says the same and more.
_INVOCATION_LINE = re.compile(r" azure\.functions: Function name: \w+, Function Type: \w+\s*$")


def local_hosts(port: int) -> set[str]:
    """The Host header values this server answers to: its own address, by IP and by name.

    Anything else is refused with 403: a web page can point a name it controls at 127.0.0.1
    (DNS rebinding) and read the answers, which with --real are the real tenant's users.
    Add to ``Serve.allowed_hosts`` (or pass --allow-host) for a caller that must reach this
    server under another name, such as a tunnel for Graph's change notifications.
    """
    return {f"127.0.0.1:{port}", f"localhost:{port}"}


def json_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Any:
    """A Werkzeug response with the API's one error shape."""
    from werkzeug.wrappers import Response

    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(body, status=status, headers=dict(headers or {}), content_type="application/json; charset=utf-8")


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
        # Host header values answered (local_hosts, set once the port is bound, and --allow-host).
        self.allowed_hosts: set[str] = set()
        self.port = args.port

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
                self.azurite = self._azurite()
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
        self.azurite = self._azurite()
        logger.info("Azurite: blob :%d, queue :%d", self.azurite.blob_port, self.azurite.queue_port)
        settings = {**self.emulator.settings, "AzureWebJobsStorage": self.azurite.connection_string}
        write_settings_file(EMULATOR_SETTINGS, settings)
        logger.info("Settings in %s (local.settings.json is not touched)", EMULATOR_SETTINGS.relative_to(ROOT))
        return settings

    def _azurite(self) -> Azurite:
        """Azurite with its data in memory (--in-memory) or kept in the data folder (--clean empties it first)."""
        args = self.args
        if args.in_memory:
            return Azurite()
        location: Path = args.data_dir or RUN / ("azurite-real" if args.real else "azurite")
        if args.clean and location.exists():
            # Only a folder Azurite made (or an empty one): --data-dir might name anything.
            if any(location.iterdir()) and not (location / "__azurite_db_blob__.json").exists():
                raise SystemExit(f"--clean: {location} does not look like Azurite's data folder; not emptying it")
            shutil.rmtree(location)
            logger.info("Emptied %s (--clean): no snapshot, status or queued sync from earlier runs", _shown(location))
        azurite = Azurite(location)
        logger.info("Storage kept in %s between starts (--clean empties it, --in-memory keeps nothing)", _shown(location))
        return azurite

    def start(self) -> None:
        from werkzeug.serving import make_server

        RUN.mkdir(exist_ok=True)
        # Bind first: a port in use is the most common start-up failure, and cheap to find.
        try:
            self.server = make_server("127.0.0.1", self.args.port, self.wsgi, threaded=True, request_handler=_quiet_handler())
        except OSError as exc:
            raise SystemExit(
                f"Port {self.args.port} is in use ({exc.strerror}): stop what listens there (func start?) or pass --port"
            ) from exc
        self.port = int(self.server.server_port)
        self.allowed_hosts = local_hosts(self.port) | {h.lower() for h in self.args.allow_host}
        base = f"http://127.0.0.1:{self.port}"
        settings = self.settings()
        # Change notifications are off unless the caller's environment turns them on (docs/sync.md).
        settings.update({k: v for k, v in os.environ.items() if k.startswith("NOTIFICATIONS_")})
        logger.info("Starting a Functions Python worker (azure-functions-runtime) on function_app.py")
        self.host = RuntimeHost(
            ROOT,
            settings,
            log_path=RUN / "serve-worker.log",
            enforce_keys=False,
            base_url=f"http://localhost:{self.port}",
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
        say(f"The API, rendered from openapi.yaml: {base}/docs. Requests for every endpoint: api.http.")
        if self.emulator is not None:
            control = f"curl -s --cacert {_shown(Path(self.emulator.ca))} -X POST {self.emulator.url}/_emulator/users -d"
            say("Change the emulated tenant, then POST /api/sync to see an incremental sync pick it up:")
            say(f"    {control} '{{\"add\": 1}}'      # a new user")
            say(f"    {control} '{{\"update\": 1}}'   # the first user's jobTitle changes")
            say(f"    {control} '{{\"remove\": 1}}'   # the last user is deleted")
        if self.azurite is not None and self.azurite.location is not None:
            where = "" if self.args.data_dir is None else f" --data-dir {_shown(self.azurite.location)}"
            where = where or (" --real" if self.args.real else "")
            say(f"The snapshot (users.jsonl, the newest changes/, status.json): ./scripts/snapshot{where}")
        say("Ctrl-C stops.")
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
        started = time.perf_counter()
        try:
            route, response = self.answer(environ)
        except Exception:  # Werkzeug would answer its own HTML 500
            logger.exception("serve failed to answer a request")
            route, response = "(serve failed)", json_error(500, "internal_error", "./scripts/serve failed; see its log.")
        # One line per request: the route template, never the path or query (ids, UPNs, filters).
        method = environ.get("REQUEST_METHOD", "")
        logger.info(
            "%s %s %d (%.0f ms)",
            method if method.isalpha() and len(method) <= 10 else "(method?)",
            route,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response(environ, start_response)

    def answer(self, environ: dict[str, Any]) -> tuple[str, Any]:
        """The route template (for the log) and the response, as the host would give it; every error as JSON."""
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        if str(environ.get("HTTP_HOST", "")).lower() not in self.allowed_hosts:
            allowed = " or ".join(sorted(local_hosts(self.port)))
            return "(foreign Host)", json_error(
                403,
                "host_not_allowed",
                f"This server answers only to Host {allowed}: open it by that address. (A page reached "
                "through another name could be a DNS-rebinding attack; --allow-host adds a name.)",
            )
        raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path)
        if len(raw_uri.encode("latin-1", "replace")) > MAX_URL_BYTES:
            return "(URL too long)", json_error(
                414, "uri_too_long", f"The URL is longer than {MAX_URL_BYTES} bytes, the Functions host's limit."
            )
        if request.path == "/docs" or request.path.startswith("/docs/"):
            return self._docs(request)
        assert self.host is not None
        fn, allowed_methods = self._route(request.method, request.path)
        if fn is None:
            if allowed_methods:
                return "(wrong method)", json_error(
                    405,
                    "method_not_allowed",
                    f"This route takes {', '.join(allowed_methods)}, not {request.method[:10]}.",
                    {"Allow": ", ".join(allowed_methods)},
                )
            routes = ", ".join(f"/api/{f.trigger['route']}" for f in self._http_functions())
            return "(no route)", json_error(404, "not_found", f"No function serves this path. Routes: {routes}; see /docs.")
        route = f"/api/{fn.trigger['route']}"
        body, unreadable = self._read_body(request)
        if unreadable is not None:
            return route, unreadable
        if body is None:
            return route, json_error(
                413,
                "payload_too_large",
                f"The body is larger than {MAX_BODY_BYTES} bytes; it was not read.",
                {"Connection": "close"},
            )
        try:
            result = self.host.http(
                request.method,
                request.path,
                query=dict(request.args.items()),
                headers=dict(request.headers.items()),
                body=body,
                raw_query=environ.get("QUERY_STRING", ""),
            )
        except HarnessError as exc:
            # The host answers 500 with no body when a function raises; serve says where to look.
            logger.error("%s %s failed in the runtime: %s", request.method, route, str(exc).splitlines()[0])
            return route, json_error(500, "internal_error", "The function failed in the runtime; see .run/serve-worker.log.")
        return route, Response(result.body, status=result.status, headers=list(result.headers.items()))

    def _http_functions(self) -> list[Any]:
        assert self.host is not None
        return [fn for fn in self.host.functions.values() if fn.route_regex is not None]

    def _route(self, method: str, path: str) -> tuple[Any, list[str]]:
        """The function that serves ``method path``, or None and the methods the path's functions take."""
        allowed: list[str] = []
        for fn in self._http_functions():
            if fn.route_regex.match(path):
                methods = [m.upper() for m in fn.trigger.get("methods") or []]
                if not methods or method.upper() in methods:
                    return fn, []
                allowed += methods
        return None, sorted(set(allowed))

    @staticmethod
    def _body(request: Any) -> bytes | None:
        """The body, or None when it is over MAX_BODY_BYTES; never reads more than MAX_BODY_BYTES + 1 bytes."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return None  # refused from the header alone
        data = bytes(request.stream.read(MAX_BODY_BYTES + 1))
        return None if len(data) > MAX_BODY_BYTES else data

    def _read_body(self, request: Any) -> tuple[bytes | None, Any]:
        """The body (None: over the cap), or the JSON error when it cannot be read (a broken chunked body, a disconnect)."""
        from werkzeug.exceptions import HTTPException

        try:
            return self._body(request), None
        except (OSError, ValueError, HTTPException) as exc:
            return None, json_error(400, "invalid_request", f"The request body could not be read ({type(exc).__name__}).")

    def _docs(self, request: Any) -> tuple[str, Any]:
        """/docs: the API page; /docs/<file>: its script, Swagger UI's files. Nothing else under /docs."""
        from werkzeug.wrappers import Response

        if request.method not in ("GET", "HEAD"):
            return "/docs", json_error(405, "method_not_allowed", "/docs takes GET.", {"Allow": "GET, HEAD"})
        name = request.path.removeprefix("/docs").strip("/")
        headers = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"}
        if name == "":
            return "/docs", Response(DOCS_PAGE, headers=headers, content_type="text/html; charset=utf-8")
        if name == "docs.js":
            return "/docs/docs.js", Response(DOCS_SCRIPT, headers=headers, content_type="text/javascript; charset=utf-8")
        if name in DOCS_ASSETS:
            path = SWAGGER_UI / name
            if not path.exists():
                return "/docs/{file}", json_error(
                    503, "docs_not_installed", f"Swagger UI is not installed ({_shown(path)}): run npm ci."
                )
            return "/docs/{file}", Response(path.read_bytes(), headers=headers, content_type=DOCS_ASSETS[name])
        return "/docs/{file}", json_error(404, "not_found", "No such file under /docs.")

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
    """A worker log line for the terminal: no ANSI codes unless it is one, no per-invocation line, a short indexing line.

    .run/serve-worker.log keeps every line as the worker wrote it.
    """
    if not sys.stdout.isatty():
        line = _ANSI.sub("", line)
    if _INVOCATION_LINE.search(line):
        return
    say(f"[worker] {summarise_indexing(line)}")


def summarise_indexing(line: str) -> str:
    """The runtime's "Successfully indexed function app" line (2,000 characters of bindings) in one short line."""
    marker = "azure.functions: "
    head, sep, rest = line.partition(marker)
    if not sep or "Successfully indexed function app" not in rest or len(line) < 300:
        return line
    try:
        count = int(json.loads(rest).get("function_count", 0))
    except (ValueError, AttributeError):
        count = len(set(re.findall(r"Function Name: (\w+)", rest)))
    return f"{head}{marker}Successfully indexed function app: {count} functions (bindings in .run/serve-worker.log)"


def _shown(path: Path) -> str:
    """``path`` relative to the project root when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _quiet_handler() -> type:
    from werkzeug.serving import WSGIRequestHandler

    class QuietRequestHandler(WSGIRequestHandler):
        """Werkzeug's handler without its access log (full URLs, ANSI colours): Serve.wsgi logs each request."""

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals (a malformed request line, one over 64 KB) as the API's JSON error.

            Its message quotes the request line, which may hold an id or a UPN: neither the
            answer nor the log repeats it.
            """
            short = self.responses.get(code, ("Error", ""))[0]
            logger.info("(unparsable request) %d", code)
            slug = "uri_too_long" if code == 414 else re.sub(r"\W+", "_", short.lower()).strip("_")
            body = json.dumps({"error": {"code": slug, "message": f"{short}: the request could not be parsed."}}).encode()
            # An unparsed request line leaves http.server at HTTP/0.9, which sends no status line or headers.
            self.request_version = "HTTP/1.0" if self.request_version == "HTTP/0.9" else self.request_version
            self.send_response(code, short)
            self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return QuietRequestHandler


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
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where Azurite keeps the storage between starts (default .run/azurite, or .run/azurite-real with --real)",
    )
    parser.add_argument("--clean", action="store_true", help="empty the storage folder first: start with no snapshot")
    parser.add_argument("--in-memory", action="store_true", help="keep the storage in memory only, gone at stop")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="also answer requests with this Host header (default: only 127.0.0.1:<port> and localhost:<port>)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # azure-core logs each storage request's headers at INFO; the queue listener polls often.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    # werkzeug's access log names each request's path: a UPN in /api/users/{id} is personal data.
    logging.getLogger("werkzeug").addFilter(_HashUserKeys())
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
