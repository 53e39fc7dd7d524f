"""The scheduled job: read every user page by page through the shared client."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from .graph import GraphClient, UsersQuery

logger = logging.getLogger(__name__)

PAGE_SIZE = 999  # Graph's maximum for /users: fewest requests per user.
PROGRESS_INTERVAL = 10.0  # seconds between progress lines on long runs


@dataclass
class ListingSummary:
    """What one run of the job saw."""

    pages: int = 0
    users: int = 0
    graph_requests: int = 0
    elapsed_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return asdict(self)


def list_all_users(graph: GraphClient, select: tuple[str, ...]) -> ListingSummary:
    """Page through every user, logging progress at a steady interval and a summary at the end."""
    summary = ListingSummary()
    started = last_progress = time.monotonic()
    requests_before = graph.requests_sent
    for page in graph.iter_pages(UsersQuery(top=PAGE_SIZE, select=select)):
        summary.pages += 1
        summary.users += len(page.value)
        now = time.monotonic()
        if now - last_progress >= PROGRESS_INTERVAL:
            logger.info("User listing in progress: %d pages, %d users so far", summary.pages, summary.users)
            last_progress = now
    summary.graph_requests = graph.requests_sent - requests_before
    summary.elapsed_ms = int((time.monotonic() - started) * 1000)
    logger.info(
        "User listing done: %d pages, %d users, %d Graph requests in %d ms",
        summary.pages, summary.users, summary.graph_requests, summary.elapsed_ms,
    )
    return summary
