"""The one parser for untrusted JSON, and its three callers: cursors (400), request bodies (400), queue messages (poison)."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import azure.functions as func
import pytest
from testkit.fakes import ScriptedSession
from testkit.triggers import http_get

from graphusers import api, service, untrusted
from graphusers.config import load_settings
from graphusers.errors import InvalidRequestError
from graphusers.graph import GraphClient


class _Tokens:
    def get_token(self) -> str:
        return "t"

    def invalidate(self, token: str) -> None:
        pass


def _graph(session: ScriptedSession) -> None:
    settings = load_settings(
        {"GRAPH_TENANT_ID": "contoso.onmicrosoft.com", "GRAPH_CLIENT_ID": "11111111-2222-3333-4444-555555555555"}
        | {"KEY_VAULT_URL": "https://kv.vault.azure.net"}
    )
    tokens = _Tokens()
    service.set_services(
        service.Services(settings=settings, tokens=tokens, graph=GraphClient(settings.graph_endpoint, tokens, session=session))
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 50_000, "not valid JSON"),  # past orjson's own depth limit
        (b"[" * 9 + b"]" * 9, "nested deeper than 8 levels"),
        (b'{"a":' * 9 + b"1" + b"}" * 9, "nested deeper than 8 levels"),
        (b"{" * 3, "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        ('{"a": "\udc80"}', "not valid JSON"),
        (b"NaN", "not valid JSON"),
        (b" " * 101, "larger than 100 bytes"),
    ],
)
def test_every_unusable_input_is_one_error(data: bytes | str, reason: str) -> None:
    """Too deep, too large, malformed, not UTF-8: all UntrustedJSONError (a ValueError), never RecursionError."""
    with pytest.raises(untrusted.UntrustedJSONError) as info:
        untrusted.loads(data, max_bytes=100_000 if len(data) > 101 else 100)
    assert reason in info.value.reason and isinstance(info.value, ValueError)


def test_usable_input_parses_up_to_the_depth_allowed() -> None:
    """Eight levels of nesting are fine; the value is what orjson reads."""
    assert untrusted.loads(b"[" * 8 + b"]" * 8, max_bytes=100) == [[[[[[[[]]]]]]]]
    assert untrusted.loads('{"mode":"full"}', max_bytes=100) == {"mode": "full"}
    assert untrusted.depth({"a": [1, {"b": []}]}, 8) == 4 and untrusted.depth(5, 8) == 0


def test_a_deeply_nested_cursor_is_400_not_500(triggers: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Defect 4: a 26,667-character cursor of base64 "[" (under MAX_CURSOR) answers 400 and logs no ERROR."""
    cursor = base64.urlsafe_b64encode(b"[" * 20_000).decode().rstrip("=")
    assert len(cursor) == 26_667 and len(cursor) <= api.MAX_CURSOR
    session = ScriptedSession()
    _graph(session)
    with caplog.at_level(logging.INFO):
        resp = triggers["list_users"](http_get("users", {"cursor": cursor}))
    assert resp.status_code == 400
    assert json.loads(resp.get_body())["error"] == {
        "code": "invalid_request",
        "message": "Parameter 'cursor' is not a cursor this API returned.",
    }
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR] and session.calls == []


@pytest.mark.parametrize(
    "body",
    [b"[" * 20_000, b'{"mode": "full", "x": ' + b"[" * 9 + b"]" * 9 + b"}", b'{"mode": "full"', b"\xff"],
)
def test_an_unusable_sync_request_body_is_400(body: bytes) -> None:
    """POST /api/sync's body goes through the same parser: deep, truncated or undecodable bodies are 400 naming the body."""
    with pytest.raises(InvalidRequestError) as info:
        api.parse_sync_request(body)
    assert info.value.parameter == "body" and "The body is not usable" in info.value.message


@pytest.mark.parametrize(
    ("body", "mode"),
    [
        (b"", "incremental"),
        (b'{"requestId": "r1"}', "incremental"),
        (b'{"mode": "full"}', "full"),
        (b'{"mode":"incremental"}', "incremental"),
    ],
)
def test_queue_messages_that_are_sync_requests(body: bytes, mode: str) -> None:
    """Empty, legacy (no mode) and current messages are read as the run they ask for."""
    from function_app import _queued_mode

    assert _queued_mode(func.QueueMessage(id="m1", body=body)) == mode


@pytest.mark.parametrize("body", [b"[" * 50_000, b"not json", b'["full"]', b'{"mode": "everything"}', b"{}" + b" " * 70_000])
def test_an_unusable_queue_message_fails_before_syncing(body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """A message that is not a sync request raises (the host retries it, then moves it to the poison queue) and syncs nothing."""
    from function_app import user_sync_queue

    with caplog.at_level(logging.WARNING), pytest.raises(InvalidRequestError):
        user_sync_queue(func.QueueMessage(id="m1", body=body))
    assert any("poison queue" in r.getMessage() for r in caplog.records)
