"""An in-memory stand-in for azure-storage-blob's ContainerClient: blocks, ETags, leases, chunked downloads.

Only what ``graphusers.storage.SyncStore`` calls, with the service's rules that
matter to it: a commit is all-or-nothing, ETag conditions fail with
``ResourceModifiedError``, a second lease fails with 409, and a download comes in
``chunk_size`` pieces, so a small size makes every line cross chunk boundaries.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

_etags = itertools.count(1)


@dataclass
class _Stored:
    data: bytes
    etag: str = field(default_factory=lambda: f'"0x{next(_etags):x}"')


@dataclass
class _Props:
    etag: str


@dataclass
class _Item:
    name: str


class FakeLease:
    """A lease on one blob."""

    def __init__(self, container: FakeContainer, name: str) -> None:
        self.container, self.name = container, name
        self.renewals = 0

    def renew(self) -> None:
        self.renewals += 1

    def release(self) -> None:
        self.container.leased.discard(self.name)


class FakeDownload:
    """What ``download_blob`` returns."""

    def __init__(self, stored: _Stored, chunk_size: int) -> None:
        self._data, self._chunk = stored.data, chunk_size
        self.properties = _Props(stored.etag)

    def readall(self) -> bytes:
        return self._data

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), self._chunk):
            yield self._data[start : start + self._chunk]


class FakeBlob:
    """A BlobClient over the container's dict."""

    def __init__(self, container: FakeContainer, name: str) -> None:
        self.container, self.name = container, name

    def _get(self) -> _Stored:
        stored = self.container.blobs.get(self.name)
        if stored is None:
            raise ResourceNotFoundError("The specified blob does not exist.")
        return stored

    def _check(self, etag: str | None, match_condition: MatchConditions | None) -> None:
        current = self.container.blobs.get(self.name)
        if match_condition == MatchConditions.IfMissing and current is not None:
            raise ResourceExistsError("The specified blob already exists.")
        if match_condition == MatchConditions.IfNotModified and (current is None or current.etag != etag):
            raise ResourceModifiedError("The condition specified using HTTP conditional header(s) is not met.")

    def _put(self, data: bytes) -> dict[str, Any]:
        self.container.fail("write", self.name)
        stored = self.container.blobs[self.name] = _Stored(data)
        self.container.staged.pop(self.name, None)
        self.container.committed.pop(self.name, None)
        return {"etag": stored.etag}

    def download_blob(self, etag: str | None = None, match_condition: MatchConditions | None = None) -> FakeDownload:
        self.container.fail("read", self.name)
        stored = self._get()
        if match_condition == MatchConditions.IfNotModified and stored.etag != etag:
            raise ResourceModifiedError("The condition specified using HTTP conditional header(s) is not met.")
        return FakeDownload(stored, self.container.chunk_size)

    def get_blob_properties(self) -> _Props:
        return _Props(self._get().etag)

    def upload_blob(
        self, data: bytes, overwrite: bool = False, etag: str | None = None, match_condition: MatchConditions | None = None
    ) -> dict[str, Any]:
        if not overwrite and self.name in self.container.blobs:
            raise ResourceExistsError("The specified blob already exists.")
        self._check(etag, match_condition)
        return self._put(bytes(data))

    def stage_block(self, block_id: str, data: bytes) -> None:
        self.container.fail("stage", self.name)
        self.container.staged.setdefault(self.name, {})[block_id] = bytes(data)
        self.container.blocks_staged += 1

    def commit_block_list(
        self, blocks: list[Any], etag: str | None = None, match_condition: MatchConditions | None = None
    ) -> dict[str, Any]:
        self._check(etag, match_condition)
        # Like Blob Storage, a block id names the latest uncommitted block, else the committed one;
        # a commit discards the other uncommitted blocks and keeps the listed ones committed.
        staged = self.container.staged.get(self.name, {})
        committed = self.container.committed.get(self.name, {})
        chosen = {b.id: staged[b.id] if b.id in staged else committed[b.id] for b in blocks}
        self.container.commits.append((self.name, len(blocks)))
        result = self._put(b"".join(chosen[b.id] for b in blocks))
        self.container.committed[self.name] = chosen
        return result

    def acquire_lease(self, lease_duration: int = -1) -> FakeLease:
        if self.name in self.container.leased:
            raise HttpResponseError(message="There is already a lease present.", response=_Status(409))
        self.container.leased.add(self.name)
        return FakeLease(self.container, self.name)

    def delete_blob(self) -> None:
        self._get()
        del self.container.blobs[self.name]
        self.container.staged.pop(self.name, None)
        self.container.committed.pop(self.name, None)


class _Status:
    """Just enough of an HTTP response for HttpResponseError."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = "Conflict"
        self.headers: dict[str, str] = {}
        self.request: Any = None

    def text(self) -> str:
        return ""


class FakeContainer:
    """A ContainerClient in memory; ``failures`` maps (operation, blob name) to an exception to raise once."""

    def __init__(self, chunk_size: int = 4 * 1024 * 1024) -> None:
        self.chunk_size = chunk_size
        self.blobs: dict[str, _Stored] = {}
        self.staged: dict[str, dict[str, bytes]] = {}
        self.committed: dict[str, dict[str, bytes]] = {}  # each blob's committed blocks by id
        self.leased: set[str] = set()
        self.commits: list[tuple[str, int]] = []
        self.blocks_staged = 0
        self.failures: dict[tuple[str, str], Exception] = {}

    def fail(self, operation: str, name: str) -> None:
        exc = self.failures.pop((operation, name), None)
        if exc is not None:
            raise exc

    def create_container(self) -> None:
        raise ResourceExistsError("The specified container already exists.")

    def get_blob_client(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)

    def upload_blob(self, name: str, data: bytes, overwrite: bool = False) -> dict[str, Any]:
        return self.get_blob_client(name).upload_blob(data, overwrite=overwrite)

    def list_blobs(self, name_starts_with: str = "") -> list[_Item]:
        return [_Item(n) for n in sorted(self.blobs) if n.startswith(name_starts_with)]

    def text(self, name: str) -> str:
        """A blob's content as text (test helper)."""
        return self.blobs[name].data.decode()
