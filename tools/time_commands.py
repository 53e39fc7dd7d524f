"""Time the README's quick-start commands on this machine and compare them with the times it states.

    .venv/bin/python -m tools.time_commands            # demo, serve, test --quick
    .venv/bin/python -m tools.time_commands --all      # and the whole ./scripts/test (about 7 min)

Each command's stated time is the first "about N s" or "about N min" in its row of the README's
quick-start table. A measured time more than --factor (default 1.5) times the stated one fails
(exit 1). serve is timed from its start to the first 200 for GET /api/users?top=1, then stopped
with SIGTERM. Run it on a quiet machine: other work on the cores slows every command.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from devtools.azurite import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STATED = re.compile(r"\babout (\d+(?:\.\d+)?) (s|min)\b")
COMMANDS = ("./scripts/demo", "./scripts/test --quick", "./scripts/serve", "./scripts/test")


def stated_seconds(readme: str, command: str) -> float:
    """The time the README's table states for ``command``, in seconds; ValueError when it states none."""
    for line in readme.splitlines():
        if line.startswith(f"| `{command}` |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            match = STATED.search(cells[-1])
            if match is None:
                raise ValueError(f"the README's row for {command} states no 'about N s' or 'about N min'")
            return float(match.group(1)) * (60 if match.group(2) == "min" else 1)
    raise ValueError(f"the README's quick-start table has no row for {command}")


def run(command: str) -> float:
    """Seconds ``command`` took to exit 0 from the project root; RuntimeError on failure."""
    start = time.monotonic()
    done = subprocess.run(command.split(), cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return took


def time_serve(timeout: float = 120.0) -> float:
    """Seconds from starting ./scripts/serve to its first 200 for GET /api/users?top=1; it is stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/users?top=1"
    start = time.monotonic()
    serve = subprocess.Popen(
        ["./scripts/serve", "--port", str(port), "--no-timer"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if serve.poll() is not None:
                raise RuntimeError(f"./scripts/serve exited {serve.returncode} before answering")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"./scripts/serve did not answer within {timeout:.0f} s")
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--all", action="store_true", help="also time the whole ./scripts/test")
    parser.add_argument("--factor", type=float, default=1.5, help="allowed ratio of measured to stated (1.5)")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    timers: dict[str, Callable[[], float]] = {
        "./scripts/demo": lambda: run("./scripts/demo"),
        "./scripts/test --quick": lambda: run("./scripts/test --quick -q"),
        "./scripts/serve": time_serve,
        "./scripts/test": lambda: run("./scripts/test -q"),
    }
    chosen = [c for c in COMMANDS if args.all or c != "./scripts/test"]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = False
    for command in chosen:
        stated = stated_seconds(readme, command)
        measured = timers[command]()
        ok = measured <= stated * args.factor
        failed |= not ok
        print(f"{command:26} stated {stated:6.1f} s  measured {measured:6.1f} s  {'ok' if ok else 'TOO SLOW'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
