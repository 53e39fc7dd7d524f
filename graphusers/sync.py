"""The scheduled sync: a delta-query snapshot of the tenant's users in Blob Storage.

First run, or when the stored deltaLink is missing, too old or answered with
410 Gone: a full round of ``/users/delta`` streamed into a staging blob, then
into the snapshot. Later runs follow the deltaLink and apply only the changes,
streaming the old snapshot line by line into the new one, so memory holds one
page plus the change set, never the tenant.

Crash safety: the new snapshot is committed in one step with an ETag
condition, and ``state.json`` moves to the new deltaLink only after that. A
failure anywhere before leaves both exactly as they were; a failure between
the two commits leaves the old deltaLink, whose replay is idempotent.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import AppError, ResyncRequiredError
from .graph import GraphClient
from .storage import STATE_BLOB, USERS_BLOB, SyncStore, storage_error

logger = logging.getLogger(__name__)

PAGE_SIZE = 999  # odata.maxpagesize preference for delta rounds
# Graph keeps directory delta tokens for 7 days; start over a little before that.
# https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
DELTA_TOKEN_MAX_AGE = 6.5 * 24 * 3600
PROGRESS_INTERVAL = 10.0  # seconds between progress lines
LEASE_RENEW_INTERVAL = 20.0  # seconds; the lease lasts 60


@dataclass
class SyncSummary:
    """The ``lastSync`` record of one run."""

    runId: str  # noqa: N815 - JSON field names as stored in state.json
    started: str
    finished: str = ""
    mode: str = ""  # full | incremental
    pages: int = 0
    users: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    graphRequests: int = 0  # noqa: N815
    status: str = "running"  # succeeded | skipped | failed
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The summary as stored and served."""
        return asdict(self)


_REMOVED: dict[str, Any] = {}  # sentinel: the change removes the user


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    """A user record with "id" first and no OData annotations."""
    out = {"id": item["id"]}
    out.update((k, v) for k, v in item.items() if k != "id" and "@" not in k)
    return out


def _dumps(user: dict[str, Any]) -> str:
    return json.dumps(user, separators=(",", ":"), ensure_ascii=False)


def _line_id(line: str) -> str:
    # Snapshot lines are written with "id" first: slice instead of parsing
    # every line of an unchanged tenant.
    if line.startswith('{"id":"'):
        end = line.find('"', 7)
        if end > 7:
            return line[7:end]
    return str(json.loads(line)["id"])


class _Progress:
    """Logs progress at a steady interval and keeps the lease alive."""

    def __init__(self, summary: SyncSummary, lease: Any, clock: Callable[[], float], interval: float) -> None:
        self.summary, self.lease, self.clock, self.interval = summary, lease, clock, interval
        self.last_log = self.last_renew = clock()

    def page(self, users: int) -> None:
        self.summary.pages += 1
        self.summary.users += users
        now = self.clock()
        if now - self.last_log >= self.interval:
            logger.info("Sync %s in progress: %d pages, %d users so far",
                        self.summary.runId, self.summary.pages, self.summary.users)
            self.last_log = now
        if self.lease is not None and now - self.last_renew >= LEASE_RENEW_INTERVAL:
            self.lease.renew()
            self.last_renew = now


