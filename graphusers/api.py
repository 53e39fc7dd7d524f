"""The HTTP API's decisions: validate input, call Graph, shape the JSON answer.

Kept free of ``azure.functions`` so that it is plain to test; the triggers in
``function_app.py`` only convert ``ApiResponse`` to an ``HttpResponse``.
Errors map to status codes in one place, ``error_response``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import deadline
from .config import PROPERTY_NAME, http_deadline_seconds
from .errors import (
    AppError,
    ConfigError,
    CursorExpiredError,
    GraphError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
)
from .graph import GraphClient, UsersQuery, is_user_key
from .properties import unknown_user_properties
from .types import ApiErrorBody, UsersListBody

logger = logging.getLogger(__name__)

MAX_TOP = 999  # Graph's own limit for /users.
DEFAULT_TOP = 100
MAX_SELECT = 64
MAX_EXPRESSION = 2048
# A cursor holds a skip token and the query's parameters (filter and search up
# to MAX_EXPRESSION each), base64 encoded.
MAX_CURSOR = 32768
# `code` carries the function key when a caller passes it in the query string.
LIST_PARAMETERS = frozenset({"top", "select", "filter", "search", "count", "cursor", "code"})
GET_PARAMETERS = frozenset({"select", "code"})

_STATUS: tuple[tuple[type[AppError], int], ...] = (
    # Gone, not 400: the cursor was valid, Graph's listing behind it is not; the caller starts again.
    (CursorExpiredError, 410),
    (InvalidRequestError, 400),
    (NotFoundError, 404),
    (UnavailableError, 503),
    (GraphError, 502),
)


@dataclass(frozen=True)
class ApiResponse:
    """Status, JSON body and extra headers of an HTTP answer."""

    status: int
    body: Mapping[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> bytes:
        """The body as compact UTF-8 JSON, the bytes the host sends.

        orjson writes the bytes ``json.dumps(body, separators=(",", ":"), ensure_ascii=False)``
        wrote (a float's exponent aside: ``1e-7``, not ``1e-07``), about 15x as fast: a page
        of 999 users is encoded on every call. See bench/README.md.
        """
        return orjson.dumps(self.body)


def error_body(code: str, message: str) -> ApiErrorBody:
    """The one error shape of this API."""
    return {"error": {"code": code, "message": message}}


def error_response(exc: Exception) -> ApiResponse:
    """Map an exception to its HTTP answer; anything unexpected is a 500 with no details."""
    if isinstance(exc, ConfigError):
        # Which setting is wrong is for the operator's log, not for callers.
        logger.error("Configuration error: %s", exc.message)
        message = f"The function app is misconfigured (app setting {exc.setting}); see its logs."
        return ApiResponse(503, error_body(exc.code, message), {"Retry-After": "60"})
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, UnavailableError) else {}
            return ApiResponse(status, error_body(exc.code, exc.message), headers)
    logger.error("Unexpected error", exc_info=exc)
    return ApiResponse(500, error_body("internal_error", "Unexpected error; see the function app's logs."))


def respond(action: Callable[[], ApiResponse]) -> ApiResponse:
    """Run ``action`` within ``HTTP_DEADLINE_SECONDS`` and turn any exception into the JSON error answer."""
    try:
        return deadline.run(action, http_deadline_seconds())
    except Exception as exc:  # noqa: BLE001 - the HTTP boundary: nothing may escape as a traceback
        return error_response(exc)


def _utf8(value: str) -> bool:
    # The host hands undecodable bytes over as lone surrogates; they cannot
    # be sent on to Graph, so they are the caller's error, not ours.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_names(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    for name, value in params.items():
        if not (_utf8(name) and _utf8(value)):
            shown = name if _utf8(name) else name.encode("utf-8", "replace").decode()
            raise InvalidRequestError(f"Query parameter {shown[:64]!r} is not valid UTF-8.", parameter=shown[:64])
    unknown = sorted(set(params) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed - {"code"}))
        raise InvalidRequestError(
            f"Unknown query parameter {unknown[0][:64]!r}; " + (f"allowed: {names}." if names else "this endpoint takes none."),
            parameter=unknown[0][:64],
        )


def parse_select(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """A ``select`` parameter as property names; the configured default when absent."""
    if raw is None:
        return default
    fields = tuple(f.strip() for f in raw.split(","))
    if len(fields) > MAX_SELECT:
        raise InvalidRequestError(f"Parameter 'select' has more than {MAX_SELECT} properties.", parameter="select")
    for name in fields:
        if not PROPERTY_NAME.match(name):
            raise InvalidRequestError(
                "Parameter 'select' must be a comma-separated list of property names such as "
                "id,displayName; " + (f"{name[:64]!r} is not one." if name else "it has an empty entry."),
                parameter="select",
            )
    unknown = unknown_user_properties(fields)
    if unknown:
        raise InvalidRequestError(
            f"Parameter 'select': {unknown[0]!r} is not a property of a Microsoft Graph user.", parameter="select"
        )
    return fields


def _expression(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.strip():
        raise InvalidRequestError(f"Parameter {name!r} is empty.", parameter=name)
    if len(value) > MAX_EXPRESSION:
        raise InvalidRequestError(f"Parameter {name!r} is longer than {MAX_EXPRESSION} characters.", parameter=name)
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidRequestError(f"Parameter {name!r} contains control characters.", parameter=name)
    return value


def parse_users_query(params: Mapping[str, str], default_select: tuple[str, ...]) -> UsersQuery | str:
    """Validate ``GET /api/users`` parameters; a cursor (str) or a first-page query."""
    _check_names(params, LIST_PARAMETERS)
    cursor = params.get("cursor")
    if cursor is not None:
        others = sorted(set(params) - {"cursor", "code"})
        if others:
            raise InvalidRequestError(
                f"Parameter 'cursor' carries the whole query; send it without {others[0]!r}.", parameter=others[0]
            )
        if not cursor or len(cursor) > MAX_CURSOR:
            raise InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor")
        return cursor

    top = DEFAULT_TOP
    raw_top = params.get("top")
    if raw_top is not None:
        if not (raw_top.isascii() and raw_top.isdigit() and 1 <= int(raw_top) <= MAX_TOP):
            raise InvalidRequestError(f"Parameter 'top' must be an integer from 1 to {MAX_TOP}.", parameter="top")
        top = int(raw_top)

    raw_count = params.get("count")
    if raw_count is not None and raw_count.lower() not in ("true", "false"):
        raise InvalidRequestError("Parameter 'count' must be true or false.", parameter="count")

    return UsersQuery(
        top=top,
        select=parse_select(params.get("select"), default_select),
        filter=_expression(params, "filter"),
        search=_expression(params, "search"),
        count=raw_count is not None and raw_count.lower() == "true",
    )


def parse_cursor(graph: GraphClient, cursor: str, default_select: tuple[str, ...]) -> tuple[UsersQuery, str]:
    """A cursor's query, validated exactly as a first page's parameters are, and its skip token."""
    fields, skiptoken = graph.decode_cursor(cursor)
    try:
        query = parse_users_query(fields, default_select)
    except InvalidRequestError:
        raise InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor") from None
    if not isinstance(query, UsersQuery):  # fields never name a cursor (CURSOR_FIELDS); kept for the type
        raise InvalidRequestError("Parameter 'cursor' is not a cursor this API returned.", parameter="cursor")
    return query, skiptoken


def list_users(graph: GraphClient, params: Mapping[str, str], default_select: tuple[str, ...]) -> ApiResponse:
    """``GET /api/users``: one page of users and an opaque cursor to the next."""
    parsed = parse_users_query(params, default_select)
    if isinstance(parsed, str):
        query, skiptoken = parse_cursor(graph, parsed, default_select)
        page = graph.users_page(query, skiptoken=skiptoken)
    else:
        query = parsed
        page = graph.users_page(query)
    body: UsersListBody = {
        "value": page.value,
        "nextCursor": graph.encode_cursor(query, page.next_link) if page.next_link else None,
    }
    # Advanced queries always ask Graph for the count; callers get it when they asked.
    if page.count is not None and query.count:
        body["count"] = page.count
    return ApiResponse(200, body)


def get_user(graph: GraphClient, user_id: str, params: Mapping[str, str], default_select: tuple[str, ...]) -> ApiResponse:
    """``GET /api/users/{id}``: one user by object id or userPrincipalName."""
    _check_names(params, GET_PARAMETERS)
    if not _utf8(user_id) or not is_user_key(user_id):
        raise InvalidRequestError("Path parameter 'id' must be a user's object id or userPrincipalName.", parameter="id")
    select = parse_select(params.get("select"), default_select)
    return ApiResponse(200, graph.get_user(user_id, select))


def check_no_parameters(params: Mapping[str, str]) -> None:
    """Refuse query parameters on endpoints that take none (the function key aside)."""
    _check_names(params, frozenset({"code"}))


SYNC_MODES = ("incremental", "full")


def parse_sync_request(body: bytes) -> str:
    """``POST /api/sync``'s body: none, ``{"mode": "incremental"}`` or ``{"mode": "full"}``; the mode."""
    if not body.strip():
        return "incremental"
    problem = 'The body must be empty, {"mode": "incremental"} or {"mode": "full"}.'
    try:
        request = orjson.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError(f"The body is not JSON. {problem}", parameter="body") from None
    if not isinstance(request, dict) or set(request) != {"mode"} or request["mode"] not in SYNC_MODES:
        raise InvalidRequestError(problem, parameter="mode")
    return str(request["mode"])


def sync_status(status: dict[str, Any] | None) -> ApiResponse:
    """``GET /api/sync/status``: ``{"lastRun", "lastSuccess", "stale"}`` (and ``unfinishedRound``), 404 before any run."""
    if status is None:
        raise NotFoundError("No sync has run yet; POST /api/sync starts one.")
    return ApiResponse(200, status)
