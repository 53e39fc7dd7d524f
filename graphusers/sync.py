"""The scheduled sync: a delta-query snapshot of the tenant's users in Blob Storage.

A **full round** of ``/users/delta`` runs on the first sync, when the stored
deltaLink is missing or too old, when Graph says the delta state expired (410
``resyncRequired``, or a 4xx such as 400 ``syncStateNotFound``), when
the query changed (``state.json`` keeps a fingerprint: Graph endpoint, API
version, tenant, ``$select``), when a full resync was requested, and every
``USER_SYNC_FULL_EVERY`` as a reconciliation (delta can miss an edit made while
a round was in progress; the summary's ``drift`` counts what the snapshot had
wrong). It streams into a staging blob, then into the snapshot.

A full round that fails or runs out of time keeps a checkpoint
(``staging/checkpoint.json``: the next page link and how many blocks and lines
of the staging blob are committed, plus the repeated ids); the next run
continues from it for as long as Graph accepts the link, and starts over,
saying so in the summary, when Graph does not. Later runs follow the deltaLink and apply
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
import math
import time
import uuid
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from . import expiry
from .errors import AppError, InvalidRequestError, ResyncRequiredError
from .graph import API_VERSION, GraphClient
from .storage import (
    CHECKPOINT_BLOB,
    STAGING_PREFIX,
    STATE_BLOB,
    STATUS_BLOB,
    USERS_BLOB,
    BlockWriter,
    SyncStore,
    storage_error,
)

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
# A full round commits its staging blob and writes its checkpoint this often
# (and when it fails between pages): a resumed round repeats at most this much.
CHECKPOINT_INTERVAL = 30.0  # seconds
DEFAULT_FULL_EVERY = 7 * 24 * 3600.0  # USER_SYNC_FULL_EVERY's default: a reconciliation a week

# Why a run was a full round (the summary's "reason"); an incremental run has none.
REASON_INITIAL = "initial"  # no usable snapshot or delta state
REASON_EXPIRED = "expired"  # the delta state is older than Graph keeps it, or Graph said so
REASON_QUERY_CHANGED = "query-changed"  # endpoint, API version, tenant or USER_SELECT differ from the state's
REASON_SELECT_CHANGED = REASON_QUERY_CHANGED  # the older name of the USER_SELECT case
REASON_REQUESTED = "requested"  # POST /api/sync {"mode": "full"}
REASON_RECONCILE = "reconcile"  # USER_SYNC_FULL_EVERY passed since the last full round
REASON_REJECTED = "state-rejected"  # Graph answered 400: the delta state cannot continue


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

    def as_dict(self) -> dict[str, Any]:
        """The summary as stored and served (``error``, ``resumed``, ``drift`` only when they apply)."""
        body = asdict(self)
        for optional in ("error", "resumed", "drift"):
            if body[optional] is None:
                del body[optional]
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


class _Checkpointer:
    """Saves an unfinished full round: the staging blob's blocks committed, then checkpoint.json."""

    def __init__(
        self,
        sync: UserSync,
        summary: SyncSummary,
        writer: BlockWriter,
        staging: str,
        round_id: str,
        started: str,
        before_pages: int,
        before_users: int,
    ) -> None:
        self.sync, self.summary, self.writer, self.staging = sync, summary, writer, staging
        self.round_id, self.started = round_id, started
        self.before_pages, self.before_users = before_pages, before_users
        self.saved = sync.clock()
        self.saves = 0
        self.link: str | None = None  # the next page's link after the last page processed whole

    def save(self, next_link: str, repeats: dict[str, _Fold], *, failing: bool = False) -> None:
        try:
            # Blocks first, then the checkpoint that counts them: a crash between the two leaves
            # the older checkpoint, whose blocks are still the first ones of the blob.
            self.writer.save()
            self.sync.store.put_json(
                CHECKPOINT_BLOB,
                {
                    "round": self.round_id,
                    "started": self.started,
                    "saved": self.sync._stamp(),
                    "reason": self.summary.reason,
                    "staging": self.staging,
                    "nextLink": next_link,
                    "pages": self.before_pages + self.summary.pages,
                    "users": self.before_users + self.summary.users,
                    "blocks": self.writer.blocks,
                    "lines": self.writer.lines,
                    "fingerprint": self.sync.fingerprint(),
                    "repeats": {uid: [f.present, f.props, f.reason] for uid, f in repeats.items()},
                },
            )
        except Exception as exc:
            if not failing:
                raise
            # The round is failing anyway; the older checkpoint (if any) still holds.
            logger.warning("Could not checkpoint the full round %s (%s)", self.round_id, type(exc).__name__)
            return
        self.saved = self.sync.clock()
        self.saves += 1
        logger.info(
            "Sync %s checkpointed the full round %s after %d pages (%d users staged)",
            self.summary.runId,
            self.round_id,
            self.before_pages + self.summary.pages,
            self.writer.lines,
        )


