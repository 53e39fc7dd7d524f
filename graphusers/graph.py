"""The Microsoft Graph client: one session, retries by policy, paging and cursors.

Every request carries a fresh ``client-request-id``; failures log Graph's
``request-id`` so that Microsoft support can find the call. The access token is
only ever sent to the configured ``GRAPH_ENDPOINT``, and only for ``/users``:
the collection, ``/users/delta`` and one user. A ``@odata.nextLink`` must name
exactly the collection being paged. A caller's cursor carries no URL at all:
only Graph's skip token and the API's own parameters, from which the app
rebuilds the request after validating them like a first page's.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

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
# Graph answers an expired delta state with 410 Gone (resyncRequired) or with
# another 4xx carrying one of these codes, e.g. 400 syncStateNotFound; each
# means "start a full round". https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
# https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/
RESYNC_CODES = frozenset({"resyncrequired", "syncstatenotfound"})

# What follows ``{endpoint}/v1.0/users`` in a URL the app may send its token to:
# nothing (the collection), /delta, one percent-encoded segment that is not a
# dot segment (requests and urllib3 resolve "." and ".." and decode %2E, so
# "users/.." would reach /v1.0/), or Graph's ('...') key form; then a query.
_USERS_REST = re.compile(
    r"(?:/delta|/(?!(?:\.|%2[eE]){1,2}(?:\?|$))[^/?#\\\s]+|\('[^/?#\\\s]*'\))?(?:\?[^#\\\s]*)?"
)
_PAGED_REST = {"/users": re.compile(r"(?:\?[^#\\\s]*)?"), "/users/delta": re.compile(r"/delta(?:\?[^#\\\s]*)?")}
# An object id, or a userPrincipalName: Entra allows A-Z a-z 0-9 ' . - _ ! # ^ ~
# before the @ (https://learn.microsoft.com/entra/identity/hybrid/connect/plan-connect-userprincipalname),
# and accounts synced from on-premises may start with $ (user-get below).
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_UPN = re.compile(
    r"^(?=.{3,256}$)[A-Za-z0-9'._!#^~$+\-]{1,128}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# Graph's $skiptoken values are opaque base64-like strings, sometimes quoted.
_SKIPTOKEN = re.compile(r"^[A-Za-z0-9!$'()*+,\-./:;=@_~%]{1,4096}$")
CURSOR_VERSION = 1
# The API parameters a cursor may carry; the API validates them like a first page's.
CURSOR_FIELDS = frozenset({"top", "select", "filter", "search", "count"})
# Filters Graph runs only as advanced queries (ConsistencyLevel: eventual and
# $count=true): ne, not, endsWith, null, /$count, and properties indexed only
# in the advanced store. https://learn.microsoft.com/graph/aad-advanced-queries
_ODATA_STRING = re.compile(r"'(?:[^']|'')*'")
_ADVANCED_WORDS = re.compile(
    r"\b(?:ne|not|endswith|null)\b|\$count|\b(?:companyName|employeeHireDate|employeeType|mobilePhone|officeLocation"
    r"|onPremisesExtensionAttributes|onPremisesImmutableId|onPremisesLastSyncDateTime|onPremisesSamAccountName"
    r"|passwordPolicies|postalCode|preferredLanguage|showInAddressList|streetAddress)\b"
    r"|\b(?:createdDateTime|deletedDateTime)\s+in\b",
    re.IGNORECASE,
)


def is_user_key(value: str) -> bool:
    """True for what ``/users/{key}`` accepts: an object id (GUID) or a userPrincipalName."""
    return bool(_GUID.match(value) or _UPN.match(value))


def user_path(user_id: str) -> str:
    """The Graph path of one user, its key percent-encoded as a single segment.

    A userPrincipalName that starts with ``$`` must use ``/users('$x@contoso.com')``:
    ``/users/$x@contoso.com`` is Graph's 400, as ``$`` starts OData system segments.
    https://learn.microsoft.com/graph/api/user-get#http-request
    """
    if not is_user_key(user_id):
        raise InvalidRequestError("Path parameter 'id' must be a user's object id or userPrincipalName.", parameter="id")
    if user_id.startswith("$"):
        # An OData string literal: a quote inside is doubled.
        return "/users('" + quote(user_id.replace("'", "''"), safe="@$'") + "')"
    return "/users/" + quote(user_id, safe="@")


def needs_advanced_query(filter_: str | None) -> bool:
    """True when Graph runs ``$filter`` only with ConsistencyLevel: eventual and ``$count=true``."""
    if not filter_:
        return False
    # Words inside string literals are data: 'not' in a name is not the operator.
    return _ADVANCED_WORDS.search(_ODATA_STRING.sub("''", filter_)) is not None


def loggable_path(url: str) -> str:
    """The URL's path for logs: a user key other than an object id becomes a short hash.

    A userPrincipalName is personal data and comes from the caller; the hash
    still lets an operator match repeated failures for one key.
    """
    path = urlsplit(url).path
    head, sep, key = path.partition("/users/")
    if not sep:
        head, sep, key = path.partition("/users(")
    if not sep or key == "delta" or _GUID.match(key):
        return path
    return f"{head}{sep}<sha256:{hashlib.sha256(key.encode('utf-8', 'replace')).hexdigest()[:12]}>"


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

    @property
    def advanced(self) -> bool:
        """True when Graph needs the advanced query parameters for this filter."""
        return needs_advanced_query(self.filter)

    def params(self) -> dict[str, str]:
        """The OData query options for Graph.

        ``$count=true`` goes with every advanced query; ``get`` adds the
        ConsistencyLevel header whenever it is present.
        """
        params = {"$top": str(self.top)}
        if self.select:
            params["$select"] = ",".join(self.select)
        if self.filter:
            params["$filter"] = self.filter
        if self.search:
            params["$search"] = self.search
        if self.count or self.advanced:
            params["$count"] = "true"
        return params

    def fields(self) -> dict[str, str]:
        """The query as the API's own parameters, for a cursor."""
        fields = {"top": str(self.top), "count": "true" if self.count else "false"}
        if self.select:
            fields["select"] = ",".join(self.select)
        if self.filter:
            fields["filter"] = self.filter
        if self.search:
            fields["search"] = self.search
        return fields


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
        base = urlsplit(endpoint.rstrip("/"))
        # Scheme and host compared as Graph writes them in its links: lower case.
        self.endpoint = f"{base.scheme.lower()}://{base.netloc.lower()}{base.path}"
        self._base = urlsplit(self.endpoint)
        self._users_url = f"{self.endpoint}/{API_VERSION}/users"
        self._tokens = tokens
        if session is None:
            # Imported on first use: requests costs a third of the app's import
            # time, which the host pays on every cold start before any trigger runs.
            import requests

            session = requests.Session()
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

    def is_own_url(self, url: str, resource: str | None = None) -> bool:
        """True when ``url`` is this endpoint's ``/users`` (or ``resource``, exactly).

        Without ``resource``: the collection, ``/users/delta`` or one user. With
        ``"/users"`` or ``"/users/delta"``: that collection and nothing else, as
        for a nextLink. A prefix compare and one anchored regex: no parsing.
        """
        if not url.startswith(self._users_url):
            return False
        rest = url[len(self._users_url):]
        pattern = _USERS_REST if resource is None else _PAGED_REST[resource]
        return pattern.fullmatch(rest) is not None

    def encode_cursor(self, query: UsersQuery, next_link: str) -> str:
        """An opaque cursor: Graph's skip token and the query's own parameters, no URL.

        ``decode_cursor`` hands back only those parameters, which the API checks
        as it checks a first page's; the app then rebuilds the Graph URL itself.
        """
        if not self.is_own_url(next_link, "/users"):
            raise GraphError("Microsoft Graph returned a next page link for another resource; refusing to follow it")
        tokens = parse_qs(urlsplit(next_link).query).get("$skiptoken", [])
        if len(tokens) != 1 or not _SKIPTOKEN.match(tokens[0]):
            raise GraphError("Microsoft Graph returned a next page link without a usable $skiptoken.")
        payload = {"v": CURSOR_VERSION, **query.fields(), "skiptoken": tokens[0]}
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode_cursor(self, cursor: str) -> tuple[dict[str, str], str]:
        """The API parameters and skip token a cursor carries; ``InvalidRequestError`` for anything else."""
        invalid = InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            payload = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise invalid from None
        if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
            raise invalid
        token = payload.get("skiptoken")
        fields = {k: v for k, v in payload.items() if k not in ("v", "skiptoken")}
        if (
            not isinstance(token, str)
            or not _SKIPTOKEN.match(token)
            or not set(fields) <= CURSOR_FIELDS
            or not all(isinstance(v, str) for v in fields.values())
            or "top" not in fields
        ):
            raise invalid
        # Re-encoding must give the same text: padding bits or other slack in
        # the base64 would make two cursors for one page.
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != cursor:
            raise invalid
        return fields, token

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
                status, code, loggable_path(url), request_id, client_request_id,
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
            body = resp.json()
        except ValueError:
            logger.error("Graph returned a body that is not JSON; request-id=%s", request_id)
            raise GraphError("Microsoft Graph returned a malformed response.", request_id=request_id)
        if not isinstance(body, dict):
            raise GraphError("Microsoft Graph returned a malformed response.", request_id=request_id)
        return body

    # -- users --------------------------------------------------------------

    def users_page(self, query: UsersQuery | None = None, *, skiptoken: str | None = None) -> Page:
        """One page of ``/users`` for ``query``: the first, or the one ``skiptoken`` (from a cursor) names."""
        params = (query or UsersQuery()).params()
        if skiptoken is not None:
            if not _SKIPTOKEN.match(skiptoken):
                raise InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor")
            params["$skiptoken"] = skiptoken
        return self._page(self.get(self.url("/users"), params), "/users")

    def iter_pages(self, query: UsersQuery) -> Iterator[Page]:
        """Every page of ``/users`` for ``query``, following ``@odata.nextLink``."""
        page = self._page(self.get(self.url("/users"), query.params()), "/users")
        yield page
        while page.next_link:
            page = self._page(self.get(page.next_link), "/users")
            yield page

    def get_user(self, user_id: str, select: tuple[str, ...] = ()) -> dict[str, Any]:
        """One user by object id or userPrincipalName."""
        params = {"$select": ",".join(select)} if select else None
        return self.get(self.url(user_path(user_id)), params)

    def iter_delta(self, delta_link: str | None, select: tuple[str, ...], page_size: int) -> Iterator[DeltaPage]:
        """A round of ``/users/delta``: from the start (``delta_link=None``) or from a stored deltaLink.

        ``$top`` does not apply to delta queries; the page size is a preference.
        https://learn.microsoft.com/graph/delta-query-overview
        """
        # return=minimal: an update carries the changed properties only, including those
        # set to null, which a full representation would leave out; the sync merges them.
        # https://learn.microsoft.com/graph/api/user-delta (request headers)
        headers = {"Prefer": f"odata.maxpagesize={page_size}, return=minimal"}
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

    def _page(self, body: dict[str, Any], resource: str = "/users/delta") -> Page:
        """One page; its nextLink must name ``resource``, the collection being paged (by default a delta round's)."""
        value = body.get("value")
        if not isinstance(value, list):
            raise GraphError("Microsoft Graph returned a page without a 'value' list.")
        next_link = body.get("@odata.nextLink")
        if next_link is not None and (not isinstance(next_link, str) or not self.is_own_url(next_link, resource)):
            logger.error("Graph returned an @odata.nextLink that is not %s on GRAPH_ENDPOINT; not following it", resource)
            raise GraphError("Microsoft Graph returned a next page link for another host or resource.")
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
    if status == 410 or (400 <= status < 500 and code.lower() in RESYNC_CODES):
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

