"""Blob Storage requests take their timeouts and retries from the invocation's deadline (graphusers/storage.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from graphusers import deadline, storage
from graphusers.config import StorageSettings
from graphusers.errors import DeadlineError


def _request() -> Any:
    return SimpleNamespace(http_request=SimpleNamespace(method="GET"), context=SimpleNamespace(options={}))


@pytest.mark.parametrize(("left", "expected"), [(0.5, (2.0, 2.0)), (3.0, (3.0, 3.0)), (30.0, (5.0, 30.0)), (900.0, (5.0, 60.0))])
def test_each_attempt_gets_timeouts_from_the_time_left(left: float, expected: tuple[float, float]) -> None:
    """Connect and read timeouts are the time left, capped at 5 s and 60 s, and never under 2 s."""
    clock = [0.0]
    request = _request()
    with deadline.within(left, clock=lambda: clock[0]):
        storage.bound_attempt(request)
    options = request.context.options
    assert (options["connection_timeout"], options["read_timeout"]) == expected


def test_past_the_deadline_an_attempt_is_short_and_outside_one_untouched() -> None:
    """Cleanup past the deadline (lease release, status) gets 2 s attempts; without a deadline the SDK's own apply."""
    clock = [0.0]
    request = _request()
    with deadline.within(1, clock=lambda: clock[0]):
        clock[0] = 5
        storage.bound_attempt(request)
    assert request.context.options == {"connection_timeout": 2.0, "read_timeout": 2.0}
    untouched = _request()
    storage.bound_attempt(untouched)
    assert untouched.context.options == {}


@pytest.mark.parametrize(("left", "retries"), [(1.5, 0), (5.9, 0), (6.0, 1), (13.0, 2), (21.9, 2), (22.0, 3), (1000.0, 3)])
def test_retries_only_while_their_wait_and_an_attempt_fit(left: float, retries: int) -> None:
    """With waits of at most 4, 6 and 8 s (backoff plus jitter) and 1 s per attempt, a retry starts only if it fits."""
    assert storage.retries_that_fit(left, [4.0, 6.0, 8.0], 3) == retries


def test_the_client_uses_the_deadline_retry_and_the_attempt_hook() -> None:
    """container_client (identity-based, as in Azure) wires the deadline retry and the attempt hook into the pipeline."""
    client = storage.container_client(StorageSettings(blob_service_uri="https://acct.blob.core.windows.net", container="c"))
    policies = [getattr(p, "_policy", p) for p in client._pipeline._impl_policies]
    retry = next(p for p in policies if type(p).__name__ == "DeadlineRetry")
    hook = next(p for p in policies if type(p).__name__ == "StorageRequestHook")
    assert retry.total_retries == 3 and hook._request_callback is storage.bound_attempt
    settings = retry.configure_retries(
        SimpleNamespace(http_request=SimpleNamespace(body=None), context=SimpleNamespace(options={}))
    )
    assert settings["total"] == 3
    with deadline.within(5):
        assert (
            retry.configure_retries(
                SimpleNamespace(http_request=SimpleNamespace(body=None), context=SimpleNamespace(options={}))
            )["total"]
            == 0
        )


def test_a_retry_that_cannot_fit_raises_the_deadline() -> None:
    """The retry's sleep refuses a wait that, with one more attempt, would pass the deadline."""
    retry = storage._deadline_retry_class()(initial_backoff=1, increment_base=2, retry_total=3)
    slept: list[float] = []
    transport = SimpleNamespace(sleep=slept.append)
    clock = [0.0]
    with deadline.within(1.5, clock=lambda: clock[0]), pytest.raises(DeadlineError):
        retry.sleep({"count": 2}, transport)  # backoff 5 s (plus or minus jitter) does not fit in 1.5 s
    assert slept == []
