"""``UserSync``: one sync job over a Graph client and a store; each run takes the lock, plans, runs a round, records it."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import expiry
from ..config import DEFAULT_FULL_ROUND, FULL_ROUND_KINDS
from ..errors import AppError, ResyncRequiredError
from ..graph import DeltaPage, GraphClient
from ..storage import CHECKPOINT_BLOB, STATE_BLOB, USERS_BLOB, WRITE_TAG, SyncStore, storage_error
from . import checkpoint as checkpoints
from . import commit, plan, requests
from .context import PROGRESS_INTERVAL, Progress, RunContext
from .fencing import Fence
from .full import full_round
from .incremental import incremental_round
from .plan import REASON_EXPIRED, REASON_INITIAL, REASON_RECONCILE, REASON_REJECTED
from .requests import SyncRequest
from .status import SyncSummary, _is_storage_failure, stamp, write_status

logger = logging.getLogger(__name__)

PAGE_SIZE = 999  # odata.maxpagesize preference for delta rounds
# Bits of the filter that spots repeated ids in a full round: 2 MiB whatever the
# tenant's size. At 1,000,000 ids about 0.5% of first copies look repeated and
# take the exact (held in memory) path; the result is the same either way.
SEEN_FILTER_BITS = 1 << 24
# A full round commits its staging blob and writes its checkpoint this often
# (and when it fails between pages): a resumed round repeats at most this much.
CHECKPOINT_INTERVAL = 30.0  # seconds
DEFAULT_FULL_EVERY = 7 * 24 * 3600.0  # USER_SYNC_FULL_EVERY's default: a reconciliation a week
# Requests that arrived while a run was under way are served by that run right after it, this many
# rounds at most per invocation; more wait for the next run (they stay pending, nothing is lost).
FOLLOW_UPS = 2


def prefetched(pages: Iterator[Any]) -> Iterator[Any]:
    """``pages``, the next one fetched on a worker thread while the caller handles this one.

    A listing page takes Graph a few hundred milliseconds to answer and the sync about as long to
    stage, so the round's wall time is close to its requests' alone. One page ahead only: memory
    holds two pages. The fetch runs in this context (the invocation's deadline and request count);
    its errors are raised here, where the page would have been fetched.
    """
    context = contextvars.copy_context()
    done = object()

    def fetch() -> Any:
        return context.run(next, pages, done)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="graph-prefetch") as pool:
        ahead = pool.submit(fetch)
        try:
            while (page := ahead.result()) is not done:
                ahead = pool.submit(fetch)
                yield page
        finally:
            ahead.cancel()


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
        full_round: str = DEFAULT_FULL_ROUND,
    ) -> None:
        self.graph, self.store, self.select = graph, store, select
        self.page_size, self.progress_interval = page_size, progress_interval
        self.clock, self.wall = clock, wall
        self.seen_filter_bits = seen_filter_bits
        self.tenant = tenant
        self.full_every = full_every  # None or 0: no periodic reconciliation
        self.checkpoint_interval = checkpoint_interval
        if full_round not in FULL_ROUND_KINDS:
            raise ValueError(f"full_round must be one of {FULL_ROUND_KINDS}, not {full_round!r}")
        self.full_round = full_round  # USER_SYNC_FULL_ROUND: how a full round reads the tenant
        self.previous_users = 0
        self._requests_before: int | None = None  # Graph's request count when this run took the lock

    # -- the entry point ---------------------------------------------------------------------------------------

    def run(self, *, full: bool = False, request: SyncRequest | None = None) -> SyncSummary:
        """Run a sync (``full``: a full resync); a run holding the lock makes this one skip, its request pending.

        ``request`` (or ``full`` without one) is recorded first, so a run that finds the lock
        held leaves it pending for the lock holder, which serves it once its own round is done.
        """
        if request is None and full:
            request = SyncRequest(uuid.uuid4().hex, "full", stamp(self.wall), source="direct")
        try:
            self.store.ensure()
            if request is not None:
                requests.record(self.store, request)
        except Exception as exc:
            if _is_storage_failure(exc):
                # The container cannot be reached: status.json cannot be either, and
                # trying would only add the storage client's retries to the failure.
                raise storage_error(exc, "Starting the sync") from exc
            raise
        summary = self._run_once(request)
        for _ in range(FOLLOW_UPS):
            if summary.status != "succeeded" or not self._pending():
                break
            logger.info("Sync requests arrived during run %s; serving them now", summary.runId)
            summary = self._run_once(None)
        return summary

    def _pending(self) -> bool:
        try:
            return bool(requests.pending(self.store))
        except Exception as exc:  # noqa: BLE001 - they stay pending for the next run
            logger.warning("Could not look for pending sync requests (%s)", type(exc).__name__)
            return False

    def _run_once(self, request: SyncRequest | None) -> SyncSummary:
        summary = SyncSummary(runId=uuid.uuid4().hex[:12], started=stamp(self.wall))
        self._requests_before = None
        try:
            lease = self.store.try_lease()
        except Exception as exc:
            if _is_storage_failure(exc):
                raise storage_error(exc, "Starting the sync") from exc
            self._finish_failed(summary, exc)
            raise
        if lease is None:
            summary.status, summary.finished = "skipped", stamp(self.wall)
            summary.message = "A sync is already running; this request did nothing."
            if request is not None:
                summary.requests = [request.id]
                summary.message = (
                    f"A sync is already running; request {request.id} ({request.mode}) is pending and runs after it."
                )
            logger.info("Sync %s skipped: another sync holds the lock", summary.runId)
            write_status(self.store, summary)
            return summary
        fence = Fence(lease, self.clock, summary.runId)
        self._requests_before = self.graph.requests_sent
        claimed: list[requests.Claimed] = []
        try:
            claimed = requests.claim(self.store, summary.runId)
            summary.requests = [str(c.body.get("requestId")) for c in claimed]
            self._run(summary, fence, any(c.body.get("mode") == "full" for c in claimed))
            requests.finish(self.store, claimed, run_id=summary.runId, status="succeeded", finished=summary.finished)
        except Exception as exc:
            error = exc
            self._settle_replaced(summary)
            if _is_storage_failure(exc):
                error = storage_error(exc, f"Sync {summary.runId}", snapshot_replaced=USERS_BLOB in summary.replaced)
            self._finish_failed(summary, error)
            if not fence.lost:
                requests.finish(self.store, claimed, run_id=summary.runId, status="failed", finished=summary.finished)
            if error is not exc:
                raise error from exc
            raise
        finally:
            expiry.warn_if_due(self.wall)  # each run, whatever its outcome; at most once a day
            fence.release()
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
        write_status(self.store, summary)
        return summary

    # -- one round ---------------------------------------------------------------------------------------------

    def _run(self, summary: SyncSummary, fence: Fence, full: bool) -> None:
        state, state_etag = self.store.read_json(STATE_BLOB)
        ctx = RunContext(
            summary=summary,
            fence=fence,
            progress=Progress(summary, fence, self.clock, self.progress_interval),
            state=state,
            state_etag=state_etag,
            snapshot_etag=None,
            started_at=self.wall(),
        )
        if commit.roll_forward(self, fence, summary, state, state_etag):
            state, state_etag = self.store.read_json(STATE_BLOB)
            ctx.state, ctx.state_etag = state, state_etag
        self.previous_users = int(((state or {}).get("lastSync") or {}).get("users", 0))
        ctx.snapshot_etag, metadata = self.store.properties(USERS_BLOB)
        # A snapshot ahead of state.json that no intent completed: the round is replayed.
        ctx.extra["replay"] = bool(state and state.get("snapshotEtag") and state["snapshotEtag"] != ctx.snapshot_etag)
        completed = metadata.get(commit.RUN_METADATA) if ctx.snapshot_etag and not ctx.extra["replay"] else None
        checkpoint = checkpoints.load(self, summary, state)
        commit.remove_stale(self, {CHECKPOINT_BLOB, checkpoint.staging if checkpoint else ""}, completed)
        delta_link, reason = plan.plan(self, state, ctx.snapshot_etag, full)
        if checkpoint is not None:
            # An unfinished full round of this same query: continue it, whatever else was planned.
            delta_link, reason = None, str(checkpoint.body.get("reason") or reason or REASON_INITIAL)
        if delta_link is not None:
            try:
                summary.mode = "incremental"
                assert state is not None
                incremental_round(self, ctx, delta_link, float(state.get("deltaLinkIssued", 0)))
            except ResyncRequiredError as exc:
                rejected = exc.status == 400 and (exc.graph_code or "").lower() not in ("syncstatenotfound",)
                logger.warning(
                    "Graph answered %s %s to the stored deltaLink: the delta state cannot continue; "
                    "starting a full sync in this run",
                    exc.status,
                    exc.graph_code or "-",
                )
                summary.pages = summary.users = summary.added = summary.updated = summary.removed = 0
                summary.status = "running"
                delta_link, reason = None, (REASON_REJECTED if rejected else REASON_EXPIRED)
                summary.message = (
                    f"Graph rejected the delta state ({exc.status} {exc.graph_code or '-'}: "
                    f"{exc.message}); a full round replaced it."
                )
        if delta_link is None:
            summary.mode, summary.reason = "full", reason
            full_round(self, ctx, checkpoint, reconcile=reason == REASON_RECONCILE)
        summary.status = "succeeded"

    def new_state(self, ctx: RunContext, delta_link: str) -> dict[str, Any]:
        """state.json after this run succeeds (without ``snapshotEtag``, which the commit adds)."""
        summary = ctx.summary
        summary.status, summary.finished = "succeeded", stamp(self.wall)
        summary.graphRequests = self.graph.requests_sent - (self._requests_before or 0)
        last_full = (ctx.state or {}).get("lastFull")
        return {
            "deltaLink": delta_link,
            # A listing round's deltaLink was issued when the round began, perhaps runs ago.
            "deltaLinkIssued": float(ctx.extra.get("deltaLinkIssued", ctx.started_at)),
            "fingerprint": self.fingerprint(),
            "select": list(self.select),
            "lastFull": ctx.started_at if summary.mode == "full" or last_full is None else last_full,
            "lastSync": summary.as_dict(),
        }

    def pages(self, delta_link: str | None, progress: Progress) -> Iterator[Any]:
        """The delta round's pages, counted (and the lease renewed) as they come."""
        for page in self.graph.iter_delta(delta_link, self.select, self.page_size):
            progress.page(len(page.value))
            yield page

    def listing_pages(self, next_link: str | None, delta_link: str, progress: Progress) -> Iterator[DeltaPage]:
        """A listing round's pages (``/users``, from ``next_link`` on), the last one carrying ``delta_link``."""
        for page in prefetched(self.graph.iter_listing(self.select, next_link)):
            progress.page(len(page.value))
            yield DeltaPage(value=page.value, next_link=page.next_link, delta_link=None if page.next_link else delta_link)

    def fingerprint(self) -> dict[str, Any]:
        """What the delta state belongs to (see ``plan.fingerprint``)."""
        return plan.fingerprint(self)

    def query_changed(self, stored: dict[str, Any]) -> list[str]:
        """The fingerprint fields that differ from ``stored``."""
        return plan.query_changed(self, stored)

    # -- the outcome -------------------------------------------------------------------------------------------

    def _settle_replaced(self, summary: SyncSummary) -> None:
        """After a failure: read back whether users.jsonl and state.json hold this run's writes (a lost response)."""
        try:
            if USERS_BLOB not in summary.replaced:
                _, meta = self.store.properties(USERS_BLOB)
                if meta.get(commit.RUN_METADATA) == summary.runId:
                    summary.replaced.append(USERS_BLOB)
            if STATE_BLOB not in summary.replaced:
                _, meta = self.store.properties(STATE_BLOB)
                if str(meta.get(WRITE_TAG, "")).startswith(f"{summary.runId}."):
                    summary.replaced.append(STATE_BLOB)
        except Exception as exc:  # noqa: BLE001 - the status then says it could not tell
            logger.warning("Sync %s could not read back what it replaced (%s)", summary.runId, type(exc).__name__)
            summary.message = "Could not read back whether users.jsonl was replaced. "

    def _finish_failed(self, summary: SyncSummary, exc: Exception) -> None:
        summary.status, summary.finished = "failed", stamp(self.wall)
        if self._requests_before is not None:
            summary.graphRequests = self.graph.requests_sent - self._requests_before
        if isinstance(exc, AppError):
            summary.error = {"code": exc.code, "message": exc.message}
        else:
            summary.error = {"code": "internal_error", "message": "Unexpected error; see the function app's logs."}
        prefix = summary.message if summary.message.startswith("Could not read back") else ""
        if USERS_BLOB in summary.replaced and STATE_BLOB not in summary.replaced:
            summary.message = prefix + (
                f"users.jsonl was replaced but state.json was not updated; the next run completes this run's "
                f"commit from {commit.intent_name(summary.runId)} (the same changes/ blob, the same state)."
            )
            logger.error(
                "Sync %s failed after replacing users.jsonl and before updating state.json (%s); the next run completes it",
                summary.runId,
                type(exc).__name__,
            )
        elif summary.replaced:
            summary.message = prefix + f"Replaced {', '.join(summary.replaced)} before failing."
            logger.error("Sync %s failed after replacing %s (%s)", summary.runId, ", ".join(summary.replaced), type(exc).__name__)
        else:
            summary.message = prefix + "users.jsonl and state.json are unchanged."
            logger.error(
                "Sync %s failed after %d pages (%s); users.jsonl and state.json are unchanged",
                summary.runId,
                summary.pages,
                type(exc).__name__,
            )
        write_status(self.store, summary)
