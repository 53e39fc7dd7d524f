"""Where the runtime path's CPU goes: cProfile over warm ``GET /api/users?top=999`` invocations.

    .venv/bin/python -m bench.profile_listing [--users 50000] [--invocations 50] [--rounds 1]

Starts the emulator, measures the plain loop and the runtime path once per round
(the same figures ``./scripts/bench`` reports, for a quick check), then profiles
``--invocations`` warm invocations in the runtime harness's worker (every thread)
and prints the functions with the most own time and the most cumulative time.
The stats are written to bench/results/listing.prof for ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import pstats
import sys

from bench.run import ROOT, Emulator, client
from bench.runtime_path import page_all, runtime_listing, start_host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--invocations", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="plain loop / runtime path measurements (0: none)")
    parser.add_argument("--top", type=int, default=25, help="functions shown per table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    out = ROOT / "bench" / "results" / "listing.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    emu = Emulator(args.users)
    try:
        client("floor", emu)  # warm the emulator's page cache
        for n in range(args.rounds):
            plain, app, runtime = client("plain", emu), client("app", emu), runtime_listing(emu.settings)
            p_k = plain["cpu_s"] / plain["users"] * 1e6
            r_k = runtime["cpu_s"] / runtime["users"] * 1e6
            w_k = runtime["worker_cpu_s"] / runtime["users"] * 1e6
            f_k = runtime["function_cpu_s"] / runtime["users"] * 1e6
            a_k = app["cpu_s"] / app["users"] * 1e6
            print(
                f"round {n + 1}: CPU per 1,000 users: plain loop {p_k:.2f} ms, runtime path {r_k:.2f} ms "
                f"({r_k / p_k:.2f}x; in-process Graph client {a_k:.2f} ms; of which the function {f_k:.2f} ms; "
                f"whole worker process with the harness's relay {w_k:.2f} ms)",
                flush=True,
            )
        warm = 3
        host, cpu_file = start_host(emu.settings, {"BENCH_WORKER_PROFILE": str(out), "BENCH_WORKER_PROFILE_SKIP": str(warm)})
        try:
            page_all(host, limit=warm * 999)
            users, pages = page_all(host, limit=args.invocations * 999)
        finally:
            host.stop()
            cpu_file.unlink(missing_ok=True)
    finally:
        emu.stop()
    print(f"\nprofile of {pages} warm invocations ({users} users), all threads of the worker: {out.relative_to(ROOT)}")
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
