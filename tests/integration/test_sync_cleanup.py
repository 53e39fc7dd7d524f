"""Defects found in review, on the emulated tenant and Azurite: a half-failed checkpoint cleanup must not stall the sync."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from devtools.azurite import Azurite
from emulator import Emulator
from graphusers import service
from graphusers.config import load_settings
from graphusers.errors import UnavailableError
from graphusers.graph import GraphClient, RetryPolicy
from graphusers.storage import CHECKPOINT_BLOB, SyncStore
from graphusers.sync import UserSync

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small() -> Iterator[Emulator]:
    with Emulator(users=300, seed=5) as emu:
        yield emu


@pytest.fixture
def tenant(small: Emulator, storage: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    from azure.keyvault.secrets._shared import HttpChallengeCache

    small.reset()
    HttpChallengeCache.clear()
    for name, value in small.app_settings().items():
        monkeypatch.setenv(name, value)
    built = service.build_services(load_settings())
    graph = GraphClient(built.settings.graph_endpoint, built.tokens, retry=RetryPolicy(backoff_factor=0.001))
    service.set_services(service.Services(settings=built.settings, tokens=built.tokens, graph=graph))
    return small


def run_sync() -> Any:
    s = service.get_services()
    # page_size 50 and a checkpoint after every page: a round that fails leaves a checkpoint
    return UserSync(
        s.graph, service.get_store(), s.settings.user_select, page_size=50, checkpoint_interval=0, full_round="delta"
    ).run()  # the outage switch stops a delta round


def test_checkpoint_delete_failure_does_not_stall_later_runs(
    tenant: Emulator, azurite: Azurite, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Azurite: one transient error deleting staging/checkpoint.json after a resumed round's commit
    neither fails that run nor the next ones (the stale checkpoint, its staged lines gone, is dropped)."""
    tenant.delta_outage_from = 150
    with pytest.raises(UnavailableError):  # the outage
        run_sync()
    tenant.delta_outage_from = None
    original = SyncStore.delete
    failed: list[str] = []

    def delete(self: SyncStore, name: str, etag: str | None = None) -> None:
        if name == CHECKPOINT_BLOB and not failed:
            failed.append(name)
            raise ServiceRequestError("connection reset")
        original(self, name, etag)

    monkeypatch.setattr(SyncStore, "delete", delete)
    assert run_sync().status == "succeeded"  # despite the one transient failure
    assert failed
    assert run_sync().status == "succeeded"
