"""The Graph client's retries, paging, cursors and error mapping, over a scripted session."""

from __future__ import annotations

import email.utils
import time

import pytest
import requests
from testkit.fakes import FakeTokens, ScriptedSession, response

from graphusers.errors import GraphError, InvalidRequestError, NotFoundError, PermissionDeniedError, UnavailableError
from graphusers.graph import GraphClient, RetryPolicy, UsersQuery, loggable_path, parse_retry_after, user_path

EP = "https://graph.example"


def client(session: ScriptedSession, retry: RetryPolicy | None = None) -> tuple[GraphClient, list[float], FakeTokens]:
    sleeps: list[float] = []
    tokens = FakeTokens()
    g = GraphClient(EP, tokens, session=session, retry=retry or RetryPolicy(), sleep=sleeps.append, rnd=lambda: 0.0)
    return g, sleeps, tokens


def page(ids: list[str], next_link: str | None = None) -> requests.Response:
    body: dict[str, object] = {"value": [{"id": i} for i in ids]}
    if next_link:
        body["@odata.nextLink"] = next_link
    return response(200, body)


def test_paging_follows_next_links_to_the_last_page() -> None:
    """iter_pages follows @odata.nextLink until a page has none."""
    s = ScriptedSession(
        page(["a", "b"], f"{EP}/v1.0/users?$skiptoken=1"), page(["c"], f"{EP}/v1.0/users?$skiptoken=2"), page(["d"])
    )
    g, _, _ = client(s)
    pages = list(g.iter_pages(UsersQuery(top=2)))
    assert [u["id"] for p in pages for u in p.value] == ["a", "b", "c", "d"]
    assert [c["url"] for c in s.calls][1:] == [f"{EP}/v1.0/users?$skiptoken=1", f"{EP}/v1.0/users?$skiptoken=2"]
    assert s.calls[0]["params"] == {"$top": "2"}


def test_every_request_has_a_fresh_client_request_id_and_timeouts() -> None:
    """client-request-id is new per request; connect and read timeouts are explicit."""
    s = ScriptedSession(page(["a"], f"{EP}/v1.0/users?$skiptoken=1"), page(["b"]))
    g, _, _ = client(s)
    list(g.iter_pages(UsersQuery()))
    ids = [c["headers"]["client-request-id"] for c in s.calls]
    assert len(set(ids)) == 2
    assert all(c["timeout"] == (3.05, 30.0) and c["allow_redirects"] is False for c in s.calls)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_as_told_then_succeeds(form: str) -> None:
    """Retry-After in either form is honoured before the retry."""
    value = "7" if form == "seconds" else email.utils.formatdate(time.time() + 7, usegmt=True)
    s = ScriptedSession(response(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": value}), page(["a"]))
    g, sleeps, _ = client(s)
    assert g.users_page(UsersQuery()).value == [{"id": "a"}]
    assert len(sleeps) == 1 and 5.5 <= sleeps[0] <= 7


def test_throttling_past_the_wait_budget_is_503_with_retry_after() -> None:
    """A Retry-After beyond max_wait fails at once with the server's delay."""
    s = ScriptedSession(response(429, {}, {"Retry-After": "120"}))
    g, sleeps, _ = client(s, RetryPolicy(max_wait=30))
    with pytest.raises(UnavailableError) as info:
        g.users_page(UsersQuery())
    assert sleeps == [] and info.value.retry_after == 120


def test_5xx_and_connection_errors_back_off_then_give_up_bounded() -> None:
    """503s and resets are retried with exponential backoff; total attempts are bounded."""
    s = ScriptedSession(response(503), requests.ConnectionError("reset"), response(504), response(500), response(503))
    g, sleeps, _ = client(s, RetryPolicy(total=4, backoff_factor=0.5))
    with pytest.raises(UnavailableError):
        g.users_page(UsersQuery())
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
    assert len(s.calls) == 5


def test_retry_resumes_at_the_failed_page() -> None:
    """A failure on page 2 retries page 2, not the listing from the start."""
    link = f"{EP}/v1.0/users?$skiptoken=p2"
    s = ScriptedSession(page(["a"], link), requests.Timeout("slow"), page(["b"]))
    g, _, _ = client(s)
    assert [u["id"] for p in g.iter_pages(UsersQuery()) for u in p.value] == ["a", "b"]
    assert [c["url"] for c in s.calls] == [f"{EP}/v1.0/users", link, link]


def test_expired_token_is_refreshed_once_then_the_same_request_repeats() -> None:
    """A 401 invalidates the token and repeats the request with a new one; a second 401 is an error."""
    expired = response(401, {"error": {"code": "InvalidAuthenticationToken"}})
    s = ScriptedSession(expired, page(["a"]))
    g, _, tokens = client(s)
    assert g.users_page(UsersQuery()).value == [{"id": "a"}]
    assert tokens.invalidated == ["token-0"]
    assert s.calls[1]["headers"]["Authorization"] == "Bearer token-1"

    s2 = ScriptedSession(expired, expired)
    g2, _, _ = client(s2)
    with pytest.raises(GraphError):
        g2.users_page(UsersQuery())
    assert len(s2.calls) == 2


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (403, {"error": {"code": "Authorization_RequestDenied"}}, PermissionDeniedError),
        (404, {"error": {"code": "Request_ResourceNotFound"}}, NotFoundError),
        (400, {"error": {"code": "BadRequest", "message": "Invalid filter clause"}}, InvalidRequestError),
        (418, {}, GraphError),
    ],
)
def test_graph_errors_map_to_app_errors(status: int, body: dict[str, object], error: type[Exception]) -> None:
    """Graph's error statuses become the app's typed errors without retries."""
    s = ScriptedSession(response(status, body, {"request-id": "rid-1"}))
    g, sleeps, _ = client(s)
    with pytest.raises(error):
        g.users_page(UsersQuery())
    assert sleeps == []


