"""Graph's ``/users/delta``: a full round, then rounds of changes, with the switches that make it misbehave as Graph may.

https://learn.microsoft.com/graph/delta-query-overview
"""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from typing import Any

from .directory import QueryError, represent
from .state import Tenant
from .wire import Reply, Request, graph_reply

# 400 texts Graph answers to a delta or skip token whose state cannot continue, as users
# report them (Graph's reference gives no list): a full round that did not reach its
# deltaLink in time, and a request carrying both tokens.
# https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
DELTA_STATE_ERRORS = {
    "steady-state": "Sync must reach steady state within 30 days.",
    "both-tokens": "Both skiptoken and deltatoken can't be in the same request.",
}


def delta(tenant: Tenant, req: Request) -> dict[str, Any]:
    """``/users/delta``: a full round, then rounds of changes; state travels in the tokens.

    Switches on the tenant: ``delta_expiry_status`` (410 ``resyncRequired``
    or 400 ``syncStateNotFound`` for an expired token), ``delta_minimal``
    (minimal updates even without ``Prefer: return=minimal``),
    ``delta_unify`` (one entry per object in a round of changes),
    ``delta_removed_then_live`` (share of users a full round also sends as an
    earlier removal), ``delta_replay`` (the first entry of each page again),
    ``delta_outage_from`` (a full round's pages from that offset answer 503: the
    round is left open and can be resumed from its last link), ``delta_state_error``
    (the next stored token answered 400 with a DELTA_STATE_ERRORS text) and
    ``delta_lose_edits`` (users a full round edits while it runs and delta never shows)
    and ``delta_replay_old`` (share of changes served in earlier rounds that a round of
    changes serves again, picked by a generator seeded with the tenant's seed and the round).
    Any number of full rounds may run at once: a round's state is in its tokens.
    """
    q = dict(req.query)
    directory = tenant.directory
    prefer = req.header("Prefer", "")
    size_match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
    # "The odata.maxpagesize maximum value is 200 for objects, such as users and contacts [...] And the
    # same number is returned if odata.maxpagesize is not set. Even if a higher value is specified, the
    # API will cap the page size": a Microsoft moderator on Microsoft Q&A, question 2276060
    # (https://learn.microsoft.com/answers/questions/2276060); users delta reported capped at 200 in
    # question 5875141. ``delta_page_cap`` is the switch (a benchmark may raise it to compare).
    cap = max(1, tenant.delta_page_cap)
    size = min(cap, max(1, int(size_match.group(1)))) if size_match else cap
    # $top is not a delta option: "Use of $top parameter is not supported" for users delta, and it
    # is ignored (the pages are as without it): https://learn.microsoft.com/graph/api/user-delta,
    # https://learn.microsoft.com/answers/questions/1090464. So $top is read nowhere here.
    # Without the preference an update carries every selected property that has a value;
    # with it, id and the changed properties only. https://learn.microsoft.com/graph/api/user-delta
    minimal = tenant.delta_minimal or bool(re.search(r"return=minimal", prefer))
    if q.get("$deltatoken") == "":
        del q["$deltatoken"]  # the empty token of a 410's Location: the initial query
    if q.get("$deltatoken") == "latest" and "$skiptoken" not in q:
        return _sync_from_now(tenant, req, q)
    with tenant.lock:
        if "$skiptoken" in q and "$deltatoken" in q:
            raise graph_reply(req, 400, "BadRequest", DELTA_STATE_ERRORS["both-tokens"])
        if ("$skiptoken" in q or "$deltatoken" in q) and tenant.delta_state_error:
            text, tenant.delta_state_error = DELTA_STATE_ERRORS[tenant.delta_state_error], None  # once
            raise graph_reply(req, 400, "BadRequest", text)
        if "$skiptoken" in q or "$deltatoken" in q:
            raw = q.get("$skiptoken") or q.get("$deltatoken") or ""
            try:
                token = json.loads(base64.urlsafe_b64decode(raw + "=="))
            except ValueError as exc:
                raise QueryError("Request_BadRequest", "The delta or skip token is malformed.") from exc
            if not isinstance(token, dict) or not _TOKEN_FIELDS <= set(token):
                raise QueryError("Request_BadRequest", "The delta or skip token is malformed.")
            if token.get("epoch") != directory.delta_epoch:
                raise _expired_state(tenant, req, token)
            if "$deltatoken" in q:  # a new round of changes since the token's position
                token = {**token, "base": token["target"], "target": directory.seq, "offset": 0, "full": False, "page": 0}
        else:
            select = tuple(f for f in (q.get("$select") or "id,displayName").split(",") if f)
            directory.select(",".join(select))  # 400 for unknown properties, as Graph
            # A full round serves the users as they were ordered when it started (``start``).
            token = {
                "select": select,
                "full": True,
                "base": 0,
                "target": directory.seq,
                "start": directory.seq,
                "offset": 0,
                "epoch": directory.delta_epoch,
                "round": uuid.uuid4().hex,
                "ids": _scope(q.get("$filter")),
            }
        select = tuple(token["select"])
        offset = token["offset"]
        scope = set(token["ids"]) if token.get("ids") is not None else None
        if token["full"] and tenant.delta_outage_from is not None and offset >= tenant.delta_outage_from:
            raise graph_reply(req, 503, "serviceNotAvailable", "The service is temporarily unavailable.")
        if token["full"]:
            ids = directory.ids_at(token["start"])
            if scope is not None:
                ids = [u for u in ids if u in scope]
        if token["full"] and offset > 0 and tenant.delta_lose_edits:
            for uid in ids[: min(offset, tenant.delta_lose_edits)]:
                if uid in directory.users:
                    directory.update(uid, displayName=f"Edited during a round {uid[:8]}")
            tenant.lossy_rounds.add(token["round"])
            tenant.delta_lose_edits = 0
        if token["full"]:
            total = len(ids)
        else:
            items = directory.changes_since(token["base"], token["target"], select, minimal=minimal, unify=tenant.delta_unify)
            if tenant.delta_replay_old:
                items = _replays(tenant, token, select) + items
            if scope is not None:
                items = [i for i in items if i["id"] in scope]
            total = len(items)
        if offset + size < total:
            size = _short(tenant, token, offset, size)
        if token["full"]:
            page = directory.full_round_page(ids, offset, size, select, tenant.delta_removed_then_live)
        else:
            page = items[offset : offset + size]
        if tenant.delta_replay and page:
            page = [*page, dict(page[0])]  # Graph may return an object more than once
    body: dict[str, Any] = {"@odata.context": f"{tenant.url}/v1.0/$metadata#users(delta)", "value": page}
    base_url = f"{tenant.url}/v1.0/users/delta?"

    def encode(t: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(t).encode()).decode().rstrip("=")

    if offset + size < total:
        body["@odata.nextLink"] = (
            base_url + "$skiptoken=" + encode({**token, "offset": offset + size, "page": token.get("page", 0) + 1})
        )
    else:
        end = {**token, "offset": 0, "full": False, "round": None, "page": 0}
        if token["full"] and token["round"] in tenant.lossy_rounds:
            end["target"] = directory.seq  # the edits made during the round never show
        body["@odata.deltaLink"] = base_url + "$deltatoken=" + encode(end)
    return body


