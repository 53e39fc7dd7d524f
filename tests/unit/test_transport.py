"""The one retry policy (urllib3's Retry) and the per-invocation deadline, over scripted sessions and a fake clock."""

from __future__ import annotations

import email.utils
import threading
import time

import pytest
import requests
from testkit.fakes import FakeTokens, ScriptedSession, response

from graphusers import deadline
from graphusers.errors import DeadlineError, UnavailableError
from graphusers.graph import GraphClient, RetryPolicy, UsersQuery
from graphusers.transport import RetryExhaustedError

EP = "https://graph.example"
PAGE = response(200, {"value": [{"id": "a"}]})


def client(session: ScriptedSession, retry: RetryPolicy | None = None) -> tuple[GraphClient, list[float]]:
    sleeps: list[float] = []
    g = GraphClient(EP, FakeTokens(), session=session, retry=retry or RetryPolicy(), sleep=sleeps.append, rnd=lambda: 0.0)
    return g, sleeps


def test_the_policy_is_urllib3_retry() -> None:
    """RetryPolicy is urllib3's Retry, so requests' adapters (MSAL's and the Azure SDKs' session) accept it."""
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    policy = RetryPolicy()
    assert isinstance(policy, Retry)
    assert HTTPAdapter(max_retries=policy).max_retries is policy
    assert policy.statuses == frozenset({429, 500, 502, 503, 504})
    assert policy.allowed_methods is not None and "POST" not in policy.allowed_methods


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(100 bytes read, 900 more expected)"),
        requests.exceptions.ContentDecodingError("Received response with content-encoding: gzip, but failed to decode"),
        requests.ConnectionError("Connection reset by peer"),
        requests.ReadTimeout("read timed out"),
    ],
)
def test_mid_body_and_connection_faults_are_retried(error: Exception) -> None:
    """Truncated or corrupt bodies are retried like a reset; the next attempt succeeds."""
    s = ScriptedSession(error, PAGE)
    g, sleeps = client(s)
    assert g.users_page(UsersQuery()).value == [{"id": "a"}]
    assert len(s.calls) == 2 and sleeps == [0.5]


def test_mid_body_faults_past_the_budget_are_unavailable() -> None:
    """Past the retry count a truncated body is UnavailableError (503) with a Retry-After, not a crash."""
    cut = requests.exceptions.ChunkedEncodingError("IncompleteRead")
    s = ScriptedSession(*[cut] * 5)
    g, sleeps = client(s)
    with pytest.raises(UnavailableError) as info:
        g.users_page(UsersQuery())
    assert type(info.value) is UnavailableError and info.value.retry_after >= 1
    assert len(s.calls) == 5 and sleeps == [0.5, 1.0, 2.0, 4.0]


def test_jitter_is_added_within_its_bound() -> None:
    """The backoff gets up to ``jitter`` random seconds on top."""
    s = ScriptedSession(response(503), PAGE)
    sleeps: list[float] = []
    g = GraphClient(EP, FakeTokens(), session=s, retry=RetryPolicy(jitter=0.25), sleep=sleeps.append, rnd=lambda: 1.0)
    g.users_page(UsersQuery())
    assert sleeps == [0.75]


@pytest.mark.parametrize("form", ["seconds", "fraction", "http-date"])
def test_retry_after_in_every_form_is_honoured(form: str) -> None:
    """The policy waits what Retry-After says: whole delta-seconds, fractional ones, or an HTTP-date."""
    value = {"seconds": "6", "fraction": "5.5", "http-date": email.utils.formatdate(time.time() + 6, usegmt=True)}[form]
    s = ScriptedSession(response(503, {}, {"Retry-After": value}), PAGE)
    g, sleeps = client(s)
    g.users_page(UsersQuery())
    assert len(sleeps) == 1 and 4.5 <= sleeps[0] <= 6