class _Digests:
    """The old snapshot as sorted 64-bit keys (48 bits of the id's hash, 16 of the line's): 8 bytes a user.

    ``see`` each line of the new snapshot, then ``drift`` counts added, changed and
    removed users. Hash collisions can hide a change (about 1 in 65,536 per changed
    user) but never invent one.
    """

    def __init__(self, lines: Iterator[str]) -> None:
        keys = array("Q", (_digest(_line_id(line), line) for line in lines))
        self.keys = array("Q", sorted(keys))
        del keys
        self.matched = 0
        self.added = self.changed = 0

    def see(self, line: str) -> None:
        key = _digest(_line_id(line), line)
        i = bisect_left(self.keys, key & ~0xFFFF)
        if i < len(self.keys) and self.keys[i] >> 16 == key >> 16:
            self.matched += 1
            if self.keys[i] != key:
                self.changed += 1
        else:
            self.added += 1

    def drift(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed, "removed": len(self.keys) - self.matched}


def _digest(uid: str, line: str) -> int:
    head = int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=6).digest(), "big")
    tail = int.from_bytes(hashlib.blake2b(line.encode(), digest_size=2).digest(), "big")
    return head << 16 | tail


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
            logger.info(
                "Sync %s in progress: %d pages, %d users so far", self.summary.runId, self.summary.pages, self.summary.users
            )
            self.last_log = now
        if self.lease is not None and now - self.last_renew >= LEASE_RENEW_INTERVAL:
            self.lease.renew()
            self.last_renew = now


