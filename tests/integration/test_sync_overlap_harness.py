"""Overlapping syncs on Azurite through the real Functions runtime: two workers, one stalled past its lease.

A few of the interleaving explorer's schedules (tests/unit/test_sync_overlap.py), for
real: worker A's Graph page is held back by the emulator while the test breaks A's
lease on ``sync.lock`` (as its expiry would), worker B then runs to the end, and A's
page finally arrives. A must write nothing after that, and the outcome must be exact.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobLeaseClient, ContainerClient

from devtools.azurite import Azurite
from devtools.harness import HarnessError, RuntimeHost
from emulator import Emulator
from emulator.faults import Fault

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = "harness-overlap"
STALL = 6.0  # seconds A's held-back Graph answer takes


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    # Three delta pages (the emulator answers up to odata.maxpagesize=999 a page): A stalls on the second.
    with Emulator(users=2500, seed=11) as emu:
        yield emu


@pytest.fixture(scope="module")
def workers(
    tenant: Emulator, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RuntimeHost, RuntimeHost]]:
    # Delta full rounds: the schedules stall on a delta round's second page (listing rounds: test_sync_listing.py).
    env = {
        **tenant.app_settings(),
        "AzureWebJobsStorage": azurite.connection_string,
        "USER_SYNC_CONTAINER": CONTAINER,
        "USER_SYNC_FULL_ROUND": "delta",
    }
    logs = tmp_path_factory.mktemp("workers")
    with RuntimeHost(ROOT, env, log_path=logs / "a.log") as a, RuntimeHost(ROOT, env, log_path=logs / "b.log") as b:
        for worker in (a, b):  # tokens and the vault's secret fetched before any schedule
            assert worker.http("GET", "/api/users", key=worker.function_key).status == 200
        yield a, b


def _container(azurite: Azurite) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, CONTAINER)


def _text(azurite: Azurite, name: str) -> str:
    return bytes(_container(azurite).get_blob_client(name).download_blob().readall()).decode()


def _ids(azurite: Azurite) -> set[str]:
    return {json.loads(line)["id"] for line in _text(azurite, "users.jsonl").splitlines()}


def _start_afresh(azurite: Azurite) -> None:
    """No snapshot, state or checkpoint (the lock blob stays, free): the next run is a first full round."""
    container = _container(azurite)
    if not container.exists():  # no run yet: nothing to clear
        return
    for blob in container.list_blobs():
        if blob.lease.state == "leased":
            BlobLeaseClient(container.get_blob_client(blob.name)).break_lease(lease_break_period=0)
        if blob.name != "sync.lock":  # the workers made it once, and lease it from then on
            container.delete_blob(blob.name)


def _status(worker: RuntimeHost) -> dict[str, Any]:
    answer = worker.http("GET", "/api/sync/status", key=worker.function_key)
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.json()
    return body


def _stalled_a_then_b(tenant: Emulator, azurite: Azurite, a: RuntimeHost, b: RuntimeHost, path: str) -> dict[str, Any]:
    """A's timer run stalls on the Graph request matching ``path``; its lease is broken; B's timer runs; A resumes."""
    fault = Fault("graph", kind="delay", delay=STALL, path=path)
    tenant.inject(fault)
    outcome: dict[str, Any] = {}

    def run_a() -> None:
        try:
            outcome["a"] = a.timer("user_sync_timer")
        except HarnessError as exc:
            outcome["a"] = exc

    thread = threading.Thread(target=run_a, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while fault.count:  # A's request reached the emulator and is being held back
        assert time.monotonic() < deadline, f"A never reached the stalled request: {outcome} {[r.path for r in tenant.log][-5:]}"
        time.sleep(0.05)
    # A's lease runs out while it waits (broken here instead of waiting 60 s).
    BlobLeaseClient(_container(azurite).get_blob_client("sync.lock")).break_lease(lease_break_period=0)
    b.timer("user_sync_timer")
    outcome["b"] = _status(b)["lastRun"]
    thread.join(STALL + 60)
    assert not thread.is_alive()
    outcome["after"] = _status(a)
    return outcome


def test_a_full_round_stalled_past_its_lease_writes_nothing_after_it(
    tenant: Emulator, azurite: Azurite, workers: tuple[RuntimeHost, RuntimeHost]
) -> None:
    """First full round: A stalls on its second page, B does the whole round, A fails without writing; exact."""
    a, b = workers
    _start_afresh(azurite)  # tests run in a random order: an earlier one may have left a snapshot
    seen = _stalled_a_then_b(tenant, azurite, a, b, r"skiptoken")
    assert (seen["b"]["status"], seen["b"]["mode"], seen["b"]["users"]) == ("succeeded", "full", len(tenant.directory.users))
    assert isinstance(seen["a"], HarnessError), "A went on after losing its lock"
    last = seen["after"]["lastRun"]
    assert (last["status"], last["error"]["code"], last["replaced"]) == ("failed", "lease_lost", [])
    assert _ids(azurite) == set(tenant.directory.users)
    assert not [n for n in _container(azurite).list_blobs(name_starts_with="staging/")]
    a.timer("user_sync_timer")  # and the next run, on the worker that lost, is a normal one
    assert _status(a)["lastRun"]["status"] == "succeeded" and _ids(azurite) == set(tenant.directory.users)


def test_an_incremental_round_stalled_past_its_lease_leaves_one_exact_change_log(
    tenant: Emulator, azurite: Azurite, workers: tuple[RuntimeHost, RuntimeHost]
) -> None:
    """A stalls on the deltaLink request; B applies the round; A gets the same changes late and writes nothing."""
    a, b = workers
    a.timer("user_sync_timer")  # the baseline (the first test's snapshot, or a fresh one)
    before = {b.name for b in _container(azurite).list_blobs(name_starts_with="changes/")}
    gone = next(iter(tenant.directory.users))
    tenant.directory.remove(gone)
    added = tenant.directory.add()["id"]
    seen = _stalled_a_then_b(tenant, azurite, a, b, r"deltatoken")
    assert (seen["b"]["status"], seen["b"]["mode"], seen["b"]["added"], seen["b"]["removed"]) == (
        "succeeded",
        "incremental",
        1,
        1,
    )
    assert isinstance(seen["a"], HarnessError)
    last = seen["after"]["lastRun"]
    # A's next write was fenced off: by its lease renewal, or by the snapshot's ETag B had moved.
    assert last["error"]["code"] in ("lease_lost", "storage_unavailable") and last["replaced"] == []
    new = [n.name for n in _container(azurite).list_blobs(name_starts_with="changes/") if n.name not in before]
    assert len(new) == 1
    log = {e["id"]: e["change"] for e in map(json.loads, _text(azurite, new[0]).splitlines())}
    assert log == {gone: "removed", added: "added"}
    assert _ids(azurite) == set(tenant.directory.users)


def test_a_full_resync_requested_while_a_worker_holds_the_lock_runs_after_it(
    tenant: Emulator, azurite: Azurite, workers: tuple[RuntimeHost, RuntimeHost]
) -> None:
    """A's incremental run holds the lock; a full resync POSTed to B is pending, then A serves it when done."""
    a, b = workers
    a.timer("user_sync_timer")
    fault = Fault("graph", kind="delay", delay=STALL, path=r"deltatoken")
    tenant.inject(fault)
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.update(a=a.timer("user_sync_timer")), daemon=True)
    thread.start()
    while fault.count:
        time.sleep(0.05)
    accepted = b.http("POST", "/api/sync", body=b'{"mode": "full"}', key=b.function_key)
    assert accepted.status == 202
    request_id = accepted.json()["requestId"]
    assert b.run_queue("user_sync_queue") == 1  # the lock is A's: the request stays pending
    during = _status(b)
    assert during["pendingResync"] is True
    assert next(r for r in during["requests"] if r["requestId"] == request_id)["state"] == "pending"
    thread.join(STALL + 120)
    assert not thread.is_alive()
    after = _status(a)
    served = next(r for r in after["requests"] if r["requestId"] == request_id)
    assert (after["lastRun"]["mode"], after["lastRun"]["reason"]) == ("full", "requested")
    assert (served["state"], served["runId"]) == ("finished", after["lastRun"]["runId"])
    assert after["pendingResync"] is False and _ids(azurite) == set(tenant.directory.users)
