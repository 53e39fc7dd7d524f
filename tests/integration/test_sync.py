"""The delta sync against the emulated tenant and Azurite: snapshot, change log, crash safety, locking."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
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


def run_sync(
    *, full: bool = False, select: tuple[str, ...] | None = None, page_size: int = 999, full_round: str = "listing"
) -> Any:
    s = service.get_services()
    job = UserSync(s.graph, service.get_store(), select or s.settings.user_select, page_size=page_size, full_round=full_round)
    return job.run(full=True) if full else job.run()


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%SZ")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def names(azurite: Azurite, name: str) -> set[str]:
    return {b.name for b in container(azurite, name).list_blobs()}


def test_full_then_incremental_sync(tenant: Emulator, azurite: Azurite, storage: str, triggers: dict[str, Any]) -> None:
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
        "incremental",
        2,
        10,
        3,
        5000 - 3 + 2,
    )
    assert last["graphRequests"] == 1 and state["deltaLink"] != first["deltaLink"]
    logs = [b.name for b in container(azurite, storage).list_blobs(name_starts_with="changes/")]
    # Named by the deltaLink the round started from, so that a replay of the round rewrites it.
    assert logs == [f"changes/{stamp(first['deltaLinkIssued'])}-{sha(first['deltaLink'])}.jsonl"]
    changes = [json.loads(line) for line in blob(azurite, storage, logs[0]).decode().splitlines()]
    assert len(changes) == 15
    assert sorted(c["change"] for c in changes) == ["added"] * 2 + ["removed"] * 3 + ["updated"] * 10
    assert {c["id"] for c in changes if c["change"] == "added"} == set(added)
    # An update carries only what changed, and the stored record keeps the rest.
    upd = next(c for c in changes if c["change"] == "updated")
    assert set(upd["properties"]) == {"id", "displayName"}
    assert snapshot(azurite, storage)[upd["id"]]["mail"] == tenant.directory.users[upd["id"]]["mail"]


@pytest.mark.parametrize(("kind", "pages"), [("listing", r"users\?.*\$skiptoken="), ("delta", r"delta\?\$skiptoken=")])
def test_graph_failure_mid_resync_changes_nothing(
    kind: str, pages: str, tenant: Emulator, azurite: Azurite, storage: str
) -> None:
    """A 500 on the 2nd page of a full resync (of either kind) leaves users.jsonl and state.json byte-identical and
    a checkpoint; the next run continues the round from it and heals."""
    assert run_sync(full_round=kind).mode == "full"
    before = (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json"))
    tenant.directory.delta_epoch += 1  # the stored delta token is now expired: 410, then a full resync
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="Changed meanwhile")
    tenant.inject(Fault("graph", status=500, count=None, path=pages))
    with pytest.raises(Exception) as info:
        run_sync(full_round=kind)
    assert not isinstance(info.value, AssertionError)
    assert tenant.count("graph", status=410) == 1 and tenant.count("graph", status=500) >= 1
    assert (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json")) == before
    staged = {b.name for b in container(azurite, storage).list_blobs(name_starts_with="staging/")}
    assert "staging/checkpoint.json" in staged and len(staged) == 2
    tenant.faults.clear()
    summary = run_sync(full_round=kind)
    assert summary.status == "succeeded" and summary.mode == "full" and summary.resumed["pages"] == 1
    assert snapshot(azurite, storage) == expected(tenant)
    assert not list(container(azurite, storage).list_blobs(name_starts_with="staging/"))
    assert run_sync(full_round=kind).mode == "incremental"


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
    """GET /api/sync/status is 404 before any run, then {"lastRun", "lastSuccess", "stale", "credential", ...}."""
    resp = triggers["sync_status"](http_get("sync/status"))
    assert resp.status_code == 404 and json.loads(resp.get_body())["error"]["code"] == "not_found"
    summary = run_sync()
    resp = triggers["sync_status"](http_get("sync/status"))
    body = json.loads(resp.get_body())
    assert resp.status_code == 200
    assert set(body) == {"lastRun", "lastSuccess", "stale", "credential", "pendingResync", "requests"}
    assert body["pendingResync"] is False and body["requests"] == []
    assert body["stale"] is False and body["credential"] == {"mode": "secret", "expiresOn": None}
    assert body["lastRun"] == body["lastSuccess"] == summary.as_dict()
    assert body["lastRun"]["runId"] == summary.runId and body["lastRun"]["users"] == 5000
    assert set(body["lastRun"]) == {
        "runId",
        "started",
        "finished",
        "mode",
        "reason",
        "fullRound",
        "pages",
        "users",
        "added",
        "updated",
        "removed",
        "graphRequests",
        "status",
        "message",
        "replaced",
        "requests",
    }
    assert body["lastRun"]["replaced"] == ["users.jsonl", "state.json"]


def test_storage_down_is_a_clean_failure(tenant: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any]) -> None:
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

    def outage(self: BlockWriter, metadata: dict[str, str] | None = None) -> str:
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


# -- delta correctness: each case below failed before the order rule, the 4xx resync and status.json --------


def test_removed_then_live_in_a_full_round_keeps_the_user(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """A full round where 10% of users also come as an earlier removal (even a page before) keeps every user."""
    tenant.delta_removed_then_live = 0.1
    summary = run_sync(page_size=500)
    assert summary.status == "succeeded" and summary.users == 5000
    assert snapshot(azurite, storage) == expected(tenant)


def test_live_then_removed_in_a_full_round_drops_the_user(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Users deleted while a full round runs, after their live copy was served, are absent from the snapshot."""
    s = service.get_services()
    real = s.graph.iter_delta
    gone: list[str] = []

    def iter_delta(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, page in enumerate(real(*args, **kwargs)):
            yield page
            if number == 0:
                for item in page.value[:3]:
                    tenant.directory.remove(item["id"], soft=len(gone) % 2 == 0)
                    gone.append(item["id"])

    s.graph.iter_delta = iter_delta  # type: ignore[method-assign]
    run_sync(page_size=1000, full_round="delta")  # what a delta round sends (a listing has its own tests)
    users = snapshot(azurite, storage)
    assert not set(gone) & set(users) and users == expected(tenant) and len(users) == 4997


def test_incremental_round_applies_entries_in_order(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Removed-then-restored stays, updated-then-removed goes, two partial updates both land, with both reasons."""
    run_sync()
    ids = list(tenant.directory.users)
    d = tenant.directory
    d.remove(ids[0], soft=True)
    d.restore(ids[0])  # "changed" removal, then the live object
    d.update(ids[1], displayName="Last seen")
    d.remove(ids[1])  # a live copy, then a "deleted" removal
    d.update(ids[2], displayName="Two")
    d.update(ids[2], mail="two@emulated.example")  # two partial records of one user
    d.remove(ids[3], soft=True)
    tenant.clear_log()
    summary = run_sync()
    assert summary.mode == "incremental" and (summary.removed, summary.updated) == (2, 2)
    assert snapshot(azurite, storage) == expected(tenant)
    log = next(p for p in names(azurite, storage) if p.startswith("changes/"))
    changes = [json.loads(line) for line in blob(azurite, storage, log).decode().splitlines()]
    assert {c["id"]: c.get("reason") for c in changes if c["change"] == "removed"} == {ids[1]: "deleted", ids[3]: "changed"}
    two = next(c for c in changes if c["id"] == ids[2])
    assert two["properties"] == {"id": ids[2], "displayName": "Two", "mail": "two@emulated.example"}


def test_minimal_updates_carry_nulls_and_full_updates_merge(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """The sync asks for return=minimal, so a property set to null reaches the snapshot; merged lines keep the rest."""
    run_sync()
    uid = next(iter(tenant.directory.users))
    tenant.directory.update(uid, mail=None)
    tenant.clear_log()
    run_sync()
    assert any("users/delta" in r.path for r in tenant.log)
    line = snapshot(azurite, storage)[uid]
    assert line["mail"] is None and line["displayName"] == tenant.directory.users[uid]["displayName"]
    assert snapshot(azurite, storage) == expected(tenant)


@pytest.mark.parametrize("status", [410, 400])
def test_every_expired_state_answer_resyncs_in_the_same_run(
    status: int, tenant: Emulator, azurite: Azurite, storage: str
) -> None:
    """An expired delta token answered 410 resyncRequired or 400 syncStateNotFound: a full sync in the same run."""
    run_sync()
    tenant.delta_expiry_status = status
    tenant.directory.delta_epoch += 1
    tenant.directory.add()
    summary = run_sync()
    assert tenant.count("graph", status=status) == 1
    assert (summary.status, summary.mode, summary.reason) == ("succeeded", "full", "expired")
    assert summary.users == 5001 and snapshot(azurite, storage) == expected(tenant)
    assert json.loads(blob(azurite, storage, "status.json"))["lastRun"]["reason"] == "expired"
    assert run_sync().mode == "incremental"


def test_status_shows_failed_and_skipped_runs(tenant: Emulator, azurite: Azurite, storage: str, triggers: dict[str, Any]) -> None:
    """A failed run and a skipped run are lastRun; lastSuccess stays; neither touches users.jsonl or state.json."""
    tenant.inject(Fault("graph", status=403, count=1, path=r"users/delta"))
    with pytest.raises(Exception):  # noqa: B017 - the app's PermissionDeniedError
        run_sync()
    body = json.loads(triggers["sync_status"](http_get("sync/status")).get_body())
    assert body["lastSuccess"] is None and body["lastRun"]["status"] == "failed"
    assert body["lastRun"]["error"]["code"] == "permission_denied" and "User.Read.All" in body["lastRun"]["error"]["message"]
    ok = run_sync()
    before = (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json"))
    lease = container(azurite, storage).get_blob_client("sync.lock").acquire_lease(lease_duration=15)
    try:
        skipped = run_sync()
    finally:
        lease.release()
    assert skipped.status == "skipped"
    body = json.loads(triggers["sync_status"](http_get("sync/status")).get_body())
    assert body["lastRun"]["status"] == "skipped" and body["lastRun"]["runId"] == skipped.runId
    assert body["lastSuccess"]["runId"] == ok.runId and "error" not in body["lastSuccess"]
    assert (blob(azurite, storage, "users.jsonl"), blob(azurite, storage, "state.json")) == before


def test_changed_select_forces_a_full_resync(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """A new USER_SELECT starts a full sync; every line then carries exactly the new properties."""
    run_sync()
    wider = (*SELECT, "jobTitle", "mobilePhone")
    summary = run_sync(select=wider)
    assert (summary.mode, summary.reason) == ("full", "query-changed")
    lines = [json.loads(line) for line in blob(azurite, storage, "users.jsonl").decode().splitlines()]
    assert all(list(u) == list(wider) for u in lines) and len(lines) == 5000
    assert run_sync(select=wider).mode == "incremental"


def test_requested_full_resync(tenant: Emulator, azurite: Azurite, storage: str, triggers: dict[str, Any]) -> None:
    """POST /api/sync {"mode": "full"} queues a full resync, which runs with reason "requested"."""
    run_sync()

    class Out:
        value = ""

        def set(self, value: str) -> None:
            self.value = value

    out = Out()
    req = func.HttpRequest(method="POST", url="http://localhost/api/sync", params={}, body=b'{"mode": "full"}', headers={})
    assert triggers["request_sync"](req, out).status_code == 202
    triggers["user_sync_queue"](func.QueueMessage(id="m1", body=out.value.encode()))
    last = json.loads(blob(azurite, storage, "status.json"))["lastRun"]
    assert (last["mode"], last["reason"], last["users"]) == ("full", "requested", 5000)


def test_stale_staging_is_removed_by_the_lease_holder(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """A staging blob a crashed run left is deleted; afterwards only the snapshot's own blobs remain."""
    run_sync()
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="x")
    container(azurite, storage).upload_blob("staging/full-deadbeef0000.jsonl", b'{"id":"personal data"}\n')
    run_sync()
    left = names(azurite, storage)
    assert {n for n in left if not n.startswith("changes/")} == {"users.jsonl", "state.json", "status.json", "sync.lock"}


def test_state_write_failure_is_reported_and_the_replay_writes_one_change_log(
    tenant: Emulator, azurite: Azurite, storage: str
) -> None:
    """state.json failing after users.jsonl was replaced says so; the replay rewrites the same change log."""
    from azure.core.exceptions import ServiceRequestError

    from graphusers.storage import SyncStore

    run_sync()
    added = tenant.directory.add()["id"]
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="Renamed once")
    real = SyncStore.write_json

    def failing(self: SyncStore, name: str, body: dict[str, Any], etag: str | None, *, run_id: str = "") -> str:
        if name == "state.json":
            raise ServiceRequestError("connection reset")
        return real(self, name, body, etag, run_id=run_id)

    SyncStore.write_json = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(StorageError) as info:
            run_sync()
    finally:
        SyncStore.write_json = real  # type: ignore[method-assign]
    assert "replaced" in info.value.message and "changed nothing" not in info.value.message
    last = json.loads(blob(azurite, storage, "status.json"))["lastRun"]
    assert last["status"] == "failed" and "users.jsonl was replaced" in last["message"]
    assert run_sync().status == "succeeded"
    logs = [n for n in names(azurite, storage) if n.startswith("changes/")]
    assert len(logs) == 1
    changes = {c["id"]: c for c in map(json.loads, blob(azurite, storage, logs[0]).decode().splitlines())}
    assert changes[added]["change"] == "added" and len(changes) == 2
    assert snapshot(azurite, storage) == expected(tenant)


