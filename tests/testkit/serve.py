"""``./scripts/serve`` as a user starts it: a subprocess from the project root, on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from testkit.personal_data import SERVE_LOGS

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class ServeProcess:
    """``./scripts/serve --port <free> ...``; ``start()`` waits until /api/health answers.

    Its storage is in memory (``--in-memory``), so that each test starts with none and
    leaves nothing in .run/azurite, unless the arguments name a ``--data-dir``.
    """

    def __init__(self, *args: str, startup_timeout: float = 120) -> None:
        self.port = free_port()
        self.args = args if "--data-dir" in args else (*args, "--in-memory")
        self.startup_timeout = startup_timeout
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="serve-", suffix=".log")[1])
        SERVE_LOGS.append(self.log)  # for the suite-wide personal-data check (testkit.personal_data)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["./scripts/serve", "--port", str(self.port), *self.args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"./scripts/serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if requests.get(f"{self.base}/api/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"./scripts/serve did not answer within {self.startup_timeout:.0f} s:\n{self.output()[-3000:]}"
                )
            time.sleep(0.3)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM, as a terminal's Ctrl-C or a service manager would; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.proc.pid):
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
