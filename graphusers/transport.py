"""Outbound HTTP: one retry policy and one session type for every call the app makes.

``RetryPolicy`` is urllib3's ``Retry`` with two additions: a budget for the sum
of all waits of one request (``max_wait``) and the invocation's deadline
(``deadline.py``): it never starts a retry whose wait plus a minimal attempt
does not fit in the time left. The same object drives

- Graph GETs, in ``GraphClient.get`` (which also refreshes a rejected token);
- everything through ``BoundedSession``: MSAL's discovery and token requests
  (as its ``http_client``), and the managed identity and Key Vault calls of
  the Azure SDKs (as their transport's session, with the SDKs' own retries off).

``BoundedSession`` caps each request's timeouts at the deadline and reads the
body under a total time limit: ``requests`` timeouts apply per socket read, so
a server that trickles a byte at a time is otherwise never cut off.

Retried: connection failures, resets and truncations while the body is read
(``ChunkedEncodingError``), bad compressed streams (``ContentDecodingError``),
read timeouts, and 429/500/502/503/504 for idempotent methods, waiting as
``Retry-After`` says in every form Graph sends: delta-seconds, with a fraction
too (Graph's own sample 429 has ``Retry-After: 2.128``), or an HTTP-date.
https://learn.microsoft.com/graph/throttling#sample-response
https://www.rfc-editor.org/rfc/rfc9110#field.retry-after
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import deadline

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

# Graph's throttling and transient server errors; all are safe to retry for GETs.
# https://learn.microsoft.com/graph/throttling
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that mean "not now" rather than "broken": past the retry budget the
# HTTP caller gets 503 with Retry-After, not 502.
UNAVAILABLE_STATUSES = frozenset({429, 503, 504})
# GET and the other methods RFC 9110 calls idempotent; a token POST is not
# retried after the server may have seen it.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# The least time a retry needs to be worth starting: a connect and a small answer.
MIN_ATTEMPT_SECONDS = 1.0
# Connect and read timeouts for callers that set none.
DEFAULT_TIMEOUT = (3.05, 30.0)
# Body reads go in pieces of this size; each returns as soon as some bytes arrive.
READ_CHUNK = 256 * 1024
# Delta-seconds as Graph sends them: RFC 9110 allows digits only, but Graph's
# documented sample 429 says "Retry-After: 2.128" (https://learn.microsoft.com/graph/throttling#sample-response).
_DELTA_SECONDS = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*")
# A path segment that names an object: a GUID is an id, not personal data.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class RetryExhaustedError(MaxRetryError):
    """The policy will not retry: attempts, wait budget or deadline used up.

    ``wait`` is what the server or the backoff asked for: the ``Retry-After``
    to pass on to the HTTP caller. ``deadline`` tells whether the invocation's
    deadline was the reason.
    """

    def __init__(self, url: str | None, reason: Exception | None, why: str, wait: float, *, deadline: bool = False) -> None:
        super().__init__(None, url or "", reason)  # type: ignore[arg-type]
        self.why = why
        self.wait = wait
        self.deadline = deadline


class _Answer:
    """The part of an HTTP answer ``Retry.increment`` looks at, for answers that requests already read."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.headers = headers

    def get_redirect_location(self) -> bool:
        return False


