"""Graph's /users page tokens: bound to the query that issued them, signed, and expiring."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from testkit.service_calls import reply_of

from emulator import graph
from emulator.state import PAGE_TOKEN_LIFETIME, Tenant
from emulator.wire import GRAPH_ROLE, Request

FIRST = "/v1.0/users?$top=5&$select=id,displayName&$filter=accountEnabled eq true"


def _req(tenant: Tenant, target: str, **headers: str) -> Request:
    token = tenant.issue_token(tenant.url, tenant.client_id, [GRAPH_ROLE], 600)[0]
    return Request("GET", target.removeprefix(tenant.url), {"Authorization": f"Bearer {token}", **headers})


def _page(tenant: Tenant, target: str, **headers: str) -> dict[str, Any]:
    status, body, _ = graph.handle(tenant, _req(tenant, target, **headers))
    assert status == 200
    page: dict[str, Any] = json.loads(body)
    return page


def _refused(tenant: Tenant, target: str, **headers: str) -> None:
    reply = reply_of(graph.handle, tenant, _req(tenant, target, **headers))
    assert (reply.status, reply.body["error"]["code"], reply.body["error"]["message"]) == (
        400,
        "Directory_ExpiredPageToken",
        "The specified page token value has expired and can no longer be included in your request.",
    )


def _token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["$skiptoken"][0]


def test_the_whole_next_link_works(tenant: Tenant) -> None:
    """Following each nextLink as given visits every matching user once."""
    seen: list[str] = []
    target: str | None = FIRST
    while target:
        page = _page(tenant, target)
        seen += [u["id"] for u in page["value"]]
        target = page.get("@odata.nextLink")
    enabled = [u["id"] for u in tenant.directory.users.values() if u["accountEnabled"]]
    assert seen == enabled and len(enabled) > 10


@pytest.mark.parametrize(
    "other",
    [
        "/v1.0/users?$top=5&$select=id,displayName&$filter=accountEnabled eq false",  # another filter
        "/v1.0/users?$top=5&$select=id&$filter=accountEnabled eq true",  # another select
        "/v1.0/users?$top=6&$select=id,displayName&$filter=accountEnabled eq true",  # another top
        "/v1.0/users?$top=5&$select=id,displayName",  # the filter left out
        "/v1.0/users?$top=5&$select=id,displayName&$filter=accountEnabled eq true&$orderby=displayName",
        "/v1.0/users?$top=5&$select=id,displayName&$filter=accountEnabled eq true&$count=true",
    ],
)
def test_a_token_with_another_query_is_expired_page_token(tenant: Tenant, other: str) -> None:
    """The skip token of one query, sent with another, is Graph's 400 Directory_ExpiredPageToken."""
    token = _token(_page(tenant, FIRST)["@odata.nextLink"])
    _refused(tenant, f"{other}&$skiptoken={quote(token, safe='')}")
    assert _page(tenant, f"{FIRST}&$skiptoken={quote(token, safe='')}")["value"]  # the issuing query still works


def test_a_token_is_bound_to_consistency_level(tenant: Tenant) -> None:
    """An advanced query's token sent without ConsistencyLevel (or a plain one with it) is refused."""
    advanced = "/v1.0/users?$top=5&$count=true&$filter=endswith(mail,'.example')"
    link = _page(tenant, advanced, ConsistencyLevel="eventual")["@odata.nextLink"]
    assert _page(tenant, link, ConsistencyLevel="eventual")["value"]
    _refused(tenant, link)
    plain = _page(tenant, FIRST)["@odata.nextLink"]
    _refused(tenant, plain, ConsistencyLevel="eventual")


def test_a_re_encoded_or_edited_token_is_refused(tenant: Tenant) -> None:
    """A token whose + became a space (decoded twice), or with one character changed, is refused."""
    link = _page(tenant, FIRST)["@odata.nextLink"]
    token = _token(link)
    assert any(c in token for c in "+/=")  # standard base64, as Graph's are: encoding matters
    for bad in [token.replace("+", " ").replace("/", "_"), token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"), "x"]:
        if bad != token:
            _refused(tenant, f"{FIRST}&$skiptoken={quote(bad, safe='')}")


def test_tokens_expire_after_the_configured_lifetime(tenant: Tenant) -> None:
    """After ``page_token_lifetime`` seconds a token is Directory_ExpiredPageToken, even for a cached page."""
    assert PAGE_TOKEN_LIFETIME >= 3600  # benchmarks and long listings never meet the default
    tenant.page_token_lifetime = 0.3
    link = _page(tenant, FIRST)["@odata.nextLink"]
    assert _page(tenant, link)["value"]
    time.sleep(0.4)
    _refused(tenant, link)
    # A first page asked again hands out a fresh token, not the cached expired one.
    fresh = _page(tenant, FIRST)["@odata.nextLink"]
    assert _page(tenant, fresh)["value"]
