"""Run the emulated tenant until interrupted: ``python -m emulator --users 3000``.

Prints one JSON line with the URL, the CA file and the app settings that point
the function app at it, and writes the same to ``--ready-file`` if given.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from .server import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--users", type=int, default=3000, help="synthetic users in the tenant (default 3000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic tenant (default 1)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--state-dir", type=Path, help="where to write the CA and keys (default: a temp dir)")
    parser.add_argument("--ready-file", type=Path, help="write the settings JSON here once serving")
    args = parser.parse_args(argv)

    emu = Emulator(users=args.users, seed=args.seed, port=args.port, state_dir=args.state_dir).start()
    info = {"url": emu.url, "ca": str(emu.ca_path), "users": args.users, "settings": emu.app_settings()}
    line = json.dumps(info)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(line)
        tmp.replace(args.ready_file)
    print(line, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
