"""What one run carries through its phases: its summary, its fence, what it read at the start, its progress."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .fencing import Fence
from .status import SyncSummary

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 10.0  # seconds between progress lines


class Progress:
    """Logs progress at a steady interval and keeps the lease alive between pages."""

    def __init__(self, summary: SyncSummary, fence: Fence, clock: Callable[[], float], interval: float) -> None:
        self.summary, self.fence, self.clock, self.interval = summary, fence, clock, interval
        self.last_log = clock()

    def page(self, users: int) -> None:
        self.summary.pages += 1
        self.summary.users += users
        now = self.clock()
        if now - self.last_log >= self.interval:
            logger.info(
                "Sync %s in progress: %d pages, %d users so far", self.summary.runId, self.summary.pages, self.summary.users
            )
            self.last_log = now
        self.fence.tick()


@dataclass
class RunContext:
    """One run: what it read when it took the lock (the versions its writes are conditional on) and its progress."""

    summary: SyncSummary
    fence: Fence
    progress: Progress
    state: dict[str, Any] | None
    state_etag: str | None
    snapshot_etag: str | None
    started_at: float  # wall clock when the round began: the new deltaLink's issue time
    extra: dict[str, Any] = field(default_factory=dict)
