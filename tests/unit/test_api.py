"""HTTP input validation and the error-to-status mapping."""

from __future__ import annotations

import functools

import pytest

from graphusers import api
from graphusers.errors import (
    ConfigError,
    GraphError,
    InvalidRequestError,
    KeyVaultError,
    NotFoundError,
    PermissionDeniedError,
    TokenError,
    UnavailableError,
)
from graphusers.graph import UsersQuery

DEFAULT = ("id", "displayName")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"top": "0"}, "top"),
        ({"top": "1000"}, "top"),
        ({"top": "-1"}, "top"),
        ({"top": "ten"}, "top"),
        ({"top": "1e2"}, "top"),
        ({"top": "\uff11\uff10"}, "top"),  # full-width digits are digits to str.isdigit, not to Graph
        ({"top": ""}, "top"),
        ({"select": ""}, "select"),
        ({"select": "id,"}, "select"),
        ({"select": "id,display name"}, "select"),
        ({"select": "id;drop"}, "select"),
        ({"select": ",".join(f"p{i}" for i in range(65))}, "select"),
        ({"filter": ""}, "filter"),
        ({"filter": "x" * 2049}, "filter"),
        ({"filter": "displayName eq 'a\nb'"}, "filter"),
        ({"search": "   "}, "search"),
        ({"count": "yes"}, "count"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "abc", "top": "5"}, "top"),
        ({"$top": "5"}, "$top"),
        ({"page": "2"}, "page"),
    ],
)
def test_bad_list_input_names_the_parameter(params: dict[str, str], parameter: str) -> None:
    """Each invalid /users input raises InvalidRequestError naming the parameter."""
    with pytest.raises(InvalidRequestError) as info:
        api.parse_users_query(params, DEFAULT)
    assert info.value.parameter == parameter
    assert repr(parameter)[1:-1] in info.value.message


def test_valid_list_input_builds_the_graph_query() -> None:
    """Valid parameters become Graph's OData query options; `code` (the function key) is ignored."""
    q = api.parse_users_query(
        {
            "top": "25",
            "select": "id, mail",
            "filter": "accountEnabled eq true",
            "search": '"displayName:ada"',
            "count": "TRUE",
            "code": "function-key",
        },
        DEFAULT,
    )
    assert q == UsersQuery(top=25, select=("id", "mail"), filter="accountEnabled eq true", search='"displayName:ada"', count=True)
    assert isinstance(q, UsersQuery)
    assert q.params() == {
        "$top": "25",
        "$select": "id,mail",
        "$filter": "accountEnabled eq true",
        "$search": '"displayName:ada"',
        "$count": "true",
    }


def test_defaults_are_top_100_and_configured_select() -> None:
    """With no parameters the first page has 100 users with USER_SELECT's properties."""
    assert api.parse_users_query({}, DEFAULT) == UsersQuery(top=100, select=DEFAULT)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (InvalidRequestError("bad top", parameter="top"), 400, "invalid_request"),
        (NotFoundError("no user"), 404, "not_found"),
        (ConfigError("GRAPH_CLIENT_ID", "is not set"), 503, "configuration_error"),
        (KeyVaultError("kv down", retry_after=7), 503, "key_vault_unavailable"),
        (TokenError("entra down", retry_after=5), 503, "token_unavailable"),
        (UnavailableError("throttled", retry_after=12), 503, "service_unavailable"),
        (PermissionDeniedError("no consent"), 502, "permission_denied"),
        (GraphError("odd"), 502, "graph_error"),
        (RuntimeError("secret=hunter2"), 500, "internal_error"),
    ],
)
def test_error_mapping(exc: Exception, status: int, code: str) -> None:
    """Each error becomes its status code and the one JSON error shape; 503s carry Retry-After."""
    resp = api.error_response(exc)
    assert resp.status == status
    assert set(resp.body) == {"error"} and set(resp.body["error"]) == {"code", "message"}
    assert resp.body["error"]["code"] == code
    assert b"hunter2" not in resp.json()
    if status == 503:
        assert int(resp.headers["Retry-After"]) >= 1
    if isinstance(exc, UnavailableError):
        assert resp.headers["Retry-After"] == str(exc.retry_after)


def test_get_user_rejects_malformed_ids() -> None:
    """A path id that is neither an object id nor a UPN is a 400 before any Graph call."""

    class NoGraph:
        def get_user(self, *a: object) -> None:
            raise AssertionError("Graph must not be called")

    for bad in ["a/b", "x" * 257, "a b", "../users", "id?x=1"]:
        resp = api.respond(functools.partial(api.get_user, NoGraph(), bad, {}, DEFAULT))  # type: ignore[arg-type]
        assert resp.status == 400, bad
        assert resp.body["error"]["code"] == "invalid_request"
