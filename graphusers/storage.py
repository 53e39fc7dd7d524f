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
                                      "pages", "users", "stagingEtag", "segments", "lines", "repeats",
                                      "fingerprint"}
    staging/commit-<run id>.jsonl     a run's intent: the state it will write and its change log,
                                      written before users.jsonl moves (graphusers/sync/commit.py)
    requests/<request id>.json        one sync request and what became of it (graphusers/sync/requests.py)
    sync.lock                         leased while a sync runs: one sync at a time

New content is staged as blocks and committed in one ``Put Block List`` with an
ETag condition, so readers see the old blob or the new one, never a mix, and a
writer that raced another loses instead of overwriting. Block ids carry the
writing run's id, and every conditional write tags the blob's metadata with its
writer, so a lost response can be told from a lost race.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

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


def container_client(settings: StorageSettings) -> Any:
    """A ContainerClient for the settings: connection string, or identity-based URI with managed identity."""
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    # The SDK's default backoff (15 s, then x3) would hold a function for
    # minutes on an outage; fail within seconds and let the next run retry.
    options: dict[str, Any] = {
        "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3),
        "connection_timeout": 5,
        "read_timeout": 60,
        # The first GET of a download is 32 MB by default; streaming the
        # snapshot in 4 MB pieces keeps memory flat whatever the tenant's size.
        "max_single_get_size": BLOCK_SIZE,
        "max_chunk_get_size": BLOCK_SIZE,
    }
    if settings.connection_string:
        service = BlobServiceClient.from_connection_string(settings.connection_string, **options)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
        service = BlobServiceClient(settings.blob_service_uri or "", credential=credential, **options)
    return service.get_container_client(settings.container)


# Metadata that names the write which made a blob's current version: a run id and a write
# number. After a lost response (the SDK's retry of an applied write gets 412), the writer
# reads it back to learn whether its write landed. Metadata names must be C# identifiers.
# https://learn.microsoft.com/rest/api/storageservices/setting-and-retrieving-properties-and-metadata-for-blob-resources
WRITE_TAG = "syncwrite"


def _condition(etag: str | None) -> dict[str, Any]:
    """If-Match ``etag``, or If-None-Match * when ``etag`` is ``None`` (the blob must not exist)."""
    from azure.core import MatchConditions

    if etag:
        return {"etag": etag, "match_condition": MatchConditions.IfNotModified}
    return {"match_condition": MatchConditions.IfMissing}


def _conditional(blob: Any, tag: str, write: Any) -> str:
    """Run a conditional ``write`` tagged ``tag``; on a precondition failure, its ETag if the blob holds it anyway.

    A lost response is retried by the SDK, and the retry fails its own condition: the
    blob's metadata tells a write that landed from one that lost to another writer.
    """
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

    try:
        return str(write()["etag"])
    except (ResourceModifiedError, ResourceExistsError) as exc:
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            raise exc from None
        if (props.metadata or {}).get(WRITE_TAG) == tag:
            logger.warning("A write's response was lost and its retry failed its condition; the write had landed")
            return str(props.etag)
        raise


def block_ids(segments: list[tuple[str, int]]) -> list[str]:
    """The block ids of a blob written in ``segments`` (``(run id, count)`` pairs in blob order)."""
    ids: list[str] = []
    for run, count in segments:
        start = len(ids)
        ids += [BlockWriter.block_id(run, start + i) for i in range(int(count))]
    return ids


