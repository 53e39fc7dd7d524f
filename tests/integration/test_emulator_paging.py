"""The app's cursors against Graph's strict page tokens: in process and through the real Functions runtime.

The emulated Graph binds each skip token to the query that issued it (path,
options, ConsistencyLevel) and expires it; a cursor that rebuilt its request
differently, or outlived its token, would fail here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit.triggers import http_get

from devtools.harness import RuntimeHost
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]

# Each query the API offers, as a first page; the filter that needs advanced mode
# makes the app send $count=true and ConsistencyLevel on every page.
QUERIES: list[dict[str, str]] = [
    {"top": "40"},
    {"top": "7", "filter": "accountEnabled eq true", "select": "id,displayName"},
    {"top": "9", "filter": "endswith(mail,'.example')"},
    {"top": "3", "search": '"displayName:ada"', "count": "true"},
    {"top": "11", "filter": "startswith(displayName,'A') or department eq 'Sales'", "count": "true"},
]


def _call(triggers: dict[str, Any], params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    resp = triggers["list_users"](http_get("x", params))
    return resp.status_code, json.loads(resp.get_body())


def _edited(cursor: str, **fields: str) -> str:
    """A genuine cursor with some of its fields replaced, encoded the way the app encodes cursors."""
    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    payload.update(fields)
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: ",".join(q))
def test_cursors_rebuild_the_issuing_request(emu: Emulator, triggers: dict[str, Any], query: dict[str, str]) -> None:
    """Every cursor's request is one Graph's bound token accepts: each query pages to its end, every match once."""
    status, body = _call(triggers, query)
    seen = [u["id"] for u in body["value"]]
    pages = 1
    while body["nextCursor"]:
        status, body = _call(triggers, {"cursor": body["nextCursor"]})
        assert status == 200, body
        seen += [u["id"] for u in body["value"]]
        pages += 1
    assert pages > 1 and len(seen) == len(set(seen))
    assert emu.count("graph") == pages == emu.count("graph", 200)


def test_an_expired_cursor_is_410_start_again(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Once Graph's page token has expired the cursor answers 410 cursor_expired, telling the caller to start over."""
    emu.page_token_lifetime = 0.5
    status, body = _call(triggers, {"top": "10"})
    assert status == 200
    time.sleep(0.7)
    status, body = _call(triggers, {"cursor": body["nextCursor"]})
    assert status == 410 and body["error"]["code"] == "cursor_expired"
    assert "without 'cursor'" in body["error"]["message"] and "Start the listing again" in body["error"]["message"]
    assert emu.count("graph", 400) == 1  # Graph was asked, and refused the token
    status, body = _call(triggers, {"top": "10"})  # starting again works
    assert status == 200 and body["nextCursor"]


def test_a_cursor_with_another_query_is_refused_by_graph(emu: Emulator, triggers: dict[str, Any]) -> None:
    """A cursor edited to carry another (valid) filter reaches Graph, whose token refuses it: 410, no data."""
    status, body = _call(triggers, {"top": "5", "filter": "accountEnabled eq true"})
    cursor = _edited(body["nextCursor"], filter="accountEnabled eq false")
    status, body = _call(triggers, {"cursor": cursor})
    assert status == 410 and body["error"]["code"] == "cursor_expired" and "value" not in body


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(users=60, seed=8) as emu:
        yield emu


@pytest.fixture(scope="module")
def host(tenant: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeHost]:
    log = tmp_path_factory.mktemp("paging") / "worker.log"
    with RuntimeHost(ROOT, tenant.app_settings(), log_path=log) as h:
        yield h


@pytest.mark.harness
def test_runtime_cursors_page_and_expire(host: RuntimeHost, tenant: Emulator) -> None:
    """Through the real runtime: an advanced query pages to its end with cursors; an expired cursor is 410."""
    query = {"top": "6", "filter": "endswith(mail,'.example') or accountEnabled eq false", "count": "true"}
    answer = host.http("GET", "/api/users", query=query, key=host.function_key)
    seen: list[str] = []
    while True:
        assert answer.status == 200, answer.body[:300]
        body = answer.json()
        seen += [u["id"] for u in body["value"]]
        if not body["nextCursor"]:
            break
        last = body["nextCursor"]
        answer = host.http("GET", "/api/users", query={"cursor": last}, key=host.function_key)
    assert len(seen) == len(set(seen)) == len(tenant.directory.users)
    first = host.http("GET", "/api/users", query={"top": "6"}, key=host.function_key).json()
    tenant.page_token_lifetime = 0.3
    try:
        time.sleep(0.5)
        expired = host.http("GET", "/api/users", query={"cursor": first["nextCursor"]}, key=host.function_key)
    finally:
        tenant.page_token_lifetime = 3600.0
    assert expired.status == 410 and expired.json()["error"]["code"] == "cursor_expired"
