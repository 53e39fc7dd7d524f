"""Key Vault failures name their cause and fix in the log, the DefaultAzureCredential chain included."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from graphusers.credentials import KeyVault
from graphusers.errors import KeyVaultError


class _Failing:
    """A SecretClient whose get_secret raises the given exception."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_secret(self, name: str) -> Any:
        raise self.exc


def _chain_failure(monkeypatch: pytest.MonkeyPatch) -> ClientAuthenticationError:
    """The exception DefaultAzureCredential raises when no credential in its chain signs in (no az, no identity)."""
    from azure.identity import DefaultAzureCredential

    monkeypatch.setenv("PATH", "/nonexistent")  # no az, azd or pwsh to ask
    credential = DefaultAzureCredential(exclude_managed_identity_credential=True)
    with pytest.raises(ClientAuthenticationError) as info:
        credential.get_token("https://vault.azure.net/.default")
    return info.value


def test_a_failed_sign_in_keeps_the_credential_chain_explanation(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line says which credential tried what (EnvironmentCredential, AzureCliCredential...) and how to fix it."""
    failure = _chain_failure(monkeypatch)
    assert "AzureCliCredential" in failure.message  # the SDK's own explanation, as this test relies on it
    vault = KeyVault("https://contoso.vault.azure.net")
    vault._client = _Failing(failure)
    with caplog.at_level(logging.ERROR, logger="graphusers.credentials"), pytest.raises(KeyVaultError):
        vault.get("graph-client-secret", "GRAPH_CLIENT_SECRET_NAME")
    text = caplog.text
    assert "EnvironmentCredential" in text and "AzureCliCredential" in text
    assert "az login" in text
    assert "secret 'graph-client-secret' in Key Vault https://contoso.vault.azure.net" in text


def test_a_denied_read_names_the_role_for_the_developer_too(caplog: pytest.LogCaptureFixture) -> None:
    """403 from the vault: the Key Vault Secrets User role, for the app's identity or the az login account."""
    denied = HttpResponseError(message="Forbidden")
    denied.status_code = 403
    vault = KeyVault("https://contoso.vault.azure.net")
    vault._client = _Failing(denied)
    with caplog.at_level(logging.ERROR, logger="graphusers.credentials"), pytest.raises(KeyVaultError):
        vault.get("graph-client-secret", "GRAPH_CLIENT_SECRET_NAME")
    assert "'Key Vault Secrets User' role" in caplog.text and "az login" in caplog.text


@pytest.mark.parametrize(
    ("message", "advice", "not_advice"),
    [
        ("Client address is not authorized and caller is not a trusted service.", "Networking", "Secrets User"),
        (
            "The user, group or application 'appid=x' does not have secrets get permission on key vault 'v'.",
            "Secret permissions: Get",
            "firewall",
        ),
    ],
)
def test_a_403_without_an_inner_code_is_told_apart_by_its_text(
    message: str, advice: str, not_advice: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A vault that sends an older inner code (or none): the firewall and access-policy texts still get their own advice."""
    denied = HttpResponseError(message=message)
    denied.status_code = 403
    vault = KeyVault("https://contoso.vault.azure.net")
    vault._client = _Failing(denied)
    with caplog.at_level(logging.ERROR, logger="graphusers.credentials"), pytest.raises(KeyVaultError):
        vault.get("graph-client-secret", "GRAPH_CLIENT_SECRET_NAME")
    assert advice in caplog.text and not_advice not in caplog.text