def test_line_separators_are_escaped(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """U+2028/U+2029 in a property are written as JSON escapes, so str.splitlines() sees one line per user."""
    ids = list(tenant.directory.users)
    tenant.directory.update(ids[0], displayName="Ada\u2028Lovelace")
    run_sync()
    tenant.directory.update(ids[1], displayName="Alan\u2029Turing")
    run_sync()
    for name in names(azurite, storage):
        if name.endswith(".jsonl"):
            text = blob(azurite, storage, name).decode()
            assert "\u2028" not in text and "\u2029" not in text
            assert "\\u2028" in text or "\\u2029" in text, name
    users = snapshot(azurite, storage)  # splitlines(): one record per line
    assert users[ids[0]]["displayName"] == "Ada\u2028Lovelace" and users[ids[1]]["displayName"] == "Alan\u2029Turing"
    assert users == expected(tenant)


def test_streaming_across_tiny_blocks_on_azurite(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """With 1 KiB blocks and 1 KiB downloads the snapshot spans hundreds of blocks and still reads back exactly."""
    from graphusers.storage import SyncStore

    client = BlobServiceClient.from_connection_string(
        azurite.connection_string, max_single_get_size=1024, max_chunk_get_size=1024
    )
    service.set_store(SyncStore(client.get_container_client(storage), block_size=1024))
    run_sync()
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="Across blocks")
    run_sync()
    blocks = container(azurite, storage).get_blob_client("users.jsonl").get_block_list()[0]
    assert len(blocks) > 500
    assert snapshot(azurite, storage) == expected(tenant)


# -- the emulator's delta behaviour, as Graph documents it ------------------------------------------------------


def _delta(emu: Emulator, url: str, prefer: str = "") -> dict[str, Any]:
    import requests

    from graphusers.graph import API_VERSION

    s = service.get_services()
    headers = {"Authorization": f"Bearer {s.tokens.get_token()}", **({"Prefer": prefer} if prefer else {})}
    if not url.startswith("https://"):
        url = f"{emu.url}/{API_VERSION}/users/delta?$select={','.join(SELECT)}"
    resp = requests.get(url, headers=headers, timeout=10)
    return {"status": resp.status_code, **resp.json()}


def _round(emu: Emulator, url: str, prefer: str = "") -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    while True:
        body = _delta(emu, url, prefer)
        assert body["status"] == 200, body
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]


