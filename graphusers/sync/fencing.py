"""The sync lock as a fence: a run writes only what it can prove is still its own.

A lease's timing proves nothing: a run that stalls past it (a page fetch with
retries, a slow commit) keeps running while another takes the lock. So timing is
only the first line. Every write another run could also make is conditional on
the version this run read or wrote last (If-Match on the checkpoint, the staging
blob, the snapshot and the state; If-None-Match where it creates one), so those
ETags are the fencing tokens: a write from a run that lost the race fails instead
of landing on top of the other run's work. The lease adds a stop: a run renews it
before every write that matters and during long phases, and a run whose renewal
failed writes nothing more, not even its failure path's checkpoint.
https://learn.microsoft.com/rest/api/storageservices/lease-blob
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import StorageError

logger = logging.getLogger(__name__)

LEASE_RENEW_INTERVAL = 20.0  # seconds between renewals in long phases; the lease lasts 60


class LeaseLostError(StorageError):
    """This run could not renew the sync lock: another run may hold it, so this one stopped writing."""

    code = "lease_lost"

    def __init__(self) -> None:
        super().__init__(
            "The sync lost its lock (a step took longer than the lock's 60 s lease and the lock could not be "
            "renewed); it stopped writing, and the run that holds the lock now, or the next one, completes the sync.",
            retry_after=30,
        )


class Fence:
    """The lease this run holds: ``renew`` before a write that matters, ``tick`` in long phases."""

    def __init__(self, lease: Any, clock: Callable[[], float], run_id: str) -> None:
        self.lease, self.clock, self.run_id = lease, clock, run_id
        self.lost = False
        self.last = clock()

    def renew(self) -> None:
        """Renew now; a failure means the lock may be someone else's: ``LeaseLostError``, and ``lost`` from then on."""
        if self.lost:
            raise LeaseLostError()
        try:
            self.lease.renew()
        except Exception as exc:
            self.lost = True
            logger.error("Sync %s could not renew its lock (%s); it writes nothing more", self.run_id, type(exc).__name__)
            raise LeaseLostError() from exc
        self.last = self.clock()

    def tick(self) -> None:
        """Renew if ``LEASE_RENEW_INTERVAL`` passed since the last renewal (called per page or per many lines)."""
        if self.lost or self.clock() - self.last >= LEASE_RENEW_INTERVAL:
            self.renew()

    def release(self) -> None:
        """Give the lock up (a lost lease expires on its own)."""
        try:
            self.lease.release()
        except Exception:  # noqa: BLE001 - the lease expires on its own
            if not self.lost:
                logger.warning("Could not release the sync lock; it expires within a minute")
