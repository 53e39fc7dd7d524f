"""The shared token provider: single flight, rotation, failure cool-down, errors without secrets."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from graphusers.config import Settings
from graphusers.credentials import Credential, TokenProvider, is_microsoft_authority
from graphusers.errors import KeyVaultError, TokenError

SETTINGS = Settings(
    tenant_id="contoso.onmicrosoft.com",
    client_id="11111111-2222-3333-4444-555555555555",
    key_vault_url="https://kv.vault.azure.net",
)


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

    def __init__(self, valid_secret: str, gate: threading.Event | None = None) -> None:
        self.valid = valid_secret
        # With a gate, a token request waits for the test to open it: a slow token endpoint, without sleeping.
        self.gate = gate
        self.entered = threading.Event()
        self.requests = 0
        self.builds = 0

    def factory(self, settings: Settings, secret: Credential) -> Any:
        self.builds += 1
        entra = self

        class App:
            cached: str | None = None

            def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
                assert scopes == ["https://graph.microsoft.com/.default"]
                if self.cached:
                    return {"access_token": self.cached, "token_source": "cache"}
                entra.requests += 1
                entra.entered.set()
                if entra.gate is not None:
                    assert entra.gate.wait(10), "the test never opened the token endpoint's gate"
                if secret != entra.valid:
                    return {
                        "error": "invalid_client",
                        "error_codes": [7000215],
                        "correlation_id": "corr-1",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                    }
                self.cached = f"at-{entra.requests}"
                return {"access_token": self.cached, "token_source": "identity_provider", "expires_in": 3599}

            def remove_tokens_for_client(self) -> None:
                self.cached = None

        return App()


def test_concurrent_cold_calls_make_one_read_and_one_token_request() -> None:
    """24 threads on a cold provider: 1 Key Vault read, 1 token request, the same token for all."""
    gate = threading.Event()
    vault, entra = Vault("s1"), Entra("s1", gate)
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory)
    barrier = threading.Barrier(25)
    tokens: list[str] = []

    def call() -> None:
        barrier.wait()
        tokens.append(tp.get_token())

    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    barrier.wait()
    # The first caller is inside the token request, holding it open, while the others arrive.
    try:
        assert entra.entered.wait(10)
    finally:
        gate.set()
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


def test_persistently_bad_secret_fails_fast_then_tries_again_with_backoff() -> None:
    """Same bad secret after re-reading: TokenError, no requests during the cool-down, then a retry that re-reads."""
    now = [100.0]
    vault, entra = Vault("bad"), Entra("good")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory, clock=lambda: now[0])
    with pytest.raises(TokenError) as info:
        tp.get_token()
    err = info.value
    assert err.error == "invalid_client" and err.error_codes == (7000215,) and err.correlation_id == "corr-1"
    assert "AADSTS7000215" in err.message and "bad" not in err.message
    assert (vault.reads, entra.requests) == (2, 1) and err.retry_after <= 30
    for _ in range(50):
        with pytest.raises(TokenError) as again:
            tp.get_token()
    assert (vault.reads, entra.requests) == (2, 1)
    assert again.value.retry_after == 10
    # Each later try reads the vault first and asks Entra again (the registration may have been fixed);
    # repeated rejections double the wait up to five minutes.
    waits: list[int] = []
    for _ in range(7):
        now[0] += waits[-1] if waits else 10
        with pytest.raises(TokenError) as later:
            tp.get_token()
        waits.append(later.value.retry_after)
    assert waits == [20, 40, 80, 160, 300, 300, 300]
    assert (vault.reads, entra.requests) == (9, 8)
    now[0] += 300
    vault.values = ["good"]
    assert tp.get_token() == "at-9"
    assert (vault.reads, entra.requests) == (10, 9)


def test_registration_fixed_with_the_same_secret_recovers_within_retry_after() -> None:
    """The secret was right but missing from the app registration: once it is added, the call after Retry-After works."""
    now = [0.0]
    vault, entra = Vault("s1"), Entra("other")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory, clock=lambda: now[0])
    with pytest.raises(TokenError) as info:
        tp.get_token()
    entra.valid = "s1"  # an administrator adds the secret to the app registration
    now[0] += info.value.retry_after
    assert tp.get_token().startswith("at-")
    assert entra.builds == 2  # a new MSAL app for the retry: MSAL caches an identical 400 for 60 s


def test_one_log_line_per_rejection_names_the_code_and_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    """Each rejection logs one line naming AADSTS and the fix; nothing else at ERROR."""
    now = [0.0]
    tp = TokenProvider(SETTINGS, Vault("bad"), app_factory=Entra("good").factory, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="graphusers.credentials"):
        for _ in range(3):
            with pytest.raises(TokenError) as info:
                tp.get_token()
            now[0] += info.value.retry_after
    rejections = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(rejections) == 3
    assert all("AADSTS7000215" in r.getMessage() and "Secret ID" in r.getMessage() for r in rejections)


class Malformed:
    """An MSAL app whose token call fails as MSAL does on a malformed answer."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.requests = 0

    def factory(self, settings: Settings, secret: Any) -> Any:
        malformed = self

        class App:
            def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any]:
                malformed.requests += 1
                if isinstance(malformed.outcome, Exception):
                    raise malformed.outcome
                return dict(malformed.outcome)

        return App()


