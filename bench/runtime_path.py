"""The listing where production runs: ``GET /api/users`` through the real Functions runtime.

``listing(settings, users)`` starts the runtime harness (``devtools.harness.RuntimeHost``)
with ``bench/worker_cpu.py`` as its worker, warms it up (first token, Key Vault,
imports), then pages ``GET /api/users?top=999`` and its ``nextCursor``s one
invocation at a time until the tenant is listed. CPU is what the worker counted
inside its invocations (the runtime's invocation path and the function, every
thread); the harness's relay (the host side, and the worker's base64 pipe
framing) is not the app's and is left out. The worker process's whole CPU
(``/proc/PID/stat``) is reported beside it, relay included, as a cross-check.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "bench" / "worker_cpu.py"
TOP = "999"


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_host(settings: dict[str, str], extra_env: dict[str, str] | None = None) -> tuple[Any, Path]:
    """A started ``RuntimeHost`` whose worker counts its invocations' CPU, and the file it writes."""
    import devtools.harness as harness

    cpu_file = Path(tempfile.mkstemp(prefix="worker-cpu-", suffix=".json")[1])
    host = harness.RuntimeHost(ROOT, {**settings, "BENCH_WORKER_CPU": str(cpu_file), **(extra_env or {})})
    # RuntimeHost starts the worker it finds in its module's WORKER: this one, for this host only.
    saved, harness.WORKER = harness.WORKER, WORKER
    try:
        host.start()
    finally:
        harness.WORKER = saved
    return host, cpu_file


def _totals(cpu_file: Path) -> dict[str, Any]:
    text = cpu_file.read_text()
    return json.loads(text) if text else {"invocations": 0, "cpu_s": 0.0, "function_cpu_s": 0.0}


def page_all(host: Any, limit: int | None = None) -> tuple[int, int]:
    """Page ``GET /api/users?top=999`` and its cursors to the end (or ``limit`` users); (users, pages)."""
    users = pages = 0
    query: dict[str, str] = {"top": TOP}
    while True:
        resp = host.http("GET", "/api/users", query=query, key=host.function_key)
        if resp.status != 200:
            raise SystemExit(f"GET /api/users answered {resp.status}: {resp.body[:300]!r}")
        body = resp.json()
        users, pages = users + len(body["value"]), pages + 1
        if not body["nextCursor"] or (limit is not None and users >= limit):
            return users, pages
        query = {"cursor": body["nextCursor"]}


def measure(host: Any, cpu_file: Path, limit: int | None = None) -> dict[str, Any]:
    """One full listing through a started host; the same fields as ``bench.clients`` plus the worker's split."""
    pid = host._proc.pid
    before, proc_before = _totals(cpu_file), _proc_cpu(pid)
    wall = time.perf_counter()
    users, pages = page_all(host, limit)
    wall = time.perf_counter() - wall
    after, proc_after = _totals(cpu_file), _proc_cpu(pid)
    if after["invocations"] - before["invocations"] != pages:
        raise SystemExit("the worker counted another number of invocations than were sent")
    return {
        "users": users,
        "pages": pages,
        "wall_s": wall,
        "cpu_s": after["cpu_s"] - before["cpu_s"],
        "function_cpu_s": after["function_cpu_s"] - before["function_cpu_s"],
        "worker_cpu_s": proc_after - proc_before,
    }


class RuntimePath:
    """A warm runtime harness for repeated listings: ``with RuntimePath(settings) as rp: rp.measure()``."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.host, self.cpu_file = start_host(settings)
        try:
            page_all(self.host, limit=3 * int(TOP))  # warm-up: credentials, first token, imports; not measured
        except BaseException:
            self.close()
            raise

    def measure(self, limit: int | None = None) -> dict[str, Any]:
        return measure(self.host, self.cpu_file, limit)

    def close(self) -> None:
        self.host.stop()
        self.cpu_file.unlink(missing_ok=True)

    def __enter__(self) -> RuntimePath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runtime_listing(settings: dict[str, str], limit: int | None = None) -> dict[str, Any]:
    """One full listing through a fresh, warmed-up runtime harness."""
    with RuntimePath(settings) as rp:
        return rp.measure(limit)
