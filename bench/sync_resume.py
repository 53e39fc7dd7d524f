"""A full sync of a large tenant that fails at 60% and is resumed: wall time, pages, peak RSS growth.

    .venv/bin/python -m bench.sync_resume --users 1000000

Starts the emulator (its own process) and Azurite, then runs the sync twice in a
fresh interpreter: the first full round meets a Graph outage from 60% of the
tenant on (the emulator's ``outageFrom`` switch) and fails, keeping its
checkpoint; the outage ends and the second run continues the round. Reports
the wall time of both runs, pages fetched over pages needed (goal <= 1.05), the
peak RSS growth over both (goal <= 100 MB, VmHWM reset through
/proc/self/clear_refs) and whether the snapshot is exactly the tenant's ids.
Writes bench/results/sync_resume.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_MB = 100.0
GOAL_PAGES = 1.05
FAIL_AT = 0.6

CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
import requests

def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

from graphusers import service
from graphusers.graph import GraphClient, RetryPolicy
from graphusers.storage import STATUS_BLOB, USERS_BLOB
from graphusers.sync import UserSync
services = service.get_services()
# Retries without real waits: the outage is the emulator's, the bench measures the resume.
graph = GraphClient(services.settings.graph_endpoint, services.tokens, retry=RetryPolicy(backoff_factor=0.001))
services.tokens.get_token()
store = service.get_store()
store.ensure()
users, fail_at = int(sys.argv[1]), float(sys.argv[2])
control = os.environ["GRAPH_ENDPOINT"] + "/_emulator/"
# A delta round (the outage switch stops delta rounds) of whole pages of 200 (Graph's cap), so that
# pages fetched over pages needed is exact.
requests.post(control + "delta", json={"outageFrom": int(users * fail_at), "shortPages": 0}, timeout=60).raise_for_status()
Path("/proc/self/clear_refs").write_text("5")
base = kb("VmRSS")
started = time.perf_counter()
sync = lambda: UserSync(graph, store, services.settings.user_select, tenant=services.settings.tenant_id, full_round="delta")
try:
    sync().run()
    raise SystemExit("the first run did not fail")
except Exception as exc:  # the outage: UnavailableError
    first_error = type(exc).__name__
first_seconds = time.perf_counter() - started
first = store.read_json(STATUS_BLOB)[0]["lastRun"]
requests.post(control + "delta", json={"outageFrom": None}, timeout=60).raise_for_status()
second_started = time.perf_counter()
summary = sync().run()
second_seconds = time.perf_counter() - second_started
peak = (kb("VmHWM") - base) / 1024
ids = sorted(line[7:line.index('"', 7)] for line in store.iter_lines(USERS_BLOB, store.etag(USERS_BLOB)))
tenant = requests.get(control + "users", timeout=120).json()
exact = len(ids) == tenant["count"] and hashlib.sha256("\n".join(ids).encode()).hexdigest() == tenant["idsSha256"]
print(json.dumps({"firstError": first_error, "firstPages": first["pages"], "firstSeconds": round(first_seconds, 1),
                  "secondStatus": summary.status, "secondPages": summary.pages, "resumed": summary.resumed,
                  "secondSeconds": round(second_seconds, 1), "pagesNeeded": -(-users // 200),
                  "peakGrowthMB": round(peak, 1), "exact": exact}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from devtools.azurite import Azurite
    from devtools.emulator_process import EmulatorProcess

    print(f"starting the emulator with {args.users} users ...", flush=True)
    emulator = EmulatorProcess(args.users, startup_timeout=600)
    azurite = None
    try:
        emulator.start()
        azurite = Azurite()
        env = {
            **os.environ,
            **emulator.settings,
            "AzureWebJobsStorage": azurite.connection_string,
            "USER_SYNC_CONTAINER": "bench-resume",
        }
        print(f"full round failing at {FAIL_AT:.0%}, then resumed, in a fresh interpreter ...", flush=True)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.users), str(FAIL_AT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=7200,
        )
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if azurite is not None:
            azurite.stop()
        emulator.stop()

    ratio = (row["firstPages"] + row["secondPages"]) / row["pagesNeeded"]
    row.update(
        users=args.users,
        pagesRatio=round(ratio, 3),
        goalPagesRatio=GOAL_PAGES,
        goalMB=GOAL_MB,
        wallSeconds=round(row["firstSeconds"] + row["secondSeconds"], 1),
    )
    ok = (
        ratio <= GOAL_PAGES
        and row["peakGrowthMB"] <= GOAL_MB
        and row["exact"]
        and row["secondStatus"] == "succeeded"
        and row["resumed"] is not None
    )
    print(
        f"\nusers {args.users}: first run {row['firstError']} after {row['firstPages']} pages "
        f"({row['firstSeconds']} s); resumed run {row['secondStatus']} with {row['secondPages']} pages "
        f"({row['secondSeconds']} s)"
    )
    print(
        f"wall time {row['wallSeconds']} s | pages fetched / needed {ratio:.3f} (goal <= {GOAL_PAGES}) | "
        f"peak RSS growth {row['peakGrowthMB']} MB (goal <= {GOAL_MB:.0f}) | exactly the tenant: "
        f"{'yes' if row['exact'] else 'NO'} | {'met' if ok else 'MISSED'}"
    )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "sync_resume.json").write_text(json.dumps(row, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
