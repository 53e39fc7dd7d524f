"""Hostile input cannot steer the app.

Property-based: any query, path or body gets 200/202, 400 or 404 JSON; never
500, never a secret; mutations of valid cursors, ids and query values never
make the app ask Graph for anything but ``/v1.0/users[/{one segment}]`` with
the options the API offers. Each known defect also has a test through the
real Functions runtime that checks the answer and the emulated Graph's request log.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from testkit.triggers import http_get

from devtools.harness import HttpResult, RuntimeHost
from emulator import Emulator
from emulator.server import Fault
from graphusers.config import DEFAULT_SYNC_SCHEDULE

NAMES = ["top", "select", "filter", "search", "count", "cursor", "code", "$top", "id", ""]
# Bytes that are not UTF-8 arrive as lone surrogates (surrogateescape), as the worker decodes them.
raw_text = st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape"))
values = st.one_of(
    st.text(max_size=40),
    raw_text,
    st.sampled_from(
        [
            "0",
            "1",
            "999",
            "1000",
            "-1",
            "true",
            "false",
            "TRUE",
            "id,displayName",
            "id,,x",
            '"displayName:ada"',
            "startswith(displayName,'A')",
            "accountEnabled eq true",
            "displayName gt 'a'",
            "dXNlcnM_JHRvcD0x",
            "QGF0dGFja2VyLmV4YW1wbGU",
            "%00",
            "\x00",
            "\r\n",
        ]
    ),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.text(min_size=3000, max_size=9000, alphabet="ab%'\"(),:"),
)
params = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=12), raw_text), values, max_size=4)
route_ids = st.one_of(
    st.text(max_size=80), raw_text, st.sampled_from(["", "..", "a/b", "x" * 300, "%2F", "me"]), st.uuids().map(str)
)
requests_ = st.tuples(
    st.sampled_from(["list_users", "get_user", "request_sync", "sync_status", "health"]),
    params,
    route_ids,
    st.binary(max_size=256),
    st.sampled_from(["GET", "POST", "PUT"]),
)


class _Out:
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests_)
def test_any_input_is_answered_cleanly(
    emu: Emulator, storage: str, triggers: dict[str, Any], request: tuple[str, dict[str, str], str, bytes, str]
) -> None:
    """Whatever arrives, the answer is 200/202/400/404 JSON in the API's shapes, and carries no secret or token."""
    name, query, route_id, body, method = request
    req = func.HttpRequest(
        method=method,
        url=f"http://localhost/api/{name}",
        params=query,
        route_params={"id": route_id} if name == "get_user" else {},
        body=body,
        headers={},
    )
    resp = triggers[name](req, _Out()) if name == "request_sync" else triggers[name](req)
    assert resp.status_code in (200, 202, 400, 404), (resp.status_code, resp.get_body()[:300])
    payload = json.loads(resp.get_body())
    if resp.status_code >= 400:
        assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
        assert payload["error"]["code"] in ("invalid_request", "not_found")
    text = resp.get_body().decode() + json.dumps(dict(resp.headers))
    for secret in [emu.secret, *emu.issued]:
        assert secret not in text


# -- each defect, through the real Functions runtime -------------------------
# Every test asserts the status and JSON shape the caller sees, and what the
# emulated Graph was asked: only /v1.0/users, /v1.0/users/{one segment} (or
# Graph's /users('$upn') form) with options the API offers.

ROOT = Path(__file__).resolve().parents[2]
LIST_OPTIONS = frozenset({"$top", "$select", "$filter", "$search", "$count", "$skiptoken"})
GET_OPTIONS = frozenset({"$select"})
DOLLAR_UPN = "$adele.vance@emulated.onmicrosoft.example"
_ONE_SEGMENT = re.compile(r"^/v1\.0/users/(?!\.{1,2}$)[^/]+$")
_PAREN_KEY = re.compile(r"^/v1\.0/users\('(?:[^']|'')*'\)$")


