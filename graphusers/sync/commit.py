"""Moving the snapshot: an intent first, then users.jsonl, then the change log and state.json, each fenced.

A run writes ``staging/commit-<run id>.jsonl`` before it commits the snapshot: the
state it will write and every change it applied, removals included. The snapshot's
commit carries the run id in its metadata. When a run stops between the snapshot
and the state (a crash, a failed write, a lost lock), the next lock holder sees a
snapshot newer than ``state.json`` names, finds the intent of the run the snapshot's
metadata names, and completes that run's commit from it: the same ``changes/`` blob,
the same state. So the change log is exact whatever fails, and a 412 on a run's own
commit (the SDK's retry after a lost response) is told apart from losing to another
run by that metadata.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..storage import CHECKPOINT_BLOB, STAGING_PREFIX, STATE_BLOB, USERS_BLOB, BlockWriter
from .fencing import Fence
from .records import dumps
from .status import SyncSummary, stamp

if TYPE_CHECKING:
    from .run import UserSync

logger = logging.getLogger(__name__)

INTENT_PREFIX = f"{STAGING_PREFIX}commit-"
RUN_METADATA = "syncrun"  # users.jsonl's metadata: the run that committed this version
INTENT_MAX_AGE = 24 * 3600.0  # an intent no run can complete any more is removed after this


def intent_name(run_id: str) -> str:
    return f"{INTENT_PREFIX}{run_id}.jsonl"


def changes_name(delta_link: str, link_issued: float) -> str:
    """``changes/<issued>-<round>.jsonl``: named by the deltaLink the round started from, so a replay names the same blob."""
    import hashlib

    when = datetime.fromtimestamp(link_issued, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"changes/{when}-{hashlib.sha256(delta_link.encode()).hexdigest()[:16]}.jsonl"


def commit(
    job: UserSync,
    summary: SyncSummary,
    fence: Fence,
    writer: BlockWriter,
    *,
    state: dict[str, Any],
    state_etag: str | None,
    changes: str | None = None,
    log: list[str] | None = None,
    checkpoint: tuple[str | None, str] | None = None,
) -> str:
    """Write the intent, commit ``writer`` as users.jsonl, then complete the commit; the snapshot's new ETag.

    ``checkpoint``: the (ETag, staging blob) of the round's checkpoint, dropped at the end.
    """
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    header = {
        "run": summary.runId,
        "saved": stamp(job.wall),
        "savedAt": job.wall(),
        "state": state,
        "stateEtag": state_etag,
        "changes": changes,
        "checkpoint": list(checkpoint) if checkpoint else None,
    }
    lines = [dumps(header), *(log or [])]
    fence.renew()
    job.store.write_bytes(intent_name(summary.runId), ("\n".join(lines) + "\n").encode(), None, run_id=summary.runId)
    fence.renew()
    try:
        etag = writer.commit(metadata={RUN_METADATA: summary.runId})
    except (ResourceModifiedError, ResourceExistsError):
        # Another run moved the snapshot (the metadata check found it is not this run's): nothing replaced.
        _delete_quietly(job, intent_name(summary.runId))
        raise
    except Exception as exc:
        # No answer (a reset, a timeout): the commit may have landed, and the metadata tells.
        try:
            current, metadata = job.store.properties(USERS_BLOB)
        except Exception:  # noqa: BLE001 - cannot tell; the intent stays for the next run to judge
            raise exc from None
        if metadata.get(RUN_METADATA) != summary.runId or current is None:
            _delete_quietly(job, intent_name(summary.runId))
            raise
        logger.warning("Sync %s: the snapshot commit got no answer but had landed", summary.runId)
        etag = current
    summary.replaced.append(USERS_BLOB)
    complete(job, fence, header, log or [], etag, summary)
    return etag


def complete(job: UserSync, fence: Fence, header: dict[str, Any], log: list[str], etag: str, summary: SyncSummary) -> None:
    """The commit's second half: the change log, state.json (If-Match the state the run read), the tidying."""
    if header.get("changes"):
        fence.renew()
        # The same bytes whichever run writes them: the intent holds them.
        job.store.write_lines(str(header["changes"]), log)
        summary.replaced.append(str(header["changes"]))
    fence.renew()
    job.store.write_json(STATE_BLOB, {**header["state"], "snapshotEtag": etag}, header.get("stateEtag"), run_id=summary.runId)
    summary.replaced.append(STATE_BLOB)
    _delete_quietly(job, intent_name(str(header["run"])))
    if header.get("checkpoint"):
        checkpoint_etag, staging = header["checkpoint"]
        if checkpoint_etag:  # only the version this round wrote or resumed: never a newer round's
            _delete_quietly(job, CHECKPOINT_BLOB, str(checkpoint_etag))
        _delete_quietly(job, str(staging))


def roll_forward(job: UserSync, fence: Fence, summary: SyncSummary, state: dict[str, Any] | None, state_etag: str | None) -> bool:
    """Complete the commit of a run that replaced users.jsonl but not state.json; True if there was one."""
    etag, metadata = job.store.properties(USERS_BLOB)
    if etag is None or (state or {}).get("snapshotEtag") == etag:
        return False
    run = metadata.get(RUN_METADATA)
    lines = job.store.read_lines(intent_name(run)) if run else None
    if not lines:
        return False  # a snapshot from before intents, or an intent already gone: the replay redoes the round
    header = json.loads(lines[0])
    if header.get("stateEtag") != state_etag:
        return False  # the state moved on since that run read it: its intent no longer applies
    logger.warning("Sync %s completes the commit of run %s, which replaced users.jsonl but not state.json", summary.runId, run)
    complete(job, fence, header, lines[1:], etag, summary)
    summary.message = f"Completed the commit of run {run} (users.jsonl was replaced, state.json was not). "
    return True


def remove_stale(job: UserSync, keep: set[str], completed: str | None = None) -> None:
    """Remove staging blobs of runs that died (only the lock holder calls this); an intent only when it is old.

    ``completed``: the run whose commit state.json already records (its intent is done with).
    """
    for name in job.store.list_names(STAGING_PREFIX):
        if name in keep:
            continue
        if name.startswith(INTENT_PREFIX) and name != intent_name(completed or "-"):
            # A run that lost its lock between its intent and its commit may still commit: its
            # intent must stay for the next run to complete that commit. Old ones go.
            lines = job.store.read_lines(name) or []
            try:
                saved = float(json.loads(lines[0]).get("savedAt", 0)) if lines else 0.0
            except (ValueError, AttributeError):
                saved = 0.0
            if job.wall() - saved < INTENT_MAX_AGE:
                continue
        job.store.delete(name)
        logger.warning("Removed %s left by an earlier sync that did not finish", name)


def _delete_quietly(job: UserSync, name: str, etag: str | None = None) -> None:
    try:
        job.store.delete(name, etag)
    except Exception as exc:  # noqa: BLE001 - the next run that holds the lock removes it
        logger.warning("Could not delete %s (%s)", name, type(exc).__name__)
