"""The fault matrix rows not covered elsewhere (docs/operations.md, "Fault matrix", lists every row and its test)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from testkit.triggers import http_get
from testkit.wiring import wire

from devtools.azurite import Azurite
from devtools.harness import HttpResult, RuntimeHost
from emulator import Emulator, Fault
from emulator.server import http_date
from graphusers.graph import RetryPolicy, UsersQuery


def call(triggers: dict[str, Any], params: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    resp = triggers["list_users"](http_get("users", params or {"top": "5"}))
    return resp.status_code, json.loads(resp.get_body()), dict(resp.headers)


def page_requests(emu: Emulator) -> list[str]:
    """Which page each Graph request asked for: 'first' or its $skiptoken."""
    out = []
    for r in emu.log:
        if r.service == "graph":
            out.append(r.path.split("$skiptoken=")[1] if "$skiptoken=" in r.path else "first")
    return out


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_as_told_then_succeeds(emu: Emulator, triggers: dict[str, Any], form: str) -> None:
    """Graph 429 with Retry-After in either form: the client waits that long, then succeeds."""
    wired = wire()
    value = "7" if form == "seconds" else http_date(7)
    emu.inject(Fault("graph", status=429, headers={"Retry-After": value}))
    status, body, _ = call(triggers)
    assert status == 200 and len(body["value"]) == 5
    assert len(wired.sleeps) == 1 and 5.0 <= wired.sleeps[0] <= 7.0


def test_429_total_wait_is_bounded_then_503(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Repeated throttling: waits add up to at most the budget, then 503 with Retry-After to the caller."""
    wired = wire(retry=RetryPolicy(total=10, max_wait=30))
    emu.inject(Fault("graph", status=429, count=None, headers={"Retry-After": "10"}))
    status, body, headers = call(triggers)
    assert status == 503 and body["error"]["code"] == "service_unavailable" and headers["Retry-After"] == "10"
    assert sum(wired.sleeps) <= 30 and wired.sleeps == [10.0, 10.0, 10.0]