def graph_escapes(emu: Emulator) -> list[str]:
    """Graph requests outside what the API offers: another path, or a query option it never sends."""
    bad = []
    with emu.lock:
        records = [r for r in emu.log if r.service == "graph"]
    for record in records:
        parts = urlsplit(record.path)
        options = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if parts.path == "/v1.0/users":
            allowed = LIST_OPTIONS
        elif _ONE_SEGMENT.match(parts.path) or _PAREN_KEY.match(unquote(parts.path)):
            allowed = GET_OPTIONS
        else:
            bad.append(record.path)
            continue
        if not options <= allowed or len(parse_qsl(parts.query)) != len(options):
            bad.append(record.path)
    return bad


def graph_requests(emu: Emulator) -> list[tuple[str, dict[str, str]]]:
    """The emulated Graph's request log: (path, query options) per request."""
    with emu.lock:
        records = [r for r in emu.log if r.service == "graph"]
    return [(urlsplit(r.path).path, dict(parse_qsl(urlsplit(r.path).query, keep_blank_values=True))) for r in records]


def assert_error(answer: HttpResult, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"} and body["error"]["code"] == code
    return dict(body["error"])


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(users=30, seed=11) as emu:
        emu.directory.add(userPrincipalName=DOLLAR_UPN, mail=DOLLAR_UPN, displayName="Adele Vance")
        yield emu


@pytest.fixture(scope="module")
def host(tenant: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeHost]:
    log = tmp_path_factory.mktemp("hostile") / "worker.log"
    with RuntimeHost(ROOT, tenant.app_settings(), log_path=log) as h:
        yield h


@pytest.fixture
def fresh(tenant: Emulator) -> Emulator:
    """The module's tenant with an empty request log and no faults."""
    with tenant.lock:
        tenant.faults = []
        tenant.log = []
    return tenant


def get(host: RuntimeHost, path: str, **query: str) -> HttpResult:
    return host.http("GET", path, query=query, key=host.function_key)


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.harness
@pytest.mark.parametrize(
    "raw",
    [
        "users?$expand=manager&$top=1",
        "users?$select=id,passwordProfile&$top=1",
        "users?$top=1&$skiptoken=x&$orderby=displayName",
        "users/delta?$select=id",
        "users?$top=1&$filter=accountEnabled eq true&$apply=x",
    ],
)
def test_forged_cursor_is_400_and_reaches_no_graph_option(host: RuntimeHost, fresh: Emulator, raw: str) -> None:
    """A cursor made by hand (base64 of a Graph query) is a 400; Graph never sees its options."""
    error = assert_error(get(host, "/api/users", cursor=b64(raw)), 400, "invalid_request")
    assert "cursor" in error["message"]
    assert graph_requests(fresh) == [] and graph_escapes(fresh) == []


@pytest.mark.harness
def test_tampered_or_truncated_cursor_is_400(host: RuntimeHost, fresh: Emulator) -> None:
    """A real cursor with a changed byte, or cut short, is a 400 and sends nothing to Graph."""
    first = get(host, "/api/users", top="3", filter="accountEnabled eq true")
    assert first.status == 200
    cursor = first.json()["nextCursor"]
    assert cursor and "graph" not in cursor
    assert get(host, "/api/users", cursor=cursor).status == 200  # the genuine one works
    fresh.clear_log()
    flipped = cursor[:10] + ("A" if cursor[10] != "A" else "B") + cursor[11:]
    for bad in [cursor[: len(cursor) // 2], cursor[:-3], flipped, cursor + "x", cursor[1:]]:
        assert_error(get(host, "/api/users", cursor=bad), 400, "invalid_request")
    assert graph_requests(fresh) == []


@pytest.mark.harness
def test_cursor_continues_the_same_query(host: RuntimeHost, fresh: Emulator) -> None:
    """Following cursors rebuilds the first page's query: same filter, select and page size, every user once."""
    query = {"top": "4", "filter": "accountEnabled eq true", "select": "id,displayName"}
    seen: list[str] = []
    answer = get(host, "/api/users", **query)
    while True:
        assert answer.status == 200
        body = answer.json()
        assert set(body) == {"value", "nextCursor"}
        seen += [u["id"] for u in body["value"]]
        assert all(set(u) == {"id", "displayName"} for u in body["value"])
        if not body["nextCursor"]:
            break
        answer = get(host, "/api/users", cursor=body["nextCursor"])
    enabled = [u["id"] for u in fresh.directory.users.values() if u["accountEnabled"]]
    assert seen == enabled
    requests_ = graph_requests(fresh)
    assert len(requests_) > 2 and graph_escapes(fresh) == []
    for _, options in requests_:
        assert (options["$top"], options["$filter"], options["$select"]) == ("4", "accountEnabled eq true", "id,displayName")


@pytest.mark.harness
@pytest.mark.parametrize(
    "user_id",
    [
        "..",
        ".",
        "%2e%2e",
        "me",
        "x" * 300,
        "a b",
        "users",
        "' or 1 eq 1",
        "nobody",
        "00000000-0000-0000-0000-00000000000g",
        "@example.com",
        "ada@",
        "ada@@example.com",
    ],
)
def test_ids_that_are_neither_guid_nor_upn_are_400(host: RuntimeHost, fresh: Emulator, user_id: str) -> None:
    """Dot segments and anything that is not a GUID or a UPN: 400 before any Graph request."""
    error = assert_error(get(host, f"/api/users/{user_id}"), 400, "invalid_request")
    assert "id" in error["message"]
    assert graph_requests(fresh) == []


@pytest.mark.harness
def test_upn_path_segment_is_percent_encoded(host: RuntimeHost, fresh: Emulator) -> None:
    """A UPN reaches Graph as one encoded segment: a guest's '#' is %23, and an unknown UPN is a 404."""
    guest = fresh.directory.add(userPrincipalName="ada_contoso.com#EXT#@emulated.onmicrosoft.example")
    answer = get(host, f"/api/users/{guest['userPrincipalName']}")
    assert answer.status == 200 and answer.json()["id"] == guest["id"]
    assert_error(get(host, "/api/users/nobody.here@emulated.onmicrosoft.example"), 404, "not_found")
    paths = [path for path, _ in graph_requests(fresh)]
    assert paths == [
        "/v1.0/users/ada_contoso.com%23EXT%23@emulated.onmicrosoft.example",
        "/v1.0/users/nobody.here@emulated.onmicrosoft.example",
    ]
    assert graph_escapes(fresh) == []


@pytest.mark.harness
def test_dollar_upn_uses_graphs_parenthesised_form(host: RuntimeHost, fresh: Emulator) -> None:
    """A UPN starting with '$' is fetched as /users('$upn'), as Graph documents; the plain form is Graph's 400."""
    answer = get(host, f"/api/users/{DOLLAR_UPN}", select="id,userPrincipalName")
    assert answer.status == 200, answer.body[:300]
    assert answer.json()["userPrincipalName"] == DOLLAR_UPN
    [(path, options)] = graph_requests(fresh)
    assert unquote(path) == f"/v1.0/users('{DOLLAR_UPN}')" and options == {"$select": "id,userPrincipalName"}
    assert graph_escapes(fresh) == []


@pytest.mark.harness
@pytest.mark.parametrize(
    "link",
    [
        "{url}/v1.0/applications?$skiptoken=x",
        "{url}/v1.0/users/delta?$skiptoken=x",
        "{url}/v1.0/users/x/memberOf?$skiptoken=x",
        "{url}/v1.0/users/../groups?$skiptoken=x",
        "{url}/v1.0/users%2F..%2Fgroups?$skiptoken=x",
        "{url}/beta/users?$skiptoken=x",
        "https://graph.microsoft.com/v1.0/users?$skiptoken=x",
    ],
)
def test_next_link_must_be_the_users_collection(host: RuntimeHost, fresh: Emulator, link: str) -> None:
    """A nextLink to another resource on the same host is refused: 502, and never followed."""
    fresh.inject(Fault("graph", kind="foreign-link", body={"link": link.format(url=fresh.url)}))
    error = assert_error(get(host, "/api/users", top="2"), 502, "graph_error")
    assert "link" in error["message"]
    assert [path for path, _ in graph_requests(fresh)] == ["/v1.0/users"]


@pytest.mark.harness
def test_caller_input_stays_out_of_logs(host: RuntimeHost, fresh: Emulator) -> None:
    """A UPN that is not found, a filter and a search term never reach the worker's log at INFO or above."""
    assert host.log_path is not None
    before = host.log_path.read_bytes()
    marker = "zq" + uuid.uuid4().hex[:10]
    assert_error(get(host, f"/api/users/{marker}@emulated.onmicrosoft.example"), 404, "not_found")
    get(host, "/api/users", filter=f"displayName eq '{marker}'")
    get(host, "/api/users", search=f'"displayName:{marker}"')
    get(host, "/api/users", filter=f"nosuchproperty eq '{marker}'")
    user = next(iter(fresh.directory.users.values()))
    assert get(host, f"/api/users/{user['userPrincipalName']}").status == 200
    deadline = time.monotonic() + 10
    written = ""
    while "Graph answered 404" not in written and time.monotonic() < deadline:  # the worker's stderr, a file
        time.sleep(0.05)
        written = host.log_path.read_bytes()[len(before) :].decode(errors="replace")
    assert "Graph answered 404" in written  # the failure is still logged, without the caller's input
    assert marker not in written
    for value in (user["userPrincipalName"], user["displayName"]):
        assert value not in written


@pytest.mark.harness
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("filter", "accountEnabled eq true&$expand=manager"),
        ("filter", "displayName eq 'a'&$select=passwordProfile"),
        ("search", '"displayName:a"&$expand=manager'),
        ("select", "id,displayName&$expand=manager"),
        ("select", "id&$top=999"),
    ],
)
def test_query_values_stay_literal(host: RuntimeHost, fresh: Emulator, name: str, value: str) -> None:
    """A value carrying '&$option=' reaches Graph as one literal value of its own option, or is a 400."""
    answer = get(host, "/api/users", **{name: value})
    assert answer.status in (200, 400)
    if answer.status == 400:
        assert_error(answer, 400, "invalid_request")
    assert graph_escapes(fresh) == []
    for _, options in graph_requests(fresh):
        assert options["$" + name] == value and "$expand" not in options and options["$top"] == "100"


@pytest.mark.harness
@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ("accountEnabled ne true", lambda u: u["accountEnabled"] is not True),
        ("not(accountEnabled eq true)", lambda u: u["accountEnabled"] is not True),
        ("endsWith(mail,'0@emulated.onmicrosoft.example')", lambda u: u["mail"].endswith("0@emulated.onmicrosoft.example")),
        ("mobilePhone eq null", lambda u: u["mobilePhone"] is None),
        ("officeLocation eq '1/100'", lambda u: u["officeLocation"] == "1/100"),
        ("accountEnabled eq true", lambda u: u["accountEnabled"] is True),
    ],
)
def test_advanced_filters_send_consistency_level_and_count(
    host: RuntimeHost, fresh: Emulator, filter_: str, expected: Callable[[dict[str, Any]], bool]
) -> None:
    """Filters Graph runs only as advanced queries get $count=true (and the header); simple ones do not."""
    answer = get(host, "/api/users", filter=filter_, top="999")
    assert answer.status == 200, answer.body[:300]
    body = answer.json()
    assert set(body) == {"value", "nextCursor"}  # count only when the caller asks for it
    want = [u["id"] for u in fresh.directory.users.values() if expected(u)]
    assert [u["id"] for u in body["value"]] == want
    [(_, options)] = graph_requests(fresh)
    advanced = filter_ != "accountEnabled eq true"
    assert (options.get("$count") == "true") is advanced
    assert graph_escapes(fresh) == []


