"""The API's answers to caller mistakes (issue 23): repeated parameters, invalid ids, {} and oversized bodies, log levels."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from testkit.fakes import FakeTokens, ScriptedSession, response

from graphusers import api
from graphusers.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError, PermissionDeniedError
from graphusers.graph import GraphClient, RetryPolicy, UsersQuery, user_key_problem

ROOT = Path(__file__).resolve().parents[2]


def request(method: str, route: str, query: str = "", body: bytes = b"") -> func.HttpRequest:
    """A request as the host hands it over: the URL as sent, and one value per query name."""
    from urllib.parse import parse_qsl

    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)
    url = f"http://localhost:7071/api/{route}" + (f"?{query}" if query else "")
    return func.HttpRequest(method=method, url=url, params=params, route_params={}, body=body, headers={})


@pytest.fixture(autouse=True)
def _no_graph_call() -> None:
    """Settings and a Graph client whose session has no answers: these refusals must not reach Graph."""
    from graphusers import service
    from graphusers.config import load_settings

    settings = load_settings(
        {
            "GRAPH_TENANT_ID": "contoso.onmicrosoft.com",
            "GRAPH_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
            "KEY_VAULT_URL": "https://kv.vault.azure.net",
        }
    )
    tokens = FakeTokens()
    graph = GraphClient(settings.graph_endpoint, tokens, session=ScriptedSession())
    service.set_services(service.Services(settings=settings, tokens=tokens, graph=graph))


class _Out:
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, value: str) -> None:
        self.value = value


@pytest.mark.parametrize(
    ("function", "route", "query", "name"),
    [
        ("list_users", "users", "top=2&top=3", "top"),
        ("list_users", "users", "select=id&filter=x&select=mail", "select"),
        ("sync_status", "sync/status", "code=a&code=b", "code"),
        ("list_users", "users", "top=2&TOP=3", "TOP"),  # the host's query names ignore case
        ("openapi_document", "openapi.yaml", "x=1&x=1", "x"),
    ],
)
def test_a_repeated_query_parameter_is_refused_by_name(
    triggers: dict[str, Any], function: str, route: str, query: str, name: str
) -> None:
    """top=2&top=3 is a 400 naming top, not a silent pick of one value (the host passes one value per name)."""
    resp = triggers[function](request("GET", route, query))
    assert resp.status_code == 400
    message = json.loads(resp.get_body())["error"]["message"]
    assert f"{name!r} is given more than once" in message


def test_a_repeated_parameter_on_post_sync_queues_nothing(triggers: dict[str, Any]) -> None:
    """POST /api/sync?code=a&code=b: 400 and no message on the queue."""
    out = _Out()
    resp = triggers["request_sync"](request("POST", "sync", "code=a&code=b"), out)
    assert resp.status_code == 400 and out.value is None


@pytest.mark.parametrize(
    ("body", "mode"), [(b"", "incremental"), (b"{}", "incremental"), (b" { } ", "incremental"), (b'{"mode":"full"}', "full")]
)
def test_post_sync_takes_every_body_the_schema_allows(triggers: dict[str, Any], body: bytes, mode: str) -> None:
    """openapi.yaml's body is an object with an optional mode: {} is valid and means a normal run."""
    out = _Out()
    resp = triggers["request_sync"](request("POST", "sync", body=body), out)
    assert resp.status_code == 202, resp.get_body()
    assert out.value is not None and json.loads(out.value)["mode"] == mode


@pytest.mark.parametrize("body", [b'{"mode":"fast"}', b'{"mode":"full","x":1}', b"[]", b'{"mode":null}', b"null"])
def test_post_sync_refuses_what_the_schema_refuses(body: bytes) -> None:
    """Another mode, another property, or not an object: 400."""
    with pytest.raises(InvalidRequestError) as info:
        api.parse_sync_request(body)
    assert not isinstance(info.value, PayloadTooLargeError)


def test_an_oversized_body_is_413_before_it_is_parsed(triggers: dict[str, Any]) -> None:
    """A body over MAX_BODY_BYTES answers 413 naming the cap, and nothing is queued."""
    out = _Out()
    big = b"{" + b" " * api.MAX_BODY_BYTES + b"}"  # valid JSON: refused for its size alone
    resp = triggers["request_sync"](request("POST", "sync", body=big), out)
    assert resp.status_code == 413 and out.value is None
    assert str(api.MAX_BODY_BYTES) in json.loads(resp.get_body())["error"]["message"]
    assert api.parse_sync_request(b"{" + b" " * (api.MAX_BODY_BYTES - 2) + b"}") == "incremental"  # at the cap: read


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("jürgen@contoso.com", "non-ASCII character 'ü' (U+00FC)"),
        ("ada lovelace@contoso.com", "' ' (U+0020)"),
        ("ada@exämple.com", "xn--"),
        ("a@b@contoso.com", "exactly one '@'"),
        ("@contoso.com", "before the '@' is empty"),
        ("ada@", "after the '@' is empty"),
        ("ada@contoso", "not a domain name"),
        ("6ec9d286-63ca-428d-95f4-b3b2e4b06ce", "8-4-4-4-12"),
        ("ada", "no '@'"),
        ("x" * 129 + "@contoso.com", "longer than 128"),
    ],
)
def test_an_invalid_id_says_what_is_wrong(triggers: dict[str, Any], key: str, reason: str) -> None:
    """Not the generic "must be an object id or userPrincipalName" alone: the reason, per Entra's username policy."""
    req = func.HttpRequest(method="GET", url="http://localhost/api/users/x", params={}, route_params={"id": key}, body=b"")
    resp = triggers["get_user"](req)
    assert resp.status_code == 400
    message = json.loads(resp.get_body())["error"]["message"]
    assert message.startswith("Path parameter 'id' must be a user's object id or userPrincipalName: ")
    assert reason in message, message


