"""The scheduled sync: a delta-query snapshot of the tenant's users in Blob Storage.

A **full round** of ``/users/delta`` runs on the first sync, when the stored
deltaLink is missing or too old, when Graph says the delta state expired (410
``resyncRequired``, or a 4xx such as 400 ``syncStateNotFound``), when
``USER_SELECT`` changed, or when a full resync was requested. It streams into a
staging blob, then into the snapshot. Later runs follow the deltaLink and apply
only the changes, streaming the old snapshot line by line into the new one, so
memory holds one page plus the change set, never the tenant.

Entries are applied in the order Graph sends them and the last occurrence of
an id decides: Graph may return an object more than once in a round and does
not promise to unify them (https://learn.microsoft.com/graph/delta-query-overview).
A removal followed by a live copy leaves the user present; a live copy followed
by a removal leaves it absent; live copies merge (a partial record, ``id`` plus
the changed properties, never replaces the stored line). In a full round only
the ids Graph repeats are held in memory: a first copy goes straight to the
staging blob, and a fixed-size filter of the ids seen so far tells a repeat
from a first copy.

Crash safety: the new snapshot is committed in one step with an ETag
condition, and ``state.json`` moves to the new deltaLink only after that. A
failure before that commit leaves both as they were; a failure between the
two commits leaves the old deltaLink, whose replay is idempotent and rewrites
the same ``changes/`` blob. Every run, of any outcome, is recorded in
``status.json``, which nothing else reads back: a status write cannot corrupt
the snapshot.
"""

from __future__ import annotations

import hashlib
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
from .storage import STAGING_PREFIX, STATE_BLOB, STATUS_BLOB, USERS_BLOB, SyncStore, storage_error

logger = logging.getLogger(__name__)

PAGE_SIZE = 999  # odata.maxpagesize preference for delta rounds
# Graph keeps directory delta tokens for 7 days; start over a little before that.
# https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
DELTA_TOKEN_MAX_AGE = 6.5 * 24 * 3600
PROGRESS_INTERVAL = 10.0  # seconds between progress lines
LEASE_RENEW_INTERVAL = 20.0  # seconds; the lease lasts 60
# Bits of the filter that spots repeated ids in a full round: 2 MiB whatever the
# tenant's size. At 1,000,000 ids about 0.5% of first copies look repeated and
# take the exact (held in memory) path; the result is the same either way.
SEEN_FILTER_BITS = 1 << 24
STATUS_WRITE_ATTEMPTS = 3

# Why a run was a full round (the summary's "reason"); an incremental run has none.
REASON_INITIAL = "initial"  # no usable snapshot or delta state
REASON_EXPIRED = "expired"  # the delta state is older than Graph keeps it, or Graph said so
REASON_SELECT_CHANGED = "select-changed"  # USER_SELECT differs from the snapshot's properties
REASON_REQUESTED = "requested"  # POST /api/sync {"mode": "full"}


@dataclass
class SyncSummary:
    """What one run did: ``lastRun`` (and, when it succeeded, ``lastSuccess``) in ``status.json``."""

    runId: str  # noqa: N815 - JSON field names as stored and served
    started: str
    finished: str = ""
    mode: str = ""  # full | incremental
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

    def as_dict(self) -> dict[str, Any]:
        """The summary as stored and served (``error`` only for a failed run)."""
        body = asdict(self)
        if body["error"] is None:
            del body["error"]
        return body


class _Fold:
    """What the entries of one id in a round add up to: present or not, and the merged properties (JSON)."""

    __slots__ = ("present", "props", "reason")

    def __init__(self) -> None:
        self.present = False
        self.props = ""  # JSON text: a repeated id costs a few hundred bytes, not a dict
        self.reason = ""