@pytest.mark.harness
@pytest.mark.parametrize(
    ("setting", "value", "fix"),
    [
        ("KEY_VAULT_URL", "{url}/secrets", "https://"),
        ("GRAPH_ENDPOINT", "{url}/v1.0", "https://graph.microsoft.com"),
        ("USER_SELECT", "id,displayName,costCentre", "costCentre"),
    ],
)
def test_settings_with_a_path_or_unknown_properties_are_named(
    tenant: Emulator, setting: str, value: str, fix: str, tmp_path: Path
) -> None:
    """A bad setting indexes fine, then each call is a 503 naming the setting; the log tells the fix."""
    env = {**tenant.app_settings(), setting: value.format(url=tenant.url)}
    with tenant.lock:
        tenant.log = []
    with RuntimeHost(ROOT, env, log_path=tmp_path / "worker.log") as bad:
        answer = bad.http("GET", "/api/users", key=bad.function_key)
        error = assert_error(answer, 503, "configuration_error")
        assert setting in error["message"]
        assert bad.http("GET", "/api/health").status == 200
    log = (tmp_path / "worker.log").read_text()
    line = next(line for line in log.splitlines() if "Configuration error" in line)
    assert setting in line and fix in line
    assert graph_requests(tenant) == []


@pytest.mark.harness
def test_out_of_range_schedule_falls_back_and_is_named(tenant: Emulator, tmp_path: Path) -> None:
    """USER_SYNC_SCHEDULE with an out-of-range field: the timer indexes on the default and the log names the setting."""
    env = {**tenant.app_settings(), "USER_SYNC_SCHEDULE": "0 99 * * * *"}
    with RuntimeHost(ROOT, env, log_path=tmp_path / "worker.log") as h:
        assert h.functions["user_sync_timer"].trigger["schedule"] == DEFAULT_SYNC_SCHEDULE
    log = (tmp_path / "worker.log").read_text()
    assert "USER_SYNC_SCHEDULE" in log and "out of range" in log