@pytest.mark.parametrize("kind", ["503", "504", "reset", "read-timeout"])
def test_transient_failures_retry_with_backoff_and_resume_at_the_failed_page(emu: Emulator, kind: str) -> None:
    """503, 504, a reset or a read timeout on page 2: backoff with jitter, then page 2 again, not page 1."""
    wired = wire(read_timeout=0.5, retry=RetryPolicy(jitter=0.25))
    fault = {
        "503": Fault("graph", status=503, path=r"skiptoken"),
        "504": Fault("graph", status=504, path=r"skiptoken"),
        "reset": Fault("graph", kind="reset", path=r"skiptoken"),
        "read-timeout": Fault("graph", kind="delay", delay=1.5, path=r"skiptoken"),
    }[kind]
    emu.inject(fault)
    pages = list(wired.services.graph.iter_pages(UsersQuery(top=100)))
    assert sum(len(p.value) for p in pages) == 250
    # The log is in order of answers: the slow one is logged when it finally answers.
    deadline = time.monotonic() + 5
    while len(page_requests(emu)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = Counter(page_requests(emu))
    assert sorted(counts.values()) == [1, 1, 2] and counts["first"] == 1  # page 2 twice, pages 1 and 3 once
    assert len(wired.sleeps) == 1 and 0.5 <= wired.sleeps[0] <= 0.5 + 0.25  # backoff plus up to 0.25 s jitter


def test_token_expiring_mid_paging_refreshes_once_and_repeats_the_page(emu: Emulator) -> None:
    """A 401 InvalidAuthenticationToken on page 2: one new token, then page 2 again."""
    wired = wire()
    emu.inject(Fault("graph", status=401, path=r"skiptoken"))
    pages = list(wired.services.graph.iter_pages(UsersQuery(top=100)))
    assert sum(len(p.value) for p in pages) == 250
    requested = page_requests(emu)
    assert requested[1] == requested[2] and requested.count("first") == 1
    assert emu.count("token") == 2 and emu.count("keyvault") == 1 and wired.sleeps == []


def test_token_endpoint_5xx_gives_503_and_recovers_by_itself(emu: Emulator, triggers: dict[str, Any]) -> None:
    """Entra's token endpoint failing: 503 JSON with Retry-After; once it is back, calls succeed with no restart."""
    wire(cooldown=1.0)
    emu.inject(Fault("token", status=503, headers={"Retry-After": "1"}))
    status, body, headers = call(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable" and int(headers["Retry-After"]) >= 1
    # MSAL itself remembers a 5xx for Retry-After seconds, and the app fails fast for its cool-down.
    time.sleep(1.2)
    status, body, _ = call(triggers)
    assert status == 200 and len(body["value"]) == 5
    assert emu.count("token") == 2


def test_token_endpoint_unreachable_is_503(emu: Emulator, triggers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """An authority nobody answers on: 503 JSON with Retry-After, no traceback."""
    monkeypatch.setenv("AUTHORITY_HOST", "https://127.0.0.1:9")
    wire()
    status, body, headers = call(triggers)
    assert status == 503 and body["error"]["code"] == "token_unavailable" and int(headers["Retry-After"]) >= 1


def test_a_trickling_body_has_a_total_time_limit(emu: Emulator) -> None:
    """Each byte arrives within the read timeout, yet the whole body is cut off after it: ReadTimeout, retryable."""
    import requests

    from graphusers.transport import bounded_session, transient_errors

    emu.inject(Fault("discovery", kind="trickle", delay=0.01, count=1))
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout) as info:
        bounded_session().get(f"{emu.url}/{emu.tenant_id}/v2.0/.well-known/openid-configuration", timeout=(3.05, 1.0))
    assert 1.0 <= time.monotonic() - started < 2.5
    assert isinstance(info.value, transient_errors())


def test_sync_stops_cleanly_before_its_deadline(emu: Emulator, storage: str) -> None:
    """A sync whose Graph pages are slow stops at its deadline: DeadlineError, no state written, lease released."""
    from graphusers import deadline, service
    from graphusers.errors import DeadlineError
    from graphusers.sync import UserSync

    wired = wire(record_sleeps=False)
    emu.latency["graph"] = 0.4
    # A delta round of 20-user pages: 13 slow pages (a listing would need two requests).
    sync = UserSync(
        wired.services.graph, service.get_store(), wired.services.settings.user_select, page_size=20, full_round="delta"
    )
    started = time.monotonic()
    with deadline.within(1.5, "sync"), pytest.raises(DeadlineError):
        sync.run()
    assert time.monotonic() - started < 1.5 + 0.5
    assert service.get_store().read_json("state.json")[0] is None  # nothing committed
    emu.latency["graph"] = 0.0
    summary = sync.run()  # the lease was released: this run is not "skipped"
    assert summary.status == "succeeded" and summary.users == 250


def test_deadline_settings() -> None:
    """HTTP_DEADLINE_SECONDS defaults to 30 and is bounded by Azure's 230 s; the sync's follows host.json."""
    from graphusers.config import http_deadline_seconds, sync_deadline_seconds

    assert http_deadline_seconds({}) == 30 and http_deadline_seconds({"HTTP_DEADLINE_SECONDS": "12"}) == 12
    assert http_deadline_seconds({"HTTP_DEADLINE_SECONDS": "600"}) == 30
    assert http_deadline_seconds({"HTTP_DEADLINE_SECONDS": "soon"}) == 30
    host = json.loads((ROOT / "host.json").read_text())["functionTimeout"]
    hours, minutes, seconds = (int(x) for x in host.split(":"))
    assert sync_deadline_seconds() == (hours * 3600 + minutes * 60 + seconds) - 60


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A loopback TCP listener that records every connection it gets (it never answers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    connections: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}", connections
    stop.set()
    t.join()
    server.close()


@pytest.mark.parametrize("kind", ["malformed", "no-value", "foreign-link"])
def test_bad_graph_pages_are_clear_errors_and_the_token_stays_home(
    emu: Emulator,
    triggers: dict[str, Any],
    listener: tuple[str, list[object]],
    kind: str,
) -> None:
    """Malformed JSON, a page without value, a nextLink to another host: 502 JSON; nothing reaches the other host."""
    wire()
    other, connections = listener
    emu.inject(Fault("graph", kind=kind, body={"link": f"{other}/v1.0/users?$skiptoken=steal"}))
    status, body, _ = call(triggers)
    assert status == 502 and body["error"]["code"] == "graph_error"
    assert (
        "malformed" in body["error"]["message"]
        or "value" in body["error"]["message"]
        or "another host" in body["error"]["message"]
    )
    time.sleep(0.3)
    assert connections == []


# -- through the Functions runtime ------------------------------------------------
# Each test below starts a fresh worker process (devtools/harness) so that token
# caches and cool-downs start cold, and asserts status, Retry-After, the time
# the caller waited and the requests the failing endpoint received.

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 4  # HTTP_DEADLINE_SECONDS in the deadline tests; the rule is the same for the default 30
SLACK = 2.0  # every answer arrives within the deadline plus this
QUICK = 5.0  # an answer that waits for nothing (a cold worker imports the SDKs first)


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(users=60, seed=13) as emulator:
        yield emulator


@pytest.fixture
def fresh(tenant: Emulator) -> Emulator:
    """The module's tenant, reset."""
    tenant.reset()
    return tenant


@contextmanager
def worker(tenant: Emulator, mode: str = "secret", drop: tuple[str, ...] = (), **env: str) -> Iterator[RuntimeHost]:
    """A fresh Functions worker for the tenant's app settings in ``mode``."""
    settings = {k: v for k, v in tenant.app_settings(mode).items() if k not in drop}
    settings.update(env)
    with RuntimeHost(ROOT, settings) as host:
        yield host


def timed(host: RuntimeHost, path: str = "/api/users") -> tuple[HttpResult, float]:
    started = time.monotonic()
    answer = host.http("GET", path, query={"top": "5"}, key=host.function_key)
    return answer, time.monotonic() - started


def unavailable(answer: HttpResult, code: str | None = None) -> int:
    """Assert a 503 error JSON with a Retry-After; return the Retry-After."""
    body = answer.json()
    assert answer.status == 503, (answer.status, body)
    assert set(body) == {"error"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    retry_after = int(answer.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def log_of(host: RuntimeHost) -> str:
    assert host.log_path is not None
    return host.log_path.read_text(errors="replace")


def graph_pages(emu: Emulator) -> int:
    return sum(1 for r in emu.log if r.service == "graph" and r.path.startswith("/v1.0/users?"))


@pytest.mark.harness
@pytest.mark.parametrize("kind", ["truncate", "reset-body", "bad-gzip"])
def test_mid_body_faults_are_retried_like_a_reset(fresh: Emulator, kind: str) -> None:
    """A page cut, reset or badly compressed while its body is read: retried, then 200."""
    fresh.inject(Fault("graph", kind=kind, count=2))
    with worker(fresh) as host:
        answer, took = timed(host)
    assert answer.status == 200 and len(answer.json()["value"]) == 5
    assert graph_pages(fresh) == 3 and took < 0.5 + 1.0 + 2 * 0.25 + QUICK  # two backoffs


@pytest.mark.harness
def test_mid_body_faults_past_the_budget_are_503_with_retry_after(fresh: Emulator) -> None:
    """Every page truncated: five attempts (four retries), then 503 with Retry-After, never 500."""
    fresh.inject(Fault("graph", kind="truncate", count=None))
    with worker(fresh) as host:
        answer, took = timed(host)
        unavailable(answer, "service_unavailable")
        assert "ChunkedEncodingError" in log_of(host)
    assert graph_pages(fresh) == 5 and took < 0.5 + 1 + 2 + 4 + 4 * 0.25 + QUICK


MALFORMED_TOKEN_SIDE = {
    # A proxy's HTML page with status 200 on the token endpoint (MSAL's json.loads fails).
    "token-html": (Fault("token", kind="html", count=None), "token", "oauth2/v2.0/token"),
    # error_codes that are not integers.
    "token-error-codes": (
        Fault(
            "token",
            status=400,
            count=None,
            body={
                "error": "invalid_request",
                "error_description": "AADSTS90002: Tenant not found.",
                "error_codes": ["AADSTS90002"],
            },
        ),
        "token",
        "oauth2/v2.0/token",
    ),
    # expires_in that is not a number (MSAL's token cache calls int() on it).
    "token-expires-in": (
        Fault("token", status=200, count=None, body={"token_type": "Bearer", "access_token": "not-a-jwt", "expires_in": "soon"}),
        "token",
        "oauth2/v2.0/token",
    ),
    # Discovery JSON without the endpoints (MSAL's constructor raises KeyError).
    "discovery-no-endpoints": (
        Fault("discovery", status=200, count=None, path="openid-configuration", body={"issuer": "https://example.invalid/"}),
        "discovery",
        "openid-configuration",
    ),
    # Discovery answering a proxy's HTML page: not a tenant problem.
    "discovery-html": (
        Fault("discovery", kind="html", count=None, path="openid-configuration"),
        "discovery",
        "openid-configuration",
    ),
}


@pytest.mark.harness
@pytest.mark.parametrize("case", sorted(MALFORMED_TOKEN_SIDE))
def test_malformed_token_side_answers_are_503_with_a_cool_down(fresh: Emulator, case: str) -> None:
    """Malformed token-side answers: 503 error JSON, a log line naming the endpoint; 5 calls, at most 2 requests."""
    fault, service, endpoint = MALFORMED_TOKEN_SIDE[case]
    fresh.inject(fault)
    with worker(fresh) as host:
        for _ in range(5):
            answer, took = timed(host)
            unavailable(answer, "token_unavailable")
            assert took < QUICK
        log = log_of(host)
    assert fresh.count(service) <= 2
    assert any(" ERROR graphusers.credentials" in line and endpoint in line for line in log.splitlines())
    assert "Unexpected error" not in log  # the API's 500 path
    if case == "discovery-html":
        assert "GRAPH_TENANT_ID" not in log  # not misdiagnosed as a tenant problem


@pytest.mark.harness
def test_graph_page_without_value_is_502_with_a_log_line(fresh: Emulator) -> None:
    """A Graph page without 'value': 502 error JSON and an ERROR line saying so; one Graph request."""
    fresh.inject(Fault("graph", kind="no-value"))
    with worker(fresh) as host:
        answer, took = timed(host)
        assert answer.status == 502 and answer.json()["error"]["code"] == "graph_error"
        assert "Retry-After" not in answer.headers and took < QUICK
        assert "page without a 'value' list" in log_of(host)
    assert graph_pages(fresh) == 1


@pytest.mark.harness
def test_discovery_5xx_is_503_and_recovers_when_discovery_is_back(fresh: Emulator) -> None:
    """Tenant discovery failing with 5xx: 503 with Retry-After (not 500); once it is back, 200 by that time."""
    fresh.inject(Fault("discovery", status=503, count=3, path="openid-configuration"))
    with worker(fresh) as host:
        answer, took = timed(host)
        retry_after = unavailable(answer, "token_unavailable")
        assert retry_after <= 30 and took < 0.5 + 1 + 2 * 0.25 + QUICK
        assert fresh.count("discovery") == 3  # the first attempt and two retries
        time.sleep(retry_after)
        answer, _ = timed(host)
    assert answer.status == 200


@pytest.mark.harness
def test_slow_managed_identity_holds_no_call_past_the_deadline(fresh: Emulator) -> None:
    """Federation with a managed identity endpoint that answers after 250 s: both concurrent calls end by the deadline."""
    fresh.trust_identity()
    fresh.inject(Fault("identity", kind="delay", delay=250, count=1))
    with worker(fresh, "managed-identity-federation", HTTP_DEADLINE_SECONDS=str(DEADLINE)) as host:
        results: list[tuple[HttpResult, float]] = []
        threads = [threading.Thread(target=lambda: results.append(timed(host))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for answer, took in results:
            unavailable(answer)
            assert took < DEADLINE + SLACK
        assert "deadline" in log_of(host)
    assert fresh.arrivals["identity"] == 1 and fresh.arrivals["token"] == 0  # one caller asked; the other waited


@pytest.mark.harness
def test_trickling_page_is_cut_off_at_the_deadline(fresh: Emulator) -> None:
    """A Graph page arriving a byte at a time (each read on time) is cut off at the deadline: 503, logged."""
    fresh.inject(Fault("graph", kind="trickle", delay=0.02, count=None))
    with worker(fresh, HTTP_DEADLINE_SECONDS=str(DEADLINE)) as host:
        answer, took = timed(host)
        unavailable(answer, "deadline_exceeded")
        assert took < DEADLINE + SLACK
        assert "deadline" in log_of(host)
    assert graph_pages(fresh) == 1


@pytest.mark.harness
def test_slow_answers_do_not_add_up_past_the_deadline(fresh: Emulator) -> None:
    """Graph answers that each take longer than the time left: no retry starts that cannot finish; 503 in time."""
    fresh.inject(Fault("graph", kind="delay", delay=DEADLINE + 1, count=None))
    with worker(fresh, HTTP_DEADLINE_SECONDS=str(DEADLINE)) as host:
        answer, took = timed(host)
        unavailable(answer, "deadline_exceeded")
        assert took < DEADLINE + SLACK
        assert "deadline" in log_of(host)
    assert fresh.arrivals["graph"] == 1  # no retry was started that could not finish


@pytest.mark.harness
def test_64_concurrent_calls_with_a_120_s_token_endpoint_answer_by_the_deadline(fresh: Emulator) -> None:
    """64 concurrent cold calls while the token endpoint takes 120 s: each answers 503 within deadline + 2 s."""
    fresh.inject(Fault("token", kind="delay", delay=120, count=None))
    with worker(fresh, HTTP_DEADLINE_SECONDS=str(DEADLINE)) as host:
        barrier = threading.Barrier(64)
        results: list[tuple[HttpResult, float]] = []
        lock = threading.Lock()

        def call() -> None:
            barrier.wait()
            outcome = timed(host)
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 64
        for answer, took in results:
            unavailable(answer)
            assert took < DEADLINE + SLACK, took
    # One token request holds the lock; the rest wait for it within their deadline, then fail fast.
    assert fresh.arrivals["token"] == 1 and fresh.count("keyvault") == 1


def break_and_fix(emu: Emulator, mode: str) -> tuple[Callable[[], None], str]:
    """Break the app registration for ``mode``; return how to fix it and the AADSTS code Entra answers."""
    if mode == "secret":
        with emu.lock:
            del emu.client_secrets[emu.secret]  # the vault's secret is not on the registration

        def fix() -> None:
            with emu.lock:
                emu.client_secrets[emu.secret] = False

        return fix, "AADSTS7000215"
    if mode == "certificate":
        cert = emu.add_certificate(register=False)  # in the vault, not uploaded to the registration
        return (lambda: emu.register_certificate(cert)), "AADSTS700027"
    return emu.trust_identity, "AADSTS700211"  # no federated identity credential yet


@pytest.mark.harness
@pytest.mark.parametrize("mode", ["secret", "certificate", "managed-identity-federation"])
def test_fixed_app_registration_recovers_without_a_restart(fresh: Emulator, mode: str) -> None:
    """Break the registration: 503s (Retry-After <= 30 s, quiet in between); fix it: the same worker answers 200 in time."""
    fix, code = break_and_fix(fresh, mode)
    with worker(fresh, mode) as host:
        answer, took = timed(host)
        retry_after = unavailable(answer, "token_unavailable")
        assert retry_after <= 30 and code in answer.json()["error"]["message"] and took < QUICK
        broken_at = time.monotonic()
        for _ in range(3):
            again, _ = timed(host)
            assert unavailable(again) <= retry_after
        assert fresh.count("token") == 1  # the cool-down holds: no request storm
        fix()
        time.sleep(max(0.0, broken_at + retry_after - time.monotonic()))
        answer, _ = timed(host)
        assert answer.status == 200 and len(answer.json()["value"]) == 5
        log = log_of(host)
    assert fresh.count("token", status=200) == 1
    if mode != "managed-identity-federation":
        # read; read again at the rejection (a rotation?); read again before the retry
        assert fresh.count("keyvault") == 3
    rejections = [line for line in log.splitlines() if "Entra rejected the" in line]
    assert len(rejections) == 1 and code in rejections[0]


@pytest.mark.harness
def test_disabled_secret_is_named_as_disabled(fresh: Emulator) -> None:
    """Key Vault 403 SecretDisabled: 503 key_vault_unavailable; the log says the secret is disabled, not the role."""
    fresh.disable_secret()
    with worker(fresh) as host:
        answer, took = timed(host)
        unavailable(answer, "key_vault_unavailable")
        log = log_of(host)
    assert took < QUICK and fresh.count("keyvault") == 1
    assert "SecretDisabled" in log and "disabled" in log and "Key Vault Secrets User" not in log


@pytest.mark.harness
@pytest.mark.parametrize("mode", ["secret", "managed-identity-federation"])
def test_missing_azure_client_id_fails_as_in_azure(fresh: Emulator, mode: str) -> None:
    """Without AZURE_CLIENT_ID the managed identity is the system-assigned one, which this app lacks: 503, logged."""
    fresh.trust_identity()
    with worker(fresh, mode, drop=("AZURE_CLIENT_ID",)) as host:
        answer, took = timed(host)
        unavailable(answer)
        log = log_of(host)
    assert fresh.count("identity", status=400) >= 1 and fresh.count("graph") == 0
    assert "AZURE_CLIENT_ID" in log and took < QUICK


@pytest.mark.harness
def test_graph_requests_are_counted_per_invocation(fresh: Emulator, azurite: Azurite) -> None:
    """A sync next to concurrent user calls reports exactly its own Graph requests in graphRequests."""
    fresh.latency["graph"] = 0.05
    with worker(
        fresh,
        AzureWebJobsStorage=azurite.connection_string,
        USER_SYNC_CONTAINER=f"count-{uuid.uuid4().hex[:8]}",
        USER_SYNC_FULL_ROUND="delta",  # its requests are /users/delta ones, unlike the browsers' /users
    ) as host:
        stop = threading.Event()

        def browse() -> None:
            while not stop.is_set():
                timed(host)

        browsers = [threading.Thread(target=browse) for _ in range(4)]
        for t in browsers:
            t.start()
        host.timer("user_sync_timer")
        stop.set()
        for t in browsers:
            t.join()
        last = host.http("GET", "/api/sync/status", key=host.function_key).json()["lastRun"]
    delta_requests = sum(1 for r in fresh.log if r.service == "graph" and "/users/delta" in r.path)
    assert last["status"] == "succeeded" and graph_pages(fresh) > 0
    assert last["graphRequests"] == delta_requests
