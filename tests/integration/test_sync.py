"""The delta sync against the emulated tenant and Azurite: snapshot, change log, crash safety, locking."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from testkit.triggers import http_get

from devtools.azurite import Azurite
from emulator import Emulator, Fault
from graphusers import service
from graphusers.config import load_settings
from graphusers.errors import StorageError, UnavailableError
from graphusers.graph import GraphClient, RetryPolicy
from graphusers.sync import UserSync

SELECT = ("id", "displayName", "userPrincipalName", "mail", "accountEnabled")


@pytest.fixture(scope="module")
def big_tenant() -> Iterator[Emulator]:
    with Emulator(users=5000, seed=11) as emu:
        yield emu


@pytest.fixture
def tenant(big_tenant: Emulator, storage: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """A 5,000-user tenant, reset, with app settings for it and a fresh sync container in Azurite."""
    from azure.keyvault.secrets._shared import HttpChallengeCache

    big_tenant.reset()
    HttpChallengeCache.clear()
    for name, value in big_tenant.app_settings().items():
        monkeypatch.setenv(name, value)
    # Production wiring with a quick retry policy, so that failure tests do not sleep.
    built = service.build_services(load_settings())
    graph = GraphClient(built.settings.graph_endpoint, built.tokens, retry=RetryPolicy(backoff_factor=0.001))
    service.set_services(service.Services(settings=built.settings, tokens=built.tokens, graph=graph))
    return big_tenant


def container(azurite: Azurite, name: str) -> Any:
    return BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(name)


def blob(azurite: Azurite, name: str, path: str) -> bytes:
    return bytes(container(azurite, name).get_blob_client(path).download_blob().readall())


def snapshot(azurite: Azurite, name: str) -> dict[str, dict[str, Any]]:
    lines = blob(azurite, name, "users.jsonl").decode().splitlines()
    users = [json.loads(line) for line in lines]
    assert len(users) == len({u["id"] for u in users}), "duplicate users in the snapshot"
    return {u["id"]: u for u in users}


def expected(emu: Emulator) -> dict[str, dict[str, Any]]:
    return {uid: {f: u.get(f) for f in SELECT} for uid, u in emu.directory.users.items()}


def run_sync() -> Any:
    s = service.get_services()
    return UserSync(s.graph, service.get_store(), s.settings.user_select).run()


def test_full_then_incremental_sync(tenant: Emulator, azurite: Azurite, storage: str,
                                    triggers: dict[str, Any]) -> None:
    """5,000 users, then 10 updates, 3 deletions, 2 additions: a 15-line change log and an exact snapshot."""
    from azure.functions.timer import TimerRequest

    triggers["user_sync_timer"](TimerRequest(past_due=False))
    assert snapshot(azurite, storage) == expected(tenant)
    first = json.loads(blob(azurite, storage, "state.json"))
    assert first["lastSync"]["mode"] == "full" and first["lastSync"]["users"] == 5000
    assert first["lastSync"]["pages"] == 6 and first["lastSync"]["status"] == "succeeded"

    ids = list(tenant.directory.users)
    for uid in ids[:10]:
        tenant.directory.update(uid, displayName=f"Renamed {uid[:8]}")
    for uid in ids[10:13]:
        tenant.directory.remove(uid)
    added = [tenant.directory.add()["id"] for _ in range(2)]
    tenant.clear_log()

    triggers["user_sync_timer"](TimerRequest(past_due=True))
    assert snapshot(azurite, storage) == expected(tenant)
    assert tenant.counts() == {"graph": 1}  # one delta page; the token came from MSAL's cache
    assert all("/users/delta" in r.path for r in tenant.log)
    state = json.loads(blob(azurite, storage, "state.json"))
    last = state["lastSync"]
    assert (last["mode"], last["added"], last["updated"], last["removed"], last["users"]) == (
        "incremental", 2, 10, 3, 5000 - 3 + 2)
    assert last["graphRequests"] == 1 and state["deltaLink"] != first["deltaLink"]
    logs = [b.name for b in container(azurite, storage).list_blobs(name_starts_with="changes/")]
    assert len(logs) == 1 and logs[0].endswith(f"-{last['runId']}.jsonl")
    changes = [json.loads(line) for line in blob(azurite, storage, logs[0]).decode().splitlines()]
    assert len(changes) == 15
    assert sorted(c["change"] for c in changes) == ["added"] * 2 + ["removed"] * 3 + ["updated"] * 10
    assert {c["id"] for c in changes if c["change"] == "added"} == set(added)
    # An update carries only what changed, and the stored record keeps the rest.
    upd = next(c for c in changes if c["change"] == "updated")
    assert set(upd["properties"]) == {"id", "displayName"}
    assert snapshot(azurite, storage)[upd["id"]]["mail"] == tenant.directory.users[upd["id"]]["mail"]


def test_graph_failure_mid_resync_changes_nothing(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """A 500 on the 2nd page of a full resync leaves users.jsonl and state.json byte-identical; the next run heals."""
    assert run_sync().mode == "full"
    before = (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json"))
    tenant.directory.delta_epoch += 1  # the stored delta token is now expired: 410, then a full resync
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="Changed meanwhile")
    tenant.inject(Fault("graph", status=500, count=None, path=r"delta\?\$skiptoken="))
    with pytest.raises(Exception) as info:
        run_sync()
    assert not isinstance(info.value, AssertionError)
    assert tenant.count("graph", status=410) == 1 and tenant.count("graph", status=500) >= 1
    assert (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json")) == before
    assert not list(container(azurite, storage).list_blobs(name_starts_with="staging/"))
    tenant.faults.clear()
    summary = run_sync()
    assert summary.status == "succeeded" and summary.mode == "full"
    assert snapshot(azurite, storage) == expected(tenant)
    assert run_sync().mode == "incremental"


def test_storage_conflict_keeps_the_snapshot(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """If users.jsonl changes under a running sync, its ETag commit fails and nothing is replaced."""
    run_sync()
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="x")
    users = container(azurite, storage).get_blob_client("users.jsonl")
    real_iter = service.get_store().iter_lines

    def meddle(name: str, etag: str | None) -> Iterator[str]:
        users.upload_blob(b'{"id":"intruder"}\n', overwrite=True)
        return real_iter(name, etag)

    store = service.get_store()
    store.iter_lines = meddle  # type: ignore[method-assign]
    state = blob(azurite, storage, "state.json")
    with pytest.raises(StorageError):
        run_sync()
    assert blob(azurite, storage, "users.jsonl") == b'{"id":"intruder"}\n'
    assert blob(azurite, storage, "state.json") == state


def test_concurrent_syncs_one_runs_one_skips(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Two syncs at once: one does the work, the other says a sync is already running."""
    service.get_store().ensure()
    tenant.latency["graph"] = 0.15
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        barrier.wait()
        results.append(run_sync())

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["skipped", "succeeded"]
    skipped = next(r for r in results if r.status == "skipped")
    assert "already running" in skipped.message and skipped.graphRequests == 0