def _apply(folds: dict[str, _Fold], item: dict[str, Any]) -> None:
    """Fold one delta entry into ``folds``: the last occurrence decides presence, live copies merge."""
    fold = folds.get(item["id"])
    if fold is None:
        fold = folds[item["id"]] = _Fold()
    removed = item.get("@removed")
    if removed is not None or "@removed" in item:
        # "changed": soft-deleted (restorable for 30 days); "deleted": gone for good. Either way it
        # leaves the snapshot. https://learn.microsoft.com/graph/api/user-delta
        fold.present = False
        fold.reason = str(removed.get("reason", "deleted")) if isinstance(removed, dict) else "deleted"
        return
    fold.present = True
    clean = _clean(item)
    fold.props = _dumps({**json.loads(fold.props), **clean} if fold.props else clean)


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    """A user record with "id" first and no OData annotations."""
    out = {"id": item["id"]}
    out.update((k, v) for k, v in item.items() if k != "id" and "@" not in k)
    return out


def _dumps(record: dict[str, Any]) -> str:
    # U+2028/U+2029 are valid inside JSON strings but str.splitlines() splits
    # on them; JSON's \u escapes keep every record on one line for any reader.
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return _escape(text)


def _escape(line: str) -> str:
    if "\u2028" in line or "\u2029" in line:
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return line


def _line_id(line: str) -> str:
    # Snapshot lines are written with "id" first: slice instead of parsing
    # every line of an unchanged tenant.
    if line.startswith('{"id":"'):
        end = line.find('"', 7)
        if end > 7:
            return line[7:end]
    return str(json.loads(line)["id"])


