"""Graph alone: authorisation, paging, advanced-query 400s, getting one user, and delta removals and expiry."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from testkit.service_calls import reply_of

from emulator import graph
from emulator.state import Tenant
from emulator.wire import GRAPH_ROLE, Request


def _get(tenant: Tenant, target: str, **headers: str) -> Request:
    return _get_as(tenant, target, [GRAPH_ROLE], headers)


def _get_as(tenant: Tenant, target: str, roles: list[str], headers: dict[str, str]) -> Request:
    token = tenant.issue_token(tenant.url, tenant.client_id, roles, 600)[0]
    return Request("GET", target.removeprefix(tenant.url), {"Authorization": f"Bearer {token}", **headers})


def _ok(tenant: Tenant, target: str, **headers: str) -> dict[str, Any]:
    status, body, answered = graph.handle(tenant, _get(tenant, target, **headers))
    assert status == 200
    assert answered["request-id"]
    page: dict[str, Any] = json.loads(body) if isinstance(body, bytes) else body
    return page


def _error(tenant: Tenant, req: Request) -> tuple[int, str]:
    reply = reply_of(graph.handle, tenant, req)
    assert reply.headers["request-id"] == reply.body["error"]["innerError"]["request-id"]
    return reply.status, reply.body["error"]["code"]


def test_authorisation(tenant: Tenant) -> None:
    """No token is 401, a token without the role 403, a POST 405."""
    assert _error(tenant, Request("GET", "/v1.0/users")) == (401, "InvalidAuthenticationToken")
    assert _error(tenant, _get_as(tenant, "/v1.0/users", [], {})) == (403, "Authorization_RequestDenied")
    post = _get(tenant, "/v1.0/users")
    post.method = "POST"
    assert _error(tenant, post)[0] == 405


def test_revoked_token_is_401(tenant: Tenant) -> None:
    """After revocation a token issued before it no longer works."""
    req = _get(tenant, "/v1.0/users")
    tenant.revoke_tokens()
    assert _error(tenant, req) == (401, "InvalidAuthenticationToken")


@pytest.mark.parametrize("top", [7, 29, 30])
def test_paging_visits_every_user_once(tenant: Tenant, top: int) -> None:
    """nextLink pages cover the directory (30 users) exactly, whatever is left for the last page."""
    seen: list[str] = []
    target: str | None = f"/v1.0/users?$top={top}&$select=id"
    while target:
        page = _ok(tenant, target, **{"client-request-id": "abc"})
        seen += [u["id"] for u in page["value"]]
        target = page.get("@odata.nextLink")
    assert seen == list(tenant.directory.users)


@pytest.mark.parametrize(
    ("target", "headers", "code"),
    [
        ("/v1.0/users?$top=1000", {}, "Request_BadRequest"),
        ('/v1.0/users?$search="displayName:ada"', {}, "Request_UnsupportedQuery"),
        ("/v1.0/users?$filter=endswith(mail,'example')", {}, "Request_UnsupportedQuery"),
        ("/v1.0/users?$select=nonsense", {}, "Request_BadRequest"),
        ("/v1.0/users?$skiptoken=%%%", {}, "Directory_ExpiredPageToken"),
    ],
)
def test_query_errors(tenant: Tenant, target: str, headers: dict[str, str], code: str) -> None:
    """Options Graph rejects answer 400 with Graph's code."""
    assert _error(tenant, _get(tenant, target, **headers)) == (400, code)


def test_advanced_query_counts(tenant: Tenant) -> None:
    """With ConsistencyLevel: eventual and $count=true, endsWith works and the first page has @odata.count."""
    page = _ok(tenant, "/v1.0/users?$count=true&$filter=endswith(mail,'example')", ConsistencyLevel="eventual")
    assert page["@odata.count"] == len(tenant.directory.users)
    assert "@odata.count" not in _ok(tenant, "/v1.0/users?$count=true")