def test_graphs_documented_fractional_retry_after_is_waited_for() -> None:
    """Defect 6: Graph's sample 429 says ``Retry-After: 2.128``; the policy waits 2.128 s, not its own 0.5 s backoff."""
    from graphusers.transport import _Answer, parse_retry_after

    s = ScriptedSession(response(429, {}, {"Retry-After": "2.128"}), PAGE)
    g, sleeps = client(s)
    g.users_page(UsersQuery())
    assert sleeps == [2.128]
    assert RetryPolicy().increment("GET", "https://x/y", response=_Answer(429, {"Retry-After": " 2.128 "})).pending_wait == 2.128
    assert parse_retry_after("2.128") == 2.128 and parse_retry_after("7") == 7.0
    assert parse_retry_after("-1") is None and parse_retry_after("1e3") is None and parse_retry_after("2.") is None


def test_a_users_principal_name_in_a_cut_short_retry_is_hashed_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """Defect 1: the deadline's WARNING about a retry names the path with the caller's UPN hashed, never the UPN."""
    upn = "ada.lovelace@contoso.com"
    s = ScriptedSession(response(429, {}, {"Retry-After": "5"}), PAGE)
    g, _ = client(s)
    with caplog.at_level("WARNING"), deadline.within(3), pytest.raises(DeadlineError):
        g.get_user(upn, ("id",))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "cut short a retry of GET graph.example/v1.0/users/<sha256:" in text
    assert "ada.lovelace" not in text and "contoso.com" not in text and "%40" not in text


OID = "8f5e9a60-4c1e-4b3a-9d0e-1f2a3b4c5d6e"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://g.example/v1.0/users/{OID}", f"g.example/v1.0/users/{OID}"),
        ("https://g.example/v1.0/users/delta", "g.example/v1.0/users/delta"),
        ("https://g.example/v1.0/users", "g.example/v1.0/users"),
        ("https://kv.example/secrets/graph-secret/", "kv.example/secrets/graph-secret/"),
    ],
)
def test_log_paths_keep_ids_and_names_that_are_not_personal(url: str, shown: str) -> None:
    """Object ids, delta and secret names are not personal data and stay readable in log lines."""
    from graphusers.transport import _where

    assert _where(url) == shown


def test_log_paths_hash_every_user_key_that_is_not_an_id() -> None:
    """A UPN, raw or percent-encoded, and any other key after /users/ are hashed; the same key gives the same hash."""
    from graphusers.transport import _where

    raw, encoded = _where("https://g.example/v1.0/users/ada@contoso.com"), _where("https://g/x/ada%40contoso.com/y")
    assert "contoso" not in raw + encoded and raw.startswith("g.example/v1.0/users/<sha256:")
    assert encoded.startswith("g/x/<sha256:") and encoded.endswith(">/y")
    assert _where("https://g.example/v1.0/users/Ada.Lovelace") == _where("https://g.example/v1.0/users/Ada.Lovelace")
    assert "Lovelace" not in _where("https://g.example/v1.0/users/Ada.Lovelace")


def test_a_retry_that_cannot_finish_before_the_deadline_is_not_started(caplog: pytest.LogCaptureFixture) -> None:
    """With 3 s left, a Retry-After of 5 s ends the call at once with DeadlineError, and the log says so."""
    s = ScriptedSession(response(429, {}, {"Retry-After": "5"}), PAGE)
    g, sleeps = client(s)
    with caplog.at_level("WARNING"), deadline.within(3):
        with pytest.raises(DeadlineError) as info:
            g.users_page(UsersQuery())
    assert sleeps == [] and len(s.calls) == 1 and info.value.retry_after >= 1
    assert any("deadline" in r.getMessage() for r in caplog.records)


