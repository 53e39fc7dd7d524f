"""An in-memory stand-in for azure-storage-blob's ContainerClient that follows Blob Storage's documented rules.

Only what ``graphusers.storage.SyncStore`` calls, with the service's rules that matter to it:

- every write makes a new ETag; If-Match (``IfNotModified``) and If-None-Match * (``IfMissing``)
  conditions fail with ``ResourceModifiedError`` / ``ResourceExistsError``, on uploads, block
  list commits and deletes
  (https://learn.microsoft.com/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations);
- Put Block List takes each listed id from the uncommitted blocks first ("Latest"), else from the
  committed ones, fails with 400 InvalidBlockList for an id it has in neither, and discards every
  uncommitted block it did not list (https://learn.microsoft.com/rest/api/storageservices/put-block-list);
- a lease lasts ``lease_duration`` seconds of the container's ``clock``; a second acquire fails
  with 409 while it lasts; renew works after expiry only if nobody leased the blob since, else
  409 (https://learn.microsoft.com/rest/api/storageservices/lease-blob);
- a download comes in ``chunk_size`` pieces, so a small size makes every line cross chunk boundaries.

Seams for tests: ``failures`` raises once at an operation; ``lost_responses`` applies an operation
and then raises what the SDK's retry of it would get (412); ``hook`` is called before every
operation with ``(operation, blob name)`` (the interleaving explorer pauses runs there); ``writes``
records every write that took effect, with the ``tag`` of the thread that made it.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

_etags = itertools.count(1)


@dataclass
class _Stored:
    data: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: f'"0x{next(_etags):x}"')


@dataclass
class _Props:
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class _Item:
    name: str


@dataclass
class _Block:
    id: str
    size: int


def _status_error(status: int, message: str, code: str) -> HttpResponseError:
    exc = HttpResponseError(message=message, response=_Status(status))
    exc.error_code = code  # type: ignore[attr-defined]
    return exc


class FakeLease:
    """A lease on one blob, with its own id, as ``acquire_lease`` returns it."""

    def __init__(self, container: FakeContainer, name: str, duration: float) -> None:
        self.container, self.name, self.duration = container, name, duration
        self.id = uuid.uuid4().hex
        self.renewals = 0

    def renew(self) -> None:
        self.container.op("renew", self.name)
        held = self.container.leases.get(self.name)
        if held is None or held[0] != self.id:
            # Renew after expiry works only while nobody else leased the blob.
            raise _status_error(
                409, "The lease ID specified did not match the lease ID for the blob.", "LeaseIdMismatchWithLeaseOperation"
            )
        self.container.leases[self.name] = (self.id, self.container.clock() + self.duration)
        self.renewals += 1

    def release(self) -> None:
        self.container.op("release", self.name)
        held = self.container.leases.get(self.name)
        if held is None or held[0] != self.id:
            raise _status_error(
                409, "The lease ID specified did not match the lease ID for the blob.", "LeaseIdMismatchWithLeaseOperation"
            )
        del self.container.leases[self.name]


class FakeDownload:
    """What ``download_blob`` returns."""

    def __init__(self, stored: _Stored, chunk_size: int) -> None:
        self._data, self._chunk = stored.data, chunk_size
        self.properties = _Props(stored.etag, dict(stored.metadata))

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

    def _put(self, data: bytes, metadata: dict[str, str] | None) -> dict[str, Any]:
        stored = self.container.blobs[self.name] = _Stored(data, dict(metadata or {}))
        self.container.staged.pop(self.name, None)
        self.container.committed.pop(self.name, None)
        self.container.wrote("write", self.name)
        return {"etag": stored.etag}

    def download_blob(self, etag: str | None = None, match_condition: MatchConditions | None = None) -> FakeDownload:
        self.container.op("read", self.name)
        stored = self._get()
        if match_condition == MatchConditions.IfNotModified and stored.etag != etag:
            raise ResourceModifiedError("The condition specified using HTTP conditional header(s) is not met.")
        return FakeDownload(stored, self.container.chunk_size)

    def get_blob_properties(self) -> _Props:
        self.container.op("props", self.name)
        stored = self._get()
        return _Props(stored.etag, dict(stored.metadata))

    def upload_blob(
        self,
        data: bytes,
        overwrite: bool = False,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.container.op("write", self.name)
        if not overwrite and self.name in self.container.blobs:
            raise ResourceExistsError("The specified blob already exists.")
        self._check(etag, match_condition)
        result = self._put(bytes(data), metadata)
        if not overwrite or match_condition is not None:  # an unconditional write's retry just succeeds
            self.container.lose("write", self.name)
        return result

    def stage_block(self, block_id: str, data: bytes) -> None:
        self.container.op("stage", self.name)
        self.container.staged.setdefault(self.name, {})[block_id] = bytes(data)
        self.container.blocks_staged += 1

    def commit_block_list(
        self,
        blocks: list[Any],
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.container.op("commit", self.name)
        self._check(etag, match_condition)
        # Like Blob Storage, a block id names the latest uncommitted block, else the committed one;
        # a commit discards the other uncommitted blocks and keeps the listed ones committed.
        staged = self.container.staged.get(self.name, {})
        committed = self.container.committed.get(self.name, {})
        chosen: dict[str, bytes] = {}
        for b in blocks:
            if b.id in staged:
                chosen[b.id] = staged[b.id]
            elif b.id in committed:
                chosen[b.id] = committed[b.id]
            else:
                raise _status_error(400, "The specified block list is invalid.", "InvalidBlockList")
        self.container.commits.append((self.name, len(blocks)))
        result = self._put(b"".join(chosen[b.id] for b in blocks), metadata)
        self.container.committed[self.name] = chosen
        if match_condition is not None:
            self.container.lose("commit", self.name)
        return result

    def get_block_list(self, block_list_type: str = "committed") -> tuple[list[_Block], list[_Block]]:
        self.container.op("blocklist", self.name)
        self._get()
        committed = [_Block(i, len(d)) for i, d in self.container.committed.get(self.name, {}).items()]
        staged = [_Block(i, len(d)) for i, d in self.container.staged.get(self.name, {}).items()]
        return (committed if block_list_type in ("committed", "all") else []), (staged if block_list_type != "committed" else [])

    def acquire_lease(self, lease_duration: int = -1) -> FakeLease:
        self.container.op("lease", self.name)
        held = self.container.leases.get(self.name)
        if held is not None and held[1] > self.container.clock():
            raise _status_error(409, "There is already a lease present.", "LeaseAlreadyPresent")
        lease = FakeLease(self.container, self.name, float(lease_duration if lease_duration > 0 else 1e12))
        self.container.leases[self.name] = (lease.id, self.container.clock() + lease.duration)
        return lease

    def delete_blob(self, etag: str | None = None, match_condition: MatchConditions | None = None) -> None:
        self.container.op("delete", self.name)
        self._get()
        self._check(etag, match_condition)
        del self.container.blobs[self.name]
        self.container.staged.pop(self.name, None)
        self.container.committed.pop(self.name, None)
        self.container.wrote("delete", self.name)


class _Status:
    """Just enough of an HTTP response for HttpResponseError."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = {400: "Bad Request", 409: "Conflict", 412: "Precondition Failed"}.get(status, "Error")
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
        self.leases: dict[str, tuple[str, float]] = {}  # blob name -> (lease id, expires at)
        self.now = 0.0
        self.commits: list[tuple[str, int]] = []
        self.blocks_staged = 0
        self.failures: dict[tuple[str, str], BaseException] = {}
        self.lost_responses: set[tuple[str, str]] = set()
        self.hook: Callable[[str, str], None] | None = None
        self.writes: list[tuple[str, str, str, str]] = []  # (tag, operation, blob name, new ETag or "")
        self.tags: dict[int, str] = {}  # thread id -> the tag its writes are recorded with

    def clock(self) -> float:
        return self.now

    @property
    def leased(self) -> set[str]:
        """Names of the blobs under a lease that has not expired."""
        return {name for name, (_, ends) in self.leases.items() if ends > self.now}

    def lapse(self, name: str = "sync.lock") -> None:
        """Let the blob's lease expire now (as if its holder had stalled past it)."""
        if name in self.leases:
            self.leases[name] = (self.leases[name][0], self.now - 1)

    def op(self, operation: str, name: str) -> None:
        if self.hook is not None:
            self.hook(operation, name)
        exc = self.failures.pop((operation, name), None)
        if exc is not None:
            raise exc

    fail = op  # the older name

    def lose(self, operation: str, name: str) -> None:
        """After an applied write: raise what the SDK's retry would get if its response had been lost."""
        if (operation, name) in self.lost_responses:
            self.lost_responses.discard((operation, name))
            raise ResourceModifiedError("The condition specified using HTTP conditional header(s) is not met.")

    def wrote(self, operation: str, name: str) -> None:
        stored = self.blobs.get(name)
        self.writes.append((self.tags.get(threading.get_ident(), ""), operation, name, stored.etag if stored else ""))

    def create_container(self) -> None:
        raise ResourceExistsError("The specified container already exists.")

    def get_blob_client(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)

    def upload_blob(self, name: str, data: bytes, overwrite: bool = False) -> dict[str, Any]:
        return self.get_blob_client(name).upload_blob(data, overwrite=overwrite)

    def list_blobs(self, name_starts_with: str = "") -> list[_Item]:
        self.op("list", name_starts_with)
        return [_Item(n) for n in sorted(self.blobs) if n.startswith(name_starts_with)]

    def text(self, name: str) -> str:
        """A blob's content as text (test helper)."""
        return self.blobs[name].data.decode()
