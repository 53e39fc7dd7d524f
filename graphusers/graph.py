"""The Microsoft Graph client: one session, retries by policy, paging and cursors.

Every request carries a fresh ``client-request-id``; failures log Graph's
``request-id`` so that Microsoft support can find the call. The access token is
only ever sent to the configured ``GRAPH_ENDPOINT``: a ``@odata.nextLink`` or a
caller's cursor that points anywhere else is refused before any request.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

from . import deadline
from .credentials import TokenSource

if TYPE_CHECKING:
    import requests

    from .transport import RetryPolicy

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
# The read timeout also limits a whole page's download (see transport.bounded_session).
DEFAULT_TIMEOUT = (3.05, 30.0)


def __getattr__(name: str) -> Any:
    # The retry machinery lives in transport.py and imports urllib3, which the
    # host would otherwise pay for at every cold start before any trigger runs.
    if name in ("RetryPolicy", "parse_retry_after", "RETRY_STATUSES", "UNAVAILABLE_STATUSES"):
        from . import transport

        return getattr(transport, name)
    raise AttributeError(name)


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
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        rnd: Callable[[], float] | None = None,
    ) -> None:
        from .transport import RetryPolicy, bounded_session

        self.endpoint = endpoint.rstrip("/")
        self._base = urlsplit(self.endpoint)
        self._tokens = tokens
        # Retries are this client's (it refreshes a rejected token between
        # attempts), so the session itself does not retry.
        self._session = session if session is not None else bounded_session()
        retry = retry or RetryPolicy()
        self._retry = retry if rnd is None else retry.new(rnd=rnd)
        self._timeout = timeout
        self._sleep = sleep
        self._total_requests = 0

    @property
    def requests_sent(self) -> int:
        """Graph requests sent by the running invocation (all of this client's outside one).

        Each invocation counts its own under its deadline, so concurrent
        invocations do not count each other's requests.
        """
        current = deadline.current()
        return self._total_requests if current is None else current.graph_requests

    def _count_request(self) -> None:
        self._total_requests += 1
        current = deadline.current()
        if current is not None:
            current.graph_requests += 1

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

        from .transport import UNAVAILABLE_STATUSES, RetryExhaustedError, transient_errors

        retry = self._retry
        refreshed = False
        # A user key in the path may be a userPrincipalName: logs show its shape only.
        path = re.sub(r"(/users/)(?!delta$)[^/]+", r"\1{id}", urlsplit(url).path)
        while True:
            token = self._tokens.get_token()
            client_request_id = str(uuid.uuid4())
            headers["client-request-id"] = client_request_id
            headers["Authorization"] = f"Bearer {token}"
            started = time.perf_counter()
            self._count_request()
            try:
                resp = self._session.get(
                    url, params=params, headers=headers, timeout=self._timeout, allow_redirects=False
                )
                status = resp.status_code
                request_id = resp.headers.get("request-id", "")
                if status == 200:
                    return self._json(resp, request_id, path)
            except transient_errors() as exc:
                try:
                    retry = retry.step("GET", url, error=exc)
                except RetryExhaustedError as give_up:
                    logger.error("Graph unreachable for %s after %d attempts: %s (%s); client-request-id=%s",
                                 path, len(retry.history) + 1, type(exc).__name__, give_up.why, client_request_id)
                    raise self._unavailable(give_up, "Microsoft Graph is unreachable.") from exc
                logger.warning(
                    "Graph request for %s failed (%s), client-request-id=%s; retry %d in %.1f s",
                    path, type(exc).__name__, client_request_id, len(retry.history), retry.pending_wait,
                )
                self._sleep(retry.pending_wait)
                continue

            code, message = _graph_error(resp)
            retryable = retry.is_retry("GET", status, "Retry-After" in resp.headers)
            logger.log(
                logging.WARNING if retryable or status == 401 else logging.ERROR,
                "Graph answered %d %s for %s; request-id=%s client-request-id=%s (%.0f ms)",
                status, code, path, request_id, client_request_id, (time.perf_counter() - started) * 1000,
            )
            if status == 401 and not refreshed:
                # An expired or revoked token: get a new one once, then the same request again.
                refreshed = True
                self._tokens.invalidate(token)
                continue
            if retryable:
                try:
                    retry = retry.step("GET", url, status=status, headers=resp.headers)
                except RetryExhaustedError as give_up:
                    if give_up.deadline or status in UNAVAILABLE_STATUSES:
                        logger.error("Graph still answered %d for %s; giving up: %s", status, path, give_up.why)
                        raise self._unavailable(give_up, "Microsoft Graph is throttling or unavailable; "
                                                "retry later.") from None
                    raise _error_for(status, code, message, request_id) from None
                self._sleep(retry.pending_wait)
                continue
            raise _error_for(status, code, message, request_id)

    @staticmethod
    def _unavailable(give_up: Any, message: str) -> UnavailableError:
        from .errors import DeadlineError
        from .transport import ceil_seconds

        if give_up.deadline:
            return DeadlineError(
                "The request did not finish within its deadline (HTTP_DEADLINE_SECONDS) because Microsoft Graph "
                "was slow or failing; retry later.", retry_after=ceil_seconds(max(give_up.wait, 1.0)))
        return UnavailableError(message, retry_after=ceil_seconds(max(give_up.wait, 1.0)))

    def _json(self, resp: requests.Response, request_id: str, path: str = "") -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            logger.error("Graph returned a body that is not JSON for %s (Content-Type %s); request-id=%s",
                         path, resp.headers.get("Content-Type", "none"), request_id)
            raise GraphError("Microsoft Graph returned a malformed response.", request_id=request_id) from None
        if not isinstance(body, dict):
            logger.error("Graph returned JSON that is not an object for %s; request-id=%s", path, request_id)
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
            logger.error("Graph returned a page without a 'value' list (keys: %s)", sorted(body)[:8])
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

