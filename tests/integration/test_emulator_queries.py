"""The emulated Graph follows the documented advanced-query rules and addressing of /users.

https://learn.microsoft.com/graph/aad-advanced-queries (operators, properties,
error handling) and https://learn.microsoft.com/graph/api/user-get (UPNs that
start with '$').
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msal
import pytest
import requests

from emulator import Emulator

EVENTUAL = {"ConsistencyLevel": "eventual"}


def _graph(emu: Emulator) -> requests.Session:
    app = msal.ConfidentialClientApplication(
        emu.client_id, client_credential=emu.secret, authority=f"{emu.url}/{emu.tenant_id}", instance_discovery=False
    )
    token = app.acquire_token_for_client([f"{emu.url}/.default"])["access_token"]
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def _users(s: requests.Session, emu: Emulator, headers: Mapping[str, str] | None = None, **params: str) -> requests.Response:
    return s.get(f"{emu.url}/v1.0/users", params={"$top": "999", **params}, headers=headers or {})


ADVANCED = [
    ("accountEnabled ne true", "ne", lambda u: u["accountEnabled"] is not True),
    ("not(accountEnabled eq true)", "not", lambda u: u["accountEnabled"] is not True),
    ("NOT startsWith(displayName,'A')", "not", lambda u: not u["displayName"].lower().startswith("a")),
    (
        "endsWith(mail,'1@emulated.onmicrosoft.example')",
        "endsWith",
        lambda u: u["mail"].endswith("1@emulated.onmicrosoft.example"),
    ),
    ("jobTitle eq null", "null", lambda u: u["jobTitle"] is None),
    ("mobilePhone eq null", "null", lambda u: u["mobilePhone"] is None),
    ("officeLocation eq '3/200'", "officeLocation", lambda u: u["officeLocation"] == "3/200"),
    ("startswith(preferredLanguage,'en')", "preferredLanguage", lambda u: u["preferredLanguage"].startswith("en")),
    (
        "department eq 'Sales' and displayName ne 'Ada Lovelace'",
        "ne",
        lambda u: u["department"] == "Sales" and u["displayName"] != "Ada Lovelace",
    ),
]


@pytest.mark.parametrize(("expression", "needs", "expected"), ADVANCED)
def test_advanced_filters_need_the_header_and_count(emu: Emulator, expression: str, needs: str, expected: Any) -> None:
    """Without ConsistencyLevel: eventual and $count=true these are Graph's 400; with both they run."""
    s = _graph(emu)
    for headers, params in [({}, {}), (EVENTUAL, {}), ({}, {"$count": "true"})]:
        r = _users(s, emu, headers, **{"$filter": expression}, **params)
        assert r.status_code == 400, (headers, params)
        error = r.json()["error"]
        assert error["code"] == "Request_UnsupportedQuery" and "$count=true" in error["message"]
    r = _users(s, emu, EVENTUAL, **{"$filter": expression, "$count": "true"})
    assert r.status_code == 200, r.text
    want = [u["id"] for u in emu.directory.users.values() if expected(u)]
    assert [u["id"] for u in r.json()["value"]] == want and r.json()["@odata.count"] == len(want)


@pytest.mark.parametrize(
    "expression",
    [
        "accountEnabled eq true",
        "startswith(displayName,'A')",
        "department in ('Sales','Legal')",
        "userPrincipalName eq 'x@y.example'",
        "id eq '00000000-0000-0000-0000-000000000000'",
    ],
)
def test_default_filters_need_nothing(emu: Emulator, expression: str) -> None:
    """Filters Graph supports by default run without the advanced query parameters."""
    assert _users(_graph(emu), emu, None, **{"$filter": expression}).status_code == 200


@pytest.mark.parametrize(
    "expression",
    [
        "endsWith(displayName,'a')",  # endsWith: mail, otherMails, userPrincipalName, proxyAddresses only
        "startswith(jobTitle,'E')",  # no startsWith on jobTitle
        "mail eq null",  # mail is not filterable by null
        "not(givenName eq 'Ada')",  # NOT is not listed for givenName
        "businessPhones ne 'x'",  # ne is not listed for businessPhones
    ],
)
def test_unsupported_clauses_fail_even_as_advanced_queries(emu: Emulator, expression: str) -> None:
    """A property not indexed for an operator is Graph's 400 even with both advanced query parameters."""
    r = _users(_graph(emu), emu, EVENTUAL, **{"$filter": expression, "$count": "true"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_UnsupportedQuery"


def test_count_without_the_header_is_silently_ignored(emu: Emulator) -> None:
    """$count=true without ConsistencyLevel is ignored (no @odata.count), as Graph's docs say; with it, counted."""
    s = _graph(emu)
    r = _users(s, emu, None, **{"$count": "true", "$top": "5"})
    assert r.status_code == 200 and "@odata.count" not in r.json() and len(r.json()["value"]) == 5
    counted = _users(s, emu, EVENTUAL, **{"$count": "true", "$top": "5"}).json()
    assert counted["@odata.count"] == len(emu.directory.users)


def test_search_without_the_header_is_unsupported_query(emu: Emulator) -> None:
    """$search without ConsistencyLevel: 400 Request_UnsupportedQuery; $search needs no $count."""
    s = _graph(emu)
    r = _users(s, emu, None, **{"$search": '"displayName:ada"'})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_UnsupportedQuery"
    assert _users(s, emu, EVENTUAL, **{"$search": '"displayName:ada"'}).status_code == 200


def test_dollar_upn_needs_the_parenthesised_form(emu: Emulator) -> None:
    """/users/$x@y is Graph's 400; /users('$x@y') finds the user, with '' for a quote inside."""
    s = _graph(emu)
    user = emu.directory.add(userPrincipalName="$o'neil@emulated.onmicrosoft.example")
    upn = user["userPrincipalName"]
    plain = s.get(f"{emu.url}/v1.0/users/{upn}")
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "BadRequest"
    doubled = upn.replace("'", "''")
    found = s.get(f"{emu.url}/v1.0/users('{doubled}')", params={"$select": "id,userPrincipalName"})
    assert found.status_code == 200 and found.json() == {"id": user["id"], "userPrincipalName": upn}
    missing = s.get(f"{emu.url}/v1.0/users('$nobody@emulated.onmicrosoft.example')")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Request_ResourceNotFound"
    assert s.get(f"{emu.url}/v1.0/users('unterminated)").status_code == 400
