"""An incremental round: follow the deltaLink, stream the old snapshot into the new one with the changes applied."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ..storage import USERS_BLOB
from . import commit
from .context import RunContext
from .records import Fold, apply_entry, compose, dumps, escape, line_id, snapshot_line

if TYPE_CHECKING:
    from .run import UserSync

logger = logging.getLogger(__name__)

RENEW_EVERY_LINES = 20_000  # the rewrite checks the lease this often (it renews every 20 s)


def incremental_round(job: UserSync, ctx: RunContext, delta_link: str, link_issued: float) -> None:
    """Apply one delta round to the snapshot; memory holds the change set, never the tenant."""
    summary, fence = ctx.summary, ctx.fence
    changes: dict[str, Fold] = {}
    new_link: str | None = None
    for page in job.pages(delta_link, ctx.progress):
        for item in page.value:
            apply_entry(changes, item)
        new_link = page.delta_link or new_link
    assert new_link is not None and ctx.snapshot_etag is not None
    if not changes:
        # Nothing changed: keep the snapshot as it is, no rewrite, no change log.
        summary.users = job.previous_users
        fence.renew()
        state = job.new_state(ctx, new_link)
        job.store.write_json("state.json", {**state, "snapshotEtag": ctx.snapshot_etag}, ctx.state_etag, run_id=summary.runId)
        summary.replaced.append("state.json")
        return
    writer = job.store.writer(USERS_BLOB, summary.runId, etag=ctx.snapshot_etag)
    log: list[dict[str, Any]] = []
    done: set[str] = set()  # changed ids already applied: bounded by the change set
    for count, line in enumerate(job.store.iter_lines(USERS_BLOB, ctx.snapshot_etag), 1):
        if count % RENEW_EVERY_LINES == 0:
            fence.tick()
        uid = line_id(line)
        fold = changes.get(uid)
        if fold is None:
            writer.write(escape(line))
            continue
        if uid in done:
            continue
        done.add(uid)
        if not fold.present:
            summary.removed += 1
            log.append({"change": "removed", "id": uid, "reason": fold.reason or "deleted"})
            continue
        change = json.loads(fold.props)
        writer.write(snapshot_line({**json.loads(line), **change}, job.select))
        summary.updated += 1
        log.append({"change": "updated", "id": uid, "properties": change})
    for uid, fold in changes.items():
        if uid in done or not fold.present:
            continue  # a removal of a user the snapshot never had changes nothing
        line = snapshot_line(json.loads(fold.props), job.select)
        writer.write(line)
        summary.added += 1
        log.append({"change": "added", "id": uid, "properties": json.loads(line)})
    summary.users = writer.lines
    name = commit.changes_name(delta_link, link_issued)
    if ctx.extra.get("replay"):
        # The snapshot is ahead of state.json and no intent could complete it (a run from before
        # intents): the round was applied before, so its additions look like updates now.
        # Keep what the first pass logged, with this pass's values.
        earlier = job.store.read_lines(name)
        if earlier:
            log = compose([json.loads(line) for line in earlier], log)
    commit.commit(
        job,
        summary,
        fence,
        writer,
        state=job.new_state(ctx, new_link),
        state_etag=ctx.state_etag,
        changes=name,
        log=[dumps(entry) for entry in log],
    )
