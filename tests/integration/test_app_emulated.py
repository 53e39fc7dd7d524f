"""The function app end to end against the emulated tenant over HTTPS, through its trigger functions."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from testkit.triggers import http_get

from emulator import Emulator, Fault


def call(
    triggers: dict[str, Any], name: str, params: dict[str, str] | None = None, route_params: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    resp = triggers[name](http_get("x", params, route_params))
    return resp.status_code, json.loads(resp.get_body()), dict(resp.headers)


def test_pages_through_all_users_with_cursors(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Following nextCursor from the first page reaches every user exactly once, then null."""
    status, body, _ = call(triggers, "list_users", {"top": "60"})
    seen = [u["id"] for u in body["value"]]
    pages = 1
    while body["nextCursor"]:
        status, body, _ = call(triggers, "list_users", {"cursor": body["nextCursor"]})
        assert status == 200
        seen += [u["id"] for u in body["value"]]
        pages += 1
    assert pages == 5 and len(seen) == len(set(seen)) == 250
    assert set(seen) == set(emu.directory.users)
    assert set(body["value"][0]) == {"id", "displayName", "userPrincipalName", "mail", "accountEnabled"}


def test_lookup_by_id_and_upn_and_404(emu: Emulator, triggers: dict[str, Any]) -> None:
    """/users/{id} finds a user by object id or UPN; an unknown id is a JSON 404."""
    user = next(iter(emu.directory.users.values()))
    for key in (user["id"], user["userPrincipalName"]):
        status, body, _ = call(triggers, "get_user", {"select": "id,jobTitle"}, {"id": key})
        assert status == 200 and body == {"id": user["id"], "jobTitle": user["jobTitle"]}
    status, body, _ = call(triggers, "get_user", None, {"id": "00000000-0000-0000-0000-000000000000"})
    assert status == 404 and body["error"]["code"] == "not_found"


def test_search_count_and_filter_pass_through(emu: Emulator, triggers: dict[str, Any]) -> None:
    """search/count/filter reach Graph in its own syntax; count is the total."""
    status, body, _ = call(triggers, "list_users", {"search": '"displayName:ada"', "count": "true", "top": "2"})
    expected = sum(1 for u in emu.directory.users.values() if u["displayName"].startswith("Ada"))
    assert status == 200 and body["count"] == expected and len(body["value"]) == 2
    status, nxt, _ = call(triggers, "list_users", {"cursor": body["nextCursor"]})
    assert status == 200 and all(u["displayName"].startswith("Ada") for u in nxt["value"])
    status, body, _ = call(triggers, "list_users", {"filter": "accountEnabled eq false", "top": "999"})
    assert status == 200 and all(u["accountEnabled"] is False for u in body["value"])


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"top": "1000"}, "'top'"),
        ({"top": "0"}, "'top'"),
        ({"select": "id,,mail"}, "'select'"),
        ({"count": "maybe"}, "'count'"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "'cursor'"),
        ({"skip": "1"}, "'skip'"),
    ],
)
def test_bad_input_is_400_before_any_graph_call(
    emu: Emulator, triggers: dict[str, Any], params: dict[str, str], parameter: str
) -> None:
    """Invalid parameters are refused with the JSON error shape and cost no Graph request."""
    status, body, _ = call(triggers, "list_users", params)
    assert status == 400 and body["error"]["code"] == "invalid_request"
    assert parameter in body["error"]["message"]
    assert emu.count("graph") == 0


def test_query_graph_rejects_is_400_with_graphs_reason(emu: Emulator, triggers: dict[str, Any]) -> None:
    """A filter Graph cannot run, or a property it does not know, is a 400 that says why."""
    status, body, _ = call(triggers, "list_users", {"filter": "displayName gt 'a'"})
    assert status == 400 and "query filter clause specified for property 'displayName'" in body["error"]["message"]
    status, body, _ = call(triggers, "list_users", {"select": "id,shoeSize"})
    assert status == 400 and "shoeSize" in body["error"]["message"]


