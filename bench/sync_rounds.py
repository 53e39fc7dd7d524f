"""Full rounds by listing beside delta rounds, at Graph's page sizes; and the full sync's CPU beside a plain loop.

    .venv/bin/python -m bench.sync_rounds --users 1000000 [--cpu-users 100000 --pairs 5 --cpu-runs 3]

Starts the emulator (its own process, delta pages capped at 200 and sometimes short, as Graph) and
Azurite. Then:

- **Rounds**: with 25 ms added to every Graph request, one full sync of each kind
  (``USER_SYNC_FULL_ROUND=listing``, then ``delta``), each in a fresh interpreter on an empty container:
  Graph requests, wall time, peak RSS growth (VmHWM reset through /proc/self/clear_refs), and whether
  the snapshot holds exactly the tenant's ids. Goals for the listing round: requests <= ceil(N/999) + 2,
  wall <= 1.1 x requests x 25 ms, peak RSS growth <= 50 MB. The delta round's figures are shown beside.
- **CPU**: the "6 full sync" figure of bench.run, on its own: ``--pairs`` pairs of (plain loop over the
  same round, full sync) in fresh processes, the median of the paired CPU ratios; ``--cpu-runs`` such
  runs in a row. Goal: <= 1.5x in every run.

Writes bench/results/sync_rounds.json; exits non-zero if a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LATENCY = 0.025
GOAL_WALL = 1.1
GOAL_MB = 50.0
GOAL_CPU = 1.5

CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
import requests

def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

from graphusers import service
from graphusers.storage import USERS_BLOB
from graphusers.sync import UserSync
services = service.get_services()
services.tokens.get_token()
store = service.get_store()
store.ensure()
control = os.environ["GRAPH_ENDPOINT"] + "/_emulator/"
Path("/proc/self/clear_refs").write_text("5")
base = kb("VmRSS")
started = time.perf_counter()
summary = UserSync(services.graph, store, services.settings.user_select, full_round=sys.argv[1]).run()
wall = time.perf_counter() - started
peak = (kb("VmHWM") - base) / 1024
ids = sorted(line[7:line.index('"', 7)] for line in store.iter_lines(USERS_BLOB, store.etag(USERS_BLOB)))
tenant = requests.get(control + "users", timeout=300).json()
exact = len(ids) == tenant["count"] and hashlib.sha256("\n".join(ids).encode()).hexdigest() == tenant["idsSha256"]
print(json.dumps({"status": summary.status, "fullRound": summary.fullRound, "requests": summary.graphRequests,
                  "pages": summary.pages, "users": summary.users, "wallSeconds": round(wall, 2),
                  "peakGrowthMB": round(peak, 1), "exact": exact}))
"""


def child(kind: str, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=7200
    )
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the {kind} round failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def client(kind: str, settings: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.clients", kind, json.dumps(settings)],
        cwd=ROOT,
        env={**os.environ, "REQUESTS_CA_BUNDLE": settings["REQUESTS_CA_BUNDLE"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"bench.clients {kind} failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--cpu-users", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--cpu-runs", type=int, default=3)
    parser.add_argument("--skip-rounds", action="store_true", help="only the CPU figure")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from devtools.azurite import Azurite
    from devtools.emulator_process import EmulatorProcess

    result: dict[str, Any] = {"users": args.users}
    ok = True
    azurite = Azurite()
    try:
        if not args.skip_rounds:
            print(f"starting the emulator with {args.users} users ...", flush=True)
            emulator = EmulatorProcess(args.users, startup_timeout=900).start()
            try:
                emulator.control("POST", "latency", {"graph": LATENCY})
                rounds = {}
                for kind in ("listing", "delta"):
                    print(f"a full round by {kind}, {LATENCY * 1000:.0f} ms per Graph request ...", flush=True)
                    env = {
                        **os.environ,
                        **emulator.settings,
                        "REQUESTS_CA_BUNDLE": emulator.ca,
                        "AzureWebJobsStorage": azurite.connection_string,
                        "USER_SYNC_CONTAINER": f"bench-round-{kind}",
                    }
                    row = rounds[kind] = child(kind, env)
                    row["floorSeconds"] = round(row["requests"] * LATENCY, 2)
                    row["wallOverFloor"] = round(row["wallSeconds"] / row["floorSeconds"], 3)
                    print(f"  {kind}: {row}", flush=True)
            finally:
                emulator.stop()
            listing = rounds["listing"]
            goal_requests = math.ceil(args.users / 999) + 2
            goals = {
                "requests": listing["requests"] <= goal_requests,
                "wall": listing["wallOverFloor"] <= GOAL_WALL,
                "rss": listing["peakGrowthMB"] <= GOAL_MB,
                "exact": listing["exact"] and rounds["delta"]["exact"],
            }
            result.update(rounds=rounds, goalRequests=goal_requests, goals=goals)
            ok = ok and all(goals.values())

        print(f"starting the emulator with {args.cpu_users} users for the CPU figure ...", flush=True)
        emulator = EmulatorProcess(args.cpu_users, startup_timeout=600).start()
        try:
            settings = {**emulator.settings, "REQUESTS_CA_BUNDLE": emulator.ca}
            client("plain-sync", settings)  # warms the emulator's page cache
            runs = []
            for run in range(args.cpu_runs):
                ratios = []
                for pair in range(args.pairs):
                    plain = client("plain-sync", settings)
                    sync = client(
                        "sync",
                        {
                            **settings,
                            "AzureWebJobsStorage": azurite.connection_string,
                            "USER_SYNC_CONTAINER": f"bench-cpu-{run}-{pair}",
                        },
                    )
                    ratios.append(sync["cpu_s"] / plain["cpu_s"])
                    print(
                        f"  run {run + 1} pair {pair + 1}: sync {sync['cpu_s'] * 1e6 / sync['users']:.2f} ms, "
                        f"plain {plain['cpu_s'] * 1e6 / plain['users']:.2f} ms per 1,000 users: {ratios[-1]:.2f}x",
                        flush=True,
                    )
                runs.append({"ratios": [round(r, 3) for r in ratios], "median": round(statistics.median(ratios), 3)})
        finally:
            emulator.stop()
        result["cpu"] = runs
        ok = ok and all(r["median"] <= GOAL_CPU for r in runs)
    finally:
        azurite.stop()
    result["met"] = ok
    print(json.dumps(result, indent=2))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "sync_rounds.json").write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
