"""What a run did (``SyncSummary``), its record in ``status.json``, and what ``GET /api/sync/status`` answers."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import expiry, subscriptions
from ..notifications import enabled as notifications_enabled
from ..storage import CHECKPOINT_BLOB, STATUS_BLOB, SyncStore, storage_error
from . import requests

logger = logging.getLogger(__name__)

STATUS_WRITE_ATTEMPTS = 3


@dataclass
class SyncSummary:
    """What one run did: ``lastRun`` (and, when it succeeded, ``lastSuccess``) in ``status.json``."""

    runId: str  # noqa: N815 - JSON field names as stored and served
    started: str
    finished: str = ""
    mode: str | None = None  # full | incremental; None for a run skipped or failed before it chose
    reason: str | None = None  # a full round's reason (REASON_*); None for incremental
    pages: int = 0
    users: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    graphRequests: int = 0  # noqa: N815
    status: str = "running"  # succeeded | skipped | failed
    message: str = ""
    error: dict[str, str] | None = None  # {code, message} of a failed run
    # A full round continued from a checkpoint: {round, started, pages, users} as they were then.
    resumed: dict[str, Any] | None = None
    # A reconciliation: {added, changed, removed} relative to the snapshot delta had kept.
    drift: dict[str, int] | None = None
    # A full round's kind: "listing" (deltaLink from now on, then /users) or "delta"; None for incremental.
    fullRound: str | None = None  # noqa: N815
    # The blobs this run replaced (users.jsonl, changes/..., state.json), in the order it did; read
    # back from their metadata when a response was lost, so it is what storage holds.
    replaced: list[str] = field(default_factory=list)
    # The sync requests (POST /api/sync ids) this run served.
    requests: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as stored and served (``error``, ``resumed``, ``drift`` only when they apply)."""
        body = asdict(self)
        for optional in ("error", "resumed", "drift", "fullRound"):
            if body[optional] is None:
                del body[optional]
        return body


def stamp(wall: Callable[[], float]) -> str:
    """The wall clock as the status's UTC timestamps."""
    return datetime.fromtimestamp(wall(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_status(store: SyncStore, summary: SyncSummary) -> None:
    """Record the run in status.json (read, change, write with the ETag; a concurrent writer means retry)."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    for _ in range(STATUS_WRITE_ATTEMPTS):
        try:
            status, etag = store.read_json(STATUS_BLOB)
            last_success = (status or {}).get("lastSuccess")
            if summary.status == "succeeded":
                last_success = summary.as_dict()
            body = {"lastRun": summary.as_dict(), "lastSuccess": last_success}
            credential = expiry.current() or (status or {}).get("credential")
            if credential:
                body["credential"] = credential
            store.write_json(STATUS_BLOB, body, etag, run_id=summary.runId)
            return
        except (ResourceModifiedError, ResourceExistsError):
            continue
        except Exception as exc:  # noqa: BLE001 - the status must never turn a run into a failure
            logger.warning("Could not record sync %s in %s (%s)", summary.runId, STATUS_BLOB, type(exc).__name__)
            return
    logger.warning("Could not record sync %s in %s: it kept changing", summary.runId, STATUS_BLOB)


def _is_storage_failure(exc: Exception) -> bool:
    """True for azure-storage's own errors (the app's errors and bugs pass through unchanged)."""
    from azure.core.exceptions import AzureError

    from ..errors import AppError

    return isinstance(exc, AzureError) and not isinstance(exc, AppError)


def read_status(
    store: SyncStore, *, interval: float | None = None, wall: Callable[[], float] = time.time
) -> dict[str, Any] | None:
    """``{"lastRun", "lastSuccess", "stale", ...}`` from status.json, or ``None`` before anything happened.

    ``stale`` is true when the last success (or, before any, the last run) is older
    than twice the schedule's ``interval``: the timer stopped, or every run fails.
    ``unfinishedRound`` shows the progress of a full round a later run continues, also
    before any run finished (a worker killed in the first round writes no status.json).
    ``pendingResync`` and ``requests`` show what became of each sync request.
    """
    try:
        status, _ = store.read_json(STATUS_BLOB)
        checkpoint, _ = store.read_json(CHECKPOINT_BLOB)
        recent = requests.recent(store)
        # Change notifications (graphusers/subscriptions.py): read only while the feature is on.
        subscription = subscriptions.status(store) if notifications_enabled() else None
    except Exception as exc:
        if _is_storage_failure(exc):
            raise storage_error(exc, "Reading the sync status") from exc
        raise
    if status and not isinstance(status.get("lastRun"), dict):
        status = None
    if not status and not checkpoint and not recent and subscription is None:
        return None
    status = status or {}
    body: dict[str, Any] = {"lastRun": status.get("lastRun"), "lastSuccess": status.get("lastSuccess")}
    if status.get("credential"):
        body["credential"] = status["credential"]
    if interval:
        since = (body["lastSuccess"] or {}).get("finished") or (body["lastRun"] or {}).get("started")
        since = since or (checkpoint or {}).get("started")
        age = wall() - _epoch(str(since)) if since else math.inf
        body["stale"] = age > 2 * interval
    if checkpoint:
        body["unfinishedRound"] = {key: checkpoint.get(key) for key in ("round", "started", "saved", "reason", "pages", "users")}
    body["pendingResync"] = any(r["mode"] == "full" and r["state"] != "finished" for r in recent)
    body["requests"] = recent
    if subscription is not None:
        body["subscription"] = subscription
    return body


def _epoch(stamp_text: str) -> float:
    try:
        return datetime.strptime(stamp_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return -math.inf