class RetryPolicy(Retry):
    """urllib3's ``Retry`` with a wait budget, deadline awareness and seams for the jitter and the wait.

    ``total`` retries after the first attempt; backoff ``backoff_factor * 2**n``
    (n = 0 for the first retry) capped at ``backoff_max``, plus up to ``jitter``
    seconds of random extra (``rnd``); a ``Retry-After`` is honoured as given.
    The sum of all waits for one request never exceeds ``max_wait``.
    """

    def __init__(
        self,
        total: int | bool | None = 4,
        *,
        backoff_factor: float = 0.5,
        backoff_max: float = 8.0,
        jitter: float | None = None,
        backoff_jitter: float = 0.25,
        statuses: Collection[int] | None = None,
        status_forcelist: Collection[int] | None = RETRY_STATUSES,
        allowed_methods: Collection[str] | None = IDEMPOTENT_METHODS,
        max_wait: float = 30.0,
        waited: float = 0.0,
        pending_wait: float = 0.0,
        min_attempt: float = MIN_ATTEMPT_SECONDS,
        rnd: Callable[[], float] = random.random,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("raise_on_status", False)
        kwargs.setdefault("respect_retry_after_header", True)
        # Retry-After values are passed on, not capped: the budget decides.
        kwargs.setdefault("retry_after_max", 10**9)
        super().__init__(
            total=total,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            backoff_jitter=backoff_jitter if jitter is None else jitter,
            status_forcelist=frozenset(statuses if statuses is not None else status_forcelist or ()),
            allowed_methods=allowed_methods,
            **kwargs,
        )
        self.max_wait = max_wait
        self.waited = waited
        self.pending_wait = pending_wait
        self.min_attempt = min_attempt
        self.rnd = rnd

    def new(self, **kw: Any) -> RetryPolicy:
        params = {
            "max_wait": self.max_wait,
            "waited": self.waited,
            "pending_wait": 0.0,
            "min_attempt": self.min_attempt,
            "rnd": self.rnd,
        }
        params.update(kw)
        return super().new(**params)

    @property
    def statuses(self) -> frozenset[int]:
        """The statuses retried."""
        return frozenset(self.status_forcelist)

    @property
    def jitter(self) -> float:
        """The most random extra seconds added to a backoff."""
        return float(self.backoff_jitter)

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry number ``retry_number`` (0-based) when the server names no time."""
        base = min(self.backoff_max, self.backoff_factor * 2.0**retry_number)
        return float(base + self.backoff_jitter * self.rnd())

    def get_backoff_time(self) -> float:
        # Unlike urllib3's default, the first retry waits too: an immediate
        # retry against a throttled or failing service is what Graph asks not to do.
        errors = 0
        for attempt in reversed(self.history):
            if attempt.redirect_location is not None:
                break
            errors += 1
        return 0.0 if errors == 0 else self.backoff(errors - 1)

    def parse_retry_after(self, retry_after: str) -> float:
        """Seconds from a ``Retry-After`` value: urllib3's forms, plus delta-seconds with a fraction."""
        match = _DELTA_SECONDS.fullmatch(retry_after)
        if match is not None:
            return float(match.group(1))
        return float(super().parse_retry_after(retry_after))

    def wait_for(self, response: Any = None) -> float:
        """Seconds to wait before the next attempt: ``Retry-After`` if the answer has one, else the backoff."""
        raw = response.headers.get("Retry-After") if response is not None and self.respect_retry_after_header else None
        if raw:
            try:
                return float(self.parse_retry_after(str(raw)))
            except InvalidHeader:
                logger.debug("Ignoring a malformed Retry-After header")
        return self.get_backoff_time()

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> RetryPolicy:
        """The policy for the next attempt, its wait in ``pending_wait``; ``RetryExhaustedError`` when there is none."""
        try:
            new = super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError as exc:
            attempts = len(self.history) + 1
            raise RetryExhaustedError(url, exc.reason, f"{attempts} attempts", self.wait_for(response)) from error
        wait = new.wait_for(response)
        if new.waited + wait > new.max_wait:
            raise RetryExhaustedError(
                url, error, f"waiting {wait:.1f} s more would pass the retry budget of {new.max_wait:.0f} s", wait
            )
        current = deadline.current()
        if current is not None and current.remaining() < wait + new.min_attempt:
            current.exceeded(f"a retry of {method} {_where(url)} (it would wait {wait:.1f} s)")
            raise RetryExhaustedError(url, error, "the invocation's deadline", wait, deadline=True)
        new.waited += wait
        new.pending_wait = wait
        return new

    def sleep(self, response: Any = None) -> None:
        # urllib3 calls this between attempts (the BoundedSession adapter); the
        # wait was chosen and checked against budget and deadline in increment().
        if self.pending_wait > 0:
            time.sleep(self.pending_wait)

    def step(
        self,
        method: str,
        url: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        error: Exception | None = None,
    ) -> RetryPolicy:
        """``increment`` for an answer or exception that ``requests`` already produced."""
        answer = _Answer(status, headers or {}) if status is not None else None
        return self.increment(method, url, response=answer, error=_as_urllib3(error) if error else None)


_USER_KEY = re.compile(r"(/users/)([^/?#\s\"']+)")


def hash_user_keys(text: str) -> str:
    """``text`` (a request line, a URL) with every user key after ``/users/`` that is not an object id hashed."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(2)
        if key == "delta" or _GUID.fullmatch(key):
            return match.group(0)
        return f"{match.group(1)}<sha256:{hashlib.sha256(key.encode('utf-8', 'replace')).hexdigest()[:12]}>"

    return _USER_KEY.sub(replace, text)


def _where(url: str | None) -> str:
    """Host and path for a log line, with any user key other than an object id replaced by a short hash.

    A caller's userPrincipalName (``/users/ada@contoso.com``) is personal data; the
    hash still lets an operator match repeated failures for one key (as
    ``graph.loggable_path`` does for Graph's own log lines).
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url or "")
    segments = parts.path.split("/")
    for i, segment in enumerate(segments):
        after_users = i > 0 and segments[i - 1].lower() == "users" and segment not in ("", "delta")
        if (after_users or "@" in segment or "%40" in segment.lower()) and not _GUID.fullmatch(segment):
            segments[i] = f"<sha256:{hashlib.sha256(segment.encode('utf-8', 'replace')).hexdigest()[:12]}>"
    return f"{parts.hostname or ''}{'/'.join(segments)}"


def _as_urllib3(error: Exception) -> Exception:
    """The urllib3 exception ``Retry`` classifies for a ``requests`` one."""
    import requests

    if isinstance(error, requests.ConnectTimeout):
        return ConnectTimeoutError(str(error))
    if isinstance(error, requests.ReadTimeout):
        return ReadTimeoutError(None, "", str(error))  # type: ignore[arg-type]
    if (
        isinstance(error, requests.ConnectionError)
        and not isinstance(error.args[0] if error.args else None, ProtocolError)
        and _before_sending(error)
    ):
        return ConnectTimeoutError(str(error))
    return ProtocolError(str(error))


def _before_sending(error: Exception) -> bool:
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    cause: BaseException | None = error
    for _ in range(8):  # exception chains can loop; the cause is never deep
        if cause is None:
            break
        if isinstance(cause, (NewConnectionError, NameResolutionError)):
            return True
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else cause.__cause__ or cause.__context__
    return False


def transient_errors() -> tuple[type[Exception], ...]:
    """The ``requests`` exceptions that a retry may cure: resets, timeouts, truncated or corrupt bodies."""
    import requests

    return (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds (whole or, as Graph sends them, fractional) or an HTTP-date."""
    if not value:
        return None
    match = _DELTA_SECONDS.fullmatch(value)
    if match is not None:
        return float(match.group(1))
    value = value.strip()
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def bounded_session(
    retry: RetryPolicy | None = None,
    *,
    body_timeout: float | None = None,
    default_timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    endpoint: str | None = None,
) -> requests.Session:
    """A ``requests.Session`` whose requests fit the invocation's deadline, with a total limit on body reads.

    ``retry``, when given, is mounted as the urllib3 retry of its adapters (for
    callers that do not retry themselves: MSAL and the Azure SDKs).
    ``body_timeout`` limits a whole body read; by default the read timeout does.
    ``default_timeout`` applies when a caller passes none: MSAL passes its own
    ``timeout`` only to the session it builds, not to an ``http_client`` it is given.

    ``endpoint``, when every request goes to that one host (the Graph client),
    works out the environment once: with ``trust_env`` on, requests reads every
    proxy variable and looks for a ``.netrc`` on each request, a measurable share
    of the listing's CPU (bench/README.md). The proxies for ``endpoint`` and the CA
    bundle from ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` are read here instead, and
    the ``Authorization`` header is always the app's token, never a ``.netrc``'s.
    """
    import os

    import requests

    session: requests.Session = _bounded_class()()
    if endpoint is not None:
        session.proxies = requests.utils.get_environ_proxies(endpoint)
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
    session.body_timeout = body_timeout  # type: ignore[attr-defined]
    session.default_timeout = default_timeout  # type: ignore[attr-defined]
    if retry is not None:
        from requests.adapters import HTTPAdapter

        adapter = HTTPAdapter(max_retries=retry)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


@functools.cache
def _bounded_class() -> type[Any]:
    # Built on first use: requests costs import time the host pays on every
    # cold start, before any trigger runs.
    import requests

    class BoundedSession(requests.Session):
        body_timeout: float | None = None
        default_timeout: tuple[float, float] = DEFAULT_TIMEOUT

        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
            where = f"{method!s} {_where(str(url))}"
            connect, read = _timeouts(kwargs.pop("timeout", None) or self.default_timeout)
            current = deadline.current()
            if current is not None:
                left = current.check(where)
                connect = left if connect is None else min(connect, left)
                read = left if read is None else min(read, left)
            stream = bool(kwargs.pop("stream", False))
            started = time.monotonic()
            try:
                kwargs.update(timeout=(connect, read), stream=True)
                resp: requests.Response = super().request(method, url, *args, **kwargs)
            except requests.RequestException:
                if current is not None and current.remaining() <= 0:
                    raise current.exceeded(where) from None
                raise
            if stream:
                return resp
            limit = self.body_timeout if self.body_timeout is not None else read
            _read_body(resp, where, None if limit is None else started + max(limit, 0.0), current)
            return resp

    return BoundedSession


def _timeouts(timeout: Any) -> tuple[float | None, float | None]:
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout


def _read_body(resp: requests.Response, where: str, until: float | None, current: deadline.Deadline | None) -> None:
    """Read the whole body into ``resp`` with a total time limit; errors as ``requests`` raises them."""
    import requests
    from urllib3.exceptions import DecodeError, SSLError

    chunks: list[bytes] = []
    try:
        while True:
            now = time.monotonic()
            if current is not None and current.remaining() <= 0:
                resp.close()
                raise current.exceeded(f"reading the answer of {where}")
            if until is not None and now > until:
                resp.close()
                logger.warning("The answer of %s was still arriving after its time limit; giving up on it", where)
                raise requests.exceptions.ReadTimeout(f"the body of {where} took longer than its time limit")
            chunk = resp.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
    except ProtocolError as exc:
        resp.close()
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        resp.close()
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        resp.close()
        if current is not None and current.remaining() <= 0:
            raise current.exceeded(f"reading the answer of {where}") from exc
        raise requests.ConnectionError(exc) from exc
    except SSLError as exc:
        resp.close()
        raise requests.exceptions.SSLError(exc) from exc
    resp._content = b"".join(chunks)
    resp._content_consumed = True  # type: ignore[attr-defined]
    resp.raw.release_conn()


def ceil_seconds(value: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least one."""
    return max(1, math.ceil(value))