def _short(tenant: Tenant, token: dict[str, Any], offset: int, size: int) -> int:
    """How many entries a page before a round's last holds: ``size``, or fewer (none, even) on some pages.

    "Sometimes, an internal timeout threshold is also applied by the API. Even if there are more
    [objects] available, the server may return fewer than 200": Microsoft Q&A 2276060
    (https://learn.microsoft.com/answers/questions/2276060); clients must follow the nextLink of
    an empty page too (https://learn.microsoft.com/graph/delta-query-overview: a round ends only
    with a deltaLink). Picked by a generator seeded with the tenant's seed, the round and the
    offset (not the round's random id), so a test sees the same pages every run, and a page asked
    for again is the same page. A quarter of the short pages are empty.
    """
    if not tenant.delta_short_pages:
        return size
    # The page's number is in the seed too: after an empty page the next one (same offset) is drawn anew.
    page = token.get("page", 0)
    rng = random.Random(f"{tenant.seed}:{token['full']}:{token['start']}:{token['base']}:{token['target']}:{offset}:{page}")
    if rng.random() >= tenant.delta_short_pages:
        return size
    return 0 if rng.random() < 0.25 else rng.randrange(1, size)  # 0: an empty page with a nextLink


def _sync_from_now(tenant: Tenant, req: Request, q: dict[str, str]) -> dict[str, Any]:
    """``$deltatoken=latest``: a deltaLink at once and no data; the next round has the changes from now on.

    "Microsoft Entra resources [...] support the optional query parameter $deltaToken=latest to
    get a deltaLink without any data" ("sync from now"), and the deltaLink keeps the request's
    ``$select``: https://learn.microsoft.com/graph/delta-query-overview#use-delta-query-to-track-changes-in-a-resource-collection
    ``delta_latest_refused`` answers 400 instead, as a service without the option would.
    """
    directory = tenant.directory
    with tenant.lock:
        if tenant.delta_latest_refused:
            raise graph_reply(req, 400, "Request_UnsupportedQuery", "The query parameter '$deltatoken=latest' is not supported.")
        select = tuple(f for f in (q.get("$select") or "id,displayName").split(",") if f)
        directory.select(",".join(select))  # 400 for unknown properties, as for any delta query
        token = {
            "select": select,
            "full": False,
            "base": directory.seq,
            "target": directory.seq,
            "start": directory.seq,
            "offset": 0,
            "epoch": directory.delta_epoch,
            "round": None,
            "ids": _scope(q.get("$filter")),
        }
    link = base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")
    return {
        "@odata.context": f"{tenant.url}/v1.0/$metadata#users(delta)",
        "value": [],
        "@odata.deltaLink": f"{tenant.url}/v1.0/users/delta?$deltatoken={link}",
    }


