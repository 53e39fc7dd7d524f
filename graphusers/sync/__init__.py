"""The scheduled sync: a delta-query snapshot of the tenant's users in Blob Storage.

One entry point, ``UserSync(...).run()``; the modules, by what they do:

- ``plan``: whether a run follows the stored deltaLink or does a full round, and why;
- ``full``: a full round of ``/users/delta`` into a staging blob, then into the snapshot;
- ``incremental``: the changes since the deltaLink, streamed into a new snapshot;
- ``checkpoint``: an unfinished full round and the checks that resuming it is safe;
- ``commit``: moving the snapshot (intent, snapshot, change log, state) and completing a commit a run left half done;
- ``fencing``: the lock as a fence: conditional writes and lease renewals, so a stalled run writes nothing stale;
- ``requests``: sync requests that cannot be lost (pending markers the lock holder claims);
- ``status``: the run's summary, ``status.json``, and what ``GET /api/sync/status`` answers;
- ``records``: snapshot lines and delta entries.

A **full round** runs on the first sync, when the stored deltaLink is missing or
too old, when Graph says the delta state expired (410 ``resyncRequired``, or a 4xx
such as 400 ``syncStateNotFound``), when the query changed (``state.json`` keeps a
fingerprint: Graph endpoint, API version, tenant, ``$select``), when a full resync
was requested, and every ``USER_SYNC_FULL_EVERY`` as a reconciliation (delta can
miss an edit made while a round was in progress; the summary's ``drift`` counts
what the snapshot had wrong). A full round that fails or runs out of time keeps a
checkpoint; the next run continues from it for as long as Graph accepts the link
and the staging blob still holds what the checkpoint counts. Later runs follow
the deltaLink and apply only the changes, so memory holds one page plus the
change set, never the tenant.

Entries are applied in the order Graph sends them and the last occurrence of an
id decides: Graph may return an object more than once in a round and does not
promise to unify them (https://learn.microsoft.com/graph/delta-query-overview).

Crash and overlap safety: every write another run could also make is conditional
on the version this run read or wrote last, and a run whose lease renewal failed
writes nothing more (``fencing``). The snapshot moves only after an intent holding
the run's change log and new state is durable; a run that stops between the
snapshot and the state is completed by the next one from that intent (``commit``).
Every run, of any outcome, is recorded in ``status.json``, which nothing else reads
back: a status write cannot corrupt the snapshot.
"""

from __future__ import annotations

from .plan import (
    DELTA_TOKEN_MAX_AGE,
    REASON_EXPIRED,
    REASON_INITIAL,
    REASON_QUERY_CHANGED,
    REASON_RECONCILE,
    REASON_REJECTED,
    REASON_REQUESTED,
    REASON_SELECT_CHANGED,
)
from .records import compose as _compose
from .requests import SyncRequest
from .run import CHECKPOINT_INTERVAL, DEFAULT_FULL_EVERY, PAGE_SIZE, SEEN_FILTER_BITS, UserSync
from .status import SyncSummary, read_status

__all__ = [
    "CHECKPOINT_INTERVAL",
    "DEFAULT_FULL_EVERY",
    "DELTA_TOKEN_MAX_AGE",
    "PAGE_SIZE",
    "REASON_EXPIRED",
    "REASON_INITIAL",
    "REASON_QUERY_CHANGED",
    "REASON_RECONCILE",
    "REASON_REJECTED",
    "REASON_REQUESTED",
    "REASON_SELECT_CHANGED",
    "SEEN_FILTER_BITS",
    "SyncRequest",
    "SyncSummary",
    "UserSync",
    "_compose",
    "read_status",
]