# -- mutations of valid input ------------------------------------------------
# Built from what a real caller sends (a cursor the API returned, a user's id
# or UPN, working filter/search/select values), then changed the ways an
# attacker would: cut, flipped, spliced with URL syntax, re-encoded.

HOSTILE = [
    "&$expand=manager",
    "&$select=passwordProfile",
    "/..",
    "/../",
    "..",
    "%2e%2e",
    "%2F",
    "/",
    "?",
    "#",
    "%23",
    "'",
    "''",
    "\\",
    " ",
    "%20",
    "\x00",
    "\r\n",
    "$",
    "@",
    "users/delta",
    "https://attacker.example/",
    "(",
    ")",
    ",",
    "=",
    "é",
    "\ud800",
    "eyJ2IjoxfQ",
    "$count=true",
    "not ",
    " ne null",
    "=",
]
VALID_FILTERS = [
    "accountEnabled eq true",
    "startswith(displayName,'A')",
    "department eq 'Sales'",
    "userPrincipalName in ('a@b.example','c@d.example')",
    "accountEnabled ne true",
    "endsWith(mail,'.example')",
    "jobTitle eq null",
]
VALID_SEARCHES = ['"displayName:ada"', '"displayName:a" OR "mail:b"']
VALID_SELECTS = ["id,displayName", "id", "id,mail,userPrincipalName,accountEnabled"]


