"""The function app module: safe import, the indexed functions, thin triggers over the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testkit.fakes import ScriptedSession, response
from testkit.triggers import http_get

from graphusers import service
from graphusers.config import load_settings
from graphusers.errors import KeyVaultError
from graphusers.graph import GraphClient

ROOT = Path(__file__).resolve().parents[2]

IMPORT_PROBE = r"""
import json, socket
opened = []
def refuse(self, *args, **kwargs):
    opened.append(repr(args))
    raise OSError("network use at import")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = lambda *a, **k: refuse(None, *a)
import function_app
fns = function_app.app.get_functions()
print(json.dumps({"opened": opened, "functions": sorted(f.get_function_name() for f in fns)}))
"""


def test_import_with_no_settings_opens_no_connection_and_raises_nothing() -> None:
    """A fresh interpreter imports function_app with no app settings and no network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "KEY_VAULT", "AZURE_", "IDENTITY_"))}
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["opened"] == []
    assert result["functions"] == [
        "get_user",
        "health",
        "list_users",
        "request_sync",
        "sync_status",
        "user_sync_queue",
        "user_sync_timer",
    ]


def test_missing_settings_answer_503_json_and_health_stays_200(triggers: dict[str, Any]) -> None:
    """With no settings, /users is a 503 naming the setting; /health does not care."""
    resp = triggers["list_users"](http_get("users"))
    assert resp.status_code == 503
    body = json.loads(resp.get_body())
    assert body["error"]["code"] == "configuration_error"
    assert "GRAPH_TENANT_ID" in body["error"]["message"]
    assert resp.headers["Retry-After"] == "60"
    health = triggers["health"](http_get("health"))
    assert health.status_code == 200 and json.loads(health.get_body()) == {"status": "ok"}


class _Tokens:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail

    def get_token(self) -> str:
        if self.fail:
            raise self.fail
        return "t"

    def invalidate(self, token: str) -> None:
        pass


def _use_fake_graph(session: ScriptedSession, tokens: _Tokens | None = None) -> None:
    settings = load_settings(
        {
            "GRAPH_TENANT_ID": "contoso.onmicrosoft.com",
            "GRAPH_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
            "KEY_VAULT_URL": "https://kv.vault.azure.net",
        }
    )
    tp = tokens or _Tokens()
    graph = GraphClient(settings.graph_endpoint, tp, session=session)
    service.set_services(service.Services(settings=settings, tokens=tp, graph=graph))


def test_list_users_shapes_value_and_next_cursor(triggers: dict[str, Any]) -> None:
    """The trigger returns value and an opaque nextCursor; following it rebuilds the query with Graph's skip token."""
    link = "https://graph.microsoft.com/v1.0/users?$top=2&$skiptoken=abc"
    session = ScriptedSession(
        response(200, {"value": [{"id": "1"}, {"id": "2"}], "@odata.nextLink": link}), response(200, {"value": [{"id": "3"}]})
    )
    _use_fake_graph(session)
    first = json.loads(triggers["list_users"](http_get("users", {"top": "2"})).get_body())
    assert first["value"] == [{"id": "1"}, {"id": "2"}]
    assert "graph.microsoft.com" not in first["nextCursor"]
    second = json.loads(triggers["list_users"](http_get("users", {"cursor": first["nextCursor"]})).get_body())
    assert second == {"value": [{"id": "3"}], "nextCursor": None}
    assert session.calls[1]["url"] == "https://graph.microsoft.com/v1.0/users"
    assert session.calls[1]["params"] == {**session.calls[0]["params"], "$skiptoken": "abc"}
    assert session.calls[0]["params"]["$top"] == "2"


def test_get_user_passes_the_route_id_and_maps_404(triggers: dict[str, Any]) -> None:
    """/users/{id} looks the user up by the route parameter; Graph's 404 stays a 404."""
    session = ScriptedSession(response(200, {"id": "abc"}), response(404, {"error": {"code": "Request_ResourceNotFound"}}))
    _use_fake_graph(session)
    ok = triggers["get_user"](http_get("users/ada@contoso.com", route_params={"id": "ada@contoso.com"}))
    assert ok.status_code == 200 and json.loads(ok.get_body()) == {"id": "abc"}
    assert session.calls[0]["url"] == "https://graph.microsoft.com/v1.0/users/ada@contoso.com"
    gone = "0f8fad5b-d9cb-469f-a165-70867728950e"
    missing = triggers["get_user"](http_get(f"users/{gone}", route_params={"id": gone}))
    assert missing.status_code == 404 and json.loads(missing.get_body())["error"]["code"] == "not_found"


def test_key_vault_down_is_503_without_details(triggers: dict[str, Any]) -> None:
    """A credential failure answers 503 with Retry-After and the generic message only."""
    _use_fake_graph(ScriptedSession(), _Tokens(KeyVaultError("The app could not read its Graph credential.", retry_after=9)))
    resp = triggers["list_users"](http_get("users"))
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "9"
    assert json.loads(resp.get_body())["error"]["code"] == "key_vault_unavailable"


class _Out:
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


def test_request_sync_queues_a_message_and_answers_202(triggers: dict[str, Any]) -> None:
    """POST /api/sync puts one message on the queue binding and answers 202 with the status URL."""
    out = _Out()
    resp = triggers["request_sync"](http_get("sync"), out)
    assert resp.status_code == 202
    body = json.loads(resp.get_body())
    assert out.value is not None and set(json.loads(out.value)) == {"requestId", "requestedAt", "mode"}
    assert body == {"status": "queued", "statusUrl": "/api/sync/status", "requestId": json.loads(out.value)["requestId"]}
    assert json.loads(out.value)["mode"] == "incremental"
    bad = _Out()
    resp = triggers["request_sync"](http_get("sync", {"now": "1"}), bad)
    assert resp.status_code == 400 and bad.value is None