def test_policy_increment_refuses_past_budget_and_deadline() -> None:
    """increment() itself applies the wait budget and the deadline, for urllib3's own retry loop too."""
    from graphusers.transport import _Answer

    policy = RetryPolicy(max_wait=10, rnd=lambda: 0.0)
    nxt = policy.increment("GET", "https://x/y", response=_Answer(503, {"Retry-After": "8"}))
    assert nxt.pending_wait == 8 and nxt.waited == 8
    with pytest.raises(RetryExhaustedError) as budget:
        nxt.increment("GET", "https://x/y", response=_Answer(503, {"Retry-After": "3"}))
    assert budget.value.wait == 3 and not budget.value.deadline
    with deadline.within(2), pytest.raises(RetryExhaustedError) as late:
        policy.increment("GET", "https://x/y", response=_Answer(503, {"Retry-After": "2"}))
    assert late.value.deadline


def test_requests_are_counted_per_invocation() -> None:
    """requests_sent counts the running invocation's own requests, not another's on the same client."""
    s = ScriptedSession(PAGE, PAGE, PAGE)
    g, _ = client(s)
    with deadline.within(30):
        g.users_page(UsersQuery())
        with deadline.within(30):  # another invocation, as on another worker thread
            g.users_page(UsersQuery())
            g.users_page(UsersQuery())
            assert g.requests_sent == 2
        assert g.requests_sent == 1
    assert g.requests_sent == 3


def test_run_answers_by_the_deadline_whatever_the_action_does() -> None:
    """deadline.run gives up at the deadline (plus grace) even when the action is stuck in something unaware of it."""
    stuck = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineError):
            deadline.run(stuck.wait, 0.2)
    finally:
        stuck.set()
    assert time.monotonic() - started < 1.5
    assert deadline.run(lambda: deadline.remaining(), 10) <= 10


def test_bounded_session_refuses_to_start_past_the_deadline() -> None:
    """No request leaves once the invocation's time is up."""
    from graphusers.transport import bounded_session

    session = bounded_session()
    now = [0.0]
    with deadline.within(0.01, clock=lambda: now[0]):
        now[0] = 0.02
        with pytest.raises(DeadlineError):
            session.get("https://127.0.0.1:9/never", timeout=(1, 1))


def test_msal_gets_a_timeout_even_though_it_passes_none() -> None:
    """MSAL sends no timeout to an http_client it is given, so the session applies its own default."""
    from graphusers.credentials import msal_http_client

    seen: list[object] = []
    session = msal_http_client()

    def send(request: object, **kwargs: object) -> requests.Response:
        seen.append(kwargs.get("timeout"))
        raise requests.ConnectTimeout("stop here")

    for adapter in session.adapters.values():
        adapter.send = send
    with pytest.raises(requests.ConnectTimeout):
        session.post("https://login.example/t/oauth2/v2.0/token", data={"a": "b"})
    assert seen == [(3.05, 10.0)]


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        ("00:30:00", 1740.0),
        ("01:00:00", 3540.0),
        ("1.00:00:00", 86340.0),
        ("00:01:00", 30.0),
        ("-1", None),
        ("soon", 1740.0),
        (None, 1740.0),
    ],
)
def test_sync_deadline_follows_host_json(tmp_path: object, timeout: str | None, expected: float | None) -> None:
    """The sync's deadline is functionTimeout less a minute (at least half of it); unbounded means none."""
    import json
    from pathlib import Path

    from graphusers.config import sync_deadline_seconds

    host = Path(str(tmp_path)) / "host.json"
    host.write_text(json.dumps({"version": "2.0", **({"functionTimeout": timeout} if timeout else {})}))
    assert sync_deadline_seconds(host) == expected


def test_request_lines_hash_user_keys() -> None:
    """A request line (serve's access log) keeps ids and delta and hashes a UPN, raw or encoded."""
    from graphusers.transport import hash_user_keys

    line = f'"GET /api/users/ada@contoso.com?select=id HTTP/1.1" 200 - /api/users/{OID} /v1.0/users/delta'
    out = hash_user_keys(line)
    assert "ada@contoso.com" not in out and '"GET /api/users/<sha256:' in out and "?select=id HTTP/1.1" in out
    assert f"/api/users/{OID}" in out and "/v1.0/users/delta" in out
    assert "contoso" not in hash_user_keys("/api/users/ada%40contoso.com")