@st.composite
def mutated(draw: st.DrawFn, base: str) -> str:
    """``base`` changed by up to three edits: cut, flip, insert, delete or splice hostile text."""
    text = base
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
        i = draw(st.integers(min_value=0, max_value=len(text)))
        kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "splice", "append", "prefix"]))
        if kind == "cut":
            text = text[:i]
        elif kind == "flip" and i < len(text):
            text = text[:i] + draw(st.characters(codec="utf-8", exclude_categories=["Cs"])) + text[i + 1 :]
        elif kind == "insert":
            text = text[:i] + draw(st.text(max_size=3)) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + 1 :]
        elif kind == "splice":
            text = text[:i] + draw(st.sampled_from(HOSTILE)) + text[i:]
        elif kind == "append":
            text += draw(st.sampled_from(HOSTILE))
        else:
            text = draw(st.sampled_from(HOSTILE)) + text
    return text


def _cursor_payload(cursor: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        return {"raw": cursor}
    return dict(payload) if isinstance(payload, dict) else {"raw": payload}


def _encode_payload(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@st.composite
def cursor_inputs(draw: st.DrawFn, valid: str) -> dict[str, str]:
    """A real cursor mutated as text, its decoded text mutated and re-encoded, or its fields edited."""
    how = draw(st.sampled_from(["text", "text", "decoded", "fields"]))
    if how == "text":
        extra = draw(st.sampled_from([{}, {}, {}, {"top": "5"}, {"code": "k"}, {"filter": "id eq 'x'"}]))
        return {"cursor": draw(mutated(valid)), **extra}
    if how == "decoded":
        decoded = base64.urlsafe_b64decode(valid + "=" * (-len(valid) % 4)).decode("utf-8", "replace")
        raw = draw(mutated(decoded)).encode("utf-8", "surrogatepass")
        return {"cursor": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    payload = _cursor_payload(valid)
    key = draw(st.sampled_from([*payload, "expand", "$expand", "url", "path", "orderby", "v"]))
    payload[key] = draw(
        st.one_of(
            mutated(str(payload.get(key, ""))),
            st.sampled_from(HOSTILE),
            st.integers(),
            st.none(),
            st.lists(st.text(max_size=3), max_size=2),
        )
    )
    return {"cursor": _encode_payload(payload)}


@st.composite
def list_inputs(draw: st.DrawFn) -> dict[str, str]:
    """First-page parameters from working values, mutated."""
    params: dict[str, str] = {}
    if draw(st.booleans()):
        params["filter"] = draw(mutated(draw(st.sampled_from(VALID_FILTERS))))
    if draw(st.booleans()):
        params["search"] = draw(mutated(draw(st.sampled_from(VALID_SEARCHES))))
    if draw(st.booleans()):
        params["select"] = draw(mutated(draw(st.sampled_from(VALID_SELECTS))))
    if draw(st.booleans()):
        params["top"] = draw(mutated(draw(st.sampled_from(["1", "5", "999"]))))
    if draw(st.booleans()):
        params["count"] = draw(mutated("true"))
    return params


_VALID_CURSOR: dict[int, str] = {}


def _valid_cursor(triggers: dict[str, Any], emu: Emulator) -> str:
    key = id(emu.directory)
    if key not in _VALID_CURSOR:
        first = json.loads(
            triggers["list_users"](
                http_get("users", {"top": "3", "filter": "accountEnabled eq true", "select": "id,displayName"})
            ).get_body()
        )
        _VALID_CURSOR[key] = first["nextCursor"]
    return _VALID_CURSOR[key]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_cursors_ids_and_queries_never_escape(emu: Emulator, triggers: dict[str, Any], data: st.DataObject) -> None:
    """Mutations of valid input: 200/400/404 JSON (410 for an edited cursor); Graph sees only /users with offered options."""
    valid = _valid_cursor(triggers, emu)
    user = emu.directory.users[sorted(emu.directory.users)[0]]
    kind = data.draw(st.sampled_from(["cursor", "id", "list"]), label="kind")
    emu.clear_log()
    if kind == "cursor":
        resp = triggers["list_users"](http_get("users", data.draw(cursor_inputs(valid), label="params")))
    elif kind == "id":
        base = data.draw(st.sampled_from([user["id"], user["userPrincipalName"], "$" + user["userPrincipalName"]]))
        user_id = data.draw(mutated(base), label="id")
        resp = triggers["get_user"](http_get(f"users/{user_id}", route_params={"id": user_id}))
    else:
        resp = triggers["list_users"](http_get("users", data.draw(list_inputs(), label="params")))
    event(f"{kind}: {resp.status_code}, {'reached' if graph_requests(emu) else 'did not reach'} Graph")
    # 410 only for a cursor whose query an edit changed: Graph then refuses its page token, bound to
    # the query that issued it, and the caller is told to start the listing again.
    allowed = (200, 400, 404, 410) if kind == "cursor" else (200, 400, 404)
    assert resp.status_code in allowed, (resp.status_code, resp.get_body()[:300])
    assert resp.mimetype == "application/json"
    payload = json.loads(resp.get_body())
    if resp.status_code == 410:
        assert payload["error"]["code"] == "cursor_expired"
    if resp.status_code >= 400:
        assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}
    else:
        assert isinstance(payload, dict)
    assert graph_escapes(emu) == []
    text = resp.get_body().decode() + json.dumps(dict(resp.headers))
    for secret in [emu.secret, *emu.issued]:
        assert secret not in text