def test_token_is_reused_across_invocations(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Twenty invocations of any HTTP function make one token request and one Key Vault read."""
    user = next(iter(emu.directory.users))
    for i in range(20):
        name, route = ("list_users", None) if i % 2 else ("get_user", {"id": user})
        assert call(triggers, name, {"top": "5"} if i % 2 else None, route)[0] == 200
    assert emu.counts() == {"discovery": 1, "identity": 1, "keyvault-challenge": 1, "keyvault": 1, "token": 1, "graph": 20}


def test_concurrent_cold_invocations_make_one_token_request(emu: Emulator, triggers: dict[str, Any]) -> None:
    """24 concurrent cold GET /api/users: exactly 1 token request and 1 Key Vault read."""
    emu.latency["token"] = 0.2  # a slow token endpoint keeps the race window wide open
    barrier = threading.Barrier(24)
    statuses: list[int] = []

    def invoke() -> None:
        barrier.wait()
        statuses.append(call(triggers, "list_users", {"top": "10"})[0])

    threads = [threading.Thread(target=invoke) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 24
    assert emu.count("token") == 1 and emu.count("keyvault") == 1
    assert emu.count("identity") == 1 and emu.count("discovery") == 1


def test_rotated_secret_is_picked_up_with_one_extra_key_vault_read(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Rotation in the vault, old secret revoked and its tokens expired: one extra Key Vault read, no restart."""
    assert call(triggers, "list_users", {"top": "5"})[0] == 200
    reads = emu.count("keyvault")
    emu.rotate_secret()
    emu.revoke_tokens()
    status, body, _ = call(triggers, "list_users", {"top": "5"})
    assert status == 200 and len(body["value"]) == 5
    assert emu.count("keyvault") == reads + 1
    assert emu.count("token", status=401) == 1
    for _ in range(3):
        assert call(triggers, "list_users", {"top": "5"})[0] == 200
    assert emu.count("keyvault") == reads + 1


def test_expired_secret_gives_503_naming_aadsts_and_no_storm(emu: Emulator, triggers: dict[str, Any]) -> None:
    """An expired secret that nobody rotated: 503 naming AADSTS7000222, and repeated calls stay quiet."""
    emu.client_secrets[emu.secret] = True
    status, body, headers = call(triggers, "list_users")
    assert status == 503 and "AADSTS7000222" in body["error"]["message"] and int(headers["Retry-After"]) >= 1
    before = emu.counts()
    for _ in range(10):
        assert call(triggers, "list_users")[0] == 503
    assert emu.counts() == before


@pytest.mark.parametrize("outage", ["503", "403", "404", "unreachable"])
def test_key_vault_down_is_503_json_and_health_stays_200(
    emu: Emulator,
    triggers: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    """Key Vault failing in any way: 503 JSON with Retry-After, the cause only in the log; health is 200."""
    if outage == "503":
        emu.inject(Fault("keyvault", status=503, count=None))
    elif outage == "403":
        emu.vault_role = False
    elif outage == "404":
        monkeypatch.setenv("GRAPH_CLIENT_SECRET_NAME", "missing-secret")
    else:
        monkeypatch.setenv("KEY_VAULT_URL", "https://127.0.0.1:9")
    with caplog.at_level(logging.ERROR, logger="graphusers"):
        status, body, headers = call(triggers, "list_users")
    assert status == 503 and body["error"]["code"] == "key_vault_unavailable" and headers["Retry-After"]
    assert "Key Vault" in body["error"]["message"]
    cause = {"503": "HTTP 503", "403": "Key Vault Secrets User", "404": "GRAPH_CLIENT_SECRET_NAME", "unreachable": "unreachable"}[
        outage
    ]
    assert cause in caplog.text and cause not in json.dumps(body)
    assert emu.count("token") == 0
    assert triggers["health"](http_get("health")).status_code == 200


def test_graph_429_is_retried_after_the_servers_delay(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Throttled once with Retry-After: the call waits and succeeds."""
    emu.inject(Fault("graph", status=429, headers={"Retry-After": "1"}))
    status, body, _ = call(triggers, "list_users", {"top": "3"})
    assert status == 200 and len(body["value"]) == 3
    assert emu.count("graph", status=429) == 1 and emu.count("graph", status=200) == 1


def test_graph_throttling_past_the_budget_is_503_with_retry_after(emu: Emulator, triggers: dict[str, Any]) -> None:
    """A Retry-After longer than the wait budget gives the caller 503 and that Retry-After at once."""
    emu.inject(Fault("graph", status=429, headers={"Retry-After": "120"}))
    status, body, headers = call(triggers, "list_users")
    assert status == 503 and headers["Retry-After"] == "120" and body["error"]["code"] == "service_unavailable"


def test_missing_admin_consent_is_502_naming_the_permission(emu: Emulator, triggers: dict[str, Any]) -> None:
    """A token without User.Read.All: Graph's 403 becomes 502 saying which permission is missing."""
    emu.consented = False
    status, body, _ = call(triggers, "list_users")
    assert status == 502 and body["error"]["code"] == "permission_denied" and "User.Read.All" in body["error"]["message"]


def test_no_secret_or_token_in_logs_or_responses(
    emu: Emulator,
    triggers: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Across cold start, rotation, bad secret and failures, no secret or token reaches a log or a response."""
    caplog.set_level(logging.DEBUG)
    secrets = [emu.secret]
    bodies = [call(triggers, "list_users", {"top": "2"})]
    secrets.append(emu.rotate_secret())
    emu.revoke_tokens()
    bodies.append(call(triggers, "list_users"))
    emu.client_secrets[emu.secret] = True
    emu.revoke_tokens()
    bodies.append(call(triggers, "list_users"))
    emu.inject(Fault("graph", status=500, count=None))
    bodies.append(call(triggers, "get_user", None, {"id": "x"}))
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err + json.dumps([(s, b, h) for s, b, h in bodies])
    assert len(emu.issued) >= 3
    for value in secrets + emu.issued:
        assert value not in text
        # A token's signature alone would be a leak too.
        assert value.rsplit(".", 1)[-1] not in text