def test_get_user_by_id_upn_and_key_form(tenant: Tenant) -> None:
    """A user comes back by id, by UPN, and by users('...') with a doubled quote."""
    user = tenant.directory.add(userPrincipalName="o'neil@emulated.example")
    assert _ok(tenant, f"/v1.0/users/{user['id']}?$select=id")["id"] == user["id"]
    assert _ok(tenant, "/v1.0/users/O'Neil@emulated.example")["id"] == user["id"]  # UPNs match case-insensitively
    assert _ok(tenant, "/v1.0/users('" + quote("o''neil") + "@emulated.example')")["id"] == user["id"]
    assert _ok(tenant, "/v1.0/users('o''neil@emulated.example')?$select=id")["id"] == user["id"]


def test_get_user_errors(tenant: Tenant) -> None:
    """An unknown user is 404; a key starting with $ needs the ('...') form; a broken literal is 400."""
    assert _error(tenant, _get(tenant, "/v1.0/users/nobody")) == (404, "Request_ResourceNotFound")
    assert _error(tenant, _get(tenant, "/v1.0/users/$x@y.com")) == (400, "BadRequest")
    assert _error(tenant, _get(tenant, "/v1.0/users('x")) == (400, "BadRequest")
    assert _error(tenant, _get(tenant, "/v1.0/groups")) == (400, "BadRequest")


def _delta_round(tenant: Tenant, target: str, **headers: str) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    while True:
        page = _ok(tenant, target, **headers)
        items += page["value"]
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"]
        target = page["@odata.nextLink"]


def test_delta_full_round_then_removals(tenant: Tenant) -> None:
    """A full round lists everyone; the next round shows a deletion and a soft deletion with their reasons."""
    items, link = _delta_round(tenant, "/v1.0/users/delta", Prefer="odata.maxpagesize=8")
    assert {u["id"] for u in items} == set(tenant.directory.users)
    gone, soft = list(tenant.directory.users)[:2]
    tenant.directory.remove(gone)
    tenant.directory.remove(soft, soft=True)
    changes, _ = _delta_round(tenant, link)
    assert changes == [{"id": gone, "@removed": {"reason": "deleted"}}, {"id": soft, "@removed": {"reason": "changed"}}]


@pytest.mark.parametrize(("status", "code"), [(410, "resyncRequired"), (400, "syncStateNotFound")])
def test_delta_expired_token(tenant: Tenant, status: int, code: str) -> None:
    """An expired delta token is answered as the expiry switch says Graph may answer it."""
    _, link = _delta_round(tenant, "/v1.0/users/delta")
    tenant.delta_expiry_status = status
    tenant.directory.delta_epoch += 1
    assert _error(tenant, _get(tenant, link)) == (status, code)


def test_delta_state_errors(tenant: Tenant) -> None:
    """Both tokens at once is 400; a stored state error answers once, then the token works again."""
    _, link = _delta_round(tenant, "/v1.0/users/delta")
    assert _error(tenant, _get(tenant, link + "&$skiptoken=x")) == (400, "BadRequest")
    tenant.delta_state_error = "steady-state"
    reply = reply_of(graph.handle, tenant, _get(tenant, link))
    assert reply.body["error"]["message"] == "Sync must reach steady state within 30 days."
    assert _ok(tenant, link)["value"] == []


def test_delta_outage_leaves_the_round_open(tenant: Tenant) -> None:
    """With an outage from offset 5, the second page is 503 until the outage ends, then the round resumes."""
    tenant.delta_outage_from = 5
    tenant.delta_short_pages = 0.0  # whole pages of 5: the second starts at the outage
    first = _ok(tenant, "/v1.0/users/delta", Prefer="odata.maxpagesize=5")
    assert _error(tenant, _get(tenant, first["@odata.nextLink"]))[0] == 503
    tenant.delta_outage_from = None
    assert _ok(tenant, first["@odata.nextLink"])["value"]
