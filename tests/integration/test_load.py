"""Load: 200 concurrent GET /api/users through the real runtime against the emulator with added latency."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.harness import RuntimeHost
from emulator import Emulator

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded() -> Iterator[tuple[Emulator, RuntimeHost]]:
    with Emulator(users=500, seed=9) as emu:
        emu.latency["graph"] = 0.025
        emu.latency["token"] = 0.05
        with RuntimeHost(ROOT, emu.app_settings()) as host:
            yield emu, host


def test_200_concurrent_cold_invocations(
    loaded: tuple[Emulator, RuntimeHost], record_property: Callable[[str, object], None]
) -> None:
    """All 200 answered correctly, one token request and one Key Vault read in total; p50/p99 reported."""
    emu, host = loaded
    latencies: list[float] = []
    results: list[tuple[int, int]] = []
    barrier = threading.Barrier(200)
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        started = time.perf_counter()
        answer = host.http(
            "GET",
            "/api/users",
            query={"top": "20"},
            key=host.function_key,
        )
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            results.append((answer.status, len(answer.json().get("value", []))))

    threads = [threading.Thread(target=call) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, 20)] * 200
    assert emu.count("token") == 1 and emu.count("keyvault") == 1 and emu.count("graph") == 200
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    record_property("p50_ms", round(p50 * 1000))
    record_property("p99_ms", round(p99 * 1000))
    print(f"200 concurrent GET /api/users: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