@pytest.mark.parametrize(
    "key", ["ada@contoso.com", "6ec9d286-63ca-428d-95f4-b3b2e4b06ce6", "$x@contoso.com", "o'neil#1@contoso.com"]
)
def test_valid_keys_have_no_problem(key: str) -> None:
    """What the app accepted before it still accepts."""
    assert user_key_problem(key) is None


def test_a_lone_surrogate_in_an_id_is_named_without_breaking_the_json(triggers: dict[str, Any]) -> None:
    """Undecodable bytes arrive as lone surrogates: the answer is still JSON."""
    req = func.HttpRequest(method="GET", url="http://x/api/users/x", params={}, route_params={"id": "a\udcff@c.com"}, body=b"")
    resp = triggers["get_user"](req)
    assert resp.status_code == 400 and "not valid UTF-8" in json.loads(resp.get_body())["error"]["message"]


def test_openapi_document_is_served_as_it_ships(triggers: dict[str, Any]) -> None:
    """GET /api/openapi.yaml: the file's bytes, as application/yaml."""
    resp = triggers["openapi_document"](request("GET", "openapi.yaml"))
    assert resp.status_code == 200 and resp.mimetype == "application/yaml"
    assert resp.get_body() == (ROOT / "openapi.yaml").read_bytes()


def test_the_deployment_ships_openapi_yaml() -> None:
    """No .funcignore pattern (gitignore syntax) leaves openapi.yaml out of the package that `func publish` uploads."""
    import fnmatch

    patterns = [
        line.strip().lstrip("/")
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not [p for p in patterns if fnmatch.fnmatch("openapi.yaml", p.rstrip("/"))]


def _graph(*answers: Any) -> GraphClient:
    return GraphClient(
        "https://graph.example",
        FakeTokens(),
        session=ScriptedSession(*answers),
        retry=RetryPolicy(),
        sleep=lambda s: None,
        rnd=lambda: 0.0,
    )


@pytest.mark.parametrize(
    ("status", "code", "error", "level"),
    [
        (400, "Request_UnsupportedQuery", InvalidRequestError, logging.INFO),
        (404, "Request_ResourceNotFound", NotFoundError, logging.INFO),
    ],
)
def test_a_callers_mistake_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture, status: int, code: str, error: type[Exception], level: int
) -> None:
    """Graph's 400 for a bad filter, or 404 for no such user, is the caller's: INFO, not ERROR."""
    graph = _graph(response(status, {"error": {"code": code, "message": "Unsupported Query."}}))
    with caplog.at_level(logging.INFO, logger="graphusers.graph"), pytest.raises(error):
        graph.users_page(UsersQuery(filter="foo eq 1"))
    lines = [r for r in caplog.records if r.name == "graphusers.graph" and "Graph answered" in r.getMessage()]
    assert [r.levelno for r in lines] == [level]


def test_what_an_operator_must_fix_stays_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Graph's 403 (a missing permission) is still logged at ERROR."""
    graph = _graph(response(403, {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}))
    with caplog.at_level(logging.INFO, logger="graphusers.graph"), pytest.raises(PermissionDeniedError):
        graph.users_page(UsersQuery())
    assert [r.levelno for r in caplog.records if "Graph answered" in r.getMessage()] == [logging.ERROR]


def test_a_missing_openapi_yaml_is_a_500_json_naming_the_cause(
    triggers: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A package shipped without openapi.yaml answers the error shape, and the log says to check .funcignore."""
    api.openapi_document.cache_clear()
    monkeypatch.setattr(api, "OPENAPI_PATH", ROOT / "no-such-openapi.yaml")
    try:
        resp = triggers["openapi_document"](request("GET", "openapi.yaml"))
    finally:
        api.openapi_document.cache_clear()
    assert resp.status_code == 500 and json.loads(resp.get_body())["error"]["code"] == "internal_error"
    assert ".funcignore" in caplog.text
