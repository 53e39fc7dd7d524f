"""POST /api/sync's body and GET /api/sync/status's shape, without storage."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from graphusers import api
from graphusers.errors import InvalidRequestError


@pytest.mark.parametrize(
    "body,mode",
    [
        (b"", "incremental"),
        (b"  \n", "incremental"),
        (b"{}", "incremental"),  # openapi.yaml's schema allows it (issue 23)
        (b'{"mode": "incremental"}', "incremental"),
        (b'{"mode":"full"}', "full"),
    ],
)
def test_sync_request_modes(body: bytes, mode: str) -> None:
    """No body or {"mode": "incremental"} is a normal run; {"mode": "full"} a full resync."""
    assert api.parse_sync_request(body) == mode


@pytest.mark.parametrize(
    "body",
    [
        b"full",
        b'{"mode": "FULL"}',
        b'{"mode": "full", "now": true}',
        b'["full"]',
        b'{"mode": 1}',
        b"\xff\xfe",
        b'{"mode": null}',
        b"null",
    ],
)
def test_any_other_sync_body_is_400(body: bytes) -> None:
    """Anything else is refused with a message that shows the accepted bodies."""
    with pytest.raises(InvalidRequestError) as info:
        api.parse_sync_request(body)
    assert '{"mode": "full"}' in info.value.message


def test_status_shape_and_404() -> None:
    """Before any run the status is 404; after, it is {"lastRun", "lastSuccess"} as stored."""
    with pytest.raises(Exception) as info:
        api.sync_status(None)
    assert api.error_response(info.value).status == 404
    body = {"lastRun": {"status": "failed"}, "lastSuccess": None}
    assert api.sync_status(body).body == body


class _Out:
    value = ""

    def set(self, value: str) -> None:
        self.value = value


def test_post_sync_passes_the_mode_to_the_queue(triggers: dict[str, Any]) -> None:
    """The queued message carries the requested mode; a bad body queues nothing and answers 400."""

    def post(body: bytes, out: _Out) -> func.HttpResponse:
        req = func.HttpRequest(method="POST", url="http://localhost/api/sync", params={}, body=body, headers={})
        return triggers["request_sync"](req, out)  # type: ignore[no-any-return]

    full, bad = _Out(), _Out()
    assert post(b'{"mode": "full"}', full).status_code == 202 and json.loads(full.value)["mode"] == "full"
    resp = post(b'{"mode": "everything"}', bad)
    assert resp.status_code == 400 and bad.value == ""
    assert json.loads(resp.get_body())["error"]["code"] == "invalid_request"
