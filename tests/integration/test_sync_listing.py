"""Full rounds by listing against the emulated tenant and Azurite: "sync from now", then /users in pages of 999.

The tenant changes while a listing runs (on pages listed and not yet listed), a listing is resumed from its
checkpoint, and Graph refuses ``$deltatoken=latest`` or the listing's page token: each time the snapshot equals
the tenant after the next incremental run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.azurite import Azurite
from emulator import Emulator
from emulator.faults import Fault
from graphusers import expiry, service
from graphusers.config import load_settings
from graphusers.errors import UnavailableError
from graphusers.graph import GraphClient, RetryPolicy
from graphusers.sync import UserSync

SELECT = ("id", "displayName", "userPrincipalName", "mail", "accountEnabled")
USERS = 4000  # five listing pages of 999 (the last of 4)


@pytest.fixture(scope="module")
def _tenant() -> Iterator[Emulator]:
    with Emulator(users=USERS, seed=26) as emu:
        yield emu


@pytest.fixture
def tenant(_tenant: Emulator, storage: str, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The tenant, reset, with the app settings pointing at it and a fresh sync container."""
    from azure.keyvault.secrets._shared import HttpChallengeCache

    _tenant.reset()
    HttpChallengeCache.clear()
    expiry.reset()
    for name, value in _tenant.app_settings().items():
        monkeypatch.setenv(name, value)
    built = service.build_services(load_settings())
    graph = GraphClient(built.settings.graph_endpoint, built.tokens, retry=RetryPolicy(total=2, backoff_factor=0.001))
    service.set_services(service.Services(settings=built.settings, tokens=built.tokens, graph=graph))
    return _tenant


def job(**kwargs: Any) -> UserSync:
    s = service.get_services()
    return UserSync(s.graph, service.get_store(), s.settings.user_select, tenant=s.settings.tenant_id, **kwargs)


def snapshot(azurite: Azurite, name: str) -> dict[str, dict[str, Any]]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(name)
    lines = client.get_blob_client("users.jsonl").download_blob().readall().decode().splitlines()
    users = [json.loads(line) for line in lines]
    assert len(users) == len({u["id"] for u in users}), "duplicate users in the snapshot"
    return {u["id"]: u for u in users}


def expected(emu: Emulator) -> dict[str, dict[str, Any]]:
    return {uid: {f: u.get(f) for f in SELECT} for uid, u in emu.directory.users.items()}


def listing_requests(emu: Emulator) -> int:
    return sum(1 for r in emu.log if r.service == "graph" and r.path.startswith("/v1.0/users?"))


