"""The app's delta sync against Graph's stricter delta in the emulator: replays of old changes in later rounds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite
from devtools.harness import RuntimeHost
from emulator import Emulator
from graphusers import service
from graphusers.config import load_settings
from graphusers.sync import UserSync


@pytest.fixture(scope="module")
def _tenant() -> Iterator[Emulator]:
    with Emulator(users=300, seed=21) as emu:
        yield emu


@pytest.fixture
def tenant(_tenant: Emulator, storage: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    from azure.keyvault.secrets._shared import HttpChallengeCache

    _tenant.reset()
    HttpChallengeCache.clear()
    for name, value in _tenant.app_settings().items():
        monkeypatch.setenv(name, value)
    service.set_services(service.build_services(load_settings()))
    return _tenant


def _sync() -> Any:
    s = service.get_services()
    return UserSync(s.graph, service.get_store(), s.settings.user_select, page_size=40).run()


def _snapshot(azurite: Azurite, container: str) -> dict[str, dict[str, Any]]:
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(container, "users.jsonl")
    users = [json.loads(line) for line in blob.download_blob().readall().decode().splitlines()]
    assert len(users) == len({u["id"] for u in users})
    return {u["id"]: u for u in users}


def test_replays_of_old_changes_leave_the_snapshot_right(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Later rounds that serve earlier changes again (removals included) still end at the tenant's state."""
    select = service.get_services().settings.user_select
    assert _sync().status == "succeeded"
    ids = list(tenant.directory.users)
    for uid in ids[:30]:
        tenant.directory.update(uid, jobTitle="Round two")
    for uid in ids[-5:]:
        tenant.directory.remove(uid)
    assert _sync().status == "succeeded"
    tenant.delta_replay_old = 0.6  # from now on, rounds replay older changes
    for uid in ids[30:40]:
        tenant.directory.update(uid, displayName="Round three")
    for _ in range(3):
        assert _sync().status == "succeeded"
    want = {uid: {f: u.get(f) for f in select} for uid, u in tenant.directory.users.items()}
    assert _snapshot(azurite, storage) == want


def test_unified_rounds_and_many_changes_per_user(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """With delta_unify (one entry per object per round) a user changed, removed and restored ends right."""
    select = service.get_services().settings.user_select
    assert _sync().status == "succeeded"
    ids = list(tenant.directory.users)
    tenant.delta_unify = True
    tenant.directory.update(ids[0], displayName="Once")
    tenant.directory.update(ids[0], displayName="Twice")
    tenant.directory.remove(ids[1], soft=True)
    tenant.directory.restore(ids[1])
    tenant.directory.remove(ids[2])
    assert _sync().status == "succeeded"
    want = {uid: {f: u.get(f) for f in select} for uid, u in tenant.directory.users.items()}
    assert _snapshot(azurite, storage) == want


ROOT = Path(__file__).resolve().parents[2]
HARNESS_CONTAINER = "harness-delta-replays"


@pytest.fixture(scope="module")
def host(_tenant: Emulator, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeHost]:
    log = tmp_path_factory.mktemp("delta") / "worker.log"
    env = {
        **_tenant.app_settings(),
        "AzureWebJobsStorage": azurite.connection_string,
        "USER_SYNC_CONTAINER": HARNESS_CONTAINER,
    }
    with RuntimeHost(ROOT, env, log_path=log) as h:
        yield h


@pytest.mark.harness
def test_runtime_sync_with_replays_and_null_updates(host: RuntimeHost, _tenant: Emulator, azurite: Azurite) -> None:
    """Through the real runtime: timer syncs over rounds that replay old changes end at the tenant's state."""
    _tenant.reset()
    select = ("id", "displayName", "userPrincipalName", "mail", "accountEnabled")
    assert host.timer("user_sync_timer", past_due=True).result.status == host.protos.StatusResult.Success
    ids = list(_tenant.directory.users)
    for uid in ids[:20]:
        _tenant.directory.update(uid, mail=None, displayName="Changed " + uid[:4])
    _tenant.directory.remove(ids[-1])
    assert host.timer("user_sync_timer", past_due=True).result.status == host.protos.StatusResult.Success
    _tenant.delta_replay_old = 0.7
    _tenant.directory.update(ids[30], accountEnabled=False)
    for _ in range(2):
        assert host.timer("user_sync_timer", past_due=True).result.status == host.protos.StatusResult.Success
    want = {uid: {f: u.get(f) for f in select} for uid, u in _tenant.directory.users.items()}
    assert _snapshot(azurite, HARNESS_CONTAINER) == want
