"""Large-tenant sync behaviour against the emulated tenant and Azurite: a killed full round resumed, delta
state Graph rejects, an edit delta lost and reconciliation found, and the credential's expiry in the status."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from testkit.triggers import http_get

from devtools.azurite import Azurite
from emulator import Emulator
from emulator.server import SECRET_NAME
from graphusers import expiry, service
from graphusers.config import load_settings
from graphusers.errors import UnavailableError
from graphusers.graph import GraphClient, RetryPolicy
from graphusers.sync import UserSync

SELECT = ("id", "displayName", "userPrincipalName", "mail", "accountEnabled")
USERS = 20_000
PAGE = 500


@pytest.fixture(scope="module")
def large_tenant() -> Iterator[Emulator]:
    with Emulator(users=USERS, seed=18) as emu:
        yield emu


@pytest.fixture(scope="module")
def small_tenant() -> Iterator[Emulator]:
    with Emulator(users=3000, seed=19) as emu:
        yield emu


def prepare(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """Reset the tenant, point the app settings at it, and wire a Graph client with a quick retry policy."""
    from azure.keyvault.secrets._shared import HttpChallengeCache

    emu.reset()
    HttpChallengeCache.clear()
    expiry.reset()
    for name, value in emu.app_settings().items():
        monkeypatch.setenv(name, value)
    built = service.build_services(load_settings())
    graph = GraphClient(built.settings.graph_endpoint, built.tokens, retry=RetryPolicy(backoff_factor=0.001))
    service.set_services(service.Services(settings=built.settings, tokens=built.tokens, graph=graph))
    return emu


@pytest.fixture
def large(large_tenant: Emulator, storage: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The 20,000-user tenant with a fresh sync container in Azurite."""
    return prepare(large_tenant, monkeypatch)


@pytest.fixture
def tenant(small_tenant: Emulator, storage: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """A 3,000-user tenant with a fresh sync container in Azurite."""
    return prepare(small_tenant, monkeypatch)


def run_sync(*, page_size: int = 999, full_round: str = "listing", **kwargs: Any) -> Any:
    s = service.get_services()
    return UserSync(
        s.graph,
        service.get_store(),
        s.settings.user_select,
        page_size=page_size,
        tenant=s.settings.tenant_id,
        full_round=full_round,
        **kwargs,
    ).run()


def snapshot(azurite: Azurite, name: str) -> dict[str, dict[str, Any]]:
    blob = (
        BlobServiceClient.from_connection_string(azurite.connection_string)
        .get_container_client(name)
        .get_blob_client("users.jsonl")
    )
    users = [json.loads(line) for line in blob.download_blob().readall().decode().splitlines()]
    assert len(users) == len({u["id"] for u in users}), "duplicate users in the snapshot"
    return {u["id"]: u for u in users}


def expected(emu: Emulator) -> dict[str, dict[str, Any]]:
    return {uid: {f: u.get(f) for f in SELECT} for uid, u in emu.directory.users.items()}


def status(triggers: dict[str, Any]) -> dict[str, Any]:
    resp = triggers["sync_status"](http_get("sync/status"))
    assert resp.status_code == 200
    return dict(json.loads(resp.get_body()))


def test_killed_full_round_resumes_where_it_stopped(
    large: Emulator, azurite: Azurite, storage: str, triggers: dict[str, Any]
) -> None:
    """A 20,000-user delta round killed at 60% resumes: the second run fetches 40% of the pages and ends exact."""
    pages = -(-USERS // PAGE)
    # Whole pages of PAGE users (the cap raised, no short pages), so that the page counts below are exact.
    large.delta_page_cap, large.delta_short_pages = PAGE, 0.0
    large.delta_outage_from = int(USERS * 0.6)  # pages from offset 12,000 on answer 503
    with pytest.raises(UnavailableError):
        run_sync(page_size=PAGE, full_round="delta")
    partial = status(triggers)
    assert partial["lastRun"]["status"] == "failed"
    assert partial["unfinishedRound"]["pages"] == 24 and partial["unfinishedRound"]["users"] == 12_000
    assert partial["unfinishedRound"]["started"] == partial["lastRun"]["started"]
    large.delta_outage_from = None
    large.clear_log()
    summary = run_sync(page_size=PAGE, full_round="delta")
    fetched = large.count("graph")
    assert summary.status == "succeeded" and summary.resumed["pages"] == 24
    assert fetched == summary.pages == pages - 24 and fetched <= 0.45 * pages
    assert snapshot(azurite, storage) == expected(large) and summary.users == USERS
    after = status(triggers)
    assert "unfinishedRound" not in after and after["lastSuccess"]["resumed"]["round"] == partial["unfinishedRound"]["round"]
    assert run_sync(page_size=PAGE, full_round="delta").mode == "incremental"


@pytest.mark.parametrize("kind", ["steady-state", "both-tokens"])
def test_delta_state_rejected_with_400_is_a_full_round(kind: str, tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Each 400 Graph answers when a delta state cannot continue starts a full round, reason state-rejected."""
    run_sync()
    tenant.delta_state_error = kind
    tenant.directory.add()
    summary = run_sync()
    assert tenant.count("graph", status=400) == 1
    assert (summary.status, summary.mode, summary.reason) == ("succeeded", "full", "state-rejected")
    assert "Graph rejected the delta state" in summary.message
    assert snapshot(azurite, storage) == expected(tenant)
    assert run_sync().mode == "incremental"


@pytest.mark.parametrize("kind", ["listing", "delta"])
def test_reconciliation_finds_an_edit_delta_lost(kind: str, tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Edits made during a (delta) full round that no delta shows are found by the periodic full round of either kind."""
    tenant.delta_lose_edits = 3
    run_sync(full_round="delta")  # the switch loses edits made during a delta round
    assert tenant.delta_lose_edits == 0
    wrong = {uid for uid, u in snapshot(azurite, storage).items() if u != expected(tenant)[uid]}
    assert len(wrong) == 3
    assert run_sync().mode == "incremental"
    assert {uid for uid, u in snapshot(azurite, storage).items() if u != expected(tenant)[uid]} == wrong
    later = time.time() + 120
    summary = run_sync(full_every=60, wall=lambda: later, full_round=kind)
    assert (summary.mode, summary.reason, summary.fullRound) == ("full", "reconcile", kind)
    assert summary.drift == {"added": 0, "changed": 3, "removed": 0}
    assert snapshot(azurite, storage) == expected(tenant)


def test_secret_expiry_warns_and_shows_in_status(
    tenant: Emulator, azurite: Azurite, storage: str, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A Key Vault secret expiring in 10 days: one WARNING a day, and the status shows {mode, expiresOn}."""
    expires = int(time.time()) + 10 * 86400
    tenant.secret_expiry[SECRET_NAME] = expires
    with caplog.at_level(logging.WARNING, logger="graphusers.expiry"):
        run_sync()
        run_sync()
    warnings = [r.getMessage() for r in caplog.records if r.name == "graphusers.expiry"]
    assert len(warnings) == 1 and warnings[0].startswith("Graph credential expires on ")
    assert "in 9 days" in warnings[0] or "in 10 days" in warnings[0]
    assert status(triggers)["credential"] == {
        "mode": "secret",
        "expiresOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
    }