def test_permission_error_says_which_permission() -> None:
    """Without admin consent the message names User.Read.All."""
    s = ScriptedSession(response(403, {"error": {"code": "Authorization_RequestDenied"}}))
    g, _, _ = client(s)
    with pytest.raises(PermissionDeniedError, match=r"User\.Read\.All"):
        g.users_page(UsersQuery())


@pytest.mark.parametrize(
    "bad",
    [
        response(200, raw=b"{not json"),
        response(200, {"nextLink": "x"}),
        response(200, [1, 2]),
        response(200, {"value": [], "@odata.nextLink": "https://attacker.example/v1.0/users?$skiptoken=1"}),
        response(200, {"value": [], "@odata.nextLink": "http://graph.example/v1.0/users?$skiptoken=1"}),
    ],
)
def test_malformed_pages_are_errors(bad: requests.Response) -> None:
    """Malformed JSON, a page without value, or a nextLink elsewhere is a GraphError."""
    g, _, _ = client(ScriptedSession(bad))
    with pytest.raises(GraphError):
        g.users_page(UsersQuery())


def test_search_and_count_send_consistency_level_on_every_page() -> None:
    """ConsistencyLevel: eventual goes with $search/$count, including on nextLink pages."""
    link = f"{EP}/v1.0/users?$top=1&$search=%22displayName:a%22&$skiptoken=2"
    s = ScriptedSession(page(["a"], link), page(["b"]), page(["c"]))
    g, _, _ = client(s)
    list(g.iter_pages(UsersQuery(top=1, search='"displayName:a"')))
    assert [c["headers"].get("ConsistencyLevel") for c in s.calls] == ["eventual", "eventual"]
    g.users_page(UsersQuery())
    assert "ConsistencyLevel" not in s.calls[2]["headers"]


def test_cursor_round_trip_carries_only_parameters_and_skip_token() -> None:
    """A cursor holds the query's API parameters and Graph's skip token; no URL, no Graph option."""
    import base64
    import json

    g, _, _ = client(ScriptedSession())
    query = UsersQuery(top=5, select=("id", "mail"), filter="accountEnabled ne true", count=False)
    cursor = g.encode_cursor(query, f"{EP}/v1.0/users?$top=5&$expand=manager&$skiptoken=abc")
    fields, token = g.decode_cursor(cursor)
    assert token == "abc"
    assert fields == {"top": "5", "select": "id,mail", "filter": "accountEnabled ne true", "count": "false"}
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    assert "expand" not in raw and "graph.example" not in raw and "$" not in json.loads(raw)["filter"]


