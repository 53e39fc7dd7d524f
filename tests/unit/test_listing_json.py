"""The listing's JSON both ways: Graph pages are parsed strictly, and the answer is the JSON it always was."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from testkit.fakes import FakeTokens, ScriptedSession, response

from graphusers.api import ApiResponse, list_users
from graphusers.errors import GraphError
from graphusers.graph import GraphClient, RetryPolicy, UsersQuery

EP = "https://graph.example"
SELECT = ("id", "displayName")


def graph(*answers: requests.Response) -> GraphClient:
    return GraphClient(
        EP, FakeTokens(), session=ScriptedSession(*answers), retry=RetryPolicy(total=0), sleep=lambda _: None, rnd=lambda: 0.0
    )


def stdlib(body: Any) -> bytes:
    """What the API answered before orjson: compact, non-ASCII kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b'{"value": [{"id": "a"}]',  # truncated
        b'{"value": []} trailing',
        b'{"value": [{"id": "\xff\xfe"}]}',  # not UTF-8
        b'{"value": [{"id": "\\ud800"}]}',  # a lone surrogate cannot be sent on as UTF-8
        b'{"value": [NaN]}',
        b'\xef\xbb\xbf{"value": []}',  # RFC 8259 section 8.1: no byte order mark
        b'{"value": {"id": "a"}}',
        b'{"value": "a"}',
        b'{"value": null}',
        b'{"@odata.nextLink": "https://graph.example/v1.0/users?$skiptoken=1"}',
        b"[]",
        b'"value"',
    ],
)
def test_malformed_graph_pages_are_graph_errors(raw: bytes) -> None:
    """Non-JSON, a page of another shape, or a 'value' that is not a list is a GraphError (502), never a 200."""
    with pytest.raises(GraphError):
        list_users(graph(response(200, raw=raw)), {"top": "2"}, SELECT)


def test_answer_is_the_same_bytes_as_before() -> None:
    """Non-ASCII, escapes and control characters come out exactly as json.dumps wrote them."""
    users = [
        {
            "id": "1",
            "displayName": 'Zoë "Q" \\ Łukasz\n\t\x00\x1f\x7f\u2028 😀',
            "accountEnabled": True,
            "mail": None,
            "businessPhones": ["+1 555"],
            "n": -(2**63),
            "m": 2**64 - 1,
        }
    ]
    link = f"{EP}/v1.0/users?$top=1&$skiptoken=abc"
    raw = json.dumps({"@odata.context": "x", "value": users, "@odata.nextLink": link}).encode()
    g = graph(response(200, raw=raw))
    body = list_users(g, {"top": "1"}, SELECT).json()
    assert isinstance(body, bytes)
    assert body == stdlib({"value": users, "nextCursor": json.loads(body)["nextCursor"]})


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(st.characters(exclude_categories=["Cs"]))
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    users=st.lists(
        st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), json_values, max_size=4), max_size=4
    ),
    count=st.none() | st.integers(0, 10**6),
)
def test_any_graph_page_passes_through_unchanged(users: list[dict[str, Any]], count: int | None) -> None:
    """Whatever users Graph sends (strings, numbers, nesting), the answer holds them as the stdlib encoder wrote."""
    page: dict[str, Any] = {"value": users}
    if count is not None:
        page["@odata.count"] = count
    params = {"top": "5"} if count is None else {"top": "5", "count": "true"}
    resp = list_users(graph(response(200, page)), params, SELECT)
    expected: dict[str, Any] = {"value": users, "nextCursor": None}
    if count is not None:
        expected["count"] = count
    assert resp.json() == stdlib(expected)


@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_floats_keep_their_value(x: float) -> None:
    """Floats are the same number (the exponent may be spelt 1e-7 rather than 1e-07)."""
    assert json.loads(ApiResponse(200, {"x": x}).json()) == {"x": x}


def test_iter_pages_parses_pages_strictly_too() -> None:
    """The sync's paging reads pages through the same strict parser."""
    g = graph(response(200, raw=b'{"value": [{"id": "a"}], "@odata.nextLink": 5}'))
    with pytest.raises(GraphError):
        list(g.iter_pages(UsersQuery()))
