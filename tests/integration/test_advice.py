"""Advice that matches the cause: Key Vault's 403 variants, its token challenge, AADSTS500011 and AADSTS7002138.

Each case is emulated with the status and body the service sends (emulator/faults.py, emulator/entra.py)
and goes through the app as in Azure: the caller gets the generic 503, the log names the cause and the fix.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from testkit.triggers import http_get

from emulator import Emulator, Fault


def list_users(triggers: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = triggers["list_users"](http_get("users", {"top": "3"}))
    return resp.status_code, json.loads(resp.get_body())


def _vault_refusal(emu: Emulator, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture) -> tuple[dict[str, Any], str]:
    with caplog.at_level(logging.ERROR, logger="graphusers"):
        status, body = list_users(triggers)
    assert status == 503 and body["error"]["code"] == "key_vault_unavailable"
    assert emu.count("keyvault", 403) >= 1 and emu.count("token") == 0
    return body, caplog.text


def test_the_vault_firewall_is_named_not_the_role(
    emu: Emulator, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """403 ForbiddenByFirewall ("Client address is not authorized..."): the log points at the vault's network settings."""
    emu.inject(Fault("keyvault", kind="firewall", count=None))
    body, log = _vault_refusal(emu, triggers, caplog)
    assert "ForbiddenByFirewall" in log and "Networking" in log and "a role assignment does not help" in log
    assert "Key Vault Secrets User" not in log and "firewall" not in json.dumps(body).lower()


def test_an_access_policy_vault_is_told_to_add_a_policy(
    emu: Emulator, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """403 ForbiddenByPolicy on a vault in access-policy mode: the log asks for the Get secret permission (or RBAC)."""
    emu.inject(Fault("keyvault", kind="access-policy", count=None))
    _, log = _vault_refusal(emu, triggers, caplog)
    assert "ForbiddenByPolicy" in log and "access policies, not Azure RBAC" in log and "Secret permissions: Get" in log


def test_an_rbac_denial_still_names_the_role(emu: Emulator, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """403 ForbiddenByRbac: the Key Vault Secrets User role, as before."""
    emu.vault_role = False
    _, log = _vault_refusal(emu, triggers, caplog)
    assert "403 ForbiddenByRbac" in log and "'Key Vault Secrets User' role" in log and "firewall" not in log.lower()


def test_a_rejected_vault_token_gets_the_challenge_and_the_sdk_retries(emu: Emulator) -> None:
    """Issue 25 point 6: a token the vault rejects gets 401 with WWW-Authenticate; the SDK takes a token again and retries.

    The first read learns the challenge (the SDK caches it per process); the second sends the cached token, which
    the vault now rejects: with the challenge the SDK authorizes the request again and the read succeeds.
    """
    from emulator.wire import SECRET_NAME
    from graphusers.credentials import KeyVault

    vault = KeyVault(emu.url, managed_identity_client_id=emu.identity_client_id)
    assert vault.get(SECRET_NAME, "GRAPH_CLIENT_SECRET_NAME")[0] == emu.secret
    emu.inject(Fault("keyvault", kind="reject-token"))
    assert vault.get(SECRET_NAME, "GRAPH_CLIENT_SECRET_NAME")[0] == emu.secret
    calls = [(r.service, r.status) for r in emu.log if r.service.startswith("keyvault")]
    assert calls == [("keyvault-challenge", 401), ("keyvault", 200), ("keyvault", 401), ("keyvault", 200)]


def test_a_rejected_vault_token_without_the_challenge_would_fail() -> None:
    """The emulated refusal carries the challenge, as Key Vault's documentation says; without it the SDK gives up."""
    from emulator import faults
    from emulator.wire import Reply, Request

    emu = Emulator(users=1, seed=3)
    emu.tenant.port = 1234
    with pytest.raises(Reply) as caught:
        faults.answer_instead(Fault("keyvault", kind="reject-token"), "keyvault", Request("GET", "/secrets/x"), "", emu.tenant)
    reply = caught.value
    assert reply.status == 401 and reply.body["error"]["code"] == "Unauthorized"
    assert reply.headers["WWW-Authenticate"].startswith('Bearer authorization="https://127.0.0.1:1234/')


def test_a_graph_endpoint_the_tenant_lacks_is_aadsts500011(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A scope for a resource the tenant has no principal for: 400 invalid_resource AADSTS500011, advice on GRAPH_ENDPOINT."""
    monkeypatch.setenv("GRAPH_ENDPOINT", emu.url.replace("127.0.0.1", "localhost"))
    with caplog.at_level(logging.ERROR, logger="graphusers"):
        status, body = list_users(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable"
    assert "AADSTS500011" in body["error"]["message"] and "GRAPH_ENDPOINT" in body["error"]["message"]
    assert "error=invalid_resource" in caplog.text and emu.count("graph") == 0


def test_a_federated_subject_in_another_case_is_aadsts7002138(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The credential's subject differs only in case: AADSTS7002138, and the advice says Entra compares it case-sensitively."""
    emu.trust_identity(subject=emu.identity_principal_id.upper())
    for name in ("KEY_VAULT_URL", "GRAPH_CLIENT_SECRET_NAME", "GRAPH_CLIENT_CERTIFICATE_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.app_settings("managed-identity-federation").items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.ERROR, logger="graphusers"):
        status, body = list_users(triggers)
    assert status == 503 and "AADSTS7002138" in body["error"]["message"]
    assert "case-sensitively" in body["error"]["message"] and "case-sensitively" in caplog.text


def test_graphs_fractional_retry_after_is_waited_for_through_the_app(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Defect 6 end to end: the emulated Graph throttles with Retry-After 2.128 and the app waits 2.128 s, then answers."""
    from testkit.wiring import wire

    wired = wire()
    emu.inject(Fault("graph", status=429, headers={"Retry-After": "2.128"}))
    status, body = list_users(triggers)
    assert status == 200 and len(body["value"]) == 3 and wired.sleeps == [2.128]