class _SeenFilter:
    """A Bloom filter over ids: it may call a new id seen, never a seen id new."""

    def __init__(self, bits: int) -> None:
        self._size = max(8, bits)
        self._bits = bytearray((self._size + 7) // 8)

    def check_add(self, uid: str) -> bool:
        """True if ``uid`` was (probably) added before; adds it either way."""
        digest = hashlib.blake2b(uid.encode(), digest_size=12).digest()
        seen = True
        for i in (0, 4, 8):
            bit = int.from_bytes(digest[i : i + 4], "little") % self._size
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self._bits[byte] & mask:
                seen = False
                self._bits[byte] |= mask
        return seen


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
    """One sync job over a Graph client and a store; ``clock``, ``wall`` and ``seen_filter_bits`` are test seams."""

    def __init__(self, graph: GraphClient, store: SyncStore, select: tuple[str, ...], *,
                 page_size: int = PAGE_SIZE, progress_interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 seen_filter_bits: int = SEEN_FILTER_BITS) -> None:
        self.graph, self.store, self.select = graph, store, select
        self.page_size, self.progress_interval = page_size, progress_interval
        self.clock, self.wall = clock, wall
        self.seen_filter_bits = seen_filter_bits
        self._previous_users = 0
        self._requests_before: int | None = None  # Graph's request count when this run took the lock
        self._snapshot_replaced = False

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.wall(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def run(self, *, full: bool = False) -> SyncSummary:
        """Run one sync (``full``: a full resync on request); a concurrent run makes this one skip at once."""
        summary = SyncSummary(runId=uuid.uuid4().hex[:12], started=self._stamp())
        self._requests_before = None
        self._snapshot_replaced = False
        try:
            self.store.ensure()
            lease = self.store.try_lease()
        except Exception as exc:
            if _is_storage_failure(exc):
                # The container cannot be reached: status.json cannot be either, and
                # trying would only add the storage client's retries to the failure.
                raise storage_error(exc, "Starting the sync") from exc
            self._finish_failed(summary, exc)
            raise
        if lease is None:
            summary.status, summary.finished = "skipped", self._stamp()
            summary.message = "A sync is already running; this request did nothing."
            logger.info("Sync %s skipped: another sync holds the lock", summary.runId)
            self._write_status(summary)
            return summary
        self._requests_before = self.graph.requests_sent
        try:
            self._remove_stale_staging(summary.runId)
            self._run(summary, lease, full)
        except Exception as exc:
            error = exc
            if _is_storage_failure(exc):
                error = storage_error(exc, f"Sync {summary.runId}", snapshot_replaced=self._snapshot_replaced)
            self._finish_failed(summary, error)
            if error is not exc:
                raise error from exc
            raise
        finally:
            try:
                lease.release()
            except Exception:  # noqa: BLE001 - the lease expires on its own
                logger.warning("Could not release the sync lock; it expires within a minute")
        logger.info("Sync %s %s: mode=%s reason=%s pages=%d users=%d added=%d updated=%d removed=%d "
                    "graph_requests=%d", summary.runId, summary.status, summary.mode, summary.reason or "-",
                    summary.pages, summary.users, summary.added, summary.updated, summary.removed,
                    summary.graphRequests)
        self._write_status(summary)
        return summary

    def _finish_failed(self, summary: SyncSummary, exc: Exception) -> None:
        summary.status, summary.finished = "failed", self._stamp()
        if self._requests_before is not None:
            summary.graphRequests = self.graph.requests_sent - self._requests_before
        if isinstance(exc, AppError):
            summary.error = {"code": exc.code, "message": exc.message}
        else:
            summary.error = {"code": "internal_error", "message": "Unexpected error; see the function app's logs."}
        if self._snapshot_replaced:
            summary.message = ("users.jsonl was replaced but state.json was not updated; the next run replays "
                               "the same delta round, which is idempotent.")
            logger.error("Sync %s failed after replacing users.jsonl and before updating state.json (%s); "
                         "the next run replays the round", summary.runId, type(exc).__name__)
        else:
            summary.message = "users.jsonl and state.json are unchanged."
            logger.error("Sync %s failed after %d pages (%s); users.jsonl and state.json are unchanged",
                         summary.runId, summary.pages, type(exc).__name__)
        self._write_status(summary)

    def _write_status(self, summary: SyncSummary) -> None:
        """Record the run in status.json (read, change, write with the ETag; a concurrent writer means retry)."""
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        for _ in range(STATUS_WRITE_ATTEMPTS):
            try:
                status, etag = self.store.read_json(STATUS_BLOB)
                last_success = (status or {}).get("lastSuccess")
                if summary.status == "succeeded":
                    last_success = summary.as_dict()
                self.store.write_json(STATUS_BLOB, {"lastRun": summary.as_dict(), "lastSuccess": last_success}, etag)
                return
            except (ResourceModifiedError, ResourceExistsError):
                continue
            except Exception as exc:  # noqa: BLE001 - the status must never turn a run into a failure
                logger.warning("Could not record sync %s in %s (%s)", summary.runId, STATUS_BLOB, type(exc).__name__)
                return
        logger.warning("Could not record sync %s in %s: it kept changing", summary.runId, STATUS_BLOB)

    def _remove_stale_staging(self, run_id: str) -> None:
        # Only the lease holder gets here, so every staging blob belongs to a run
        # that died (a crash between the staging commit and its delete). They hold
        # a copy of the directory's personal data: remove them.
        for name in self.store.list_names(STAGING_PREFIX):
            if run_id not in name:
                self.store.delete(name)
                logger.warning("Removed %s left by an earlier sync that did not finish", name)

    def _run(self, summary: SyncSummary, lease: Any, full: bool) -> None:
        state, state_etag = self.store.read_json(STATE_BLOB)
        self._previous_users = int(((state or {}).get("lastSync") or {}).get("users", 0))
        snapshot_etag = self.store.etag(USERS_BLOB)
        progress = _Progress(summary, lease, self.clock, self.progress_interval)
        delta_link, reason = self._plan(state, snapshot_etag, full)
        delta_issued = self.wall()
        if delta_link is not None:
            try:
                summary.mode = "incremental"
                assert state is not None
                new_link, new_etag = self._incremental(summary, progress, delta_link, snapshot_etag,
                                                       float(state.get("deltaLinkIssued", 0)))
            except ResyncRequiredError as exc:
                logger.warning("Graph answered %s %s to the stored deltaLink: the delta state expired; "
                               "starting a full sync in this run", exc.status, exc.graph_code or "-")
                summary.pages = summary.users = summary.added = summary.updated = summary.removed = 0
                delta_link, reason = None, REASON_EXPIRED
        if delta_link is None:
            summary.mode, summary.reason = "full", reason
            new_link, new_etag = self._full(summary, progress, snapshot_etag)
        summary.status, summary.finished = "succeeded", self._stamp()
        summary.graphRequests = self.graph.requests_sent - (self._requests_before or 0)
        self.store.write_json(STATE_BLOB, {
            "deltaLink": new_link,
            "deltaLinkIssued": delta_issued,
            "select": list(self.select),
            "snapshotEtag": new_etag,
            "lastSync": summary.as_dict(),
        }, state_etag)

    def _plan(self, state: dict[str, Any] | None, snapshot_etag: str | None, full: bool) -> tuple[str | None, str]:
        """The deltaLink to follow, or ``None`` and the reason for a full round."""
        if full:
            logger.info("A full resync was requested")
            return None, REASON_REQUESTED
        if not state or not state.get("deltaLink") or snapshot_etag is None:
            return None, REASON_INITIAL
        if list(state.get("select") or ()) != list(self.select):
            # The stored deltaLink carries the old $select: following it would
            # never fill the new properties in. Every line must carry exactly USER_SELECT.
            logger.info("USER_SELECT changed since the snapshot was made; starting a full sync")
            return None, REASON_SELECT_CHANGED
        link = str(state["deltaLink"])
        if not self.graph.is_own_url(link):
            logger.warning("The stored deltaLink is not on GRAPH_ENDPOINT; starting a full sync")
            return None, REASON_INITIAL
        if self.wall() - float(state.get("deltaLinkIssued", 0)) > DELTA_TOKEN_MAX_AGE:
            logger.info("The stored delta token is older than Graph keeps them; starting a full sync")
            return None, REASON_EXPIRED
        return link, ""

    def _rounds(self, delta_link: str | None, progress: _Progress) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        for page in self.graph.iter_delta(delta_link, self.select, self.page_size):
            progress.page(len(page.value))
            yield page.value, page.delta_link

    def _line(self, record: dict[str, Any]) -> str:
        """A snapshot line: exactly the selected properties, "id" first, null where Graph sent none."""
        return _dumps({"id": record["id"], **{f: record.get(f) for f in self.select if f != "id"}})

    def _full(self, summary: SyncSummary, progress: _Progress, snapshot_etag: str | None) -> tuple[str, str]:
        staging = f"{STAGING_PREFIX}full-{summary.runId}.jsonl"
        writer = self.store.writer(staging, summary.runId)
        # Everything this round knows is the next link, the staged lines and the repeats: a
        # checkpoint of those is enough to resume it. The filter can be rebuilt from the staged
        # ids because its hash is stable across processes (blake2b, not hash()).
        seen = _SeenFilter(self.seen_filter_bits)
        repeats: dict[str, _Fold] = {}  # ids Graph sent more than once, or removed: bounded by the repeats
        delta_link: str | None = None
        try:
            for value, link in self._rounds(None, progress):
                for item in value:
                    uid = item["id"]
                    if "@removed" not in item and uid not in repeats and not seen.check_add(uid):
                        writer.write(self._line(_clean(item)))  # a first live copy
                    else:
                        _apply(repeats, item)
                delta_link = link or delta_link
            writer.commit(None)
            del seen
            new_etag = self._commit_full(summary, staging, repeats, snapshot_etag)
        finally:
            self.store.delete(staging)
        assert delta_link is not None
        return delta_link, new_etag

    def _commit_full(self, summary: SyncSummary, staging: str, repeats: dict[str, _Fold],
                     snapshot_etag: str | None) -> str:
        """Stream the staged round into the snapshot with the repeats applied, and commit it."""
        writer = self.store.writer(USERS_BLOB, summary.runId)
        for line in self.store.iter_lines(staging, self.store.etag(staging)):
            fold = repeats.pop(_line_id(line), None)
            if fold is None:
                writer.write(line)
            elif fold.present:
                writer.write(self._line({**json.loads(line), **json.loads(fold.props)}))
        for fold in repeats.values():  # ids whose first entry was a removal (or looked repeated)
            if fold.present:
                writer.write(self._line(json.loads(fold.props)))
        etag = writer.commit(snapshot_etag)
        self._snapshot_replaced = True
        # A full round: every user is new to this snapshot; counts describe the tenant.
        summary.users = summary.added = writer.lines
        summary.updated = summary.removed = 0
        return etag

    def _incremental(self, summary: SyncSummary, progress: _Progress, delta_link: str,
                     snapshot_etag: str | None, link_issued: float) -> tuple[str, str]:
        changes: dict[str, _Fold] = {}
        new_link: str | None = None
        for value, link in self._rounds(delta_link, progress):
            for item in value:
                _apply(changes, item)
            new_link = link or new_link
        assert new_link is not None and snapshot_etag is not None
        if not changes:
            # Nothing changed: keep the snapshot as it is, no rewrite, no change log.
            summary.users = self._previous_users
            return new_link, snapshot_etag
        writer = self.store.writer(USERS_BLOB, summary.runId)
        log: list[dict[str, Any]] = []
        done: set[str] = set()  # changed ids already applied: bounded by the change set
        for line in self.store.iter_lines(USERS_BLOB, snapshot_etag):
            uid = _line_id(line)
            fold = changes.get(uid)
            if fold is None:
                writer.write(_escape(line))
                continue
            if uid in done:
                continue
            done.add(uid)
            if not fold.present:
                summary.removed += 1
                log.append({"change": "removed", "id": uid, "reason": fold.reason or "deleted"})
                continue
            change = json.loads(fold.props)
            writer.write(self._line({**json.loads(line), **change}))
            summary.updated += 1
            log.append({"change": "updated", "id": uid, "properties": change})
        for uid, fold in changes.items():
            if uid in done or not fold.present:
                continue  # a removal of a user the snapshot never had changes nothing
            line = self._line(json.loads(fold.props))
            writer.write(line)
            summary.added += 1
            log.append({"change": "added", "id": uid, "properties": json.loads(line)})
        new_etag = writer.commit(snapshot_etag)
        self._snapshot_replaced = True
        summary.users = writer.lines
        self._write_change_log(delta_link, link_issued, log)
        return new_link, new_etag

    def _write_change_log(self, delta_link: str, link_issued: float, log: list[dict[str, Any]]) -> None:
        """Write ``changes/<issued>-<round>.jsonl``; a replay of the round folds into the same blob."""
        stamp = datetime.fromtimestamp(link_issued, UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"changes/{stamp}-{hashlib.sha256(delta_link.encode()).hexdigest()[:16]}.jsonl"
        earlier = self.store.read_lines(name)
        if earlier:
            # The round was applied before, but state.json did not move on: the
            # snapshot already had its additions, so this pass calls them updates.
            # Keep what the first pass saw, with this pass's values.
            log = _compose([json.loads(line) for line in earlier], log)
        self.store.write_lines(name, [_dumps(entry) for entry in log])


def _compose(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two change logs of the same round as one: the second wins, but an addition stays an addition."""
    merged = {entry["id"]: entry for entry in first}
    for entry in second:
        before = merged.get(entry["id"])
        if before is not None and entry["change"] == "updated" and before["change"] in ("added", "updated"):
            entry = {**before, "properties": {**before.get("properties", {}), **entry["properties"]}}
        merged[entry["id"]] = entry
    return list(merged.values())


def _is_storage_failure(exc: Exception) -> bool:
    """True for azure-storage's own errors (the app's errors and bugs pass through unchanged)."""
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError) and not isinstance(exc, AppError)


def read_status(store: SyncStore) -> dict[str, Any] | None:
    """``{"lastRun", "lastSuccess"}`` from status.json, or ``None`` before any run."""
    try:
        status, _ = store.read_json(STATUS_BLOB)
    except Exception as exc:
        if _is_storage_failure(exc):
            raise storage_error(exc, "Reading the sync status") from exc
        raise
    if not status or not isinstance(status.get("lastRun"), dict):
        return None
    return {"lastRun": status["lastRun"], "lastSuccess": status.get("lastSuccess")}