def test_emulator_updates_full_by_default_minimal_on_request(tenant: Emulator) -> None:
    """Without Prefer: return=minimal an update has every selected property with a value and the changed ones
    set to null; with it, only changes."""
    _, link = _round(tenant, "")
    uid = next(iter(tenant.directory.users))
    tenant.directory.update(uid, displayName="Changed", mail=None)
    full, _ = _round(tenant, link)
    with_values = {f: v for f in SELECT[1:] if (v := tenant.directory.users[uid][f]) is not None}
    assert full == [{"id": uid, **with_values, "mail": None}]
    minimal, _ = _round(tenant, link, "return=minimal")
    assert minimal == [{"id": uid, "displayName": "Changed", "mail": None}]
    tenant.delta_minimal = True
    forced, _ = _round(tenant, link)
    assert forced == minimal


def test_emulator_duplicates_reasons_and_expiry(tenant: Emulator) -> None:
    """Removed-then-live in a full round, both removal reasons, and expiry as 410 or 400 by switch."""
    tenant.delta_removed_then_live = 0.05
    items, link = _round(tenant, "", "odata.maxpagesize=100")
    removals = [i for i, item in enumerate(items) if "@removed" in item]
    assert 100 < len(removals) < 500 and len(items) == 5000 + len(removals)
    first_live = {item["id"]: i for i, item in reversed(list(enumerate(items))) if "@removed" not in item}
    assert all(first_live[items[i]["id"]] > i for i in removals)  # the removal comes first
    assert any(first_live[items[i]["id"]] // 100 > i // 100 for i in removals)  # on an earlier page
    ids = list(tenant.directory.users)
    tenant.directory.remove(ids[0], soft=True)
    tenant.directory.remove(ids[1])
    changes, _ = _round(tenant, link)
    assert changes == [{"id": ids[0], "@removed": {"reason": "changed"}}, {"id": ids[1], "@removed": {"reason": "deleted"}}]
    tenant.directory.delta_epoch += 1
    assert _delta(tenant, link)["status"] == 410 and _delta(tenant, link)["error"]["code"] == "resyncRequired"
    tenant.delta_expiry_status = 400
    assert _delta(tenant, link)["error"]["code"] == "syncStateNotFound"
