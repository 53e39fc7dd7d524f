"""How the emulator pages /users/delta as Graph does: at most 200 a page, seeded short and empty pages, ``$top``
ignored, and "sync from now" (``$deltatoken=latest``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from testkit.service_calls import reply_of

from emulator import graph
from emulator.state import DELTA_PAGE_CAP, Tenant
from emulator.wire import GRAPH_ROLE, Request

USERS = 1500


@pytest.fixture(scope="module")
def _big() -> Tenant:
    tenant = Tenant(users=USERS, seed=11)
    tenant.port = 8443
    return tenant


@pytest.fixture
def big(_big: Tenant) -> Tenant:
    """A 1,500-user tenant, reset: enough for pages of 200 and some short ones."""
    _big.reset()
    return _big


def _req(tenant: Tenant, target: str, **headers: str) -> Request:
    token = tenant.issue_token(tenant.url, tenant.client_id, [GRAPH_ROLE], 600)[0]
    return Request("GET", target.removeprefix(tenant.url), {"Authorization": f"Bearer {token}", **headers})


def _page(tenant: Tenant, target: str, **headers: str) -> dict[str, Any]:
    status, body, _ = graph.handle(tenant, _req(tenant, target, **headers))
    assert status == 200
    return body if isinstance(body, dict) else json.loads(body)


def _sizes(tenant: Tenant, target: str, **headers: str) -> tuple[list[int], set[str], str]:
    """The page sizes of a whole round, the ids it served, and its deltaLink."""
    sizes: list[int] = []
    ids: set[str] = set()
    while True:
        page = _page(tenant, target, **headers)
        sizes.append(len(page["value"]))
        ids |= {item["id"] for item in page["value"]}
        if "@odata.deltaLink" in page:
            return sizes, ids, page["@odata.deltaLink"]
        target = page["@odata.nextLink"]


def test_pages_are_capped_at_200_whatever_the_preference(big: Tenant) -> None:
    """odata.maxpagesize=999 (or none) gives pages of at most 200; a smaller preference is honoured."""
    assert big.delta_page_cap == DELTA_PAGE_CAP == 200
    big.delta_short_pages = 0.0
    for headers in ({"Prefer": "odata.maxpagesize=999"}, {}):
        sizes, ids, _ = _sizes(big, "/v1.0/users/delta?$select=id", **headers)
        assert sizes == [200] * 7 + [100] and ids == set(big.directory.users)
    sizes, _, _ = _sizes(big, "/v1.0/users/delta?$select=id", Prefer="odata.maxpagesize=150")
    assert sizes == [150] * 10
    big.delta_page_cap = 999  # the switch: a benchmark may compare with Graph's /users page
    sizes, _, _ = _sizes(big, "/v1.0/users/delta?$select=id", Prefer="odata.maxpagesize=999")
    assert sizes == [999, 501]


def test_short_and_empty_pages_come_by_seed(big: Tenant) -> None:
    """By default some pages before the last are short, and some empty with a nextLink; the same pages every run."""
    big.delta_short_pages = 0.5
    first, ids, _ = _sizes(big, "/v1.0/users/delta?$select=id", Prefer="odata.maxpagesize=999")
    assert ids == set(big.directory.users) and sum(first) == USERS  # nothing lost, nothing twice
    assert any(0 < s < 200 for s in first[:-1]) and 0 in first[:-1] and max(first) == 200
    assert _sizes(big, "/v1.0/users/delta?$select=id", Prefer="odata.maxpagesize=999")[0] == first  # by seed
    page = _page(big, "/v1.0/users/delta?$select=id", Prefer="odata.maxpagesize=999")
    again = _page(big, page["@odata.nextLink"], Prefer="odata.maxpagesize=999")
    assert again == _page(big, page["@odata.nextLink"], Prefer="odata.maxpagesize=999")
    big.delta_short_pages = 0.0
    assert _sizes(big, "/v1.0/users/delta?$select=id")[0] == [200] * 7 + [100]


def test_top_is_ignored_on_delta(big: Tenant) -> None:
    """$top does not size delta pages (user-delta: not supported; Q&A 1090464: the pages are as without it)."""
    big.delta_short_pages = 0.0
    assert _sizes(big, "/v1.0/users/delta?$select=id&$top=2")[0] == [200] * 7 + [100]


def test_sync_from_now_is_a_delta_link_with_no_data_that_keeps_select(big: Tenant) -> None:
    """$deltatoken=latest: a deltaLink at once, no data; the next round has exactly the changes since, with $select."""
    body = _page(big, "/v1.0/users/delta?$deltatoken=latest&$select=id,displayName")
    assert body["value"] == [] and "@odata.nextLink" not in body and set(body) >= {"@odata.deltaLink"}
    uid = next(iter(big.directory.users))
    big.directory.update(uid, displayName="Renamed now", mail="renamed@example.com")
    added = big.directory.add()["id"]
    sizes, ids, _ = _sizes(big, body["@odata.deltaLink"])
    assert ids == {uid, added} and sum(sizes) == 2
    changes = _page(big, body["@odata.deltaLink"])["value"]
    assert all(set(item) == {"id", "displayName"} for item in changes)  # the $select the link was issued for
    assert {item["id"]: item["displayName"] for item in changes}[uid] == "Renamed now"


def test_sync_from_now_refused_and_unknown_properties(big: Tenant) -> None:
    """The latestRefused switch answers 400; an unknown $select property is a 400 as on any delta query."""
    big.delta_latest_refused = True
    assert reply_of(graph.handle, big, _req(big, "/v1.0/users/delta?$deltatoken=latest&$select=id")).status == 400
    big.delta_latest_refused = False
    assert reply_of(graph.handle, big, _req(big, "/v1.0/users/delta?$deltatoken=latest&$select=id,nope")).status == 400


def test_a_users_skip_token_continues_after_the_last_user_served(big: Tenant) -> None:
    """Users removed from a page already served do not shift the next page: no user is skipped (a cursor, not an offset)."""
    first = _page(big, "/v1.0/users?$top=10&$select=id")
    order = list(big.directory.users)
    assert [u["id"] for u in first["value"]] == order[:10]
    big.directory.remove(order[2])
    big.directory.remove(order[3], soft=True)
    second = _page(big, first["@odata.nextLink"])
    assert [u["id"] for u in second["value"]] == order[10:20]
