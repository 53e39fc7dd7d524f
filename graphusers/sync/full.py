"""A full round of ``/users/delta``: streamed into a staging blob, checkpointed, then into the snapshot.

Everything a round knows is the next link, the staged lines and the repeats: a
checkpoint of those is enough to resume it. In a full round only the ids Graph
repeats are held in memory: a first copy goes straight to the staging blob, and a
fixed-size filter of the ids seen so far tells a repeat from a first copy. The
filter is rebuilt from the staged ids on resume because its hash is stable across
processes (blake2b, not hash()).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

from ..errors import CursorExpiredError, InvalidRequestError, ResyncRequiredError
from ..storage import CHECKPOINT_BLOB, STAGING_PREFIX, USERS_BLOB
from . import checkpoint as checkpoints
from . import commit
from .checkpoint import Checkpoint, Checkpointer
from .context import RunContext
from .fencing import Fence
from .records import Digests, Fold, SeenFilter, apply_entry, line_id, snapshot_line

if TYPE_CHECKING:
    from .run import UserSync

logger = logging.getLogger(__name__)

RENEW_EVERY_LINES = 20_000  # a long streaming phase checks the lease this often (it renews every 20 s)


def ticking(lines: Iterator[str], fence: Fence) -> Iterator[str]:
    """``lines``, keeping the lease alive while a long blob streams (a resume's re-read, a reconciliation's)."""
    for count, line in enumerate(lines, 1):
        if count % RENEW_EVERY_LINES == 0:
            fence.tick()
        yield line


class ListingUnavailableError(Exception):
    """A listing round cannot go on (Graph refused ``$deltatoken=latest``, or the listing's page token); internal."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _graph_answer(exc: Exception) -> str:
    """``status code`` of a Graph refusal, for a summary line."""
    if isinstance(exc, CursorExpiredError):
        return "400 Directory_ExpiredPageToken: the listing's page token expired"
    status = exc.status if isinstance(exc, ResyncRequiredError) else 400
    code = (exc.graph_code if isinstance(exc, ResyncRequiredError) else "") or getattr(exc, "code", "")
    return f"{status} {code}"


def full_round(job: UserSync, ctx: RunContext, checkpoint: Checkpoint | None, *, reconcile: bool) -> None:
    """A full round of the configured kind, continued from ``checkpoint`` when Graph still accepts its link.

    A listing round that Graph cannot serve (``$deltatoken=latest`` refused, a page token expired)
    gives way to a delta round in the same run, and the summary says so.
    """
    summary = ctx.summary
    kind = checkpoint.kind if checkpoint is not None else job.full_round
    if checkpoint is not None:
        try:
            _round(job, ctx, checkpoint, reconcile=reconcile, kind=kind)
            return
        except ListingUnavailableError as exc:
            _restart(ctx)
            summary.message = (
                f"The unfinished listing round {checkpoint.round} could not be resumed ({exc.why}); a delta round replaced it."
            )
            _round(job, ctx, None, reconcile=reconcile, kind="delta")
            return
        except (ResyncRequiredError, InvalidRequestError) as exc:
            if not isinstance(exc, ResyncRequiredError) and summary.pages:
                raise
            # Graph no longer accepts the link (expired, or a 400 for its skip token): a checkpoint
            # that every run would fail on again is dropped, and the round starts over.
            answer = _graph_answer(exc)
            logger.warning("Graph answered %s to the unfinished full round's next link; starting the round over", answer)
            checkpoints.drop(job, checkpoint, fence=ctx.fence)
            _restart(ctx)
            summary.message = (
                f"The unfinished full round {checkpoint.round} could not be resumed (Graph answered {answer}); it started over."
            )
            kind = job.full_round
    if kind == "listing":
        try:
            _round(job, ctx, None, reconcile=reconcile, kind="listing")
            return
        except ListingUnavailableError as exc:
            _restart(ctx)
            said = f"The listing round could not be used ({exc.why}); a delta round replaced it."
            summary.message = f"{summary.message} {said}" if summary.message else said
    _round(job, ctx, None, reconcile=reconcile, kind="delta")


def _restart(ctx: RunContext) -> None:
    """Forget what a round that gave up had counted: the next one starts from nothing."""
    summary = ctx.summary
    summary.pages = summary.users = 0
    summary.resumed = None
    ctx.extra.pop("deltaLinkIssued", None)


def _round(job: UserSync, ctx: RunContext, checkpoint: Checkpoint | None, *, reconcile: bool, kind: str) -> None:
    summary, fence = ctx.summary, ctx.fence
    summary.fullRound = kind
    seen = SeenFilter(job.seen_filter_bits)
    repeats: dict[str, Fold] = {}  # ids Graph sent more than once, or removed: bounded by the repeats
    latest: str | None = None  # a listing round's deltaLink, fetched before the listing
    if checkpoint is None:
        round_id, started, before = summary.runId, summary.started, (0, 0)
        staging = f"{STAGING_PREFIX}full-{round_id}.jsonl"
        link: str | None = None
        checkpoint_etag: str | None = None
        if kind == "listing":
            latest = _sync_from_now(job, ctx)
        writer = job.store.writer(staging, summary.runId)
    else:
        body = checkpoint.body
        round_id, started = checkpoint.round, str(body["started"])
        before = (int(body["pages"]), int(body["users"]))
        staging, link = checkpoint.staging, str(body["nextLink"])
        if kind == "listing":
            latest = str(body["deltaLink"])
            ctx.extra["deltaLinkIssued"] = float(body.get("deltaLinkIssued") or ctx.started_at)
        staging_etag = checkpoint.staging_etag
        # This run's blocks carry its own id; the committed ones it continues keep theirs.
        writer = job.store.writer(
            staging, summary.runId, etag=staging_etag, segments=checkpoint.segments(), lines=int(body["lines"])
        )
        # Take the round over before anything else: the staging blob's and the checkpoint's ETags are
        # the round's fencing tokens, and a run that stalled past its lease still holds the old ones.
        # Committing the counted blocks (which drops any past them) and rewriting the checkpoint moves
        # both, so that run's next staging commit or checkpoint write fails instead of this run's.
        fence.renew()
        staging_etag = checkpoint.staging_etag = writer.commit()
        checkpoint.etag = job.store.write_json(
            CHECKPOINT_BLOB, {**body, "run": summary.runId, "stagingEtag": staging_etag}, checkpoint.etag, run_id=summary.runId
        )
        # Only the lines the checkpoint counts (after that commit, all the blob holds).
        for line in ticking(islice(job.store.iter_lines(staging, staging_etag), int(body["lines"])), fence):
            seen.check_add(line_id(line))
        for uid, (present, props, reason) in dict(body.get("repeats") or {}).items():
            fold = repeats[uid] = Fold()
            fold.present, fold.props, fold.reason = bool(present), str(props), str(reason)
        checkpoint_etag = checkpoint.etag
        summary.resumed = {"round": round_id, "started": started, "pages": before[0], "users": before[1]}
        logger.info(
            "Sync %s continues the full round %s (%s) from page %d (%d users staged)",
            summary.runId,
            round_id,
            kind,
            before[0] + 1,
            writer.lines,
        )
    saver = Checkpointer(job, summary, fence, writer, staging, round_id, started, before, checkpoint_etag)
    if latest is not None:
        saver.extra = {"kind": "listing", "deltaLink": latest, "deltaLinkIssued": ctx.extra["deltaLinkIssued"]}
    delta_link: str | None = None
    between_pages = True  # a failure while fetching a page leaves everything before it whole
    committed = False
    pages = job.pages(link, ctx.progress) if latest is None else job.listing_pages(link, latest, ctx.progress)
    try:
        for page in pages:
            between_pages = False
            for item in page.value:
                uid = item["id"]
                # A listing sends live users only; a user it sends twice (the directory moved under
                # its pages) takes the exact path, and the last copy wins, as in a delta round.
                if "@removed" not in item and uid not in repeats and not seen.check_add(uid):
                    # A first live copy; snapshot_line picks the selected properties (never an @ annotation).
                    writer.write(snapshot_line(item, job.select))
                else:
                    apply_entry(repeats, item)
            delta_link = page.delta_link or delta_link
            between_pages = True
            if page.next_link and job.clock() - saver.saved >= job.checkpoint_interval:
                saver.save(page.next_link, repeats)
            saver.link = page.next_link
        fence.renew()
        writer.commit()
        del seen
        assert delta_link is not None
        committed = True
        _commit_full(job, ctx, staging, writer.etag, repeats, delta_link, (saver.etag, staging), reconcile=reconcile)
    except Exception as exc:
        if latest is not None and not committed and isinstance(exc, InvalidRequestError) and not fence.lost:
            # The listing's page token expired (or Graph refused the listing): this round cannot be
            # continued by anyone, so its checkpoint and staging go, and a delta round takes over.
            logger.warning("Graph answered %s to the listing round %s; a delta round takes over", _graph_answer(exc), round_id)
            if saver.etag is not None:
                checkpoints.drop(job, Checkpoint({"round": round_id, "staging": staging}, saver.etag), fence=fence)
            else:
                commit._delete_quietly(job, staging)
            raise ListingUnavailableError(f"Graph answered {_graph_answer(exc)} to the listing") from exc
        # The failure path checkpoints only while the lock is provably this run's (save renews first).
        if not committed and delta_link is None and between_pages and saver.link and not isinstance(exc, ResyncRequiredError):
            saver.save(saver.link, repeats, failing=True)
        if checkpoint is None and saver.saves == 0 and not fence.lost and USERS_BLOB not in summary.replaced:
            # Nothing to continue from: the staged copy of the directory goes now.
            commit._delete_quietly(job, staging)
        raise


def _sync_from_now(job: UserSync, ctx: RunContext) -> str:
    """The deltaLink a listing round keeps: fetched before the listing, so the next round replays what it missed.

    Everything that changes while the listing runs comes again in the next incremental round, and
    the last occurrence of an id decides there: a user listed before an edit is updated, one listed
    after a removal was never listed or is removed again, one added after its page was listed is added.
    https://learn.microsoft.com/graph/delta-query-overview ("sync from now")
    """
    issued = job.wall()
    try:
        latest = job.graph.delta_latest(job.select)
    except (ResyncRequiredError, InvalidRequestError) as exc:
        raise ListingUnavailableError(f"Graph answered {_graph_answer(exc)} to $deltatoken=latest") from exc
    if latest is None:
        raise ListingUnavailableError("Graph did not answer $deltatoken=latest with a deltaLink and no data")
    ctx.extra["deltaLinkIssued"] = issued
    return latest


def _commit_full(
    job: UserSync,
    ctx: RunContext,
    staging: str,
    staging_etag: str | None,
    repeats: dict[str, Fold],
    delta_link: str,
    checkpoint: tuple[str | None, str],
    *,
    reconcile: bool,
) -> None:
    """Stream the staged round into the snapshot with the repeats applied, and commit it.

    ``reconcile``: the summary's ``drift`` compares the new snapshot with the old one.
    """
    summary, fence = ctx.summary, ctx.fence
    writer = job.store.writer(USERS_BLOB, summary.runId, etag=ctx.snapshot_etag)
    old = (
        Digests(ticking(job.store.iter_lines(USERS_BLOB, ctx.snapshot_etag), fence)) if reconcile and ctx.snapshot_etag else None
    )
    fence.tick()
    count = 0

    def emit(line: str) -> None:
        nonlocal count
        if old is not None:
            old.see(line)
        writer.write(line)
        count += 1
        if count % RENEW_EVERY_LINES == 0:
            fence.tick()

    for line in job.store.iter_lines(staging, staging_etag):
        fold = repeats.pop(line_id(line), None)
        if fold is None:
            emit(line)
        elif fold.present:
            emit(snapshot_line({**json.loads(line), **json.loads(fold.props)}, job.select))
    for fold in repeats.values():  # ids whose first entry was a removal (or looked repeated)
        if fold.present:
            emit(snapshot_line(json.loads(fold.props), job.select))
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
    cp_etag, cp_staging = checkpoint
    commit.commit(
        job,
        summary,
        fence,
        writer,
        state=job.new_state(ctx, delta_link),
        state_etag=ctx.state_etag,
        checkpoint=(cp_etag, cp_staging),
    )