@pytest.mark.parametrize(
    "outcome",
    [
        ValueError("Expecting value: line 1 column 1 (char 0)"),  # a 200 HTML page: MSAL's json.loads
        ValueError("invalid literal for int() with base 10: 'soon'"),  # expires_in "soon" in MSAL's token cache
        {"error": "invalid_request", "error_codes": ["AADSTS90002x"], "error_description": "AADSTS90002: no tenant"},
    ],
    ids=["html-200", "expires-in-text", "error-codes-not-integers"],
)
def test_malformed_token_answers_are_token_errors_with_a_cool_down(outcome: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed token answer is a TokenError naming the endpoint; five calls in a row send at most two requests."""
    malformed = Malformed(outcome)
    tp = TokenProvider(SETTINGS, Vault("s1"), app_factory=malformed.factory)
    with caplog.at_level("ERROR"):
        for _ in range(5):
            with pytest.raises(TokenError) as info:
                tp.get_token()
    assert info.value.retry_after >= 1 and malformed.requests <= 2
    assert any("oauth2/v2.0/token" in r.getMessage() for r in caplog.records)


def _discovery_failure(kind: str) -> Exception:
    import json

    import requests
    from msal.exceptions import MsalServiceError

    if kind == "5xx":
        error: Exception = MsalServiceError(error="http_error", error_description="503 Service Unavailable")
        return error
    if kind == "http-error":
        return requests.HTTPError("502 Server Error")
    if kind == "no-endpoints":
        return KeyError("token_endpoint")
    try:
        try:
            json.loads("<html>")
        except ValueError:
            raise ValueError("Unable to get authority configuration for https://login.example/t") from None
    except ValueError as exc:
        return exc
    raise AssertionError(f"no discovery failure named {kind!r}")


@pytest.mark.parametrize("kind", ["5xx", "http-error", "no-endpoints", "html"])
def test_discovery_failures_are_token_errors_and_recover(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """MSAL's constructor failing in discovery (5xx, no endpoints, HTML): TokenError naming discovery; then recovery."""
    now = [0.0]
    entra = Entra("s1")
    failures = [_discovery_failure(kind)]

    def factory(settings: Settings, secret: Any) -> Any:
        if failures:
            raise failures.pop()
        return entra.factory(settings, secret)

    tp = TokenProvider(SETTINGS, Vault("s1"), app_factory=factory, clock=lambda: now[0])
    with caplog.at_level("ERROR"):
        with pytest.raises(TokenError) as info:
            tp.get_token()
    assert info.value.retry_after >= 1
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "openid-configuration" in message and "GRAPH_TENANT_ID" not in message
    now[0] += info.value.retry_after
    assert tp.get_token() == "at-1"


def test_waiting_for_the_token_lock_counts_against_the_deadline() -> None:
    """A slow token request holds the lock; a second caller gives up at its deadline with DeadlineError."""
    from graphusers import deadline
    from graphusers.errors import DeadlineError

    gate = threading.Event()
    entra = Entra("s1", gate)
    tp = TokenProvider(SETTINGS, Vault("s1"), app_factory=entra.factory)
    holder = threading.Thread(target=tp.get_token)
    holder.start()
    try:
        assert entra.entered.wait(10)  # the holder is inside the token request, holding the lock
        with deadline.within(0.2):
            with pytest.raises(DeadlineError) as info:
                tp.get_token()
    finally:
        gate.set()
    holder.join()
    assert info.value.retry_after >= 1 and entra.requests == 1


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
    [
        ("https://login.microsoftonline.com", True),
        ("https://login.microsoftonline.us", True),
        ("https://login.chinacloudapi.cn", True),
        ("https://127.0.0.1:8443", False),
        ("https://login.example", False),
    ],
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


def test_a_cached_failure_is_a_fresh_exception_per_caller_and_does_not_grow() -> None:
    """Defect 2: during the cool-down after invalid_client each caller gets a new TokenError with a short traceback.

    Re-raising one cached exception object appended every call's frames to its traceback (1,000 calls: 5,003
    entries) and kept their locals alive until the cool-down ended.
    """
    import traceback

    now = [0.0]
    tp = TokenProvider(SETTINGS, Vault("bad"), app_factory=Entra("good").factory, clock=lambda: now[0])
    seen: list[TokenError] = []
    for _ in range(1000):
        try:
            tp.get_token()
        except TokenError as exc:
            seen.append(exc)
    assert len(seen) == 1000 and len({id(e) for e in seen}) == 1000
    last = seen[-1]
    assert len(traceback.extract_tb(last.__traceback__)) <= 3
    assert last.__cause__ is None and last.__context__ is None
    assert (last.error, last.error_codes, last.correlation_id) == ("invalid_client", (7000215,), "corr-1")
    assert last.message == seen[0].message and last.retry_after == 10
    now[0] = 4.2
    with pytest.raises(TokenError) as later:
        tp.get_token()
    assert later.value.retry_after == 6 and seen[-1].retry_after == 10  # each caller's own Retry-After


def test_one_invocations_deadline_is_not_handed_to_the_next() -> None:
    """Defect 3: a DeadlineError while acquiring is that invocation's; the next call acquires at once, uncached."""
    from graphusers import deadline
    from graphusers.errors import DeadlineError

    entra = Entra("s1")
    calls = [0]

    def slow_then_fine(settings: Settings, secret: Credential) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            current = deadline.current()
            assert current is not None
            raise current.exceeded("Entra's tenant discovery")
        return entra.factory(settings, secret)

    tp = TokenProvider(SETTINGS, Vault("s1"), app_factory=slow_then_fine)
    with deadline.within(2), pytest.raises(DeadlineError):
        tp.get_token()
    with deadline.within(1740, "sync"):
        assert tp.get_token() == "at-1"
    assert calls[0] == 2


def test_a_failure_cut_short_by_the_callers_deadline_is_not_cached() -> None:
    """A token failure that came as this invocation's time ran out is not served to later ones as a cool-down."""
    from graphusers import deadline

    clock = [0.0]

    class SlowVault(Vault):
        def read(self) -> str:
            clock[0] += 3  # the read takes the rest of the invocation's 2 s, then fails
            return super().read()

    vault, entra = SlowVault("s1"), Entra("s1")
    vault.fail = KeyVaultError("cut short")
    tp = TokenProvider(SETTINGS, vault, app_factory=entra.factory)
    with deadline.within(2, clock=lambda: clock[0]), pytest.raises(KeyVaultError):
        tp.get_token()
    vault.fail = None
    assert tp.get_token() == "at-1" and vault.reads == 2


def test_after_a_token_request_ran_out_of_time_callers_with_as_little_fail_fast() -> None:
    """What one invocation's deadline teaches is a value: no answer within its 2 s. A caller with 2 s fails fast for
    the cool-down (its own TokenError, no second request); a sync with 1,740 s left tries itself."""
    from graphusers import deadline
    from graphusers.errors import DeadlineError

    clock = [0.0]
    entra = Entra("s1")
    calls = [0]

    def hangs_once(settings: Settings, secret: Credential) -> Any:
        calls[0] += 1
        current = deadline.current()
        if calls[0] == 1 and current is not None:
            clock[0] += 2  # the discovery request takes the invocation's whole time
            raise current.exceeded("Entra's tenant discovery")
        return entra.factory(settings, secret)

    tp = TokenProvider(SETTINGS, Vault("s1"), app_factory=hangs_once, clock=lambda: clock[0])
    with deadline.within(2, clock=lambda: clock[0]), pytest.raises(DeadlineError):
        tp.get_token()
    with deadline.within(2, clock=lambda: clock[0]), pytest.raises(TokenError) as fast:
        tp.get_token()
    assert type(fast.value) is TokenError and "did not answer the app's token request within 2 s" in fast.value.message
    assert fast.value.retry_after == 10 and calls[0] == 1
    with deadline.within(1740, "sync", clock=lambda: clock[0]):
        assert tp.get_token() == "at-1"
    assert calls[0] == 2
