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
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import orjson

from . import deadline, untrusted
from .credentials import TokenSource
from .properties import ADVANCED_PAIRS, ADVANCED_PROPERTIES

if TYPE_CHECKING:
    import requests

    # Re-exported for callers that build a client with a policy of their own.
    from .transport import RetryPolicy as RetryPolicy
    from .types import GraphPage, GraphUser, HttpSession

from .errors import (
    CursorExpiredError,
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

# Graph answers an expired delta state with 410 Gone (resyncRequired) or with
# another 4xx carrying one of these codes, e.g. 400 syncStateNotFound; each
# means "start a full round". https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
# https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/
RESYNC_CODES = frozenset({"resyncrequired", "syncstatenotfound"})
# Logged with every 429. https://learn.microsoft.com/graph/throttling
THROTTLE_HEADERS = ("x-ms-throttle-scope", "x-ms-throttle-reason", "x-ms-throttle-information", "Retry-After")
# 400 answers to a delta or skip token whose state cannot continue, by the text Graph
# sends (their code is a generic one such as BadRequest): a round that did not reach
# its deltaLink in time, and a link carrying both tokens. Each means "start a full round".
# https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
DELTA_STATE_MESSAGES = (
    "sync must reach steady state",
    "both skiptoken and deltatoken can't be in the same request",
    "sync state generation is not found",
)

# Graph's 400 code for a page token it will not continue: expired, or sent with a query
# other than the one that issued it (https://github.com/microsoftgraph/msgraph-sdk-dotnet/issues/2254,
# https://github.com/microsoftgraph/msgraph-sdk-java/issues/368). Only a cursor's caller can
# act on it, by starting the listing again.
EXPIRED_PAGE_TOKEN = "directory_expiredpagetoken"  # noqa: S105 - an error code, not a secret

# What follows ``{endpoint}/v1.0/users`` in a URL the app may send its token to:
# nothing (the collection), /delta, one percent-encoded segment that is not a
# dot segment (requests and urllib3 resolve "." and ".." and decode %2E, so
# "users/.." would reach /v1.0/), or Graph's ('...') key form; then a query.
_USERS_REST = re.compile(r"(?:/delta|/(?!(?:\.|%2[eE]){1,2}(?:\?|$))[^/?#\\\s]+|\('[^/?#\\\s]*'\))?(?:\?[^#\\\s]*)?")
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
# $count=true): the rules are data in properties.py. Operators and property names
# are case-insensitive in Graph's parser, as here.
_ODATA_STRING = re.compile(r"'(?:[^']|'')*'")
_ADVANCED_PAIR_WORDS = "|".join(sorted(prop + r"\s+" + op for prop, op in ADVANCED_PAIRS))
_ADVANCED_WORDS = re.compile(
    r"\b(?:ne|not|endswith|null)\b|\$count"
    rf"|\b(?:{'|'.join(sorted(ADVANCED_PROPERTIES))})\b"
    rf"|\b(?:{_ADVANCED_PAIR_WORDS})\b",
    re.IGNORECASE,
)


# Entra's username policy: A-Z a-z 0-9 ' . - _ ! # ^ ~ before the @, no "." right before it,
# at most 64 characters before and 48 after it, 113 in all.
# https://learn.microsoft.com/entra/identity/authentication/concept-sspr-policy#username-policies
# The app accepts a little more (``_UPN``: a leading $ and + from synced accounts, longer parts),
# so that it never refuses a key Graph would find; these rules only explain a refusal.
_UPN_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'._!#^~$+-")
_HEXISH = re.compile(r"^[0-9a-fA-F-]{8,}$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?$")


def is_user_key(value: str) -> bool:
    """True for what ``/users/{key}`` accepts: an object id (GUID) or a userPrincipalName."""
    return bool(_GUID.match(value) or _UPN.match(value))


def _char(c: str) -> str:
    # A lone surrogate (undecodable bytes from the host) cannot be written in a JSON answer.
    return f"U+{ord(c):04X}" if 0xD800 <= ord(c) <= 0xDFFF else f"{c!r} (U+{ord(c):04X})"


def user_key_problem(value: str) -> str | None:
    """Why ``value`` is neither an object id nor a userPrincipalName, in one clause; None when it is one."""
    if is_user_key(value):
        return None
    if not value:
        return "it is empty"
    if "@" not in value:
        if _HEXISH.match(value):
            return "it is not an object id: a GUID has 32 hex digits grouped 8-4-4-4-12"
        return "it is neither an object id (a GUID) nor a userPrincipalName (user@domain): it has no '@'"
    if value.count("@") > 1:
        return "a userPrincipalName has exactly one '@', between the user name and the domain"
    local, _, domain = value.partition("@")
    if not local:
        return "the user name before the '@' is empty"
    bad = next((c for c in local if c not in _UPN_LOCAL_CHARS), None)
    if bad is not None:
        kind = "a non-ASCII character" if not bad.isascii() else "a character"
        return (
            f"the user name before the '@' contains {kind} {_char(bad)}; a userPrincipalName allows only "
            "A-Z a-z 0-9 and ' . - _ ! # ^ ~ there (Microsoft Entra's username policy)"
        )
    if len(local) > 128:
        return "the user name before the '@' is longer than 128 characters"
    if not domain:
        return "the domain after the '@' is empty"
    bad = next((c for c in domain if not c.isascii()), None)
    if bad is not None:
        return f"the domain after the '@' contains the non-ASCII character {_char(bad)}; write it in its xn-- (punycode) form"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels) or not labels[-1].isalpha():
        return "the domain after the '@' is not a domain name such as contoso.onmicrosoft.com"
    return "it is longer than a userPrincipalName can be (256 characters)"


