"""The worker side of the runtime harness: a Functions Python worker process.

Started by ``devtools.harness.RuntimeHost`` as ``python worker.py APP_DIR``. It
reads the host's ``StreamingMessage``s (one base64 line each) on stdin, hands
them to ``azure_functions_runtime.handle_event`` exactly as the proxy worker
does in Azure, and writes each response as a ``StreamingMessage`` line on the
protocol pipe. Invocations run concurrently, as in the real worker.

This file imports nothing from the repository: the generated
protobuf classes ship in ``azure-functions-runtime-v1`` as a top-level package
that is also called ``tests``, so they are loaded under another name.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
import threading
import types
from typing import Any

PROTOS_PACKAGE = "_functions_host_protos"

# Each request kind the host sends, and the field of its response.
RESPONSES = {
    "worker_init_request": "worker_init_response",
    "functions_metadata_request": "function_metadata_response",
    "function_load_request": "function_load_response",
    "invocation_request": "invocation_response",
}


def load_protos() -> Any:
    """The host's generated ``FunctionRpc_pb2`` module, imported without clashing with any ``tests`` package."""
    if PROTOS_PACKAGE not in sys.modules:
        directory = importlib.metadata.distribution("azure-functions-runtime-v1").locate_file("tests/protos")
        package = types.ModuleType(PROTOS_PACKAGE)
        package.__path__ = [str(directory)]
        sys.modules[PROTOS_PACKAGE] = package
    return importlib.import_module(f"{PROTOS_PACKAGE}.FunctionRpc_pb2")


class _Request:
    """What ``handle_event`` functions take: the message and the host's properties."""

    def __init__(self, message: Any, protos: Any) -> None:
        self.request = message
        self.properties = {"protos": protos, "host": "127.0.0.1"}


def main(app_dir: str) -> None:
    # The protocol gets its own copy of stdout; print() in user code goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    # The host ends the worker by closing its stdin; a Ctrl-C meant for the
    # terminal's foreground job (./scripts/serve) must not kill it mid-invocation.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.chdir(app_dir)
    sys.path.insert(0, app_dir)

    protos = load_protos()
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.utils.threadpool import start_threadpool_executor

    start_threadpool_executor()
    loop = asyncio.new_event_loop()
    write_lock = threading.Lock()

    async def handle(line: str) -> None:
        message = protos.StreamingMessage.FromString(base64.b64decode(line))
        kind = message.WhichOneof("content")
        response = await getattr(handle_event, kind)(_Request(message, protos))
        out = protos.StreamingMessage(request_id=message.request_id, **{RESPONSES[kind]: response})
        with write_lock:
            protocol.write(base64.b64encode(out.SerializeToString()).decode() + "\n")

    def read_stdin() -> None:
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(handle(line.strip()), loop)
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=read_stdin, daemon=True).start()
    loop.run_forever()


if __name__ == "__main__":
    main(sys.argv[1])
