"""The benchmark: this app beside the Microsoft Graph SDK (the peer) and a plain requests loop, in one run.

    ./scripts/bench          (sets up .venv, .venv-peer and Azurite-free deps, then runs this)
    .venv/bin/python -m bench.run [--users 100000] [--peer-users 10000]

Prints the table and writes bench/results/bench.json. See bench/README.md for
what each figure measures and a sample run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.runtime_path import RuntimePath

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = Path(os.environ.get("PEER_PYTHON", ROOT / ".venv-peer" / "bin" / "python"))
IMPORT_PROBE = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"


def say(text: str) -> None:
    print(text, flush=True)


class Emulator:
    """The emulated tenant in its own process, driven through its control API."""

    def __init__(self, users: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
        ready = self.dir / "ready.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--users", str(users), "--state-dir", str(self.dir), "--ready-file", str(ready)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit("the emulator exited during start-up")
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        self.url, self.ca, self.settings = info["url"], info["ca"], info["settings"]
        # The machine's REQUESTS_CA_BUNDLE would override Session.verify: trust the emulator's CA process-wide.
        os.environ["REQUESTS_CA_BUNDLE"] = self.ca
        self.http = requests.Session()

    def control(self, method: str, action: str, body: dict[str, Any] | None = None) -> Any:
        resp = self.http.request(method, f"{self.url}/_emulator/{action}", json=body, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def import_time(python: Path, cwd: Path) -> float:
    out = subprocess.run(
        [str(python), "-c", IMPORT_PROBE],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(cwd)},
    )
    return float(out.stdout.strip().splitlines()[-1])


def median_imports(runs: int) -> tuple[float, float]:
    """Median cold import of the app and of the peer app; alternating, so that both see the same machine load."""
    app, peer = [], []
    for _ in range(runs):
        app.append(import_time(Path(sys.executable), ROOT))
        peer.append(import_time(PEER_PYTHON, ROOT / "bench" / "peer" / "app"))
    return statistics.median(app), statistics.median(peer)


def dist_size(python: Path, roots: list[str]) -> int:
    out = subprocess.run([str(python), str(ROOT / "bench" / "sizes.py"), *roots], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout)["bytes"])


def client(kind: str, emu: Emulator, limit: int | None = None, settings: dict[str, str] | None = None) -> dict[str, Any]:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca, "SSL_CERT_FILE": emu.ca}
    if kind == "peer":
        secret = emu.control("GET", "client-secret")["client_secret"]
        cmd = [str(PEER_PYTHON), str(ROOT / "bench" / "peer" / "list_users.py"), json.dumps(emu.settings), secret]
    else:
        cmd = [sys.executable, "-m", "bench.clients", kind, json.dumps({**emu.settings, **(settings or {})})]
    if limit:
        cmd.append(str(limit))
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} client failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def harness(emu: Emulator) -> Any:
    sys.path.insert(0, str(ROOT))
    from devtools.harness import RuntimeHost

    return RuntimeHost(ROOT, {**emu.settings}).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="tenant size for the listing (default 100,000)")
    parser.add_argument(
        "--peer-users",
        type=int,
        default=10_000,
        help="users the peer lists (its rate is per user; default 10,000 keeps the run short)",
    )
    parser.add_argument("--imports", type=int, default=11, help="cold imports per app (median)")
    parser.add_argument(
        "--cpu-rounds",
        type=int,
        default=5,
        help="paired plain-loop / runtime-path (and sync) measurements; the median ratio counts",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench.json")
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        raise SystemExit(f"no peer environment at {PEER_PYTHON}: run ./scripts/bench")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []

    def row(
        figure: str,
        metric: str,
        app: Any,
        peer: Any = None,
        floor: Any = None,
        goal: str = "",
        met: bool | None = None,
        unit: str = "",
    ) -> None:
        rows.append(
            {"figure": figure, "metric": metric, "app": app, "peer": peer, "floor": floor, "unit": unit, "goal": goal, "met": met}
        )

    # 1. Cold import and size
    say(f"1/6 cold import of function_app ({args.imports} fresh interpreters each) and installed sizes ...")
    app_import, peer_import = (t * 1000 for t in median_imports(args.imports))
    row(
        "1 cold import",
        "import function_app, median",
        round(app_import, 1),
        round(peer_import, 1),
        unit="ms",
        goal="<= 200 ms and <= 1/2 of peer",
        met=app_import <= 200 and app_import <= peer_import / 2,
    )
    req_names = [
        line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    app_size = dist_size(Path(sys.executable), req_names) / 2**20
    peer_size = dist_size(PEER_PYTHON, ["msgraph-sdk", "azure-identity", "azure-keyvault-secrets", "azure-functions"]) / 2**20
    row(
        "1 size",
        "installed runtime dependencies",
        round(app_size, 1),
        round(peer_size, 1),
        unit="MB",
        goal="<= 1/5 of peer",
        met=app_size <= peer_size / 5,
    )

    say(f"    starting the emulator with {args.users} users ...")
    emu = Emulator(args.users)
    try:
        # 2. First invocation: requests per dependency, then warm paging
        say("2/6 first invocation through the runtime harness ...")
        host = harness(emu)
        try:
            emu.control("POST", "clear-log")
            first = host.http("GET", "/api/users", query={"top": "999"}, key=host.function_key)
            assert first.status == 200, first.body[:300]
            cold = emu.control("GET", "requests")
            floor = {"identity": 1, "keyvault-challenge": 1, "keyvault": 1, "discovery": 1, "token": 1, "graph": 1}
            row("2 first invocation", "requests per dependency", cold, None, floor, goal="= protocol floor", met=cold == floor)
            emu.control("POST", "clear-log")
            cursor, pages = first.json()["nextCursor"], 0
            for _ in range(5):
                resp = host.http("GET", "/api/users", query={"cursor": cursor}, key=host.function_key)
                cursor, pages = resp.json()["nextCursor"], pages + 1
            warm = emu.control("GET", "requests")
            row(
                "2 warm invocations",
                f"requests for {pages} pages",
                warm,
                None,
                {"graph": pages},
                goal="1 Graph request per page, 0 token/Key Vault",
                met=warm == {"graph": pages},
            )

            # 4. Warm HTTP overhead
            say("4/6 warm HTTP overhead (50 calls each) ...")
            token = emu.control("GET", "token")["access_token"]
            raw = requests.Session()
            raw.headers["Authorization"] = f"Bearer {token}"
            graph_url = f"{emu.url}/v1.0/users?$top=100&$select=id,displayName,userPrincipalName,mail,accountEnabled"
            harness_t, raw_t = [], []
            for _ in range(50):
                t = time.perf_counter()
                host.http("GET", "/api/users", query={"top": "100"}, key=host.function_key)
                harness_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                raw.get(graph_url, timeout=30).json()
                raw_t.append(time.perf_counter() - t)
            overhead = (statistics.median(harness_t) - statistics.median(raw_t)) * 1000
            row(
                "4 warm HTTP overhead",
                "GET /api/users?top=100 minus raw GET, median",
                round(overhead, 2),
                unit="ms",
                floor=round(statistics.median(raw_t) * 1000, 2),
                goal="<= 5 ms",
                met=overhead <= 5,
            )
        finally:
            host.stop()

        # 5. Cold concurrency
        say("5/6 64 concurrent cold invocations ...")
        host = harness(emu)
        try:
            emu.control("POST", "clear-log")
            latencies: list[float] = []
            statuses: list[int] = []
            barrier = threading.Barrier(64)

            def call() -> None:
                barrier.wait()
                t = time.perf_counter()
                statuses.append(host.http("GET", "/api/users", query={"top": "10"}, key=host.function_key).status)
                latencies.append(time.perf_counter() - t)

            threads = [threading.Thread(target=call) for _ in range(64)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            counts = emu.control("GET", "requests")
            latencies.sort()
            ok = statuses == [200] * 64 and counts.get("token") == 1 and counts.get("keyvault") == 1
            row(
                "5 cold concurrency",
                "64 calls: token / Key Vault requests",
                f"{counts.get('token')} / {counts.get('keyvault')}",
                goal="1 / 1, all 200",
                met=ok,
            )
            row(
                "5 cold concurrency",
                "p50 / p99 latency",
                f"{statistics.median(latencies) * 1000:.0f} / {latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f}",
                unit="ms",
            )
        finally:
            host.stop()

        # 3. Full listing
        say(f"3/6 listing {args.users} users at $top=999 (peer: first {args.peer_users}) ...")
        client("floor", emu)  # warm the emulator's page cache: it must not be what is measured
        results = {
            "floor": client("floor", emu),
            "plain": client("plain", emu),
            "app": client("app", emu),
            "peer": client("peer", emu, args.peer_users),
        }

        def rate(r: dict[str, Any]) -> float:
            return float(r["users"] / r["wall_s"])

        def cpu_k(r: dict[str, Any]) -> float:
            return float(r["cpu_s"] / r["users"] * 1000 * 1000)

        app_r, peer_r, plain_r, floor_r = results["app"], results["peer"], results["plain"], results["floor"]
        row(
            "3 listing, 0 ms",
            "throughput (plain loop in 'floor'; raw emulator below)",
            round(rate(app_r)),
            round(rate(peer_r)),
            round(rate(plain_r)),
            unit="users/s",
            goal=">= 100x peer",
            met=rate(app_r) >= 100 * rate(peer_r),
        )
        row("3 listing, 0 ms", "app / peer throughput", round(rate(app_r) / rate(peer_r), 1), unit="x")
        row(
            "3 listing, 0 ms",
            "CPU per 1,000 users",
            round(cpu_k(app_r), 2),
            round(cpu_k(peer_r), 2),
            round(cpu_k(plain_r), 2),
            unit="ms",
            goal="<= 2x plain loop",
            met=cpu_k(app_r) <= 2 * cpu_k(plain_r),
        )
        row(
            "3 listing, 0 ms",
            "peak RSS growth",
            round(app_r["rss_growth_mb"], 1),
            round(peer_r["rss_growth_mb"], 1),
            round(plain_r["rss_growth_mb"], 1),
            unit="MB",
            goal="app <= 20 MB",
            met=app_r["rss_growth_mb"] <= 20,
        )
        row("floor", "emulator raw throughput (bytes only, no parsing)", None, None, round(rate(floor_r)), unit="users/s")

        # 3. The listing where production runs: through the runtime, beside the plain loop, alternating
        say(
            f"3/6 CPU of GET /api/users?top=999 through the runtime harness, {args.cpu_rounds} rounds "
            "alternating with the plain loop ..."
        )
        plain_rounds, runtime_rounds = [], []
        with RuntimePath(emu.settings) as runtime_path:
            for _ in range(args.cpu_rounds):
                plain_rounds.append(client("plain", emu))
                runtime_rounds.append(runtime_path.measure())
        # Each runtime round is measured right after a plain round: the median of the paired ratios
        # is what counts, so that a quiet or a busy moment on a shared machine favours neither side.
        pair_ratios = [cpu_k(r) / cpu_k(p) for r, p in zip(runtime_rounds, plain_rounds, strict=True)]
        rt_ratio = statistics.median(pair_ratios)
        row(
            "3 runtime path",
            "CPU per 1,000 users, median of rounds",
            round(statistics.median(map(cpu_k, runtime_rounds)), 2),
            None,
            round(statistics.median(map(cpu_k, plain_rounds)), 2),
            unit="ms",
        )
        row(
            "3 runtime path",
            f"runtime path / plain loop CPU, median of {args.cpu_rounds} pairs",
            round(rt_ratio, 2),
            unit="x",
            goal="<= 1.5x",
            met=rt_ratio <= 1.5,
        )
        row(
            "3 runtime path",
            "each round: runtime path / plain loop (ms)",
            " ".join(f"{cpu_k(r):.2f}" for r in runtime_rounds),
            None,
            " ".join(f"{cpu_k(r):.2f}" for r in plain_rounds),
            unit="ms",
        )
        row("3 runtime path", "each round: runtime path / plain loop", " ".join(f"{x:.2f}" for x in pair_ratios), unit="x")
        row(
            "3 runtime path",
            "of which the function / worker process incl. relay",
            f"{statistics.median(r['function_cpu_s'] / r['users'] * 1e6 for r in runtime_rounds):.2f} / "
            f"{statistics.median(r['worker_cpu_s'] / r['users'] * 1e6 for r in runtime_rounds):.2f}",
            unit="ms",
        )

        emu.control("POST", "latency", {"graph": 0.025})
        lat = {"plain": client("plain", emu), "app": client("app", emu), "peer": client("peer", emu, args.peer_users)}
        ratio = lat["app"]["wall_s"] / lat["plain"]["wall_s"]
        row(
            "3 listing, 25 ms",
            "wall time",
            round(lat["app"]["wall_s"], 2),
            f"{lat['peer']['wall_s']:.2f} ({lat['peer']['users']} users)",
            round(lat["plain"]["wall_s"], 2),
            unit="s",
            goal="<= 1.2x plain loop",
            met=ratio <= 1.2,
        )
        row("3 listing, 25 ms", "app / plain loop wall time", round(ratio, 3), unit="x")
        emu.control("POST", "latency", {"graph": 0})

        # 6. The full sync beside a plain delta loop that writes JSON lines
        say(
            f"6/6 CPU of a full sync of {args.users} users (Azurite), {args.cpu_rounds} rounds alternating "
            "with the plain delta loop ..."
        )
        from devtools.azurite import Azurite

        azurite = Azurite()
        try:
            plain_syncs, syncs = [], []
            for n in range(args.cpu_rounds):
                plain_syncs.append(client("plain-sync", emu))
                # A new container each round: every round is a full one.
                syncs.append(
                    client(
                        "sync",
                        emu,
                        settings={"AzureWebJobsStorage": azurite.connection_string, "USER_SYNC_CONTAINER": f"bench-sync-{n}"},
                    )
                )
        finally:
            azurite.stop()
        sync_ratios = [cpu_k(r) / cpu_k(p) for r, p in zip(syncs, plain_syncs, strict=True)]
        row(
            "6 full sync",
            "CPU per 1,000 users, median of rounds",
            round(statistics.median(map(cpu_k, syncs)), 2),
            None,
            round(statistics.median(map(cpu_k, plain_syncs)), 2),
            unit="ms",
        )
        row(
            "6 full sync",
            f"full sync / plain delta loop CPU, median of {args.cpu_rounds} pairs",
            round(statistics.median(sync_ratios), 2),
            unit="x",
        )
        row(
            "6 full sync",
            "each round: sync / plain delta loop (ms)",
            " ".join(f"{cpu_k(r):.2f}" for r in syncs),
            None,
            " ".join(f"{cpu_k(r):.2f}" for r in plain_syncs),
            unit="ms",
        )
    finally:
        emu.stop()

    elapsed = time.monotonic() - started
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    say(f"\nResults ({machine}; {elapsed:.0f} s; absolute times are indicative on a shared machine)\n")
    header = f"| {'figure':<18} | {'metric':<52} | {'app':>14} | {'peer':>16} | {'floor / plain':>14} | {'unit':<7} | goal |"
    say(header)
    say("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:

        def cell(v: Any) -> str:
            if isinstance(v, dict):
                return ", ".join(f"{k} {n}" for k, n in v.items())
            return "" if v is None else str(v)

        verdict = "" if r["met"] is None else (" met" if r["met"] else " MISSED")
        say(
            f"| {r['figure']:<18} | {r['metric']:<52} | {cell(r['app']):>14} | {cell(r['peer']):>16} | "
            f"{cell(r['floor']):>14} | {r['unit']:<7} | {r['goal']}{verdict} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": machine, "seconds": round(elapsed), "users": args.users, "peer_users": args.peer_users, "rows": rows},
            indent=2,
        )
    )
    say(f"\nwritten: {args.out.relative_to(ROOT)}")
    return 0 if all(r["met"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
