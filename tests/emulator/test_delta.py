"""Graph's /users/delta in the emulator: nulls in full updates, the 410's Location, replays, id scoping, many rounds."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from testkit.service_calls import reply_of

from emulator import graph
from emulator.state import Tenant
from emulator.wire import GRAPH_ROLE, Request


def _req(tenant: Tenant, target: str, **headers: str) -> Request:
    token = tenant.issue_token(tenant.url, tenant.client_id, [GRAPH_ROLE], 600)[0]
    return Request("GET", target.removeprefix(tenant.url), {"Authorization": f"Bearer {token}", **headers})


def _page(tenant: Tenant, target: str, **headers: str) -> dict[str, Any]:
    status, body, _ = graph.handle(tenant, _req(tenant, target, **headers))
    assert status == 200
    return body if isinstance(body, dict) else json.loads(body)


def _round(tenant: Tenant, target: str, size: int = 7) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    while True:
        page = _page(tenant, target, Prefer=f"odata.maxpagesize={size}")
        items += page["value"]
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"]
        target = page["@odata.nextLink"]


def test_a_full_update_carries_properties_set_to_null(tenant: Tenant) -> None:
    """Without return=minimal an update has the selected values and the changed properties that became null."""
    _, link = _round(tenant, "/v1.0/users/delta?$select=id,displayName,mail,jobTitle")
    uid = next(iter(tenant.directory.users))
    tenant.directory.update(uid, jobTitle=None)
    changes, _ = _round(tenant, link)
    user = tenant.directory.users[uid]
    assert changes == [{"id": uid, "displayName": user["displayName"], "mail": user["mail"], "jobTitle": None}]


def test_gone_carries_a_location_that_starts_again(tenant: Tenant) -> None:
    """A 410 has a Location with the initial query and an empty $deltatoken; following it is a full round."""
    _, link = _round(tenant, "/v1.0/users/delta?$select=id,displayName")
    tenant.directory.delta_epoch += 1
    reply = reply_of(graph.handle, tenant, _req(tenant, link))
    assert reply.status == 410
    location = reply.headers["Location"]
    assert location == f"{tenant.url}/v1.0/users/delta?$select=id,displayName&$deltatoken="
    items, _ = _round(tenant, location)
    assert {i["id"] for i in items} == set(tenant.directory.users) and all(set(i) == {"id", "displayName"} for i in items)


def test_old_changes_replay_in_later_rounds_the_same_way_each_run(tenant: Tenant) -> None:
    """With delta_replay_old a later round serves again changes of earlier rounds, picked by the tenant's seed."""
    _, link = _round(tenant, "/v1.0/users/delta")
    ids = list(tenant.directory.users)
    for uid in ids[:10]:
        tenant.directory.update(uid, displayName="First " + uid[:4])
    first, link = _round(tenant, link)
    assert [i["id"] for i in first] == ids[:10]
    tenant.directory.update(ids[20], displayName="Second")
    tenant.delta_replay_old = 0.5
    second, _ = _round(tenant, link)
    again, _ = _round(tenant, link)
    replayed = [i["id"] for i in second if i["id"] != ids[20]]
    assert second == again  # seeded: the same replays for the same round
    assert replayed and set(replayed) <= set(ids[:10]) and second[-1]["id"] == ids[20]
    assert all(i == {"id": i["id"], "displayName": tenant.directory.users[i["id"]]["displayName"]} for i in second)


def test_delta_honours_a_filter_on_object_ids(tenant: Tenant) -> None:
    """$filter=id eq '…' or id eq '…' scopes the full round and later rounds to those users; other filters are 400."""
    a, b, c = list(tenant.directory.users)[:3]
    expression = quote(f"id eq '{a.upper()}' or id eq '{b}'")
    items, link = _round(tenant, f"/v1.0/users/delta?$filter={expression}")
    assert [i["id"] for i in items] == [a, b]
    tenant.directory.update(b, displayName="Scoped")
    tenant.directory.update(c, displayName="Outside")
    changes, _ = _round(tenant, link)
    assert [i["id"] for i in changes] == [b]
    reply = reply_of(graph.handle, tenant, _req(tenant, "/v1.0/users/delta?$filter=" + quote("displayName eq 'x'")))
    assert reply.status == 400 and reply.body["error"]["code"] == "Request_UnsupportedQuery"


def test_many_full_rounds_run_at_once(tenant: Tenant) -> None:
    """Twelve full rounds started together all finish: a round's state is in its tokens, none expires the others."""
    links = [_page(tenant, "/v1.0/users/delta", Prefer="odata.maxpagesize=5")["@odata.nextLink"] for _ in range(12)]
    tenant.directory.add()
    for link in reversed(links):
        items, _ = _round(tenant, link, size=5)
        assert len(items) == len(tenant.directory.users) - 1 - 5  # the first page was read; the new user is not in it


def test_a_token_missing_its_fields_is_malformed(tenant: Tenant) -> None:
    """A decodable token without the fields a round needs is a 400, never a crash."""
    import base64

    for forged in [{"full": True}, [], "x", {"select": ["id"], "full": True, "offset": 0}]:
        token = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
        reply = reply_of(graph.handle, tenant, _req(tenant, f"/v1.0/users/delta?$skiptoken={token}"))
        assert reply.status == 400 and reply.body["error"]["code"] == "Request_BadRequest"
