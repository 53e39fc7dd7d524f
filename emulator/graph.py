"""Microsoft Graph's users: list (paging, ``$filter``, ``$search``, ``$count``), get one user, and delta (see ``delta``).

Every answer carries Graph's ``request-id`` (see ``wire.graph_headers``). A ``/users``
skip token is signed and bound to the query that issued it, and expires (see
``page_token``); the server sends Graph's answers chunked and, when accepted, gzipped.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import struct
import time
import uuid
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
    if req.path == "/v1.0/subscriptions" or req.path.startswith("/v1.0/subscriptions/"):
        # Change notifications on users need the same permission as reading them (User.Read.All).
        return tenant.notifier.handle(req, tenant.client_id)
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


# Graph's answer to a page token it will not continue: one it no longer holds, one sent
# with a query other than the one that issued it, or one that was re-encoded. The status
# and text as users report them (the paging docs name no list):
# https://github.com/microsoftgraph/msgraph-sdk-dotnet/issues/2254 (large tenants, the text),
# https://github.com/microsoftgraph/msgraph-sdk-java/issues/368 (options sent again with the link),
# and a token of an advanced query sent without ConsistencyLevel gets it too. "Follow the whole
# nextLink; don't extract the $skiptoken into another request": https://learn.microsoft.com/graph/paging
EXPIRED_PAGE_TOKEN = (
    "Directory_ExpiredPageToken",
    "The specified page token value has expired and can no longer be included in your request.",
)
# The query options a page token is bound to; with ConsistencyLevel and the path.
BOUND_OPTIONS = ("$filter", "$search", "$select", "$top", "$orderby", "$count", "$expand")
_TOKEN_MAGIC = b"EMpt"
# magic, offset, issued (ms), digest of the query, the directory's version, the last id served (16 bytes, or zeros)
_TOKEN = struct.Struct(">4sIQ16sQ16s")


def _binding(tenant: Tenant, req: Request, eventual: bool) -> bytes:
    """What a page token is bound to: the path, the bound options as sent (decoded), and ConsistencyLevel."""
    parts = [req.path, *(f"{k}={req.query.get(k)}" for k in BOUND_OPTIONS if k in req.query), f"eventual={eventual}"]
    return hmac.digest(tenant.page_token_key, "\n".join(parts).encode(), "sha256")[:16]


def page_token(tenant: Tenant, req: Request, eventual: bool, offset: int, last: str = "") -> str:
    """An opaque skip token, signed, in standard base64 (``+``, ``/``, ``=``: re-encoding it breaks it, as in Graph).

    It names the last user served, not only a position: a directory skip token continues after
    that object, so users removed from (or added to) pages already served do not move the next
    page's start. (Graph's directory skip tokens are opaque; users read the last object in them.)
    """
    try:
        last_bytes = uuid.UUID(last).bytes if last else bytes(16)
    except ValueError:
        last_bytes = bytes(16)
    body = _TOKEN.pack(
        _TOKEN_MAGIC,
        offset,
        int(time.time() * 1000),
        _binding(tenant, req, eventual),
        tenant.directory.seq,
        last_bytes,
    )
    mac = hmac.digest(tenant.page_token_key, body, "sha256")[:12]
    return base64.b64encode(body + mac).decode()


def read_page_token(tenant: Tenant, req: Request, eventual: bool, token: str) -> tuple[int, int, str]:
    """The offset, directory version and last id a skip token names; ``Directory_ExpiredPageToken`` unless this
    very query issued it in time."""
    try:
        raw = base64.b64decode(token, validate=True)
    except ValueError as exc:
        raise QueryError(*EXPIRED_PAGE_TOKEN) from exc
    body, mac = raw[: _TOKEN.size], raw[_TOKEN.size :]
    if len(raw) != _TOKEN.size + 12 or not hmac.compare_digest(mac, hmac.digest(tenant.page_token_key, body, "sha256")[:12]):
        raise QueryError(*EXPIRED_PAGE_TOKEN)
    _, offset, issued_ms, bound, seq, last = _TOKEN.unpack(body)
    if not hmac.compare_digest(bound, _binding(tenant, req, eventual)):
        raise QueryError(*EXPIRED_PAGE_TOKEN)
    if time.time() * 1000 - issued_ms > tenant.page_token_lifetime * 1000:
        raise QueryError(*EXPIRED_PAGE_TOKEN)
    return int(offset), int(seq), str(uuid.UUID(bytes=last)) if any(last) else ""


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
    # Checked on every request, cached page or not: a token expires with time.
    offset, issued_seq, last = read_page_token(tenant, req, eventual, q["$skiptoken"]) if "$skiptoken" in q else (0, 0, "")
    key = (tenant.directory.seq, len(tenant.directory.users), tuple(sorted(q.items())), eventual)
    now = time.monotonic()
    cached = tenant.page_cache.get(key)
    # A cached page holds a token issued when it was cached: reuse it only while that token is young.
    if cached is not None and now - cached[0] < min(60.0, tenant.page_token_lifetime / 10):
        return cached[1]
    project = tenant.directory.select(q.get("$select"))
    with tenant.lock:
        matches = tenant.directory.query(q.get("$filter"), q.get("$search"), advanced=count)
    body: dict[str, Any] = {"@odata.context": f"{tenant.url}/v1.0/$metadata#users"}
    if count and offset == 0:
        body["@odata.count"] = len(matches)
    if last and issued_seq != tenant.directory.seq:
        # The directory changed since the token was issued: continue after the last user served.
        # Only if that user is gone does the position decide (and a user may then be skipped).
        at = next((i for i, u in enumerate(matches) if u["id"] == last), None)
        offset = offset if at is None else at + 1
    served = matches[offset : offset + top]
    body["value"] = [project(u) for u in served]
    if offset + top < len(matches):
        options = {k: v for k, v in q.items() if k != "$skiptoken"}
        options["$skiptoken"] = page_token(tenant, req, eventual, offset + top, str(served[-1]["id"]) if served else "")
        body["@odata.nextLink"] = f"{tenant.url}/v1.0/users?" + urlencode(options, safe="$,:'()")
    # Pages are kept serialised: benchmarks read the same pages many times,
    # and the emulator must never be what limits a client's throughput.
    data = json.dumps(body, separators=(",", ":")).encode()
    with tenant.lock:
        if len(tenant.page_cache) > 5000:
            tenant.page_cache.clear()
        tenant.page_cache[key] = (now, data)
    return data
