"""An unfinished full round: its staging blob, ``staging/checkpoint.json``, and the checks that a resume is safe.

The checkpoint counts what the staging blob holds: the staging blob's ETag, its
blocks (as ``[run id, count]`` segments, because each run stages under its own
block ids) and lines. It is written with If-Match on its own last version, after
the staging blob was committed with If-Match on the version the checkpoint
recorded. A checkpoint whose staging blob no longer has the recorded ETag (a run
that lost the race committed it, or half a cleanup happened) is dropped, and the
round starts over, saying so; resuming it would fail every later run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..storage import CHECKPOINT_BLOB, BlockWriter, block_ids
from .fencing import Fence
from .records import Fold
from .status import SyncSummary, stamp

if TYPE_CHECKING:
    from .run import UserSync

logger = logging.getLogger(__name__)


class Checkpoint:
    """A checkpoint as read: its body and ETag."""

    def __init__(self, body: dict[str, Any], etag: str) -> None:
        self.body, self.etag = body, etag
        # The staging blob's version the resume continues (its If-Match): the recorded one, or the
        # current one when the blob only grew past what the checkpoint counts.
        self.staging_etag = str(body.get("stagingEtag") or "")

    @property
    def round(self) -> str:
        return str(self.body.get("round"))

    @property
    def kind(self) -> str:
        """The round's kind: ``listing`` (its nextLink is a /users page, ``deltaLink`` came first) or ``delta``."""
        return "listing" if self.body.get("kind") == "listing" else "delta"

    @property
    def staging(self) -> str:
        return str(self.body.get("staging") or "")

    def segments(self) -> list[tuple[str, int]]:
        """The staging blob's committed blocks as ``(run id, count)`` pairs."""
        raw = self.body.get("segments")
        if isinstance(raw, list):
            return [(str(run), int(count)) for run, count in raw]
        return [(self.round, int(self.body.get("blocks") or 0))]  # written before runs had their own block ids


def load(job: UserSync, summary: SyncSummary, state: dict[str, Any] | None = None) -> Checkpoint | None:
    """The unfinished full round's checkpoint, if it is for this query and still counts its staging blob.

    A checkpoint that cannot be resumed is dropped (with If-Match: a checkpoint another run
    wrote since is left alone) and the summary says why the round starts over. One of a round
    ``state`` (state.json) already records is dropped without a word: that round is done.
    """
    body, etag = job.store.read_json(CHECKPOINT_BLOB)
    if not body or etag is None:
        return None
    checkpoint = Checkpoint(body, etag)
    if committed(checkpoint, state):
        # Its run died, or its delete failed, after state.json and before the tidying: resuming it
        # would fetch its last pages again and rewrite the snapshot for nothing.
        logger.info("The checkpoint of round %s is left from a round state.json records; removing it", checkpoint.round)
        drop(job, checkpoint, fence=None, quietly=True)
        return None
    changed = job.query_changed(body)
    link = body.get("nextLink")
    problem = ""
    listing_link = body.get("deltaLink")
    if changed or not isinstance(link, str) or not job.graph.is_own_url(link):
        problem = f"it was for another query ({', '.join(changed) or 'nextLink'})"
    elif checkpoint.kind == "listing" and (
        not isinstance(listing_link, str) or not job.graph.is_own_url(listing_link, "/users/delta")
    ):
        problem = "it was for another query (deltaLink)"
    elif not checkpoint.staging or not _counts(job, checkpoint):
        # The staging blob changed after the checkpoint counted it (a run that lost its lock
        # committed it) or is gone: a resume would commit a block list the blob no longer has.
        problem = "its staging blob no longer holds what the checkpoint counts"
    if not problem:
        return checkpoint
    logger.warning("The unfinished full round %s cannot be resumed: %s; starting over", checkpoint.round, problem)
    summary.message = f"The unfinished full round {checkpoint.round} could not be resumed ({problem}); it started over."
    drop(job, checkpoint, fence=None)
    return None


def committed(checkpoint: Checkpoint, state: dict[str, Any] | None) -> bool:
    """True if state.json already records this round's commit (the run died before deleting the checkpoint)."""
    last = (state or {}).get("lastSync") or {}
    return checkpoint.round in (last.get("runId"), (last.get("resumed") or {}).get("round"))


def _counts(job: UserSync, checkpoint: Checkpoint) -> bool:
    """True if the staging blob still begins with exactly the blocks the checkpoint counts."""
    etag = job.store.etag(checkpoint.staging)
    if etag is None:
        return False
    if etag == checkpoint.staging_etag:
        return True
    # The blob moved on: fine if only by blocks appended after the counted ones (the round committed
    # its last pages and then failed, or its checkpoint write failed). Block ids name the run and the
    # position, so an equal prefix of ids is an equal prefix of lines; the resume drops the rest.
    wanted = block_ids(checkpoint.segments())
    committed = job.store.committed_blocks(checkpoint.staging)
    if committed is None or committed[: len(wanted)] != wanted:
        return False
    logger.info(
        "The staging blob of round %s holds %d blocks past its checkpoint; resuming from the checkpoint",
        checkpoint.round,
        len(committed) - len(wanted),
    )
    checkpoint.staging_etag = etag
    return True


