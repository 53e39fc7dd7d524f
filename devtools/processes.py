"""What the local tools share: ending a child process by its handle, and a script's argument parser."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any, Self


def end_process(proc: subprocess.Popen[Any], *, terminate: bool = True, timeout: float = 10) -> None:
    """End ``proc``: terminate it (or, with ``terminate=False``, wait for it to end), and kill it after ``timeout`` s."""
    if proc.poll() is not None:
        return
    if terminate:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Started:
    """A ``with`` block around ``start()`` and ``stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def script_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of a ``scripts/`` command: its module docstring as help, and the emulated tenant's size."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=3000, help="synthetic users in the emulated tenant (default 3000)")
    return parser