class UserSync:
    """One sync job over a Graph client and a store; ``clock``, ``wall`` and ``seen_filter_bits`` are test seams."""

    def __init__(
        self,
        graph: GraphClient,
        store: SyncStore,
        select: tuple[str, ...],
        *,
        page_size: int = PAGE_SIZE,
        progress_interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        seen_filter_bits: int = SEEN_FILTER_BITS,
        tenant: str = "",
        full_every: float | None = DEFAULT_FULL_EVERY,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self.graph, self.store, self.select = graph, store, select
        self.page_size, self.progress_interval = page_size, progress_interval
        self.clock, self.wall = clock, wall
        self.seen_filter_bits = seen_filter_bits
        self.tenant = tenant
        self.full_every = full_every  # None or 0: no periodic reconciliation
        self.checkpoint_interval = checkpoint_interval
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
            expiry.warn_if_due(self.wall)  # each run, whatever its outcome; at most once a day
            try:
                lease.release()
            except Exception:  # noqa: BLE001 - the lease expires on its own
                logger.warning("Could not release the sync lock; it expires within a minute")
        logger.info(
            "Sync %s %s: mode=%s reason=%s pages=%d users=%d added=%d updated=%d removed=%d graph_requests=%d",
            summary.runId,
            summary.status,
            summary.mode,
            summary.reason or "-",
            summary.pages,
            summary.users,
            summary.added,
            summary.updated,
            summary.removed,
            summary.graphRequests,
        )
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
            summary.message = (
                "users.jsonl was replaced but state.json was not updated; the next run replays "
                "the same delta round, which is idempotent."
            )
            logger.error(
                "Sync %s failed after replacing users.jsonl and before updating state.json (%s); the next run replays the round",
                summary.runId,
                type(exc).__name__,
            )
        else:
            summary.message = "users.jsonl and state.json are unchanged."
            logger.error(
                "Sync %s failed after %d pages (%s); users.jsonl and state.json are unchanged",
                summary.runId,
                summary.pages,
                type(exc).__name__,
            )
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
                body = {"lastRun": summary.as_dict(), "lastSuccess": last_success}
                credential = expiry.current() or (status or {}).get("credential")
                if credential:
                    body["credential"] = credential
                self.store.write_json(STATUS_BLOB, body, etag)
                return
            except (ResourceModifiedError, ResourceExistsError):
                continue
            except Exception as exc:  # noqa: BLE001 - the status must never turn a run into a failure
                logger.warning("Could not record sync %s in %s (%s)", summary.runId, STATUS_BLOB, type(exc).__name__)
                return
        logger.warning("Could not record sync %s in %s: it kept changing", summary.runId, STATUS_BLOB)

    def _remove_stale_staging(self, run_id: str) -> None:
        # Only the lease holder gets here, so every staging blob belongs to a run
        # that died, except the checkpointed round's, which the next full round
        # continues. The others hold a copy of the directory's personal data: remove them.
        checkpoint, _ = self.store.read_json(CHECKPOINT_BLOB)
        keep = {CHECKPOINT_BLOB, str((checkpoint or {}).get("staging", ""))}
        for name in self.store.list_names(STAGING_PREFIX):
            if run_id not in name and name not in keep:
                self.store.delete(name)
                logger.warning("Removed %s left by an earlier sync that did not finish", name)

    def fingerprint(self) -> dict[str, Any]:
        """What the delta state belongs to: a change in any of it makes the stored deltaLink useless."""
        return {
            "endpoint": str(getattr(self.graph, "endpoint", "")),
            "apiVersion": API_VERSION,
            "tenant": self.tenant,
            "select": list(self.select),
        }

    def _query_changed(self, stored: dict[str, Any]) -> list[str]:
        """The fingerprint fields that differ from ``stored`` (a state.json or a checkpoint)."""
        mine = self.fingerprint()
        theirs = stored.get("fingerprint")
        if not isinstance(theirs, dict):
            # A state written before fingerprints: only $select was recorded.
            return [] if list(stored.get("select") or ()) == mine["select"] else ["select"]
        return [key for key in mine if theirs.get(key) != mine[key]]

    def _run(self, summary: SyncSummary, lease: Any, full: bool) -> None:
        state, state_etag = self.store.read_json(STATE_BLOB)
        self._previous_users = int(((state or {}).get("lastSync") or {}).get("users", 0))
        snapshot_etag = self.store.etag(USERS_BLOB)
        progress = _Progress(summary, lease, self.clock, self.progress_interval)
        checkpoint = self._usable_checkpoint()
        delta_link, reason = self._plan(state, snapshot_etag, full)
        if checkpoint is not None:
            # An unfinished full round of this same query: continue it, whatever else was planned.
            delta_link, reason = None, str(checkpoint.get("reason") or reason or REASON_INITIAL)
        delta_issued = self.wall()
        if delta_link is not None:
            try:
                summary.mode = "incremental"
                assert state is not None
                new_link, new_etag = self._incremental(
                    summary, progress, delta_link, snapshot_etag, float(state.get("deltaLinkIssued", 0))
                )
            except ResyncRequiredError as exc:
                rejected = exc.status == 400 and (exc.graph_code or "").lower() not in ("syncstatenotfound",)
                logger.warning(
                    "Graph answered %s %s to the stored deltaLink: the delta state cannot continue; "
                    "starting a full sync in this run",
                    exc.status,
                    exc.graph_code or "-",
                )
                summary.pages = summary.users = summary.added = summary.updated = summary.removed = 0
                delta_link, reason = None, (REASON_REJECTED if rejected else REASON_EXPIRED)
                summary.message = (
                    f"Graph rejected the delta state ({exc.status} {exc.graph_code or '-'}: "
                    f"{exc.message}); a full round replaced it."
                )
        if delta_link is None:
            summary.mode, summary.reason = "full", reason
            old_etag = snapshot_etag if reason == REASON_RECONCILE else None
            new_link, new_etag = self._full(summary, progress, checkpoint, snapshot_etag=snapshot_etag, old_etag=old_etag)
        summary.status, summary.finished = "succeeded", self._stamp()
        summary.graphRequests = self.graph.requests_sent - (self._requests_before or 0)
        last_full = (state or {}).get("lastFull")
        self.store.write_json(
            STATE_BLOB,
            {
                "deltaLink": new_link,
                "deltaLinkIssued": delta_issued,
                "fingerprint": self.fingerprint(),
                "select": list(self.select),
                "snapshotEtag": new_etag,
                "lastFull": delta_issued if summary.mode == "full" or last_full is None else last_full,
                "lastSync": summary.as_dict(),
            },
            state_etag,
        )

    def _usable_checkpoint(self) -> dict[str, Any] | None:
        """The unfinished full round's checkpoint, if there is one for this query; a stale one is dropped."""
        checkpoint, _ = self.store.read_json(CHECKPOINT_BLOB)
        if not checkpoint:
            return None
        changed = self._query_changed(checkpoint)
        link = checkpoint.get("nextLink")
        if changed or not isinstance(link, str) or not self.graph.is_own_url(link):
            logger.warning(
                "The unfinished full round %s was for another query (%s); starting over",
                checkpoint.get("round"),
                ", ".join(changed) or "nextLink",
            )
            self._drop_checkpoint(checkpoint)
            return None
        staging = checkpoint.get("staging")
        if int(checkpoint.get("blocks") or 0) > 0 and (not staging or self.store.etag(str(staging)) is None):
            # The lines it staged are gone (a cleanup that half failed): resuming would fail
            # on every run, so the round starts over.
            logger.warning("The unfinished full round %s lost its staged lines; starting over", checkpoint.get("round"))
            self._drop_checkpoint(checkpoint)
            return None
        return checkpoint

    def _delete_quietly(self, name: str) -> None:
        try:
            self.store.delete(name)
        except Exception as exc:  # noqa: BLE001 - the next run that holds the lock removes it
            logger.warning("Could not delete %s (%s)", name, type(exc).__name__)

    def _drop_checkpoint(self, checkpoint: dict[str, Any] | None, *, quietly: bool = False) -> None:
        # The checkpoint goes first: staging without a checkpoint is removed by the next run
        # that holds the lock, but a checkpoint without its staging would fail every resume.
        delete = self._delete_quietly if quietly else self.store.delete
        delete(CHECKPOINT_BLOB)
        if checkpoint and checkpoint.get("staging"):
            delete(str(checkpoint["staging"]))

    def _plan(self, state: dict[str, Any] | None, snapshot_etag: str | None, full: bool) -> tuple[str | None, str]:
        """The deltaLink to follow, or ``None`` and the reason for a full round."""
        if full:
            logger.info("A full resync was requested")
            return None, REASON_REQUESTED
        if not state or not state.get("deltaLink") or snapshot_etag is None:
            return None, REASON_INITIAL
        changed = self._query_changed(state)
        if changed:
            # The stored deltaLink belongs to another query (its $select, tenant or endpoint):
            # following it would never fill new properties in, or mix two tenants.
            logger.info("The query changed since the snapshot was made (%s); starting a full sync", ", ".join(changed))
            return None, REASON_QUERY_CHANGED
        link = str(state["deltaLink"])
        if not self.graph.is_own_url(link):
            logger.warning("The stored deltaLink is not on GRAPH_ENDPOINT; starting a full sync")
            return None, REASON_QUERY_CHANGED
        if self.wall() - float(state.get("deltaLinkIssued", 0)) > DELTA_TOKEN_MAX_AGE:
            logger.info("The stored delta token is older than Graph keeps them; starting a full sync")
            return None, REASON_EXPIRED
        last_full = state.get("lastFull")
        if self.full_every and last_full is not None and self.wall() - float(last_full) > self.full_every:
            logger.info("USER_SYNC_FULL_EVERY passed since the last full round; reconciling with a full round")
            return None, REASON_RECONCILE
        return link, ""

    def _rounds(self, delta_link: str | None, progress: _Progress) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        for page in self._pages(delta_link, progress):
            yield page.value, page.delta_link

    def _pages(self, delta_link: str | None, progress: _Progress) -> Iterator[Any]:
        for page in self.graph.iter_delta(delta_link, self.select, self.page_size):
            progress.page(len(page.value))
            yield page

    def _line(self, record: dict[str, Any]) -> str:
        """A snapshot line: exactly the selected properties, "id" first, null where Graph sent none."""
        return _dumps({"id": record["id"], **{f: record.get(f) for f in self.select if f != "id"}})

    def _full(
        self,
        summary: SyncSummary,
        progress: _Progress,
        checkpoint: dict[str, Any] | None,
        *,
        snapshot_etag: str | None,
        old_etag: str | None,
    ) -> tuple[str, str]:
        """A full round, continued from ``checkpoint`` when Graph still accepts its link."""
        if checkpoint is not None:
            try:
                return self._round(summary, progress, snapshot_etag=snapshot_etag, checkpoint=checkpoint, old_etag=old_etag)
            except (ResyncRequiredError, InvalidRequestError) as exc:
                if not isinstance(exc, ResyncRequiredError) and summary.pages:
                    raise
                # Graph no longer accepts the link (expired, or a 400 for its skip token): a checkpoint
                # that every run would fail on again is dropped, and the round starts over.
                status = exc.status if isinstance(exc, ResyncRequiredError) else 400
                code = (exc.graph_code if isinstance(exc, ResyncRequiredError) else "") or exc.code
                logger.warning(
                    "Graph answered %s %s to the unfinished full round's next link; starting the round over", status, code
                )
                self._drop_checkpoint(checkpoint)
                summary.pages = summary.users = 0
                summary.resumed = None
                summary.message = (
                    f"The unfinished full round {checkpoint.get('round')} could not be resumed "
                    f"(Graph answered {status} {code}); it started over."
                )
        return self._round(summary, progress, snapshot_etag=snapshot_etag, checkpoint=None, old_etag=old_etag)

    def _round(
        self,
        summary: SyncSummary,
        progress: _Progress,
        *,
        snapshot_etag: str | None,
        checkpoint: dict[str, Any] | None,
        old_etag: str | None,
    ) -> tuple[str, str]:
        # Everything a round knows is the next link, the staged lines and the repeats: a
        # checkpoint of those is enough to resume it. The filter is rebuilt from the staged
        # ids because its hash is stable across processes (blake2b, not hash()).
        seen = _SeenFilter(self.seen_filter_bits)
        repeats: dict[str, _Fold] = {}  # ids Graph sent more than once, or removed: bounded by the repeats
        if checkpoint is None:
            round_id, started, before_pages, before_users = summary.runId, summary.started, 0, 0
            staging = f"{STAGING_PREFIX}full-{round_id}.jsonl"
            writer = self.store.writer(staging, round_id)
            link: str | None = None
        else:
            round_id, started = str(checkpoint["round"]), str(checkpoint["started"])
            before_pages, before_users = int(checkpoint["pages"]), int(checkpoint["users"])
            staging, link = str(checkpoint["staging"]), str(checkpoint["nextLink"])
            writer = self.store.writer(staging, round_id, blocks=int(checkpoint["blocks"]), lines=int(checkpoint["lines"]))
            for line in self.store.iter_lines(staging, self.store.etag(staging)):
                seen.check_add(_line_id(line))
            for uid, (present, props, reason) in dict(checkpoint.get("repeats") or {}).items():
                fold = repeats[uid] = _Fold()
                fold.present, fold.props, fold.reason = bool(present), str(props), str(reason)
            summary.resumed = {"round": round_id, "started": started, "pages": before_pages, "users": before_users}
            logger.info(
                "Sync %s continues the full round %s from page %d (%d users staged)",
                summary.runId,
                round_id,
                before_pages + 1,
                writer.lines,
            )
        saver = _Checkpointer(self, summary, writer, staging, round_id, started, before_pages, before_users)
        delta_link: str | None = None
        between_pages = True  # a failure while fetching a page leaves everything before it whole
        try:
            for page in self._pages(link, progress):
                between_pages = False
                for item in page.value:
                    uid = item["id"]
                    if "@removed" not in item and uid not in repeats and not seen.check_add(uid):
                        writer.write(self._line(_clean(item)))  # a first live copy
                    else:
                        _apply(repeats, item)
                delta_link = page.delta_link or delta_link
                between_pages = True
                if page.next_link and self.clock() - saver.saved >= self.checkpoint_interval:
                    saver.save(page.next_link, repeats)
                saver.link = page.next_link
            writer.save()
            del seen
            new_etag = self._commit_full(summary, staging, repeats, snapshot_etag, old_etag)
        except Exception as exc:
            if delta_link is None and between_pages and saver.link and not isinstance(exc, ResyncRequiredError):
                saver.save(saver.link, repeats, failing=True)
            if checkpoint is None and saver.saves == 0:
                # Nothing to continue from: the staged copy of the directory goes now.
                self._delete_quietly(staging)
            raise
        # users.jsonl is committed: a failed cleanup must not fail the run (the next one tidies up).
        self._drop_checkpoint({"staging": staging}, quietly=True)
        assert delta_link is not None
        return delta_link, new_etag

    def _commit_full(
        self,
        summary: SyncSummary,
        staging: str,
        repeats: dict[str, _Fold],
        snapshot_etag: str | None,
        old_etag: str | None = None,
    ) -> str:
        """Stream the staged round into the snapshot with the repeats applied, and commit it.

        ``old_etag``: a reconciliation; the summary's ``drift`` compares the new snapshot with it.
        """
        writer = self.store.writer(USERS_BLOB, summary.runId)
        old = _Digests(self.store.iter_lines(USERS_BLOB, old_etag)) if old_etag else None

        def emit(line: str) -> None:
            if old is not None:
                old.see(line)
            writer.write(line)

        for line in self.store.iter_lines(staging, self.store.etag(staging)):
            fold = repeats.pop(_line_id(line), None)
            if fold is None:
                emit(line)
            elif fold.present:
                emit(self._line({**json.loads(line), **json.loads(fold.props)}))
        for fold in repeats.values():  # ids whose first entry was a removal (or looked repeated)
            if fold.present:
                emit(self._line(json.loads(fold.props)))
        etag = writer.commit(snapshot_etag)
        self._snapshot_replaced = True
        # A full round: every user is new to this snapshot; counts describe the tenant.
        summary.users = summary.added = writer.lines
        summary.updated = summary.removed = 0
        if old is not None:
            summary.drift = old.drift()
            if any(summary.drift.values()):
                logger.warning(
                    "Sync %s reconciliation: the snapshot delta kept differed from the tenant (added=%d changed=%d removed=%d)",
                    summary.runId,
                    summary.drift["added"],
                    summary.drift["changed"],
                    summary.drift["removed"],
                )
        return etag

    def _incremental(
        self, summary: SyncSummary, progress: _Progress, delta_link: str, snapshot_etag: str | None, link_issued: float
    ) -> tuple[str, str]:
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


def read_status(
    store: SyncStore, *, interval: float | None = None, wall: Callable[[], float] = time.time
) -> dict[str, Any] | None:
    """``{"lastRun", "lastSuccess", "stale"}`` from status.json, or ``None`` before any run.

    ``stale`` is true when the last success (or, before any, the last run) is older
    than twice the schedule's ``interval``: the timer stopped, or every run fails.
    ``unfinishedRound`` shows the progress of a full round a later run continues.
    """
    try:
        status, _ = store.read_json(STATUS_BLOB)
        checkpoint, _ = store.read_json(CHECKPOINT_BLOB)
    except Exception as exc:
        if _is_storage_failure(exc):
            raise storage_error(exc, "Reading the sync status") from exc
        raise
    if not status or not isinstance(status.get("lastRun"), dict):
        return None
    body: dict[str, Any] = {"lastRun": status["lastRun"], "lastSuccess": status.get("lastSuccess")}
    if status.get("credential"):
        body["credential"] = status["credential"]
    if interval:
        since = (body["lastSuccess"] or {}).get("finished") or body["lastRun"].get("started")
        age = wall() - _epoch(since) if since else math.inf
        body["stale"] = age > 2 * interval
    if checkpoint:
        body["unfinishedRound"] = {key: checkpoint.get(key) for key in ("round", "started", "saved", "reason", "pages", "users")}
    return body


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