def test_forged_tampered_and_truncated_cursors_are_rejected() -> None:
    """Anything but a cursor this client wrote, byte for byte, is a 400; foreign next links are refused."""
    import base64
    import json

    g, _, _ = client(ScriptedSession())
    good = g.encode_cursor(UsersQuery(top=2), f"{EP}/v1.0/users?$skiptoken=abc")

    def enc(payload: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    base = {"v": 1, "top": "2", "count": "false", "skiptoken": "abc"}
    for bad in [
        enc("users?$expand=manager"),
        base64.urlsafe_b64encode(b"users?$top=1").decode(),
        enc({**base, "expand": "manager"}),
        enc({**base, "url": f"{EP}/v1.0/groups"}),
        enc({**base, "v": 2}),
        enc({**base, "top": 5}),
        enc({**base, "skiptoken": "a&b"}),
        enc({k: v for k, v in base.items() if k != "skiptoken"}),
        enc([base]),
        good[:-2],
        good[: len(good) // 2],
        good + "A",
        "!!!",
        "",
    ]:
        with pytest.raises(InvalidRequestError):
            g.decode_cursor(bad)
    for link in [
        "https://attacker.example/v1.0/users?$skiptoken=1",
        f"{EP}/v1.0/groups?$skiptoken=1",
        f"{EP}/v1.0/users/delta?$skiptoken=1",
        f"{EP}/v1.0/users?$top=1",
        f"{EP}/v1.0/users?$skiptoken=a b",
    ]:
        with pytest.raises(GraphError):
            g.encode_cursor(UsersQuery(), link)


@pytest.mark.parametrize(
    ("url", "resource", "own"),
    [
        (f"{EP}/v1.0/users", None, True),
        (f"{EP}/v1.0/users?$top=1&$skiptoken=x", None, True),
        (f"{EP}/v1.0/users/delta?$deltatoken=x", None, True),
        (f"{EP}/v1.0/users/ada@contoso.com?$select=id", None, True),
        (f"{EP}/v1.0/users('$ada@contoso.com')", None, True),
        (f"{EP}/v1.0/users/..", None, False),
        (f"{EP}/v1.0/users/.", None, False),
        (f"{EP}/v1.0/users/%2e%2E", None, False),
        (f"{EP}/v1.0/users/..?x=1", None, False),
        (f"{EP}/v1.0/users/a/b", None, False),
        (f"{EP}/v1.0/users/a\\b", None, False),
        (f"{EP}/v1.0/users/a b", None, False),
        (f"{EP}/v1.0/users#x", None, False),
        (f"{EP}/v1.0/usersx", None, False),
        (f"{EP}/v1.0/applications", None, False),
        (f"{EP}/beta/users", None, False),
        (f"{EP}.attacker.example/v1.0/users", None, False),
        (f"{EP}@attacker.example/v1.0/users", None, False),
        (f"{EP}/v1.0/users?$skiptoken=x", "/users", True),
        (f"{EP}/v1.0/users/delta?$skiptoken=x", "/users", False),
        (f"{EP}/v1.0/users/x?$skiptoken=x", "/users", False),
        (f"{EP}/v1.0/users/delta?$skiptoken=x", "/users/delta", True),
        (f"{EP}/v1.0/users?$skiptoken=x", "/users/delta", False),
    ],
)
def test_is_own_url_pins_the_users_resource(url: str, resource: str | None, own: bool) -> None:
    """Only this endpoint's /users, /users/delta and one user; with a resource, exactly that collection."""
    g, _, _ = client(ScriptedSession())
    assert g.is_own_url(url, resource) is own


@pytest.mark.parametrize(
    ("user_id", "path"),
    [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", "/users/0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("ada@contoso.com", "/users/ada@contoso.com"),
        ("ada_fabrikam.com#EXT#@contoso.com", "/users/ada_fabrikam.com%23EXT%23@contoso.com"),
        ("o'neil@contoso.com", "/users/o%27neil@contoso.com"),
        ("$ada@contoso.com", "/users('$ada@contoso.com')"),
        ("$o'neil@contoso.com", "/users('$o''neil@contoso.com')"),
    ],
)
def test_user_path_encodes_one_segment(user_id: str, path: str) -> None:
    """A GUID or UPN becomes one percent-encoded segment; a $-UPN uses Graph's ('...') form with '' for '."""
    assert user_path(user_id) == path


@pytest.mark.parametrize(
    "user_id",
    [
        "..",
        ".",
        "me",
        "a/b@contoso.com",
        "ada",
        "ada@",
        "@contoso.com",
        "a b@c.com",
        "ada@contoso",
        "x" * 200 + "@" + "y" * 60 + ".com",
        "ada@contoso.com?x",
    ],
)
def test_user_path_refuses_other_keys(user_id: str) -> None:
    """Anything that is neither a GUID nor UPN-shaped is refused before a URL is built."""
    with pytest.raises(InvalidRequestError):
        user_path(user_id)


@pytest.mark.parametrize(
    ("filter_", "advanced"),
    [
        (None, False),
        ("accountEnabled eq true", False),
        ("startswith(displayName,'Not ne null')", False),
        ("department in ('Sales','Legal')", False),
        ("accountEnabled ne true", True),
        ("NOT(accountEnabled eq true)", True),
        ("not startswith(displayName,'A')", True),
        ("endsWith(mail,'@contoso.com')", True),
        ("jobTitle eq null", True),
        ("officeLocation eq '1/100'", True),
        ("assignedLicenses/$count eq 0", True),
        ("createdDateTime in ('x')", True),
        ("displayName eq 'it''s not null'", False),
    ],
)
def test_advanced_filters_are_recognised(filter_: str | None, advanced: bool) -> None:
    """ne, not, endsWith, null, /$count and advanced-only properties need ConsistencyLevel and $count; literals do not count."""
    assert UsersQuery(filter=filter_).advanced is advanced
    assert ("$count" in UsersQuery(filter=filter_).params()) is advanced


def test_advanced_filter_pages_send_the_header_and_count() -> None:
    """An advanced filter gets $count=true, so get() sends ConsistencyLevel: eventual."""
    s = ScriptedSession(page(["a"]))
    g, _, _ = client(s)
    g.users_page(UsersQuery(filter="accountEnabled ne true"))
    assert s.calls[0]["params"]["$count"] == "true" and s.calls[0]["headers"]["ConsistencyLevel"] == "eventual"


def test_logged_paths_hash_user_principal_names() -> None:
    """A UPN in a logged path becomes a short hash; object ids and collections stay readable."""
    assert loggable_path(f"{EP}/v1.0/users?$filter=x") == "/v1.0/users"
    assert loggable_path(f"{EP}/v1.0/users/delta?$deltatoken=x") == "/v1.0/users/delta"
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert loggable_path(f"{EP}/v1.0/users/{guid}") == f"/v1.0/users/{guid}"
    for url in [f"{EP}/v1.0/users/ada@contoso.com", f"{EP}/v1.0/users('$ada@contoso.com')"]:
        logged = loggable_path(url)
        assert "ada" not in logged and "<sha256:" in logged
    assert loggable_path(f"{EP}/v1.0/users/ada@contoso.com") != loggable_path(f"{EP}/v1.0/users/bob@contoso.com")


@pytest.mark.parametrize(
    ("pager", "link"),
    [
        ("pages", f"{EP}/v1.0/users/delta?$skiptoken=1"),
        ("pages", f"{EP}/v1.0/applications?$skiptoken=1"),
        ("delta", f"{EP}/v1.0/users?$skiptoken=1"),
        ("delta", f"{EP}/v1.0/users/x?$skiptoken=1"),
    ],
)
def test_next_links_must_name_the_collection_being_paged(pager: str, link: str) -> None:
    """/users pages follow only /users links and delta rounds only /users/delta links; nothing else is requested."""
    s = ScriptedSession(page(["a"], link))
    g, _, _ = client(s)
    with pytest.raises(GraphError):
        if pager == "pages":
            list(g.iter_pages(UsersQuery()))
        else:
            list(g.iter_delta(None, ("id",), 10))
    assert len(s.calls) == 1


def test_never_sends_the_token_outside_the_endpoint() -> None:
    """get() refuses URLs outside GRAPH_ENDPOINT before any request."""
    s = ScriptedSession()
    g, _, _ = client(s)
    for url in [
        "https://attacker.example/v1.0/users",
        "https://graph.example.attacker.example/v1.0/users",
        "https://graph.example@attacker.example/v1.0/users",
        "https://graph.example:8443/v1.0/users",
    ]:
        with pytest.raises(GraphError):
            g.get(url)
    assert s.calls == []


def test_parse_retry_after_forms() -> None:
    """Delta-seconds and HTTP-date both parse; garbage is None."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(email.utils.formatdate(1000.0 + 10, usegmt=True), now=1000.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
