"""Graph's query language through the app: its errors reach the caller, advanced mode is asked when needed, ids in any case.

Against the emulated Graph, whose filter rules are the documented table
(emulator/userschema.py) and whose errors are Graph's own texts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit.triggers import http_get

from devtools.harness import RuntimeHost
from emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]

WRONG_FILTERS = [
    ("displayName eq Ada", "Could not find a property named 'Ada' on type 'microsoft.graph.user'."),
    ("foo eq 1", "Could not find a property named 'foo' on type 'microsoft.graph.user'."),
    ("contains(displayName,'a')", "An unknown function with name 'contains' was found."),
    ("startswith(displayName,'Ada'", "')' or ',' expected at position 28"),
]


def _call(triggers: dict[str, Any], name: str, params: dict[str, str], route: dict[str, str] | None = None) -> Any:
    resp = triggers[name](http_get("x", params, route))
    return resp.status_code, json.loads(resp.get_body())


@pytest.mark.parametrize(("filter_", "reason"), WRONG_FILTERS)
def test_a_wrong_filter_tells_the_caller_what_is_wrong(
    emu: Emulator, triggers: dict[str, Any], filter_: str, reason: str
) -> None:
    """Graph's own reason for a wrong filter reaches the caller in the 400, not a generic 'Unsupported Query'."""
    status, body = _call(triggers, "list_users", {"filter": filter_})
    assert status == 400 and body["error"]["code"] == "invalid_request"
    assert reason in body["error"]["message"] and "Unsupported Query." not in body["error"]["message"]


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ("department eq 'Sales' or department eq 'Legal'", lambda u: u["department"] in ("Sales", "Legal")),
        ("createdDateTime ge 2020-01-01T00:00:00Z", lambda u: u["createdDateTime"] >= "2020-01-01T00:00:00Z"),
        # ge on accountEnabled needs advanced mode (its table cell); the app used to send it without.
        ("accountEnabled ge true", lambda u: u["accountEnabled"] is True),
        ("endswith(mail,'0@emulated.onmicrosoft.example') or accountEnabled eq false", None),
    ],
)
def test_documented_operators_run_through_the_app(emu: Emulator, triggers: dict[str, Any], filter_: str, expected: Any) -> None:
    """or, ge/le and the advanced cells of the table work from the API, with every page's request accepted."""
    status, body = _call(triggers, "list_users", {"filter": filter_, "top": "999", "select": "id,department,createdDateTime"})
    assert status == 200, body
    if expected is not None:
        want = [u["id"] for u in emu.directory.users.values() if expected(u)]
        assert [u["id"] for u in body["value"]] == want and want


def test_an_upper_case_object_id_finds_the_user(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Object ids are GUIDs: the same user answers for its id in upper case."""
    uid = next(iter(emu.directory.users))
    status, body = _call(triggers, "get_user", {"select": "id"}, {"id": uid.upper()})
    assert status == 200 and body == {"id": uid}


SELECT = "id,displayName,city,employeeId,onPremisesSamAccountName,proxyAddresses,signInSessionsValidFromDateTime"


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(users=25, seed=4) as emu:
        yield emu


@pytest.fixture(scope="module")
def host(tenant: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeHost]:
    log = tmp_path_factory.mktemp("querylang") / "worker.log"
    with RuntimeHost(ROOT, {**tenant.app_settings(), "USER_SELECT": SELECT}, log_path=log) as h:
        yield h


@pytest.mark.harness
def test_runtime_user_select_beyond_the_default_properties(host: RuntimeHost, tenant: Emulator) -> None:
    """Through the real runtime a USER_SELECT of less common properties lists and gets users with exactly those."""
    listed = host.http("GET", "/api/users", query={"top": "5"}, key=host.function_key)
    assert listed.status == 200, listed.body[:300]
    users = listed.json()["value"]
    assert users and all(list(u) == SELECT.split(",") for u in users)
    one = host.http("GET", f"/api/users/{users[0]['id'].upper()}", key=host.function_key)
    assert one.status == 200 and one.json()["id"] == users[0]["id"]


@pytest.mark.harness
def test_runtime_wrong_filter_reason(host: RuntimeHost) -> None:
    """Through the real runtime Graph's reason for a wrong filter is the caller's 400 message."""
    answer = host.http("GET", "/api/users", query={"filter": "displayName eq Ada"}, key=host.function_key)
    assert answer.status == 400
    assert "Could not find a property named 'Ada'" in answer.json()["error"]["message"]