def drop(job: UserSync, checkpoint: Checkpoint | None, *, fence: Fence | None, quietly: bool = False) -> None:
    """Delete the checkpoint (if it is still the version read) and then its staging blob."""
    from azure.core.exceptions import ResourceModifiedError

    if checkpoint is None:
        return
    try:
        if fence is not None:
            fence.renew()
        # The checkpoint goes first: staging without a checkpoint is removed by the next run
        # that holds the lock, but a checkpoint without its staging would fail every resume.
        job.store.delete(CHECKPOINT_BLOB, checkpoint.etag)
        if checkpoint.staging:
            job.store.delete(checkpoint.staging)
    except ResourceModifiedError:
        logger.warning("The checkpoint of round %s changed since it was read; left in place", checkpoint.round)
    except Exception as exc:
        if not quietly:
            raise
        logger.warning("Could not delete the checkpoint of round %s (%s)", checkpoint.round, type(exc).__name__)


class Checkpointer:
    """Saves an unfinished full round: the staging blob's blocks committed, then checkpoint.json, both conditional."""

    def __init__(
        self,
        job: UserSync,
        summary: SyncSummary,
        fence: Fence,
        writer: BlockWriter,
        staging: str,
        round_id: str,
        started: str,
        before: tuple[int, int],
        etag: str | None,
    ) -> None:
        self.job, self.summary, self.fence, self.writer, self.staging = job, summary, fence, writer, staging
        self.round_id, self.started = round_id, started
        self.before_pages, self.before_users = before
        self.etag = etag  # the checkpoint's version this round may replace (None: none exists)
        self.saved = job.clock()
        self.saves = 0
        self.link: str | None = None  # the next page's link after the last page processed whole
        # What a listing round adds to its checkpoint: its kind, the deltaLink it fetched first, and when.
        self.extra: dict[str, Any] = {}

    def save(self, next_link: str, repeats: dict[str, Fold], *, failing: bool = False) -> None:
        """Commit the staged blocks and record them; on the failure path only while the lock is provably ours."""
        try:
            self.fence.renew()
            # Blocks first, then the checkpoint that counts them: a crash between the two leaves
            # the older checkpoint, which no longer matches the blob's ETag and is dropped.
            staging_etag = self.writer.commit()
            self.etag = self._write(
                {
                    "round": self.round_id,
                    "run": self.summary.runId,
                    "started": self.started,
                    "saved": stamp(self.job.wall),
                    "reason": self.summary.reason,
                    "staging": self.staging,
                    "stagingEtag": staging_etag,
                    "nextLink": next_link,
                    "pages": self.before_pages + self.summary.pages,
                    "users": self.before_users + self.summary.users,
                    "blocks": self.writer.blocks,
                    "segments": self.writer.segments,
                    "lines": self.writer.lines,
                    "fingerprint": self.job.fingerprint(),
                    "repeats": {uid: [f.present, f.props, f.reason] for uid, f in repeats.items()},
                    **self.extra,
                },
            )
        except Exception as exc:
            if not failing:
                raise
            # The round is failing anyway; the older checkpoint (if any) still holds, or is dropped
            # by the next run because it no longer matches the staging blob.
            logger.warning("Could not checkpoint the full round %s (%s)", self.round_id, type(exc).__name__)
            return
        self.saved = self.job.clock()
        self.saves += 1
        logger.info(
            "Sync %s checkpointed the full round %s after %d pages (%d users staged)",
            self.summary.runId,
            self.round_id,
            self.before_pages + self.summary.pages,
            self.writer.lines,
        )

    def _write(self, body: dict[str, Any]) -> str:
        """Write the checkpoint with If-Match on the version this round wrote last (If-None-Match before its first)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            return self.job.store.write_json(CHECKPOINT_BLOB, body, self.etag, run_id=self.summary.runId)
        except ResourceExistsError:
            if self.etag is not None:
                raise
            # No checkpoint existed when this round began and this run renewed its lease just now: one
            # there now was written by a run that had lost the lock (it stalled before its first
            # checkpoint). It counts another round, so it is replaced, not a reason to fail this one.
            found, etag = self.job.store.read_json(CHECKPOINT_BLOB)
            stale = found or {}
            if etag is None or stale.get("round") == self.round_id:
                raise
            logger.warning("A checkpoint of round %s appeared after this round began; replacing it", stale.get("round"))
            return self.job.store.write_json(CHECKPOINT_BLOB, body, etag, run_id=self.summary.runId)