# What every delta or skip token this emulator issues carries.
_TOKEN_FIELDS = frozenset({"select", "full", "base", "target", "start", "offset", "epoch", "round", "ids"})


def _scope(filter_: str | None) -> list[str] | None:
    """The object ids a delta ``$filter`` scopes the round to: ``id eq '...'`` joined by ``or``.

    "Scoping filters allow you to track changes to one or more specific users or
    groups, filtering only by object ID."
    https://learn.microsoft.com/graph/delta-query-overview#optional-query-parameters
    """
    if filter_ is None:
        return None
    ids = []
    for clause in re.split(r"\s+or\s+", filter_.strip(), flags=re.I):
        m = re.fullmatch(r"\(?\s*id\s+eq\s+'([0-9a-fA-F-]{36})'\s*\)?", clause.strip(), flags=re.I)
        if m is None:
            raise QueryError(
                "Request_UnsupportedQuery",
                "Unsupported or invalid query filter clause specified for property of resource 'User': "
                "delta filters by object id only (id eq '...' joined by or).",
            )
        ids.append(m.group(1).lower())
    return ids


def _replays(tenant: Tenant, token: dict[str, Any], select: tuple[str, ...]) -> list[dict[str, Any]]:
    """Changes served in earlier rounds, served again ("the same change appears in subsequent responses").

    https://learn.microsoft.com/graph/delta-query-overview#replays
    Seeded by the tenant's seed and the round's position, so a test sees the same
    replays every run. A replayed object comes as it is now (a removal only while
    it is still gone): a replay repeats a change, it never goes back in time.
    """
    directory = tenant.directory
    earlier = [e for e in directory.events if e[0] <= token["base"]]
    if not earlier:
        return []
    rng = random.Random(f"{tenant.seed}:{token['base']}:{token['target']}")
    picked = [e for e in earlier if rng.random() < tenant.delta_replay_old]
    out: list[dict[str, Any]] = []
    for _, uid, kind, props in picked:
        user = directory.users.get(uid)
        if user is not None:
            out.append(represent(user, select))
        elif kind == "removed":
            out.append({"id": uid, "@removed": {"reason": props.get("reason", "deleted")}})
    return out


def _expired_state(tenant: Tenant, req: Request, token: dict[str, Any]) -> Reply:
    """An expired delta state, answered the way ``delta_expiry_status`` says Graph may answer it.

    410 Gone with ``resyncRequired``, or 400 with ``syncStateNotFound`` (what
    directory objects get once a token is older than 7 days):
    https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
    https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/
    """
    if tenant.delta_expiry_status == 400:
        return graph_reply(
            req,
            400,
            "syncStateNotFound",
            "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
        )
    reply = graph_reply(
        req,
        410,
        "resyncRequired",
        "Resync required. Replace any local cached copies of the "
        "directory objects with the objects returned by a new delta query.",
    )
    # "410 (gone) and a Location header containing a request URL with an empty
    # $deltaToken (same as the initial query)":
    # https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
    select = ",".join(token.get("select") or ())
    reply.headers["Location"] = f"{tenant.url}/v1.0/users/delta?" + (f"$select={select}&" if select else "") + "$deltatoken="
    return reply
