"""The emulated tenant (``python -m emulator``) in its own process, driven through its control API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from devtools.processes import Started, end_process

ROOT = Path(__file__).resolve().parents[1]


class EmulatorProcess(Started):
    """One emulator process; ``stop()`` ends it by PID.

    The process writes a ready file with its URL, the CA it serves with and
    the app settings that point at it; ``start()`` waits for that file.
    """

    def __init__(
        self,
        users: int,
        *,
        port: int = 0,
        state_dir: Path | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.users = users
        self.port = port
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="emulator-"))
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ca = ""
        self.settings: dict[str, str] = {}
        self._log: IO[bytes] | None = None

    def start(self) -> EmulatorProcess:
        """Start the process and wait until it serves; ``RuntimeError`` if it exits or takes too long."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ready = self.state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self._log = out = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "emulator",
                "--users",
                str(self.users),
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                "--ready-file",
                str(ready),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"the emulator exited with {self.proc.returncode} during start-up{where}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start within {self.startup_timeout:.0f} s")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.url, self.ca, self.settings = info["url"], info["ca"], info["settings"]
        return self

    def trust_ca(self) -> None:
        """Trust the emulator's CA process-wide (the machine's REQUESTS_CA_BUNDLE overrides ``Session.verify``)."""
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca

    def control(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        """Call the emulator's loopback control API (``/_emulator/<action>``)."""
        import requests

        resp = requests.request(method, f"{self.url}/_emulator/{action}", json=body, verify=self.ca, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        """Terminate the process (kill after 10 s) and close its log."""
        if self.proc is not None:
            end_process(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