def test_replayed_objects_are_applied_once(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Graph returning objects twice (in full and incremental rounds) never duplicates a user."""
    tenant.delta_replay = True
    run_sync()
    assert snapshot(azurite, storage) == expected(tenant)
    uid = next(iter(tenant.directory.users))
    tenant.directory.update(uid, accountEnabled=False)
    run_sync()
    run_sync()  # a replay of an already applied round is harmless too
    assert snapshot(azurite, storage) == expected(tenant)


def test_status_endpoint(tenant: Emulator, azurite: Azurite, storage: str, triggers: dict[str, Any]) -> None:
    """GET /api/sync/status is 404 before any run and the lastSync summary after."""
    resp = triggers["sync_status"](http_get("sync/status"))
    assert resp.status_code == 404 and json.loads(resp.get_body())["error"]["code"] == "not_found"
    summary = run_sync()
    resp = triggers["sync_status"](http_get("sync/status"))
    body = json.loads(resp.get_body())
    assert resp.status_code == 200 and body["runId"] == summary.runId and body["users"] == 5000
    assert set(body) >= {"runId", "started", "finished", "mode", "pages", "users", "added", "updated", "removed",
                         "graphRequests", "status"}


def test_storage_down_is_a_clean_failure(tenant: Emulator, monkeypatch: pytest.MonkeyPatch,
                                         triggers: dict[str, Any]) -> None:
    """Unreachable storage: the status endpoint answers 503 JSON and the sync raises StorageError."""
    from azure.storage.blob import ContainerClient

    from graphusers.storage import SyncStore

    # Nothing listens on port 9; no retries, so the test does not wait out the SDK's backoff.
    dead = ContainerClient("http://127.0.0.1:9/devstoreaccount1", "user-sync", retry_total=0)
    service.set_store(SyncStore(dead))
    with pytest.raises(UnavailableError):
        run_sync()
    resp = triggers["sync_status"](http_get("sync/status"))
    assert resp.status_code in (503,) and json.loads(resp.get_body())["error"]["code"] == "storage_unavailable"


def test_storage_failing_mid_sync_leaves_no_partial_snapshot(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Blob Storage failing while the new snapshot is committed: nothing changes, and the next run converges."""
    from azure.core.exceptions import ServiceRequestError

    from graphusers.storage import BlockWriter

    run_sync()
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="Changed before the outage")
    before = (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json"))
    real_commit = BlockWriter.commit

    def outage(self: BlockWriter, etag: str | None) -> str:
        raise ServiceRequestError("connection refused")

    BlockWriter.commit = outage  # type: ignore[method-assign]
    try:
        with pytest.raises(StorageError):
            run_sync()
    finally:
        BlockWriter.commit = real_commit  # type: ignore[method-assign]
    assert (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json")) == before
    assert run_sync().status == "succeeded"
    assert snapshot(azurite, storage) == expected(tenant)
