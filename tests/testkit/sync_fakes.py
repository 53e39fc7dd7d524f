"""A scripted delta Graph and a clock for UserSync tests over the in-memory container (tests/testkit/fake_storage.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from graphusers.errors import InvalidRequestError, ResyncRequiredError, UnavailableError
from graphusers.graph import DeltaPage, Page
from graphusers.storage import SyncStore
from graphusers.sync import UserSync
from testkit.fake_storage import FakeContainer

SELECT = ("id", "displayName", "mail")
BASE = "https://graph.example/v1.0/users/delta?"
DAY = 86400.0


def user(uid: str, name: str | None = None) -> dict[str, Any]:
    return {"id": uid, "displayName": name or f"User {uid}", "mail": f"{uid}@example.com"}


def removed(uid: str) -> dict[str, Any]:
    return {"id": uid, "@removed": {"reason": "deleted"}}


class Clock:
    """A clock the test moves."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class PagedGraph:
    """A full round of ``pages`` with a $skiptoken link per page; ``fail_at`` fails fetching that page once.

    ``rejected`` holds links Graph no longer accepts; ``changes`` answers a deltaLink.
    """

    endpoint = "https://graph.example"

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.fail_at: int | None = None
        self.rejected: set[str] = set()
        self.bad_request: set[str] = set()
        self.changes: dict[str, list[dict[str, Any]] | Exception] = {}
        self.fetched: list[str] = []
        self.requests_sent = 0
        self.delta_links = 0
        self.round_no = 0

    def is_own_url(self, url: str, resource: str | None = None) -> bool:
        return url.startswith(BASE)

    def _get(self, link: str) -> None:
        self.fetched.append(link)
        self.requests_sent += 1
        if link in self.rejected:
            raise ResyncRequiredError("expired", status=410, graph_code="resyncRequired")
        if link in self.bad_request:
            raise InvalidRequestError("Microsoft Graph rejected the query: bad skip token")

    def delta_latest(self, select: tuple[str, ...]) -> str:
        """ "Sync from now": a deltaLink whose round of changes is ``changes.get(link, [])``."""
        self._get(f"{BASE}$deltatoken=latest")
        self.delta_links += 1
        return f"{BASE}$deltatoken={self.delta_links}"

    def iter_listing(self, select: tuple[str, ...], next_link: str | None = None) -> Iterator[Page]:
        """A listing of ``pages`` (their live entries) with a ``$listing`` link per page; ``fail_at`` as for delta."""
        if next_link is not None:
            round_no, start = (int(part) for part in next_link.rsplit("=", 1)[1].split("."))
        else:
            self.round_no += 1
            round_no, start = self.round_no, 0
        for number in range(start, len(self.pages)):
            link = f"{BASE}$listing={round_no}.{number}"
            if number == self.fail_at:
                self.fail_at = None
                self.fetched.append(link)
                raise UnavailableError("Microsoft Graph is unreachable.", retry_after=1)
            self._get(link)
            last = number == len(self.pages) - 1
            value = [item for item in self.pages[number] if "@removed" not in item]
            yield Page(value=value, next_link=None if last else f"{BASE}$listing={round_no}.{number + 1}")

    def iter_delta(self, delta_link: str | None, select: tuple[str, ...], page_size: int) -> Iterator[DeltaPage]:
        link = delta_link or f"{BASE}$select=..."
        if delta_link is not None and "$deltatoken" in delta_link:
            self._get(link)
            script = self.changes.get(delta_link, [])
            if isinstance(script, Exception):
                raise script
            self.delta_links += 1
            yield DeltaPage(value=script, next_link=None, delta_link=f"{BASE}$deltatoken={self.delta_links}")
            return
        if "$skiptoken" in link:  # {round}.{page}: each round has its own links
            round_no, start = (int(part) for part in link.rsplit("=", 1)[1].split("."))
        else:
            self.round_no += 1
            round_no, start = self.round_no, 0
        for number in range(start, len(self.pages)):
            link = f"{BASE}$skiptoken={round_no}.{number}" if number else link
            if number == self.fail_at:
                self.fail_at = None
                self.fetched.append(link)
                raise UnavailableError("Microsoft Graph is unreachable.", retry_after=1)
            self._get(link)
            last = number == len(self.pages) - 1
            self.delta_links += last
            yield DeltaPage(
                value=self.pages[number],
                next_link=None if last else f"{BASE}$skiptoken={round_no}.{number + 1}",
                delta_link=f"{BASE}$deltatoken={self.delta_links}" if last else None,
            )


def make(
    graph: PagedGraph,
    container: FakeContainer,
    *,
    wall: Clock | None = None,
    tenant: str = "t1",
    select: tuple[str, ...] = SELECT,
    full_every: float | None = 7 * DAY,
) -> UserSync:
    return UserSync(
        graph,  # type: ignore[arg-type]
        SyncStore(container, block_size=64),
        select,
        wall=wall or Clock(),
        clock=Clock(),
        seen_filter_bits=1 << 12,
        tenant=tenant,
        full_every=full_every,
        checkpoint_interval=1e9,
        full_round="delta",  # these fakes script delta rounds; listing rounds have their own tests
    )


def snapshot(container: FakeContainer) -> dict[str, dict[str, Any]]:
    records = [json.loads(line) for line in container.text("users.jsonl").splitlines()]
    assert len(records) == len({r["id"] for r in records}), "duplicate lines"
    return {r["id"]: r for r in records}


def tenant_pages(count: int, per_page: int) -> list[list[dict[str, Any]]]:
    users = [user(f"u{n:04d}") for n in range(count)]
    return [users[i : i + per_page] for i in range(0, count, per_page)]


# -- resumable full rounds -------------------------------------------------------------------------------------
