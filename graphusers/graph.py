"""The Microsoft Graph client: one session, retries by policy, paging and cursors.

Every request carries a fresh ``client-request-id``; failures log Graph's
``request-id`` so that Microsoft support can find the call. The access token is
only ever sent to the configured ``GRAPH_ENDPOINT``: a ``@odata.nextLink`` or a
caller's cursor that points anywhere else is refused before any request.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson

from .credentials import TokenSource

if TYPE_CHECKING:
    import requests

from .errors import (
    GraphError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ResyncRequiredError,
    UnavailableError,
)

logger = logging.getLogger(__name__)

API_VERSION = "v1.0"
# Graph's throttling and transient server errors; all are safe to retry for GETs.
# https://learn.microsoft.com/graph/throttling
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses that mean "not now" rather than "broken": past the retry budget the
# HTTP caller gets 503 with Retry-After, not 502.
UNAVAILABLE_STATUSES = frozenset({429, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How GETs to Graph are retried; one object, no loops elsewhere.

    ``total`` retries after the first attempt, exponential backoff
    ``backoff_factor * 2**n`` capped at ``backoff_max`` with up to ``jitter``
    of random extra, and a server's ``Retry-After`` honoured as given. The sum
    of all waits for one request never exceeds ``max_wait``: past it the
    request fails so that an HTTP caller is not kept waiting by a long throttle.
    """

    total: int = 4
    backoff_factor: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.25
    max_wait: float = 30.0
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def backoff(self, retry_number: int, rnd: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry_number`` (0-based)."""
        base = min(self.backoff_max, self.backoff_factor * 2.0**retry_number)
        return float(base * (1 + self.jitter * rnd()))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header in either form (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class UsersQuery:
    """A validated ``/users`` query."""

    top: int = 100
    select: tuple[str, ...] = ()
    filter: str | None = None
    search: str | None = None
    count: bool = False

    def params(self) -> dict[str, str]:
        """The OData query options for Graph."""
        params = {"$top": str(self.top)}
        if self.select:
            params["$select"] = ",".join(self.select)
        if self.filter:
            params["$filter"] = self.filter
        if self.search:
            params["$search"] = self.search
        if self.count:
            params["$count"] = "true"
        return params


@dataclass(frozen=True)
class Page:
    """One page of users and the cursor to the next one."""

    value: list[dict[str, Any]]
    next_link: str | None
    count: int | None = None


@dataclass(frozen=True)
class DeltaPage:
    """One page of a delta round; the last one carries the deltaLink for the next round."""

    value: list[dict[str, Any]]
    next_link: str | None
    delta_link: str | None


class GraphClient:
    """Calls Graph as the app; ``session``, ``sleep`` and ``rnd`` are seams for tests."""

    def __init__(
        self,
        endpoint: str,
        tokens: TokenSource,
        *,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (3.05, 30.0),
        sleep: Callable[[float], None] = time.sleep,
        rnd: Callable[[], float] = random.random,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._base = urlsplit(self.endpoint)
        self._tokens = tokens
        if session is None:
            # Imported on first use: requests costs a third of the app's import
            # time, which the host pays on every cold start before any trigger runs.
            from .transport import graph_session

            session = graph_session(self.endpoint)
        self._session = session
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._sleep = sleep
        self._rnd = rnd
        self.requests_sent = 0

    # -- URLs ---------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL for a Graph path such as ``/users``."""
        return f"{self.endpoint}/{API_VERSION}{path}"

    def is_own_url(self, url: str) -> bool:
        """True when ``url`` points at this client's Graph endpoint and API version."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        return (
            parts.scheme == self._base.scheme
            and (parts.hostname or "") == (self._base.hostname or "").lower()
            and port == self._base.port
            and parts.username is None
            and parts.path.startswith(f"{self._base.path}/{API_VERSION}/")
            and "\\" not in url
            and not any(ord(c) < 0x21 for c in url)
        )

    def encode_cursor(self, next_link: str) -> str:
        """An opaque cursor for ``next_link``: it holds only the path and query."""
        prefix = f"{self.endpoint}/{API_VERSION}/"
        if not next_link.startswith(prefix):
            raise GraphError("Graph returned a next page link for another host; refusing to follow it")
        raw = next_link[len(prefix) :].encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode_cursor(self, cursor: str) -> str:
        """The Graph URL a cursor stands for; ``InvalidRequestError`` unless it is this endpoint's ``/users``."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor")
        url = f"{self.endpoint}/{API_VERSION}/{raw}"
        if not raw.startswith("users?") or not self.is_own_url(url):
            raise InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor")
        return url

    # -- requests -----------------------------------------------------------

    def get(
        self, url: str, params: Mapping[str, str] | None = None, *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """GET a Graph URL and return its JSON object, retrying as the policy says."""
        if not self.is_own_url(url):
            # Never send the app's token anywhere but the configured endpoint.
            raise GraphError("Refusing to send a request outside GRAPH_ENDPOINT")
        query = dict(parse_qsl(urlsplit(url).query))
        query.update(params or {})
        extra = headers
        headers = {"Accept": "application/json", **(extra or {})}
        # $search and $count are advanced queries; a nextLink keeps the query
        # options but not this header, so decide from the URL every time.
        # https://learn.microsoft.com/graph/aad-advanced-queries
        if "$search" in query or query.get("$count") == "true":
            headers["ConsistencyLevel"] = "eventual"

        import requests

        retries = 0
        waited = 0.0
        refreshed = False
        while True:
            token = self._tokens.get_token()
            client_request_id = str(uuid.uuid4())
            headers["client-request-id"] = client_request_id
            headers["Authorization"] = f"Bearer {token}"
            started = time.perf_counter()
            self.requests_sent += 1
            try:
                resp = self._session.get(
                    url, params=params, headers=headers, timeout=self._timeout, allow_redirects=False
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                delay = self._retry.backoff(retries, self._rnd)
                if retries < self._retry.total and waited + delay <= self._retry.max_wait:
                    logger.warning(
                        "Graph request failed (%s), client-request-id=%s; retry %d in %.1f s",
                        type(exc).__name__, client_request_id, retries + 1, delay,
                    )
                    self._sleep(delay)
                    waited += delay
                    retries += 1
                    continue
                logger.error("Graph unreachable after %d attempts: %s", retries + 1, type(exc).__name__)
                raise UnavailableError("Microsoft Graph is unreachable.", retry_after=max(5, int(delay))) from exc

            status = resp.status_code
            request_id = resp.headers.get("request-id", "")
            if status == 200:
                return self._json(resp, request_id)

            code, message = _graph_error(resp)
            logger.log(
                logging.WARNING if status in self._retry.statuses or status == 401 else logging.ERROR,
                "Graph answered %d %s for %s; request-id=%s client-request-id=%s (%.0f ms)",
                status, code, urlsplit(url).path, request_id, client_request_id,
                (time.perf_counter() - started) * 1000,
            )
            if status == 401 and not refreshed:
                # An expired or revoked token: get a new one once, then the same request again.
                refreshed = True
                self._tokens.invalidate(token)
                continue
            if status in self._retry.statuses:
                told = parse_retry_after(resp.headers.get("Retry-After"))
                delay = self._retry.backoff(retries, self._rnd) if told is None else told
                if retries < self._retry.total and waited + delay <= self._retry.max_wait:
                    self._sleep(delay)
                    waited += delay
                    retries += 1
                    continue
                if status in UNAVAILABLE_STATUSES:
                    raise UnavailableError(
                        "Microsoft Graph is throttling or unavailable; retry later.",
                        retry_after=max(1, int(delay + 0.999)),
                    )
            raise _error_for(status, code, message, request_id)

    def _json(self, resp: requests.Response, request_id: str) -> dict[str, Any]:
        try:
            # One parse of the raw bytes: orjson reads UTF-8 JSON (what RFC 8259 requires and Graph
            # sends) about 1.7x as fast as json and builds no intermediate str; its JSONDecodeError
            # is a ValueError, and invalid UTF-8 or lone surrogates are refused like any non-JSON.
            body = orjson.loads(resp.content)
        except ValueError:
            logger.error("Graph returned a body that is not JSON; request-id=%s", request_id)
            raise GraphError("Microsoft Graph returned a malformed response.", request_id=request_id)
        if not isinstance(body, dict):
            raise GraphError("Microsoft Graph returned a malformed response.", request_id=request_id)
        return body

    # -- users --------------------------------------------------------------

    def users_page(self, query: UsersQuery | None = None, *, cursor: str | None = None) -> Page:
        """One page of ``/users``: the first for ``query``, or the one ``cursor`` points at."""
        if cursor is not None:
            body = self.get(self.decode_cursor(cursor))
        else:
            body = self.get(self.url("/users"), (query or UsersQuery()).params())
        return self._page(body)

    def iter_pages(self, query: UsersQuery) -> Iterator[Page]:
        """Every page of ``/users`` for ``query``, following ``@odata.nextLink``."""
        page = self._page(self.get(self.url("/users"), query.params()))
        yield page
        while page.next_link:
            page = self._page(self.get(page.next_link))
            yield page

    def get_user(self, user_id: str, select: tuple[str, ...] = ()) -> dict[str, Any]:
        """One user by object id or userPrincipalName."""
        params = {"$select": ",".join(select)} if select else None
        return self.get(self.url("/users/" + quote(user_id, safe="@")), params)

    def iter_delta(self, delta_link: str | None, select: tuple[str, ...], page_size: int) -> Iterator[DeltaPage]:
        """A round of ``/users/delta``: from the start (``delta_link=None``) or from a stored deltaLink.

        ``$top`` does not apply to delta queries; the page size is a preference.
        https://learn.microsoft.com/graph/delta-query-overview
        """
        headers = {"Prefer": f"odata.maxpagesize={page_size}"}
        if delta_link is None:
            body = self.get(self.url("/users/delta"), {"$select": ",".join(select)}, headers=headers)
        else:
            body = self.get(delta_link, headers=headers)
        while True:
            page = self._page(body)
            delta = body.get("@odata.deltaLink")
            if delta is not None and (not isinstance(delta, str) or not self.is_own_url(delta)):
                raise GraphError("Microsoft Graph returned a deltaLink for another host.")
            yield DeltaPage(value=page.value, next_link=page.next_link, delta_link=delta)
            if page.next_link is None:
                if delta is None:
                    raise GraphError("Microsoft Graph ended a delta round without a deltaLink.")
                return
            body = self.get(page.next_link, headers=headers)

    def _page(self, body: dict[str, Any]) -> Page:
        value = body.get("value")
        if not isinstance(value, list):
            raise GraphError("Microsoft Graph returned a page without a 'value' list.")
        next_link = body.get("@odata.nextLink")
        if next_link is not None and (not isinstance(next_link, str) or not self.is_own_url(next_link)):
            logger.error("Graph returned an @odata.nextLink outside GRAPH_ENDPOINT; not following it")
            raise GraphError("Microsoft Graph returned a next page link for another host.")
        count = body.get("@odata.count")
        return Page(value=value, next_link=next_link, count=count if isinstance(count, int) else None)


def _graph_error(resp: requests.Response) -> tuple[str, str]:
    """Graph's ``error.code`` and ``error.message``, or empty strings for a body of another shape."""
    try:
        error = resp.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", ""


def _error_for(status: int, code: str, message: str, request_id: str) -> Exception:
    if status == 410:
        return ResyncRequiredError("The delta token expired; a full sync is needed.", status=status,
                                   graph_code=code, request_id=request_id)
    if status == 404:
        return NotFoundError("Microsoft Graph has no such user.")
    if status == 400:
        # Graph's message describes the caller's query, e.g. an invalid $filter.
        return InvalidRequestError(f"Microsoft Graph rejected the query: {message[:300] or code}")
    if status == 403:
        return PermissionDeniedError(
            "Microsoft Graph denied access: the app registration needs the User.Read.All application "
            "permission with admin consent.",
            status=status, graph_code=code, request_id=request_id,
        )
    return GraphError(
        f"Microsoft Graph answered HTTP {status}" + (f" ({code})" if code else "") + f"; request-id {request_id}.",
        status=status, graph_code=code, request_id=request_id,
    )

