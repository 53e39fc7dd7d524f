"""Planning a run: what the delta state belongs to, and whether this run follows the deltaLink or does a full round."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..graph import API_VERSION

if TYPE_CHECKING:
    from .run import UserSync

logger = logging.getLogger(__name__)

# Graph keeps directory delta tokens for 7 days; start over a little before that.
# https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
DELTA_TOKEN_MAX_AGE = 6.5 * 24 * 3600

# Why a run was a full round (the summary's "reason"); an incremental run has none.
REASON_INITIAL = "initial"  # no usable snapshot or delta state
REASON_EXPIRED = "expired"  # the delta state is older than Graph keeps it, or Graph said so
REASON_QUERY_CHANGED = "query-changed"  # endpoint, API version, tenant or USER_SELECT differ from the state's
REASON_SELECT_CHANGED = REASON_QUERY_CHANGED  # the older name of the USER_SELECT case
REASON_REQUESTED = "requested"  # POST /api/sync {"mode": "full"}
REASON_RECONCILE = "reconcile"  # USER_SYNC_FULL_EVERY passed since the last full round
REASON_REJECTED = "state-rejected"  # Graph answered 400: the delta state cannot continue


def fingerprint(job: UserSync) -> dict[str, Any]:
    """What the delta state belongs to: a change in any of it makes the stored deltaLink useless."""
    return {
        "endpoint": str(getattr(job.graph, "endpoint", "")),
        "apiVersion": API_VERSION,
        "tenant": job.tenant,
        "select": list(job.select),
    }


def query_changed(job: UserSync, stored: dict[str, Any]) -> list[str]:
    """The fingerprint fields that differ from ``stored`` (a state.json or a checkpoint)."""
    mine = fingerprint(job)
    theirs = stored.get("fingerprint")
    if not isinstance(theirs, dict):
        # A state written before fingerprints: only $select was recorded.
        return [] if list(stored.get("select") or ()) == mine["select"] else ["select"]
    return [key for key in mine if theirs.get(key) != mine[key]]


def plan(job: UserSync, state: dict[str, Any] | None, snapshot_etag: str | None, full: bool) -> tuple[str | None, str]:
    """The deltaLink to follow, or ``None`` and the reason for a full round."""
    if full:
        logger.info("A full resync was requested")
        return None, REASON_REQUESTED
    if not state or not state.get("deltaLink") or snapshot_etag is None:
        return None, REASON_INITIAL
    changed = query_changed(job, state)
    if changed:
        # The stored deltaLink belongs to another query (its $select, tenant or endpoint):
        # following it would never fill new properties in, or mix two tenants.
        logger.info("The query changed since the snapshot was made (%s); starting a full sync", ", ".join(changed))
        return None, REASON_QUERY_CHANGED
    link = str(state["deltaLink"])
    if not job.graph.is_own_url(link):
        logger.warning("The stored deltaLink is not on GRAPH_ENDPOINT; starting a full sync")
        return None, REASON_QUERY_CHANGED
    if job.wall() - float(state.get("deltaLinkIssued", 0)) > DELTA_TOKEN_MAX_AGE:
        logger.info("The stored delta token is older than Graph keeps them; starting a full sync")
        return None, REASON_EXPIRED
    last_full = state.get("lastFull")
    if job.full_every and last_full is not None and job.wall() - float(last_full) > job.full_every:
        logger.info("USER_SYNC_FULL_EVERY passed since the last full round; reconciling with a full round")
        return None, REASON_RECONCILE
    return link, ""
