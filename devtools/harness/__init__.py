"""A runtime harness: run the function app on the real Functions Python runtime, as the host does.

``RuntimeHost`` plays the Functions host. It starts a fresh worker process
(``worker.py``) that runs ``azure_functions_runtime`` - the package
``requirements.txt`` pins and production loads - and drives it with the host's
protobuf messages: ``worker_init_request`` (which indexes the app),
``functions_metadata_request``, ``function_load_request`` for each function,
then ``invocation_request``s. HTTP calls are routed by the route templates the
indexing returned, with method, query, headers, route parameters and body as
the host sends them, and function keys are checked per the auth level (or not,
as Core Tools runs locally: ``enforce_keys=False``). Queue triggers are fed as
the host's queue extension does: by ``host.json``'s ``extensions.queues``
(message encoding, batch size, visibility timeout, and the poison queue after
``maxDequeueCount`` failed dequeues).

    with RuntimeHost(APP_DIR, env) as host:
        resp = host.http("GET", "/api/users", query={"top": "5"}, key=host.function_key)
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.processes import Started, end_process

from .worker import load_protos

WORKER = Path(__file__).with_name("worker.py")
# Every worker log written in this process, for the suite's check that no secret reaches a log.
WORKER_LOGS: list[Path] = []
# (method, path, answer) of every routed HTTP call, for the suite's check against openapi.yaml.
HTTP_RESULTS: list[tuple[str, str, HttpResult]] = []


# The queue extension's defaults, which host.json's extensions.queues overrides.
# https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#host-json
QUEUE_DEFAULTS: dict[str, Any] = {
    "maxPollingInterval": "00:01:00",
    "visibilityTimeout": "00:00:00",
    "batchSize": 16,
    "maxDequeueCount": 5,
    "messageEncoding": "base64",
}


def timespan_seconds(value: str | float) -> float:
    """Seconds in a host.json timespan ("hh:mm:ss" or "d.hh:mm:ss") or a number of milliseconds."""
    if isinstance(value, int | float):
        return float(value) / 1000
    days, clock = ("0", value)
    if "." in value.split(":")[0]:
        days, clock = value.split(".", 1)
    hours, minutes, seconds = (float(part) for part in clock.split(":"))
    return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds


class HarnessError(RuntimeError):
    """The runtime reported a failure (its own message and stack trace are in the text)."""


@dataclass
class Function:
    """One indexed function and its bindings as the runtime reported them."""

    name: str
    function_id: str
    bindings: list[dict[str, Any]]
    metadata: Any = field(repr=False)

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if b["type"].endswith("Trigger"))

    @property
    def route_regex(self) -> re.Pattern[str] | None:
        if self.trigger["type"] != "httpTrigger":
            return None
        template = self.trigger.get("route") or self.name
        # Literal parts match as written ("openapi.yaml": the dot is a dot), parameters one segment.
        parts = re.split(r"(\{\w+(?::[^}]*)?\??\})", template.strip("/"))
        pattern = "".join(
            re.sub(r"^\{(\w+).*\}$", r"(?P<\1>[^/]+)", part) if part.startswith("{") else re.escape(part) for part in parts
        )
        return re.compile(f"^/api/{pattern}$")


@dataclass
class HttpResult:
    """An HTTP answer as the host would send it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RuntimeHost(Started):
    """Plays the Functions host for one worker process."""

    function_key = "harness-function-key"

    def __init__(
        self,
        app_dir: Path,
        env: dict[str, str],
        log_path: Path | None = None,
        *,
        enforce_keys: bool = True,
        base_url: str = "http://localhost:7071",
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.enforce_keys = enforce_keys
        self.base_url = base_url
        # Each worker log line is also handed to echo (the log file keeps them all).
        self.echo = echo
        # Called with a queue name after an output binding put a message on it
        # (the host's listeners for that queue then poll at once).
        self.on_enqueue: Callable[[str], None] | None = None
        host_json = self.app_dir / "host.json"
        extensions = json.loads(host_json.read_text()).get("extensions", {}) if host_json.exists() else {}
        self.queue_settings = {**QUEUE_DEFAULTS, **extensions.get("queues", {})}
        self.protos = load_protos()
        self.env = env
        self.log_path = log_path
        self.functions: dict[str, Function] = {}
        self._ids = itertools.count(1)
        self._pending: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._queues: dict[tuple[str, str], Any] = {}
        self._log: Any = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> RuntimeHost:
        """Start the worker and run the host's start-up sequence; ``HarnessError`` if indexing fails."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")}
        env.update(self.env)
        env.setdefault("FUNCTIONS_WORKER_RUNTIME", "python")
        if self.log_path is None:
            import tempfile

            self.log_path = Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1])
        WORKER_LOGS.append(self.log_path)
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(self.app_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self.echo is None else subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if self.echo is not None:
            threading.Thread(target=self._tee, daemon=True).start()
        p = self.protos
        init = self._send(
            worker_init_request=p.WorkerInitRequest(
                host_version="4.1040.0",
                function_app_directory=str(self.app_dir),
                worker_directory=str(WORKER.parent),
                capabilities={},
                log_categories={},
            )
        )
        self._check(init.worker_init_response.result, "worker_init_request")
        meta = self._send(functions_metadata_request=p.FunctionsMetadataRequest(function_app_directory=str(self.app_dir)))
        self._check(meta.function_metadata_response.result, "functions_metadata_request")
        for fm in meta.function_metadata_response.function_metadata_results:
            fn = Function(fm.name, fm.function_id, [json.loads(b) for b in fm.raw_bindings], fm)
            load = self._send(function_load_request=p.FunctionLoadRequest(function_id=fm.function_id, metadata=fm))
            self._check(load.function_load_response.result, f"function_load_request({fm.name})")
            self.functions[fn.name] = fn
        return self

    def stop(self) -> None:
        """End the worker process."""
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()  # the worker ends when its stdin closes
            end_process(self._proc, terminate=False)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- invocations --------------------------------------------------------

    def invoke(
        self, name: str, input_data: list[Any], trigger_metadata: dict[str, Any] | None = None, timeout: float = 120
    ) -> Any:
        """Send an invocation_request and return the InvocationResponse; ``HarnessError`` on failure."""
        fn = self.functions[name]
        response = self._send(
            invocation_request=self.protos.InvocationRequest(
                invocation_id=str(uuid.uuid4()),
                function_id=fn.function_id,
                input_data=input_data,
                trigger_metadata=trigger_metadata or {},
            ),
            timeout=timeout,
        ).invocation_response
        self._check(response.result, f"invocation of {name}")
        return response

    def http(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        key: str | None = None,
        raw_query: str | None = None,
    ) -> HttpResult:
        """Route an HTTP request like the host: by route template, method and auth level.

        ``raw_query`` is the query string as the client sent it (repeated names and all): the
        host hands the function the URL as sent, and ``query`` as one value per name.
        """
        p = self.protos
        for fn in self.functions.values():
            match = fn.route_regex.match(path) if fn.route_regex else None
            if match and method.lower() in [m.lower() for m in fn.trigger.get("methods") or [method]]:
                break
        else:
            return HttpResult(404, {}, b"")
        query = dict(query or {})
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if key is not None:
            headers["x-functions-key"] = key
        if self.enforce_keys and fn.trigger.get("authLevel", "function").lower() != "anonymous":
            given = headers.get("x-functions-key") or query.get("code")
            if given != self.function_key:
                return HttpResult(401, {}, b"")
        if raw_query is None:
            raw_query = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"{self.base_url}{path}" + (f"?{raw_query}" if raw_query else "")
        request = p.RpcHttp(
            method=method,
            url=url,
            headers=headers,
            query=query,
            params=match.groupdict(),
            body=p.TypedData(bytes=body) if body else p.TypedData(),
        )
        trigger_name = fn.trigger["name"]
        response = self.invoke(fn.name, [p.ParameterBinding(name=trigger_name, data=p.TypedData(http=request))])
        http = response.return_value.http
        raw = http.body.bytes if http.body.WhichOneof("data") == "bytes" else http.body.string.encode()
        self._deliver_outputs(fn, response)
        result = HttpResult(int(http.status_code or 200), dict(http.headers), raw)
        HTTP_RESULTS.append((method, path, result))
        return result

    # -- the queue extension ------------------------------------------------

    def _queue(self, binding: dict[str, Any], *, decode: bool, queue_name: str | None = None) -> Any:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        # The host's default messageEncoding (host.json) is base64, both ways.
        base64_encoding = str(self.queue_settings["messageEncoding"]).lower() == "base64"
        connection = self.env[binding.get("connection") or "AzureWebJobsStorage"]
        key = (connection, queue_name or binding["queueName"])
        if key in self._queues:
            return self._queues[key]
        client = QueueClient.from_connection_string(
            self.env[binding.get("connection") or "AzureWebJobsStorage"],
            queue_name or binding["queueName"],
            message_encode_policy=TextBase64EncodePolicy() if base64_encoding else None,
            message_decode_policy=TextBase64DecodePolicy() if base64_encoding else None,
        )
        from azure.core.exceptions import ResourceExistsError

        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        self._queues[key] = client
        return client

    def _deliver_outputs(self, fn: Function, response: Any) -> None:
        """Do what the host does with queue output bindings: put the values on their queues."""
        outputs = {b["name"]: b for b in fn.bindings if b["direction"].upper() == "OUT" and b["type"] == "queue"}
        for item in response.output_data:
            binding = outputs.get(item.name)
            if binding is not None:
                kind = item.data.WhichOneof("data")
                text = item.data.bytes.decode() if kind == "bytes" else getattr(item.data, kind)
                self._queue(binding, decode=False).send_message(text)
                if self.on_enqueue is not None:
                    self.on_enqueue(binding["queueName"])

    def run_queue(self, name: str, max_messages: int | None = None) -> int:
        """Deliver waiting messages to a queue-triggered function, as the host polls; returns how many ran.

        A message is deleted when its invocation succeeds. A failed one becomes
        visible again after host.json's ``visibilityTimeout`` for a later
        dequeue, and after ``maxDequeueCount`` dequeues it moves to the
        ``<queue>-poison`` queue instead, as the host does; the first failure
        is raised as ``HarnessError`` once the batch is done.
        https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages
        """
        p = self.protos
        fn = self.functions[name]
        client = self._queue(fn.trigger, decode=True)
        settings = self.queue_settings
        handled = 0
        failure: HarnessError | None = None
        batch = max_messages or int(settings["batchSize"])
        # One batch, fetched before any runs: the pager would otherwise fetch a
        # failed message again as soon as it is visible, within the same call.
        messages = list(client.receive_messages(messages_per_page=batch, max_messages=batch, visibility_timeout=600))
        for message in messages:
            metadata = {
                "Id": p.TypedData(string=message.id),
                "DequeueCount": p.TypedData(json=str(message.dequeue_count)),
                "PopReceipt": p.TypedData(string=message.pop_receipt),
                "InsertionTime": p.TypedData(json=json.dumps(message.inserted_on.isoformat())),
                "ExpirationTime": p.TypedData(json=json.dumps(message.expires_on.isoformat())),
                "NextVisibleTime": p.TypedData(json=json.dumps(message.next_visible_on.isoformat())),
            }
            try:
                self.invoke(
                    name,
                    [p.ParameterBinding(name=fn.trigger["name"], data=p.TypedData(string=message.content))],
                    trigger_metadata=metadata,
                )
            except HarnessError as exc:
                failure = failure or exc
                if message.dequeue_count >= int(settings["maxDequeueCount"]):
                    poison = f"{fn.trigger['queueName']}-poison"
                    self._queue(fn.trigger, decode=False, queue_name=poison).send_message(message.content)
                    client.delete_message(message)
                    self._emit(f"Message {message.id} failed {message.dequeue_count} times; moved to queue {poison}")
                else:
                    client.update_message(message, visibility_timeout=int(timespan_seconds(settings["visibilityTimeout"])))
                continue
            client.delete_message(message)
            handled += 1
        if failure is not None:
            raise failure
        return handled

    def timer(self, name: str, past_due: bool = False) -> Any:
        """Fire a timer trigger as the host does."""
        p = self.protos
        payload = json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": past_due})
        return self.invoke(name, [p.ParameterBinding(name=self.functions[name].trigger["name"], data=p.TypedData(json=payload))])

    # -- plumbing -----------------------------------------------------------

    def _send(self, timeout: float = 120, **content: Any) -> Any:
        assert self._proc is not None and self._proc.stdin is not None
        request_id = str(next(self._ids))
        future: Future[Any] = Future()
        with self._lock:
            self._pending[request_id] = future
            message = self.protos.StreamingMessage(request_id=request_id, **content)
            self._proc.stdin.write(base64.b64encode(message.SerializeToString()).decode() + "\n")
            self._proc.stdin.flush()
        return future.result(timeout=timeout)

    def _emit(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    def _tee(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            if self._log is not None and not self._log.closed:
                self._log.write(line.encode())
                self._log.flush()
            self._emit(line.rstrip("\n"))

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            message = self.protos.StreamingMessage.FromString(base64.b64decode(line))
            with self._lock:
                future = self._pending.pop(message.request_id, None)
            if future is not None:
                future.set_result(message)
        with self._lock:
            for future in self._pending.values():
                future.set_exception(HarnessError("the worker process exited"))
            self._pending.clear()

    def _check(self, result: Any, what: str) -> None:
        if result.status != self.protos.StatusResult.Success:
            raise HarnessError(f"{what} failed in the runtime: {result.exception.message}\n{result.exception.stack_trace}")
