"""Azurite, the local Azure Storage emulator (npm package, pinned in package-lock.json), on free loopback ports."""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from devtools.processes import end_process

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "node_modules" / ".bin" / "azurite"
# Azurite's well-known development account; public, documented, not a secret.
ACCOUNT = "devstoreaccount1"
# Written into a kept data folder while Azurite runs on it: how to reach it.
CONNECTION_FILE = "connection.json"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    """One Azurite process with blob and queue services; ``stop()`` ends it by PID.

    By default its data lives in memory and ends with it. With ``location`` it is kept in
    that folder (Azurite's ``--location``) for the next start; one process at a time may
    use a folder, which a lock file in it enforces.
    """

    def __init__(self, location: Path | None = None) -> None:
        if not BINARY.exists():
            raise RuntimeError("Azurite is not installed: run ./scripts/test (it runs npm ci) or npm ci")
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        self.location = location
        self._lock: IO[bytes] | None = None
        if location is None:
            self._dir = tempfile.mkdtemp(prefix="azurite-")
            storage = ["--inMemoryPersistence"]
        else:
            location.mkdir(parents=True, exist_ok=True)
            self._lock = open(location / ".lock", "wb")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise RuntimeError(
                    f"Another Azurite keeps its data in {location} (a second ./scripts/serve?): stop it, or pass --in-memory"
                ) from None
            self._dir = str(location)
            storage = ["--location", str(location)]
        self._log = open(Path(self._dir) / "azurite.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "--silent",
                *storage,
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.blob_port),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                str(self.queue_port),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(self.table_port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._dir,
        )
        deadline = time.monotonic() + 30
        for port in (self.blob_port, self.queue_port):
            while True:
                if self.proc.poll() is not None:
                    if self._lock is not None:
                        self._lock.close()
                    raise RuntimeError(f"Azurite exited with {self.proc.returncode}; see {self._dir}/azurite.log")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("Azurite did not start within 30 s") from None
                    time.sleep(0.1)

        if location is not None:
            # For ./scripts/snapshot while this process holds the folder.
            (location / CONNECTION_FILE).write_text(json.dumps({"connectionString": self.connection_string}))

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
        )

    def stop(self) -> None:
        end_process(self.proc)
        self._log.close()
        if self.location is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            (self.location / CONNECTION_FILE).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