def test_listing_is_the_default_full_round_in_n_over_999_plus_one_requests(
    tenant: Emulator, azurite: Azurite, storage: str
) -> None:
    """The first sync lists /users 999 at a time after one $deltatoken=latest; the next run follows that deltaLink."""
    tenant.clear_log()
    summary = job().run()
    assert (summary.mode, summary.fullRound, summary.status) == ("full", "listing", "succeeded")
    assert summary.graphRequests == -(-USERS // 999) + 1 == listing_requests(tenant) + 1
    assert summary.pages == 5 and summary.users == USERS
    assert snapshot(azurite, storage) == expected(tenant)
    latest = [r for r in tenant.log if r.service == "graph" and "deltatoken=latest" in r.path.replace("%24", "$")]
    assert len(latest) == 1 and "displayName" in latest[0].path  # with the same $select
    following = job().run()
    assert following.mode == "incremental" and following.pages == 1 and following.users == USERS


def _changing(tenant: Emulator, after_page: int, change: Any) -> None:
    """Make the tenant change right after the listing's page ``after_page`` was served to the sync (once)."""
    graph = service.get_services().graph
    real = graph.iter_listing

    def iter_listing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for number, page in enumerate(real(*args, **kwargs)):
            yield page
            if number == after_page and graph.iter_listing is iter_listing:
                graph.iter_listing = real  # type: ignore[method-assign]
                change()

    graph.iter_listing = iter_listing  # type: ignore[method-assign]


def _mutate(tenant: Emulator) -> dict[str, list[str]]:
    """Adds, updates and removals on users the listing served already (first page) and not yet (last pages)."""
    directory = tenant.directory
    ids = list(directory.users)
    done: dict[str, list[str]] = {"updated": [*ids[1:4], *ids[-4:-1]], "removed": [ids[5], ids[6], ids[-6]], "added": []}
    for uid in done["updated"]:
        directory.update(uid, displayName=f"Renamed during the listing {uid[:8]}", mail=None)
    directory.remove(ids[5])
    directory.remove(ids[6], soft=True)
    directory.remove(ids[-6])
    done["added"] = [directory.add()["id"] for _ in range(3)]
    return done


def test_tenant_changes_during_a_listing_are_right_after_the_next_incremental_run(
    tenant: Emulator, azurite: Azurite, storage: str
) -> None:
    """Edits, removals and additions on pages listed and not yet listed: the snapshot equals the tenant one run later."""
    changed: dict[str, list[str]] = {}
    _changing(tenant, 0, lambda: changed.update(_mutate(tenant)))
    first = job().run()
    assert first.fullRound == "listing" and changed["removed"]
    # The listing saw the later pages after the changes: the snapshot already has some, not all, of them right.
    assert snapshot(azurite, storage) != expected(tenant)
    following = job().run()
    assert following.mode == "incremental"
    assert snapshot(azurite, storage) == expected(tenant)


def test_a_listing_resumed_from_its_checkpoint_is_right_after_the_next_incremental_run(
    tenant: Emulator, azurite: Azurite, storage: str
) -> None:
    """A listing that fails at page 3 keeps its next link and deltaLink; resumed after more changes, it ends exact."""

    def change_then_fail() -> None:
        _mutate(tenant)
        tenant.inject(Fault("graph", status=503, count=None, path=r"/users\?"))  # page 2 on: Graph is down

    _changing(tenant, 0, change_then_fail)
    with pytest.raises(Exception) as info:
        job(checkpoint_interval=0).run()
    assert not isinstance(info.value, AssertionError)
    body = json.loads(
        BlobServiceClient.from_connection_string(azurite.connection_string)
        .get_container_client(storage)
        .get_blob_client("staging/checkpoint.json")
        .download_blob()
        .readall()
    )
    assert body["kind"] == "listing" and "/users?" in body["nextLink"] and "/users/delta?" in body["deltaLink"]
    tenant.faults.clear()
    _mutate(tenant)  # more changes between the runs, on pages listed and not yet listed
    resumed = job().run()
    assert resumed.resumed is not None and resumed.fullRound == "listing" and resumed.status == "succeeded"
    assert job().run().mode == "incremental"
    assert snapshot(azurite, storage) == expected(tenant)


def test_listing_falls_back_to_a_delta_round_when_latest_is_refused(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """Graph answering 400 to $deltatoken=latest: a delta round in the same run, and the summary says so."""
    tenant.delta_latest_refused = True
    summary = job().run()
    assert (summary.status, summary.fullRound) == ("succeeded", "delta")
    assert "$deltatoken=latest" in summary.message and "a delta round replaced it" in summary.message
    assert listing_requests(tenant) == 0
    assert snapshot(azurite, storage) == expected(tenant)
    tenant.directory.update(next(iter(tenant.directory.users)), displayName="After the fallback")
    assert job().run().mode == "incremental" and snapshot(azurite, storage) == expected(tenant)


def test_an_expired_listing_page_token_falls_back_to_a_delta_round(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """A resumed listing whose page token expired (Directory_ExpiredPageToken) is dropped; a delta round replaces it."""
    _changing(tenant, 1, lambda: tenant.inject(Fault("graph", status=503, count=None, path=r"/users\?")))
    with pytest.raises(UnavailableError):
        job(checkpoint_interval=0).run()
    tenant.faults.clear()
    tenant.page_token_lifetime = 0.0  # every page token has expired by now
    summary = job().run()
    assert (summary.status, summary.fullRound, summary.resumed) == ("succeeded", "delta", None)
    assert "Directory_ExpiredPageToken" in summary.message and "a delta round replaced it" in summary.message
    assert snapshot(azurite, storage) == expected(tenant)
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(storage)
    assert not list(client.list_blobs(name_starts_with="staging/"))


def test_delta_round_with_short_pages_is_exact(tenant: Emulator, azurite: Azurite, storage: str) -> None:
    """A delta round whose pages are often short or empty (by seed) still ends at the tenant, in more requests."""
    tenant.delta_short_pages = 0.4
    summary = job(full_round="delta").run()
    assert summary.fullRound == "delta" and summary.pages > -(-USERS // 200)
    assert snapshot(azurite, storage) == expected(tenant)