class BlockWriter:
    """Stages lines as blocks of one blob and commits them in one step, each commit conditional.

    Block ids carry the writing run's id (``prefix``), so two runs never stage under the
    same id: a commit lists exactly the blocks of this run, plus the committed ones it
    continues (``segments``: ``[run id, count]`` pairs in blob order). ``etag`` is the
    blob's version this writer may replace (``None``: the blob must not exist).
    """

    def __init__(
        self,
        blob: Any,
        prefix: str,
        block_size: int = BLOCK_SIZE,
        *,
        segments: list[tuple[str, int]] | None = None,
        lines: int = 0,
        etag: str | None = None,
    ) -> None:
        self._blob = blob
        self._prefix = prefix
        self._block_size = block_size
        self._buffer = bytearray()  # one growing block: no per-line objects, no join copy
        self._blocks: list[str] = block_ids(list(segments or ()))
        self.segments: list[list[Any]] = [[run, int(count)] for run, count in segments or ()]
        self.lines = lines
        self.etag = etag
        self._commits = 0

    @property
    def blocks(self) -> int:
        """Blocks staged so far (a resumed blob's included)."""
        return len(self._blocks)

    @staticmethod
    def block_id(prefix: str, number: int) -> str:
        """The id of block ``number`` (its position in the blob) staged by run ``prefix``."""
        # Block ids must have one length within a blob: run ids have one length, numbers 8 digits.
        return base64.b64encode(f"{prefix}-{number:08d}".encode()).decode()

    def write(self, line: str) -> None:
        self._buffer += line.encode()
        self._buffer += b"\n"
        self.lines += 1
        if len(self._buffer) >= self._block_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        block_id = self.block_id(self._prefix, len(self._blocks))
        self._blob.stage_block(block_id, self._buffer)
        self._blocks.append(block_id)
        if self.segments and self.segments[-1][0] == self._prefix:
            self.segments[-1][1] += 1
        else:
            self.segments.append([self._prefix, 1])
        self._buffer = bytearray()

    def commit(self, metadata: dict[str, str] | None = None) -> str:
        """Commit every line written so far if the blob is still at ``etag``; the new ETag.

        Fails with ``ResourceModifiedError`` (or ``ResourceExistsError``) when another writer
        moved the blob: nothing is replaced then.
        """
        from azure.storage.blob import BlobBlock

        self._flush()
        self._commits += 1
        tag = f"{self._prefix}.{self._commits}"
        blocks = [BlobBlock(block_id=b) for b in self._blocks]
        meta = {**(metadata or {}), WRITE_TAG: tag}
        etag = _conditional(self._blob, tag, lambda: self._blob.commit_block_list(blocks, metadata=meta, **_condition(self.etag)))
        self.etag = etag
        return etag


class SyncStore:
    """The sync's container: snapshot, state, change logs and the lock."""

    def __init__(self, container: Any, *, block_size: int = BLOCK_SIZE) -> None:
        self.container = container
        self.block_size = block_size  # a seam: tests use a few bytes to cross block boundaries
        self._ensured = False
        self._writes = 0

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
        return self.properties(name)[0]

    def properties(self, name: str) -> tuple[str | None, dict[str, str]]:
        """The blob's ETag and metadata; ``(None, {})`` when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None, {}
        return str(props.etag), dict(props.metadata or {})

    def committed_blocks(self, name: str) -> list[str] | None:
        """The ids of the blob's committed blocks in order; ``None`` when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            committed, _ = self.container.get_blob_client(name).get_block_list("committed")
        except ResourceNotFoundError:
            return None
        return [str(b.id) for b in committed]

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

    def writer(
        self,
        name: str,
        run_id: str,
        *,
        etag: str | None = None,
        segments: list[tuple[str, int]] | None = None,
        lines: int = 0,
    ) -> BlockWriter:
        """A block writer for a new version of ``name``, replacing version ``etag`` (``None``: a new blob)."""
        return BlockWriter(
            self.container.get_blob_client(name), run_id, self.block_size, segments=segments, lines=lines, etag=etag
        )

    def _tag(self, run_id: str) -> str:
        self._writes += 1
        return f"{run_id}.w{self._writes}"

    def write_json(self, name: str, body: dict[str, Any], etag: str | None, *, run_id: str = "") -> str:
        """Replace a JSON blob if it still has ``etag`` (``None``: if it does not exist); the new ETag."""
        data = json.dumps(body, separators=(",", ":")).encode()
        return self.write_bytes(name, data, etag, run_id=run_id)

    def write_bytes(self, name: str, data: bytes, etag: str | None, *, run_id: str = "") -> str:
        """Replace a blob if it still has ``etag`` (``None``: if it does not exist); the new ETag."""
        blob = self.container.get_blob_client(name)
        tag = self._tag(run_id)
        meta = {WRITE_TAG: tag}
        if etag:
            return _conditional(blob, tag, lambda: blob.upload_blob(data, overwrite=True, metadata=meta, **_condition(etag)))
        return _conditional(blob, tag, lambda: blob.upload_blob(data, overwrite=False, metadata=meta))

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

    def delete(self, name: str, etag: str | None = None) -> None:
        """Delete a blob if it exists (and, given ``etag``, still has it); uncommitted blocks go with it."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError

        condition: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            self.container.get_blob_client(name).delete_blob(**condition)
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