class UserSync:
    """One sync job over a Graph client and a store; ``clock`` and ``wall`` are seams for tests."""

    def __init__(self, graph: GraphClient, store: SyncStore, select: tuple[str, ...], *,
                 page_size: int = PAGE_SIZE, progress_interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.graph, self.store, self.select = graph, store, select
        self.page_size, self.progress_interval = page_size, progress_interval
        self.clock, self.wall = clock, wall
        self._previous_users = 0
        self._requests_before = 0

    def run(self) -> SyncSummary:
        """Run one sync; a concurrent run makes this one return at once with status "skipped"."""
        summary = SyncSummary(runId=uuid.uuid4().hex[:12], started=_now())
        try:
            self.store.ensure()
            lease = self.store.try_lease()
        except Exception as exc:
            if _is_storage_failure(exc):
                raise storage_error(exc, "Starting the sync") from exc
            raise
        if lease is None:
            summary.status, summary.finished = "skipped", _now()
            summary.message = "A sync is already running; this request did nothing."
            logger.info("Sync %s skipped: another sync holds the lock", summary.runId)
            return summary
        self._requests_before = self.graph.requests_sent
        try:
            self._run(summary, lease)
        except Exception as exc:
            summary.status, summary.finished = "failed", _now()
            summary.graphRequests = self.graph.requests_sent - self._requests_before
            logger.error("Sync %s failed after %d pages (%s); users.jsonl and state.json are unchanged",
                         summary.runId, summary.pages, type(exc).__name__)
            if _is_storage_failure(exc):
                raise storage_error(exc, f"Sync {summary.runId}") from exc
            raise
        finally:
            try:
                lease.release()
            except Exception:  # noqa: BLE001 - the lease expires on its own
                logger.warning("Could not release the sync lock; it expires within a minute")
        logger.info("Sync %s %s: mode=%s pages=%d users=%d added=%d updated=%d removed=%d graph_requests=%d",
                    summary.runId, summary.status, summary.mode, summary.pages, summary.users, summary.added,
                    summary.updated, summary.removed, summary.graphRequests)
        return summary

    def _run(self, summary: SyncSummary, lease: Any) -> None:
        state, state_etag = self.store.read_json(STATE_BLOB)
        self._previous_users = int(((state or {}).get("lastSync") or {}).get("users", 0))
        snapshot_etag = self.store.etag(USERS_BLOB)
        progress = _Progress(summary, lease, self.clock, self.progress_interval)
        delta_link = self._usable_delta_link(state, snapshot_etag)
        delta_issued = self.wall()
        if delta_link is not None:
            try:
                summary.mode = "incremental"
                new_link, new_etag = self._incremental(summary, progress, delta_link, snapshot_etag)
            except ResyncRequiredError:
                logger.warning("Graph expired the delta token (410); starting a full sync")
                summary.pages = summary.users = 0
                delta_link = None
        if delta_link is None:
            summary.mode = "full"
            new_link, new_etag = self._full(summary, progress, snapshot_etag)
        summary.status, summary.finished = "succeeded", _now()
        summary.graphRequests = self.graph.requests_sent - self._requests_before
        self.store.write_json(STATE_BLOB, {
            "deltaLink": new_link,
            "deltaLinkIssued": delta_issued,
            "snapshotEtag": new_etag,
            "lastSync": summary.as_dict(),
        }, state_etag)

    def _usable_delta_link(self, state: dict[str, Any] | None, snapshot_etag: str | None) -> str | None:
        if not state or not state.get("deltaLink") or snapshot_etag is None:
            return None
        link = str(state["deltaLink"])
        if not self.graph.is_own_url(link):
            logger.warning("The stored deltaLink is not on GRAPH_ENDPOINT; starting a full sync")
            return None
        if self.wall() - float(state.get("deltaLinkIssued", 0)) > DELTA_TOKEN_MAX_AGE:
            logger.info("The stored delta token is older than Graph keeps them; starting a full sync")
            return None
        return link

    def _rounds(self, delta_link: str | None, progress: _Progress) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        for page in self.graph.iter_delta(delta_link, self.select, self.page_size):
            progress.page(len(page.value))
            yield page.value, page.delta_link

    def _full(self, summary: SyncSummary, progress: _Progress, snapshot_etag: str | None) -> tuple[str, str]:
        staging = f"staging/full-{summary.runId}.jsonl"
        writer = self.store.writer(staging, summary.runId)
        seen: set[str] = set()
        # Graph may return an object twice in a round (replays); the later copy wins.
        replays: dict[str, dict[str, Any]] = {}
        delta_link: str | None = None
        try:
            for value, link in self._rounds(None, progress):
                for item in value:
                    uid = item["id"]
                    if "@removed" in item:
                        replays[uid] = _REMOVED
                    elif uid in seen:
                        prev = replays.get(uid)
                        replays[uid] = {**(prev or {}), **_clean(item)} if prev is not _REMOVED else _clean(item)
                    else:
                        seen.add(uid)
                        writer.write(_dumps(_clean(item)))
                delta_link = link or delta_link
            writer.commit(None)
            del seen
            new_etag, counts = self._rewrite(summary, self.store.iter_lines(staging, self.store.etag(staging)),
                                             replays, snapshot_etag)
        finally:
            self.store.delete(staging)
        summary.users = counts["users"]
        assert delta_link is not None
        return delta_link, new_etag

    def _incremental(self, summary: SyncSummary, progress: _Progress, delta_link: str,
                     snapshot_etag: str | None) -> tuple[str, str]:
        changes: dict[str, dict[str, Any]] = {}
        reasons: dict[str, str] = {}
        new_link: str | None = None
        for value, link in self._rounds(delta_link, progress):
            for item in value:
                uid = item["id"]
                if "@removed" in item:
                    changes[uid] = _REMOVED
                    reasons[uid] = str((item.get("@removed") or {}).get("reason", "deleted"))
                else:
                    prev = changes.get(uid)
                    # An updated user may carry only the properties that changed: merge.
                    changes[uid] = {**prev, **_clean(item)} if prev else _clean(item)
            new_link = link or new_link
        assert new_link is not None
        if not changes:
            # Nothing changed: keep the snapshot as it is, no rewrite, no change log.
            summary.users = self._previous_users
            assert snapshot_etag is not None
            return new_link, snapshot_etag
        log: list[str] = []
        new_etag, counts = self._rewrite(summary, self.store.iter_lines(USERS_BLOB, snapshot_etag), changes,
                                         snapshot_etag, log, reasons)
        summary.users = counts["users"]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.store.write_lines(f"changes/{stamp}-{summary.runId}.jsonl", log)
        return new_link, new_etag

    def _rewrite(self, summary: SyncSummary, old: Iterator[str], changes: dict[str, dict[str, Any]],
                 snapshot_etag: str | None, log: list[str] | None = None,
                 reasons: dict[str, str] | None = None) -> tuple[str, dict[str, int]]:
        """Stream ``old`` into a new snapshot with ``changes`` applied, and commit it atomically."""
        writer = self.store.writer(USERS_BLOB, summary.runId)
        done: set[str] = set()  # changed ids already applied: bounded by the change set
        for line in old:
            uid = _line_id(line)
            change = changes.get(uid)
            if change is None:
                writer.write(line)
                continue
            if uid in done:
                continue  # an earlier copy of a replayed user was already written
            done.add(uid)
            if change is _REMOVED:
                summary.removed += 1
                if log is not None:
                    log.append(_dumps({"change": "removed", "id": uid, "reason": (reasons or {}).get(uid, "deleted")}))
                continue
            merged = {**json.loads(line), **change}
            writer.write(_dumps(merged))
            summary.updated += 1
            if log is not None:
                log.append(_dumps({"change": "updated", "id": uid, "properties": change}))
        for uid, change in changes.items():
            if uid in done or change is _REMOVED:
                continue
            writer.write(_dumps(change))
            summary.added += 1
            if log is not None:
                log.append(_dumps({"change": "added", "id": uid, "properties": change}))
        if log is None:
            # A full round: every user is new to this snapshot; counts describe the tenant.
            summary.added, summary.updated, summary.removed = writer.lines, 0, 0
        return writer.commit(snapshot_etag), {"users": writer.lines}


def _is_storage_failure(exc: Exception) -> bool:
    """True for azure-storage's own errors (the app's errors and bugs pass through unchanged)."""
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError) and not isinstance(exc, AppError)


def read_status(store: SyncStore) -> dict[str, Any] | None:
    """The ``lastSync`` summary, or ``None`` before the first successful run."""
    try:
        state, _ = store.read_json(STATE_BLOB)
    except Exception as exc:
        if _is_storage_failure(exc):
            raise storage_error(exc, "Reading the sync status") from exc
        raise
    if not state:
        return None
    last = state.get("lastSync")
    return last if isinstance(last, dict) else None
