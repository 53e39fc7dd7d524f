"""The sync's blob layout and the storage operations it needs, on azure-storage-blob.

Container ``USER_SYNC_CONTAINER`` (default ``user-sync``):

    users.jsonl                       the snapshot: one user JSON object per line, "id" first
    state.json                        {"deltaLink", "deltaLinkIssued", "select", "snapshotEtag", "lastSync"}
    status.json                       {"lastRun", "lastSuccess"}: every run's outcome, written on its own
    changes/<UTC>-<round>.jsonl       what one incremental round applied; named by the deltaLink it
                                      started from, so a replay of the round rewrites the same blob
    staging/full-<round id>.jsonl     a full round in progress: its committed blocks are what the
                                      checkpoint counts; deleted when the round ends, or by the next
                                      run that holds the lock if no checkpoint names it
    staging/checkpoint.json           an unfinished full round: {"round", "started", "nextLink",
                                      "pages", "users", "blocks", "lines", "repeats", "fingerprint"}
    sync.lock                         leased while a sync runs: one sync at a time

New content is staged as blocks and committed in one ``Put Block List`` with an
ETag condition, so readers see the old blob or the new one, never a mix, and a
writer that raced another loses instead of overwriting.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

from . import deadline
from .config import StorageSettings
from .errors import StorageError

logger = logging.getLogger(__name__)

USERS_BLOB = "users.jsonl"
STATE_BLOB = "state.json"
STATUS_BLOB = "status.json"
STAGING_PREFIX = "staging/"
CHECKPOINT_BLOB = "staging/checkpoint.json"
LOCK_BLOB = "sync.lock"
BLOCK_SIZE = 4 * 1024 * 1024  # bytes staged per block; the blob may have up to 50,000 blocks
LEASE_SECONDS = 60  # renewed while the sync makes progress; expires on its own if the worker dies


# Per attempt, when no deadline is shorter: connect, and each socket read.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
# The least time a Blob request needs to be worth starting (as transport.MIN_ATTEMPT_SECONDS).
MIN_ATTEMPT_SECONDS = 1.0
# The shortest timeouts an attempt gets, past the deadline too (cleanup: lease release, status record).
AFTER_DEADLINE_SECONDS = 2.0


def container_client(settings: StorageSettings) -> Any:
    """A ContainerClient for the settings: connection string, or identity-based URI with managed identity.

    Every request it sends is bounded by the invocation's deadline: each attempt's
    connect and read timeouts are the time left (at most 5 s and 60 s, at least 2 s:
    cleanup runs after the deadline), and a retry starts only if its backoff and one more
    attempt still fit. A stalled storage
    account therefore holds an invocation, and the runner thread under it, no longer
    than its deadline, not for the SDK's own timeouts times its retries.
    """
    from azure.storage.blob import BlobServiceClient

    # The SDK's default backoff (15 s, then x3) would hold a function for
    # minutes on an outage; fail within seconds and let the next run retry.
    options: dict[str, Any] = {
        "retry_policy": _deadline_retry_class()(initial_backoff=1, increment_base=2, retry_total=3),
        "raw_request_hook": bound_attempt,
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        # The first GET of a download is 32 MB by default; streaming the
        # snapshot in 4 MB pieces keeps memory flat whatever the tenant's size.
        "max_single_get_size": BLOCK_SIZE,
        "max_chunk_get_size": BLOCK_SIZE,
    }
    if settings.connection_string:
        service = BlobServiceClient.from_connection_string(settings.connection_string, **options)
    else:
        from azure.identity import DefaultAzureCredential

        from .credentials import sdk_transport

        # The managed identity's token requests are bounded by the deadline too (the app's session and retry).
        credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id, **sdk_transport())
        service = BlobServiceClient(settings.blob_service_uri or "", credential=credential, **options)
    return service.get_container_client(settings.container)


def bound_attempt(request: Any) -> None:
    """Each attempt's connect and read timeouts from the invocation's time left (azure-storage's ``raw_request_hook``).

    The hook runs per attempt, after the retry policy, and its options reach the
    transport (``RequestsTransport`` reads ``connection_timeout``/``read_timeout``).
    """
    current = deadline.current()
    if current is None:
        return
    # Never under a short floor, even past the deadline (and never with a retry then): the sync
    # releases its lease and records its outcome after its deadline, and those must happen, but not hang.
    left = max(current.remaining(), AFTER_DEADLINE_SECONDS)
    request.context.options["connection_timeout"] = min(CONNECT_TIMEOUT, left)
    request.context.options["read_timeout"] = min(READ_TIMEOUT, left)


def retries_that_fit(left: float, waits: Sequence[float], wanted: int) -> int:
    """How many of ``wanted`` retries, waiting ``waits`` before each, fit in ``left`` seconds with an attempt after each."""
    used, count = MIN_ATTEMPT_SECONDS, 0
    for wait in waits[:wanted]:
        used += wait + MIN_ATTEMPT_SECONDS
        if used > left:
            break
        count += 1
    return count


@functools.cache
def _deadline_retry_class() -> type[Any]:
    # Built on first use, as azure-storage-blob is imported only then.
    from azure.storage.blob import ExponentialRetry

    class DeadlineRetry(ExponentialRetry):
        """azure-storage's exponential retry, with as many retries as the invocation's time left allows."""

        def configure_retries(self, request: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().configure_retries(request)
            left = deadline.remaining()
            if left != math.inf:
                # The longest each wait can be: the backoff plus all of its jitter.
                jitter, base, first = self.random_jitter_range, self.increment_base, self.initial_backoff
                waits = [first + (0 if n == 0 else base**n) + jitter for n in range(settings["total"])]
                settings["total"] = min(settings["total"], retries_that_fit(left, waits, settings["total"]))
            return settings

        def sleep(self, settings: dict[str, Any], transport: Any) -> None:
            backoff = float(self.get_backoff_time(settings) or 0.0)
            current = deadline.current()
            if current is not None and current.remaining() < backoff + MIN_ATTEMPT_SECONDS:
                raise current.exceeded(f"a Blob Storage retry (it would wait {backoff:.1f} s)")
            if backoff > 0:
                transport.sleep(backoff)

    return DeadlineRetry


class BlockWriter:
    """Stages lines as blocks of one blob and commits them in one step."""

    def __init__(self, blob: Any, prefix: str, block_size: int = BLOCK_SIZE, *, blocks: int = 0, lines: int = 0) -> None:
        self._blob = blob
        self._prefix = prefix
        self._block_size = block_size
        self._buffer = bytearray()  # one growing block: no per-line objects, no join copy
        # ``blocks``: a resumed blob's first blocks, already committed under this prefix.
        self._blocks: list[str] = [self._block_id(i) for i in range(blocks)]
        self.lines = lines

    @property
    def blocks(self) -> int:
        """Blocks staged so far (a resumed blob's included)."""
        return len(self._blocks)

    def _block_id(self, number: int) -> str:
        return base64.b64encode(f"{self._prefix}-{number:08d}".encode()).decode()

    def write(self, line: str) -> None:
        self._buffer += line.encode()
        self._buffer += b"\n"
        self.lines += 1
        if len(self._buffer) >= self._block_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        # Block ids must have one length within a blob; the run prefix keeps
        # them apart from blocks a crashed run may have left uncommitted.
        block_id = self._block_id(len(self._blocks))
        self._blob.stage_block(block_id, self._buffer)
        self._blocks.append(block_id)
        self._buffer = bytearray()

    def save(self) -> None:
        """Commit every line written so far, whatever the blob holds (a staging blob only its round writes)."""
        from azure.storage.blob import BlobBlock

        self._flush()
        self._blob.commit_block_list([BlobBlock(block_id=b) for b in self._blocks])

    def commit(self, etag: str | None) -> str:
        """Commit the staged blocks if the blob still has ``etag`` (``None``: if it does not exist)."""
        from azure.core import MatchConditions
        from azure.storage.blob import BlobBlock

        self._flush()
        condition: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            if etag
            else {"match_condition": MatchConditions.IfMissing}
        )
        result = self._blob.commit_block_list([BlobBlock(block_id=b) for b in self._blocks], **condition)
        return str(result["etag"])


class SyncStore:
    """The sync's container: snapshot, state, change logs and the lock."""

    def __init__(self, container: Any, *, block_size: int = BLOCK_SIZE) -> None:
        self.container = container
        self.block_size = block_size  # a seam: tests use a few bytes to cross block boundaries
        self._ensured = False

    def ensure(self) -> None:
        """Create the container and the lock blob if they do not exist."""
        if self._ensured:
            return
        from azure.core.exceptions import ResourceExistsError

        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        try:
            self.container.upload_blob(LOCK_BLOB, b"", overwrite=False)
        except ResourceExistsError:
            pass
        self._ensured = True

    def try_lease(self) -> Any | None:
        """A lease on the lock blob, or ``None`` when another sync holds it."""
        from azure.core.exceptions import HttpResponseError

        try:
            return self.container.get_blob_client(LOCK_BLOB).acquire_lease(lease_duration=LEASE_SECONDS)
        except HttpResponseError as exc:
            if exc.status_code == 409:
                return None
            raise

    def read_json(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """A JSON blob and its ETag; ``(None, None)`` when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self.container.get_blob_client(name).download_blob()
        except ResourceNotFoundError:
            return None, None
        body = json.loads(download.readall())
        return body, str(download.properties.etag)

    def etag(self, name: str) -> str | None:
        """The blob's ETag, or ``None`` when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return str(self.container.get_blob_client(name).get_blob_properties().etag)
        except ResourceNotFoundError:
            return None

    def iter_lines(self, name: str, etag: str | None) -> Iterator[str]:
        """Stream a JSONL blob line by line, pinned to ``etag`` so it cannot change mid-read."""
        from azure.core import MatchConditions

        if etag is None:
            return
        download = self.container.get_blob_client(name).download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        # Lines are cut out of each chunk in place: splitting a 4 MB chunk into a
        # list would hold every line of it at once, on top of the chunk.
        carry = b""  # the partial line at the end of the previous chunk
        for chunk in download.chunks():
            end = chunk.find(b"\n")
            if end < 0:
                carry += chunk
                continue
            first = carry + chunk[:end]
            if first:
                yield first.decode()
            start = end + 1
            while (end := chunk.find(b"\n", start)) >= 0:
                if end > start:
                    yield chunk[start:end].decode()
                start = end + 1
            carry = chunk[start:]
        if carry:
            yield carry.decode()

    def writer(self, name: str, run_id: str, *, blocks: int = 0, lines: int = 0) -> BlockWriter:
        """A block writer for a new version of ``name`` (or one continuing its first ``blocks`` committed blocks)."""
        return BlockWriter(self.container.get_blob_client(name), run_id, self.block_size, blocks=blocks, lines=lines)

    def put_json(self, name: str, body: dict[str, Any]) -> None:
        """Create or replace a small JSON blob."""
        self.container.get_blob_client(name).upload_blob(json.dumps(body, separators=(",", ":")).encode(), overwrite=True)

    def write_json(self, name: str, body: dict[str, Any], etag: str | None) -> None:
        """Replace a JSON blob if it still has ``etag`` (``None``: if it does not exist)."""
        from azure.core import MatchConditions

        data = json.dumps(body, separators=(",", ":")).encode()
        blob = self.container.get_blob_client(name)
        if etag:
            blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
        else:
            blob.upload_blob(data, overwrite=False)

    def write_lines(self, name: str, lines: list[str]) -> None:
        """Create or replace a small JSONL blob in one request."""
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        self.container.get_blob_client(name).upload_blob(data, overwrite=True)

    def read_lines(self, name: str) -> list[str] | None:
        """A small JSONL blob's lines, or ``None`` when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            data = self.container.get_blob_client(name).download_blob().readall()
        except ResourceNotFoundError:
            return None
        return [line for line in bytes(data).decode().split("\n") if line]

    def list_names(self, prefix: str) -> list[str]:
        """Names of the blobs under ``prefix``."""
        return [str(b.name) for b in self.container.list_blobs(name_starts_with=prefix)]

    def delete(self, name: str) -> None:
        """Delete a blob if it exists (uncommitted blocks go with it)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.container.get_blob_client(name).delete_blob()
        except ResourceNotFoundError:
            pass


def storage_error(exc: Exception, what: str, *, snapshot_replaced: bool = False) -> StorageError:
    """A StorageError for an azure-storage failure, logged with its cause.

    ``snapshot_replaced``: users.jsonl was already committed when the failure came, so the
    message must not claim that nothing changed.
    """
    from azure.core.exceptions import HttpResponseError, ResourceModifiedError

    if snapshot_replaced:
        logger.error(
            "%s: storage failed after users.jsonl was replaced, before state.json was updated (%s)", what, type(exc).__name__
        )
        return StorageError(
            "Blob Storage failed after the user snapshot was replaced and before the sync state "
            "was saved; the next run repeats the same changes and completes it.",
            retry_after=30,
        )
    if isinstance(exc, ResourceModifiedError):
        logger.error("%s: the blob changed during the sync (ETag mismatch); nothing was replaced", what)
        return StorageError("The user snapshot changed during the sync; the next run retries.", retry_after=30)
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        logger.error(
            "%s: storage denied access (403): grant the identity 'Storage Blob Data Owner' on the "
            "account or 'Storage Blob Data Contributor' on the container",
            what,
        )
    else:
        logger.error("%s failed: %s", what, type(exc).__name__)
    return StorageError("Blob Storage is unavailable; the sync changed nothing.", retry_after=30)
