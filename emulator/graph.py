"""Microsoft Graph's users: list (paging, ``$filter``, ``$search``, ``$count``), get one user, and delta (see ``delta``).

Every answer carries Graph's ``request-id`` (see ``wire.graph_headers``).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import unquote, urlencode

import jwt

from .delta import delta
from .directory import QueryError
from .state import Tenant
from .wire import GRAPH_ROLE, Answer, Request, graph_headers, graph_reply


def handle(tenant: Tenant, req: Request) -> Answer:
    """``/v1.0/users``, ``/v1.0/users/delta`` and one user by id, UPN or ``users('...')``."""
    auth = req.header("Authorization", "")
    if not auth.startswith("Bearer ") or len(auth) <= 7:
        raise graph_reply(req, 401, "InvalidAuthenticationToken", "Access token is empty.")
    try:
        claims = tenant.verify_token(auth[7:], tenant.url)
    except jwt.ExpiredSignatureError as exc:
        raise graph_reply(req, 401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.") from exc
    except jwt.PyJWTError as exc:
        raise graph_reply(req, 401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.") from exc
    if GRAPH_ROLE not in claims.get("roles", []):
        raise graph_reply(req, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    if req.method != "GET":
        raise graph_reply(req, 405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
    rest = req.path[len("/v1.0/") :]
    body: bytes | dict[str, Any]
    try:
        if rest == "users":
            body = list_users(tenant, req)
        elif rest == "users/delta":
            body = delta(tenant, req)
        elif rest.startswith("users/") and rest.count("/") == 1:
            key = unquote(rest[len("users/") :])
            if key.startswith("$"):
                # OData reserves $ for system segments: a UPN starting with $
                # needs /users('$x@y.com'). https://learn.microsoft.com/graph/api/user-get
                raise graph_reply(req, 400, "BadRequest", f"Resource not found for the segment '{key[:64]}'.")
            body = get_user(tenant, req, key)
        elif rest.startswith("users(") and "/" not in rest:
            literal = re.fullmatch(r"users\('((?:[^']|'')*)'\)", unquote(rest))
            if literal is None:
                raise graph_reply(req, 400, "BadRequest", "Bad Request - Error in query syntax.")
            body = get_user(tenant, req, literal.group(1).replace("''", "'"))
        else:
            raise graph_reply(req, 400, "BadRequest", f"Resource not found for the segment '{rest[:64]}'.")
    except QueryError as exc:
        raise graph_reply(req, 400, exc.code, exc.message) from exc
    return 200, body, graph_headers(req)


def get_user(tenant: Tenant, req: Request, key: str) -> dict[str, Any]:
    """One user by object id or userPrincipalName, projected by ``$select``."""
    user = tenant.directory.find(key)
    if user is None:
        raise graph_reply(
            req,
            404,
            "Request_ResourceNotFound",
            f"Resource '{key[:128]}' does not exist or one of its queried reference-property objects are not present.",
        )
    return tenant.directory.select(req.query.get("$select"))(user)


def list_users(tenant: Tenant, req: Request) -> bytes:
    """One page of ``/users``, serialised."""
    q = req.query
    raw_top = q.get("$top", "100")
    if not (raw_top.isdigit() and 1 <= int(raw_top) <= 999):
        raise QueryError(
            "Request_BadRequest", f"Invalid page size specified: '{raw_top[:20]}'. Must be between 1 and 999 inclusive."
        )
    top = int(raw_top)
    # Advanced queries: https://learn.microsoft.com/graph/aad-advanced-queries#error-handling-for-advanced-queries-on-directory-objects
    eventual = req.header("ConsistencyLevel", "").lower() == "eventual"
    if "$search" in q and not eventual:
        raise QueryError(
            "Request_UnsupportedQuery",
            "Request with $search query parameter only works through "
            "MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        )
    # Without the header, $count=true is silently ignored (no @odata.count),
    # and it does not make an advanced query.
    count = eventual and q.get("$count", "").lower() == "true"
    key = (tenant.directory.seq, len(tenant.directory.users), tuple(sorted(q.items())), eventual)
    cached = tenant.page_cache.get(key)
    if cached is not None:
        return cached
    project = tenant.directory.select(q.get("$select"))
    offset = 0
    if "$skiptoken" in q:
        try:
            offset = int(base64.urlsafe_b64decode(q["$skiptoken"] + "==").decode().removeprefix("o:"))
        except ValueError as exc:
            raise QueryError(
                "Directory_ExpiredPageToken",
                "The specified page token value has expired and can no longer be included in your request.",
            ) from exc
    with tenant.lock:
        matches = tenant.directory.query(q.get("$filter"), q.get("$search"), advanced=count)
    body: dict[str, Any] = {"@odata.context": f"{tenant.url}/v1.0/$metadata#users"}
    if count and offset == 0:
        body["@odata.count"] = len(matches)
    body["value"] = [project(u) for u in matches[offset : offset + top]]
    if offset + top < len(matches):
        options = {k: v for k, v in q.items() if k != "$skiptoken"}
        options["$skiptoken"] = base64.urlsafe_b64encode(f"o:{offset + top}".encode()).decode().rstrip("=")
        body["@odata.nextLink"] = f"{tenant.url}/v1.0/users?" + urlencode(options, safe="$,:'()")
    # Pages are kept serialised: benchmarks read the same pages many times,
    # and the emulator must never be what limits a client's throughput.
    data = json.dumps(body, separators=(",", ":")).encode()
    with tenant.lock:
        if len(tenant.page_cache) > 5000:
            tenant.page_cache.clear()
        tenant.page_cache[key] = data
    return data
