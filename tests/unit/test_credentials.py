"""The shared token provider: single flight, rotation, failure cool-down, errors without secrets."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from graphusers.config import Settings
from graphusers.credentials import TokenProvider, is_microsoft_authority
from graphusers.errors import KeyVaultError, TokenError

SETTINGS = Settings(tenant_id="contoso.onmicrosoft.com", client_id="11111111-2222-3333-4444-555555555555",
                    key_vault_url="https://kv.vault.azure.net")


class Vault:
    """A secret source that counts reads."""

    mode = "secret"

    def __init__(self, *values: str) -> None:
        self.values = list(values)
        self.reads = 0
        self.fail: Exception | None = None

    def read(self) -> str:
        self.reads += 1
        if self.fail:
            raise self.fail
        return self.values[min(self.reads, len(self.values)) - 1]


class Entra:
    """Plays MSAL's ConfidentialClientApplication: accepts one secret, caches one token."""

    def __init__(self, valid_secret: str, delay: float = 0.0) -> None:
        self.valid = valid_secret
        self.delay = delay
        self.requests = 0
        self.builds = 0

    def factory(self, settings: Settings, secret: str) -> Any:
        self.builds += 1
        entra = self

        class App:
            cached: str | None = None

            def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
                assert scopes == ["https://graph.microsoft.com/.default"]
                if self.cached:
                    return {"access_token": self.cached, "token_source": "cache"}
                entra.requests += 1
                time.sleep(entra.delay)  # a slow token endpoint widens any race
                if secret != entra.valid:
                    return {"error": "invalid_client", "error_codes": [7000215], "correlation_id": "corr-1",
                            "error_description": "AADSTS7000215: Invalid client secret provided."}
                self.cached = f"at-{entra.requests}"
                return {"access_token": self.cached, "token_source": "identity_provider", "expires_in": 3599}

            def remove_tokens_for_client(self) -> None:
                self.cached = None

        return App()


def test_concurrent_cold_calls_make_one_read_and_one_token_request() -> None:
    """24 threads on a cold provider: 1 Key Vault read, 1 token request, the same token for all."""
    vault, entra = Vault("s1"), Entra("s1", delay=0.05)
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory)
    barrier = threading.Barrier(24)
    tokens: list[str] = []

    def call() -> None:
        barrier.wait()
        tokens.append(tp.get_token())

    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (vault.reads, entra.requests, entra.builds) == (1, 1, 1)
    assert set(tokens) == {"at-1"} and len(tokens) == 24


def test_rotated_secret_is_read_again_once_and_the_app_rebuilt() -> None:
    """invalid_client makes exactly one extra Key Vault read, a rebuild, and a successful retry."""
    vault, entra = Vault("old", "new"), Entra("new")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory)
    assert tp.get_token() == "at-2"
    assert (vault.reads, entra.requests, entra.builds) == (2, 2, 2)
    assert tp.get_token() == "at-2"
    assert (vault.reads, entra.requests) == (2, 2)


def test_persistently_bad_secret_fails_fast_without_a_storm() -> None:
    """Same bad secret after re-reading: TokenError, then no requests at all during the cool-down."""
    now = [100.0]
    vault, entra = Vault("bad"), Entra("good")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory, failure_cooldown=30, clock=lambda: now[0])
    with pytest.raises(TokenError) as info:
        tp.get_token()
    err = info.value
    assert err.error == "invalid_client" and err.error_codes == (7000215,) and err.correlation_id == "corr-1"
    assert "AADSTS7000215" in err.message and "bad" not in err.message
    assert (vault.reads, entra.requests) == (2, 1)
    for _ in range(50):
        with pytest.raises(TokenError) as again:
            tp.get_token()
    assert (vault.reads, entra.requests) == (2, 1)
    assert again.value.retry_after == 30
    now[0] += 31
    with pytest.raises(TokenError):
        tp.get_token()  # still the same secret: one Key Vault read, no token request
    assert (vault.reads, entra.requests) == (3, 1)
    now[0] += 31
    vault.values = ["good"]
    assert tp.get_token() == "at-2"
    assert (vault.reads, entra.requests, entra.builds) == (4, 2, 2)


def test_key_vault_failure_is_not_cached_past_the_cool_down() -> None:
    """A Key Vault outage fails calls until the cool-down ends, then the next call recovers."""
    now = [0.0]
    vault, entra = Vault("s1"), Entra("s1")
    vault.fail = KeyVaultError("down")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory, failure_cooldown=5, clock=lambda: now[0])
    with pytest.raises(KeyVaultError):
        tp.get_token()
    with pytest.raises(KeyVaultError):
        tp.get_token()
    assert vault.reads == 1
    vault.fail = None
    now[0] = 6
    assert tp.get_token() == "at-1"


def test_invalidate_drops_only_the_rejected_token() -> None:
    """Invalidating the current token forces one new request; a stale token is ignored."""
    vault, entra = Vault("s1"), Entra("s1")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory)
    first = tp.get_token()
    tp.invalidate("some-older-token")
    assert tp.get_token() == first
    tp.invalidate(first)
    assert tp.get_token() == "at-2"
    assert (vault.reads, entra.requests) == (1, 2)


@pytest.mark.parametrize(
    ("host", "known"),
    [("https://login.microsoftonline.com", True), ("https://login.microsoftonline.us", True),
     ("https://login.chinacloudapi.cn", True), ("https://127.0.0.1:8443", False), ("https://login.example", False)],
)
def test_instance_discovery_only_for_microsoft_hosts(host: str, known: bool) -> None:
    """MSAL's instance discovery stays on for Entra's own hosts only."""
    assert is_microsoft_authority(host) is known


def test_token_error_names_the_credential_mode() -> None:
    """The caller-facing message names the credential mode and the AADSTS code, never the credential."""
    vault, entra = Vault("bad"), Entra("good")
    vault.mode = "certificate"
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory)
    with pytest.raises(TokenError) as info:
        tp.get_token()
    assert "credential certificate" in info.value.message and "AADSTS7000215" in info.value.message
    assert "bad" not in info.value.message
