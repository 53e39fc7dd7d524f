"""The runtime harness's worker, with each invocation's CPU counted by the worker itself.

    python bench/worker_cpu.py APP_DIR      (started by ``RuntimeHost`` in place of devtools/harness/worker.py)

It runs ``devtools/harness/worker.py`` unchanged, with ``handle_event.invocation_request``
wrapped: the process's CPU time (all threads: the event loop and the thread pool that
runs the function) is read just before the runtime gets the invocation and just after
it returns the ``InvocationResponse``. What the harness adds around that (decoding the
host's line, serialising and base64-encoding the answer onto the pipe) is outside the
window, and so is the harness's own process. Invocations must be sent one at a time
for the window to hold only one.

After each invocation the running totals are written as JSON to the file named by
``BENCH_WORKER_CPU``: ``{"invocations": n, "cpu_s": s, "function_cpu_s": f}``, where
``f`` is the part spent in the function itself (its thread's CPU time). With ``BENCH_WORKER_PROFILE``
set to a path, the invocations after the first ``BENCH_WORKER_PROFILE_SKIP`` (warm-up)
are also profiled with cProfile (which, on Python 3.12 and later, sees every thread; timed in each thread's CPU time) and
the stats are dumped there after each one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HARNESS_WORKER = Path(__file__).resolve().parents[1] / "devtools" / "harness" / "worker.py"


def main(app_dir: str) -> None:
    from azure_functions_runtime import handle_event

    out = Path(os.environ["BENCH_WORKER_CPU"])
    profile_path = os.environ.get("BENCH_WORKER_PROFILE")
    profiler: Any = None
    if profile_path:
        import cProfile

        # Each thread's own CPU time, not wall time: the machine may be shared.
        profiler = cProfile.Profile(time.thread_time)
    skip = int(os.environ.get("BENCH_WORKER_PROFILE_SKIP", "0"))
    inner = handle_event.invocation_request
    totals = {"invocations": 0, "cpu_s": 0.0, "function_cpu_s": 0.0}

    async def invocation_request(request: Any) -> Any:
        profiling = profiler is not None and totals["invocations"] >= skip
        if profiling:
            profiler.enable()
        started = time.process_time()
        response = await inner(request)
        cpu = time.process_time() - started
        if profiling:
            profiler.disable()
            profiler.dump_stats(profile_path)
        totals["invocations"] += 1
        totals["cpu_s"] += cpu
        out.write_text(json.dumps(totals))
        return response

    inner_sync = handle_event.run_sync_func

    def run_sync_func(*args: Any) -> Any:
        # The function's own share, in the pool thread that runs it: the rest is the runtime's.
        started = time.thread_time()
        try:
            return inner_sync(*args)
        finally:
            totals["function_cpu_s"] += time.thread_time() - started

    handle_event.invocation_request = invocation_request
    handle_event.run_sync_func = run_sync_func
    # The harness worker is loaded from its file: it is a script, not a module of the devtools package.
    spec = importlib.util.spec_from_file_location("_harness_worker", HARNESS_WORKER)
    assert spec is not None and spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.main(app_dir)


if __name__ == "__main__":
    main(sys.argv[1])