def user_path(user_id: str) -> str:
    """The Graph path of one user, its key percent-encoded as a single segment.

    A userPrincipalName that starts with ``$`` must use ``/users('$x@contoso.com')``:
    ``/users/$x@contoso.com`` is Graph's 400, as ``$`` starts OData system segments.
    https://learn.microsoft.com/graph/api/user-get#http-request
    """
    problem = user_key_problem(user_id)
    if problem is not None:
        raise InvalidRequestError(
            f"Path parameter 'id' must be a user's object id or userPrincipalName: {problem}.", parameter="id"
        )
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

    @property
    def advanced(self) -> bool:
        """True when Graph needs the advanced query parameters for this filter."""
        return needs_advanced_query(self.filter)

    def params(self) -> dict[str, str]:
        """The OData query options for Graph.

        ``$count=true`` goes with every advanced query; ``get`` adds the
        ConsistencyLevel header whenever it is present.
        """
        params = {"$top": str(self.top), **self._set_options("$")}
        if self.count or self.advanced:
            params["$count"] = "true"
        return params

    def fields(self) -> dict[str, str]:
        """The query as the API's own parameters, for a cursor."""
        return {"top": str(self.top), "count": "true" if self.count else "false", **self._set_options("")}

    def _set_options(self, prefix: str) -> dict[str, str]:
        """``select``, ``filter`` and ``search`` where set, each name after ``prefix``."""
        options = {"select": ",".join(self.select), "filter": self.filter, "search": self.search}
        return {prefix + name: value for name, value in options.items() if value}


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
        session: HttpSession | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        rnd: Callable[[], float] | None = None,
    ) -> None:
        from .transport import RetryPolicy, bounded_session

        base = urlsplit(endpoint.rstrip("/"))
        # Scheme and host compared as Graph writes them in its links: lower case.
        self.endpoint = f"{base.scheme.lower()}://{base.netloc.lower()}{base.path}"
        self._base = urlsplit(self.endpoint)
        self._users_url = f"{self.endpoint}/{API_VERSION}/users"
        self._tokens = tokens
        # Retries are this client's (it refreshes a rejected token between
        # attempts), so the session itself does not retry.
        self._session: HttpSession = session if session is not None else bounded_session(endpoint=self.endpoint)
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

    def is_own_url(self, url: str, resource: str | None = None) -> bool:
        """True when ``url`` is this endpoint's ``/users`` (or ``resource``, exactly).

        Without ``resource``: the collection, ``/users/delta`` or one user. With
        ``"/users"`` or ``"/users/delta"``: that collection and nothing else, as
        for a nextLink. A prefix compare and one anchored regex: no parsing.
        """
        if not url.startswith(self._users_url):
            return False
        rest = url[len(self._users_url) :]
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
            # The caller's bytes go through the one bounded parser: a cursor of 26,667 "[" once
            # raised RecursionError here, a 500. The API bounds the cursor (MAX_CURSOR); its bytes are fewer.
            payload = untrusted.loads(raw, max_bytes=len(cursor))
        except (binascii.Error, ValueError):
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

        from .transport import UNAVAILABLE_STATUSES, RetryExhaustedError, transient_errors

        retry = self._retry
        refreshed = False
        # A user key in the path may be a userPrincipalName: logs show a short hash of it.
        path = loggable_path(url)
        while True:
            token = self._tokens.get_token()
            client_request_id = str(uuid.uuid4())
            headers["client-request-id"] = client_request_id
            headers["Authorization"] = f"Bearer {token}"
            started = time.perf_counter()
            self._count_request()
            try:
                resp = self._session.get(url, params=params, headers=headers, timeout=self._timeout, allow_redirects=False)
                status = resp.status_code
                request_id = resp.headers.get("request-id", "")
                if status == 200:
                    return self._json(resp, request_id, path)
            except transient_errors() as exc:
                try:
                    retry = retry.step("GET", url, error=exc)
                except RetryExhaustedError as give_up:
                    logger.error(
                        "Graph unreachable for %s after %d attempts: %s (%s); client-request-id=%s",
                        path,
                        len(retry.history) + 1,
                        type(exc).__name__,
                        give_up.why,
                        client_request_id,
                    )
                    raise self._unavailable(give_up, "Microsoft Graph is unreachable.") from exc
                logger.warning(
                    "Graph request for %s failed (%s), client-request-id=%s; retry %d in %.1f s",
                    path,
                    type(exc).__name__,
                    client_request_id,
                    len(retry.history),
                    retry.pending_wait,
                )
                self._sleep(retry.pending_wait)
                continue

            code, message = _graph_error(resp)
            retryable = retry.is_retry("GET", status, "Retry-After" in resp.headers)
            failure = _error_for(status, code, message, request_id)
            # With a 429 Graph says which limit was hit (application, tenant, or both) and why;
            # the support case needs them. https://learn.microsoft.com/graph/throttling#best-practices-to-handle-throttling
            throttle = "".join(f" {name}={_header(resp, name)}" for name in THROTTLE_HEADERS) if status == 429 else ""
            logger.log(
                _log_level(failure, retryable or status == 401),
                "Graph answered %d %s for %s; request-id=%s client-request-id=%s (%.0f ms)%s",
                status,
                code,
                loggable_path(url),
                request_id,
                client_request_id,
                (time.perf_counter() - started) * 1000,
                throttle,
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
                        raise self._unavailable(give_up, "Microsoft Graph is throttling or unavailable; retry later.") from None
                    raise failure from None
                self._sleep(retry.pending_wait)
                continue
            raise failure

    @staticmethod
    def _unavailable(give_up: Any, message: str) -> UnavailableError:
        from .errors import DeadlineError
        from .transport import ceil_seconds

        if give_up.deadline:
            return DeadlineError(
                "The request did not finish within its deadline (HTTP_DEADLINE_SECONDS) because Microsoft Graph "
                "was slow or failing; retry later.",
                retry_after=ceil_seconds(max(give_up.wait, 1.0)),
            )
        return UnavailableError(message, retry_after=ceil_seconds(max(give_up.wait, 1.0)))

    def _json(self, resp: requests.Response, request_id: str, path: str = "") -> dict[str, Any]:
        try:
            # One parse of the raw bytes: orjson reads UTF-8 JSON (what RFC 8259 requires and Graph
            # sends) about 1.7x as fast as json and builds no intermediate str; its JSONDecodeError
            # is a ValueError, and invalid UTF-8 or lone surrogates are refused like any non-JSON.
            body = orjson.loads(resp.content)
        except ValueError:
            logger.error(
                "Graph returned a body that is not JSON for %s (Content-Type %s); request-id=%s",
                path,
                resp.headers.get("Content-Type", "none"),
                request_id,
            )
            raise GraphError("Microsoft Graph returned a malformed response.", request_id=request_id) from None
        if not isinstance(body, dict):
            logger.error("Graph returned JSON that is not an object for %s; request-id=%s", path, request_id)
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

    def get_user(self, user_id: str, select: tuple[str, ...] = ()) -> GraphUser:
        """One user by object id or userPrincipalName."""
        params = {"$select": ",".join(select)} if select else None
        return cast("GraphUser", self.get(self.url(user_path(user_id)), params))

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

    def delta_latest(self, select: tuple[str, ...]) -> str | None:
        """A deltaLink from now on and no data (``$deltatoken=latest``), with ``select``; ``None`` for another answer.

        "Sync from now": Microsoft Entra resources answer ``$deltatoken=latest`` with a deltaLink and no
        data; the link keeps the request's ``$select``, so the rounds that follow it return those
        properties. https://learn.microsoft.com/graph/delta-query-overview (checked against the
        emulator, which keeps the ``$select`` in the token: tests/integration/test_sync_listing.py).
        An answer with data, a nextLink or no deltaLink is not that answer: the caller does a delta round.
        """
        body = self.get(self.url("/users/delta"), {"$deltatoken": "latest", "$select": ",".join(select)})
        link = body.get("@odata.deltaLink")
        if body.get("value") or body.get("@odata.nextLink") is not None or not isinstance(link, str):
            logger.warning("Graph did not answer $deltatoken=latest with a deltaLink and no data")
            return None
        if not self.is_own_url(link, "/users/delta"):
            raise GraphError("Microsoft Graph returned a deltaLink for another host.")
        return link

    def iter_listing(self, select: tuple[str, ...], next_link: str | None = None) -> Iterator[Page]:
        """Every page of ``/users?$select=...&$top=999`` (Graph's largest page), or the pages from ``next_link`` on."""
        # $top 1-999 on /users: https://learn.microsoft.com/graph/api/user-list
        params = {"$select": ",".join(select), "$top": "999"}
        body = self.get(self.url("/users"), params) if next_link is None else self.get(next_link)
        while True:
            page = self._page(body, "/users")
            yield page
            if page.next_link is None:
                return
            body = self.get(page.next_link)

    def _page(self, raw: dict[str, Any], resource: str = "/users/delta") -> Page:
        """One page; its nextLink must name ``resource``, the collection being paged (by default a delta round's)."""
        # The shape Graph documents; each field is still checked, as a body is only JSON.
        body = cast("GraphPage", raw)
        value = body.get("value")
        if not isinstance(value, list):
            logger.error("Graph returned a page without a 'value' list (keys: %s)", sorted(body)[:8])
            raise GraphError("Microsoft Graph returned a page without a 'value' list.")
        next_link = body.get("@odata.nextLink")
        if next_link is not None and (not isinstance(next_link, str) or not self.is_own_url(next_link, resource)):
            logger.error("Graph returned an @odata.nextLink that is not %s on GRAPH_ENDPOINT; not following it", resource)
            raise GraphError("Microsoft Graph returned a next page link for another host or resource.")
        count = body.get("@odata.count")
        return Page(value=value, next_link=next_link, count=count if isinstance(count, int) else None)


def _header(resp: requests.Response, name: str) -> str:
    """A response header for a log line: printable, short, ``-`` when absent."""
    value = resp.headers.get(name) or "-"
    return "".join(c if c.isprintable() else "?" for c in value[:120])


def _graph_error(resp: requests.Response) -> tuple[str, str]:
    """Graph's ``error.code`` and ``error.message``, or empty strings for a body of another shape."""
    try:
        error = resp.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", ""


def _log_level(failure: Exception, retried: bool) -> int:
    """How loud a Graph error answer is logged: ERROR only for what an operator must act on.

    A 400 for the caller's query (a bad $filter) or a 404 for a user who does not exist is
    the caller's mistake: INFO, and the caller gets it as 400 or 404. An expired delta
    token is routine (the sync starts over), and a retried answer may still succeed.
    """
    if isinstance(failure, InvalidRequestError | NotFoundError):
        return logging.INFO
    if retried or isinstance(failure, ResyncRequiredError):
        return logging.WARNING
    return logging.ERROR


def _error_for(status: int, code: str, message: str, request_id: str) -> Exception:
    if status == 410 or (400 <= status < 500 and code.lower() in RESYNC_CODES):
        return ResyncRequiredError(
            "The delta token expired; a full sync is needed.", status=status, graph_code=code, request_id=request_id
        )
    if status == 400 and any(text in message.lower() for text in DELTA_STATE_MESSAGES):
        return ResyncRequiredError(
            f"Graph cannot continue the delta state: {message[:200]}", status=status, graph_code=code, request_id=request_id
        )
    if status == 400 and code.lower() == EXPIRED_PAGE_TOKEN:
        return CursorExpiredError(
            "The cursor has expired: Microsoft Graph no longer continues that listing. Start the listing again without 'cursor'.",
            parameter="cursor",
        )
    if status == 404:
        return NotFoundError("Microsoft Graph has no such user.")
    if status == 400:
        # Graph's message describes the caller's query, e.g. an invalid $filter.
        return InvalidRequestError(f"Microsoft Graph rejected the query: {message[:300] or code}")
    if status == 403:
        return PermissionDeniedError(
            "Microsoft Graph denied access: the app registration needs the User.Read.All application "
            "permission with admin consent.",
            status=status,
            graph_code=code,
            request_id=request_id,
        )
    return GraphError(
        f"Microsoft Graph answered HTTP {status}" + (f" ({code})" if code else "") + f"; request-id {request_id}.",
        status=status,
        graph_code=code,
        request_id=request_id,
    )
