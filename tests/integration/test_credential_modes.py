"""All three GRAPH_CREDENTIAL modes against the emulated tenant, with the real msal, azure-identity and Key Vault SDK."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from testkit.triggers import http_get

from emulator import Emulator


def use_mode(emu: Emulator, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Point the app at the emulator with only the settings ``mode`` needs."""
    for name in ("KEY_VAULT_URL", "GRAPH_CLIENT_SECRET_NAME", "GRAPH_CLIENT_CERTIFICATE_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.app_settings(mode).items():
        monkeypatch.setenv(name, value)


def list_users(triggers: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = triggers["list_users"](http_get("users", {"top": "7"}))
    return resp.status_code, json.loads(resp.get_body())


@pytest.mark.parametrize("pkcs12", [False, True], ids=["pem", "pkcs12"])
def test_certificate_mode_lists_users(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any], pkcs12: bool
) -> None:
    """A Key Vault certificate (PEM or PKCS#12 backing secret) signs the client assertion; users come back."""
    emu.add_certificate(pkcs12=pkcs12)
    use_mode(emu, monkeypatch, "certificate")
    status, body = list_users(triggers)
    assert status == 200 and len(body["value"]) == 7
    assert emu.count("token") == 1 and emu.count("keyvault") == 1


def test_certificate_rotation_without_restart(emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any]) -> None:
    """A new certificate version in the vault, the old one removed from the app: one extra read, no restart."""
    old = emu.add_certificate()
    use_mode(emu, monkeypatch, "certificate")
    assert list_users(triggers)[0] == 200
    emu.rotate_certificate(old)
    emu.revoke_tokens()
    status, body = list_users(triggers)
    assert status == 200 and len(body["value"]) == 7
    assert emu.count("keyvault") == 2
    assert emu.count("token", status=401) == 1


def test_federation_mode_is_secretless(emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any]) -> None:
    """Federation: no secret or private key in the environment, Key Vault never called, users listed."""
    emu.trust_identity()
    use_mode(emu, monkeypatch, "managed-identity-federation")
    environment = json.dumps(dict(os.environ))
    assert emu.secret not in environment and "PRIVATE KEY" not in environment
    assert "KEY_VAULT_URL" not in os.environ
    status, body = list_users(triggers)
    assert status == 200 and len(body["value"]) == 7
    for _ in range(5):
        assert list_users(triggers)[0] == 200
    assert emu.count("keyvault") == 0 and emu.count("keyvault-challenge") == 0
    assert emu.count("token") == 1 and emu.count("identity") == 1


def test_wrong_certificate_names_mode_and_aadsts(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any]
) -> None:
    """A vault certificate the app registration does not know: 503 naming the mode and AADSTS700027."""
    emu.add_certificate(register=False)
    use_mode(emu, monkeypatch, "certificate")
    status, body = list_users(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable"
    assert "credential certificate" in body["error"]["message"] and "AADSTS700027" in body["error"]["message"]
    assert emu.count("keyvault") == 2  # read, then read again once in case it was rotated


def test_untrusted_identity_names_mode_and_aadsts(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, triggers: dict[str, Any]
) -> None:
    """A federated credential for another subject: 503 naming the mode and AADSTS700213."""
    emu.trust_identity(subject="00000000-0000-0000-0000-00000000abcd")
    use_mode(emu, monkeypatch, "managed-identity-federation")
    status, body = list_users(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable"
    message = body["error"]["message"]
    assert "credential managed-identity-federation" in message and "AADSTS700213" in message
    assert emu.count("keyvault") == 0


def test_secret_mode_still_default(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Without GRAPH_CREDENTIAL set the app uses the Key Vault secret, as before."""
    os.environ.pop("GRAPH_CREDENTIAL", None)
    assert list_users(triggers)[0] == 200
    assert emu.count("keyvault") == 1
