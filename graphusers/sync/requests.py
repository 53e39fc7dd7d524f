"""Sync requests that cannot be lost: one marker blob per request, claimed by the run that serves it.

Every source of sync requests (``POST /api/sync`` through the queue today, change
notifications later) records a request as ``requests/<id>.json`` with If-None-Match,
so a redelivered message records nothing twice. The run that holds the lock claims
every pending request when it starts (``running``, with its run id; a full request
makes the run a full round), and marks them ``finished`` with its outcome. A request
that arrives while a run is under way stays ``pending``: that run looks again after
it released the lock and serves it then, so a full request is never taken as done by
an incremental run that had already started. A run that failed puts its requests
back to ``pending``; a run that died leaves them ``running`` under its id, and the
next lock holder takes them over (holding the lock proves that run is gone).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..storage import SyncStore

logger = logging.getLogger(__name__)

REQUESTS_PREFIX = "requests/"
RECENT = 10  # requests shown in the status
# Finished requests kept (the oldest go first): each status read and each run reads them all.
KEEP_FINISHED = 10
# Request blobs one run (or one status read) looks at: a flood of requests costs bounded time; the
# rest wait for the next runs (a run serves more in its follow-up rounds).
MAX_SCAN = 100
_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class SyncRequest:
    """One request for a sync: its id, ``full`` or ``incremental``, when and where it came from."""

    id: str
    mode: str
    requested: str
    source: str = "queue"


def valid_id(request_id: object) -> bool:
    """True for an id this module may put into a blob name."""
    return isinstance(request_id, str) and bool(_ID.match(request_id))


def _name(request_id: str) -> str:
    return f"{REQUESTS_PREFIX}{request_id}.json"


def record(store: SyncStore, request: SyncRequest) -> None:
    """Record ``request`` as pending (once: a redelivered request changes nothing)."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    body = {
        "requestId": request.id,
        "mode": request.mode,
        "requested": request.requested,
        "source": request.source,
        "state": "pending",
    }
    try:
        store.write_json(_name(request.id), body, None, run_id=request.id)
    except (ResourceExistsError, ResourceModifiedError):
        logger.info("Sync request %s was recorded before", request.id)


@dataclass
class Claimed:
    """A request this run took, and the ETag of its marker since."""

    name: str
    body: dict[str, Any]
    etag: str


def _load(store: SyncStore) -> list[tuple[str, dict[str, Any], str]]:
    from azure.core.exceptions import ResourceNotFoundError

    found = []
    try:
        names = store.list_names(REQUESTS_PREFIX)
    except ResourceNotFoundError:  # no container yet: no requests
        return []
    for name in names[:MAX_SCAN]:
        try:
            body, etag = store.read_json(name)
        except ValueError:
            continue  # not JSON: nothing this module wrote
        if isinstance(body, dict) and etag and body.get("mode") in ("full", "incremental"):
            found.append((name, body, etag))
    return found


def pending(store: SyncStore) -> list[dict[str, Any]]:
    """The requests waiting for a run."""
    return [body for _, body, _ in _load(store) if body.get("state") == "pending"]


def claim(store: SyncStore, run_id: str) -> list[Claimed]:
    """Take every request no run serves (the caller holds the lock); a concurrent change skips that one."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    claimed = []
    for name, body, etag in _load(store):
        state = body.get("state")
        if state == "running" and body.get("runId") != run_id:
            logger.warning(
                "Sync request %s was left running by run %s; this run takes it over", body.get("requestId"), body.get("runId")
            )
        elif state != "pending":
            continue
        new = {**body, "state": "running", "runId": run_id}
        try:
            claimed.append(Claimed(name, new, store.write_json(name, new, etag, run_id=run_id)))
        except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
            continue
    return claimed


def finish(store: SyncStore, claimed: list[Claimed], *, run_id: str, status: str, finished: str) -> None:
    """Mark the claimed requests served (``succeeded``) or back to pending; never fails the run."""
    for item in claimed:
        if status == "succeeded":
            new = {**item.body, "state": "finished", "status": status, "finished": finished, "runId": run_id}
            if len(claimed) > 1:
                new["mergedWith"] = len(claimed) - 1  # requests one run served together
        else:
            new = {**item.body, "state": "pending", "lastRunId": run_id, "lastStatus": status}
            new["attempts"] = int(item.body.get("attempts") or 0) + 1
            new.pop("runId", None)
        try:
            store.write_json(item.name, new, item.etag, run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - the next lock holder takes a request left running over
            logger.warning("Could not update sync request %s (%s)", item.body.get("requestId"), type(exc).__name__)
    if claimed:
        _prune(store)


def _prune(store: SyncStore) -> None:
    try:
        done = sorted(
            ((str(body.get("finished", "")), name, etag) for name, body, etag in _load(store) if body.get("state") == "finished"),
            reverse=True,
        )
        for _, name, etag in done[KEEP_FINISHED:]:
            store.delete(name, etag)
    except Exception as exc:  # noqa: BLE001 - tidying only
        logger.warning("Could not prune finished sync requests (%s)", type(exc).__name__)


def recent(store: SyncStore) -> list[dict[str, Any]]:
    """The newest requests (pending and running first), as the status shows them."""
    rows = []
    for _, body, _ in _load(store):
        row = {k: body.get(k) for k in ("requestId", "mode", "state", "requested", "runId", "status", "finished", "lastStatus")}
        rows.append({k: v for k, v in row.items() if v is not None})
    rows.sort(key=lambda r: (r["state"] == "finished", str(r.get("requested", ""))), reverse=False)
    unfinished = [r for r in rows if r["state"] != "finished"]
    finished = sorted((r for r in rows if r["state"] == "finished"), key=lambda r: str(r.get("finished", "")), reverse=True)
    return (unfinished + finished)[:RECENT]


def parse_message(text: str | bytes) -> tuple[str | None, str]:
    """A queue message's request id (``None`` if it has none usable) and mode (``incremental`` unless ``full``)."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return None, "incremental"
    if not isinstance(body, dict):
        return None, "incremental"
    request_id = body.get("requestId")
    return (request_id if valid_id(request_id) else None), ("full" if body.get("mode") == "full" else "incremental")


def request_from_message(text: str | bytes, message_id: str | None) -> SyncRequest:
    """The request a queue message carries; one without a usable id is named by the message's id.

    Naming it by the message keeps a redelivered message one request.
    """
    import uuid
    from datetime import UTC, datetime

    request_id, mode = parse_message(text)
    if request_id is None:
        request_id = f"msg-{message_id}"[:64]
        if not valid_id(request_id):
            request_id = uuid.uuid4().hex
    return SyncRequest(request_id, mode, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
