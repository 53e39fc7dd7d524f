"""./scripts/snapshot: the sync's snapshot in the local Azurite that ./scripts/serve keeps under .run/.

Shows what the sync wrote to Blob Storage (container USER_SYNC_CONTAINER, default
user-sync): status.json, users.jsonl and the newest changes/ blob. While
./scripts/serve runs, it reads from that server's Azurite; otherwise it starts
Azurite on the same folder for the time it reads, and stops it.

    ./scripts/snapshot                 what is there: status.json, users.jsonl's size, the newest changes/
    ./scripts/snapshot users           users.jsonl, one user a line (personal data: your terminal only)
    ./scripts/snapshot changes         the newest changes/ blob: what the last incremental round applied
    ./scripts/snapshot status          status.json
    ./scripts/snapshot --export DIR    users.jsonl, status.json, state.json and the newest changes/ into DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from devtools.azurite import CONNECTION_FILE, Azurite

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"
# The sync's blob names (graphusers/storage.py).
USERS, STATUS, STATE, CHANGES = "users.jsonl", "status.json", "state.json", "changes/"


class SnapshotError(RuntimeError):
    """Nothing to show, with what to do about it."""


def connect(location: Path) -> tuple[str, Azurite | None]:
    """A connection string to Azurite on ``location``: the running one's, or one started here (returned to stop)."""
    if not location.is_dir():
        raise SnapshotError(f"No local storage in {location}: start ./scripts/serve (it keeps its storage there) and sync once")
    try:
        started = Azurite(location)
    except RuntimeError as exc:
        if "Another Azurite" not in str(exc):
            raise
        info = json.loads((location / CONNECTION_FILE).read_text())
        return str(info["connectionString"]), None
    return started.connection_string, started


def newest_change(container: Any) -> str | None:
    """The name of the newest changes/ blob (they are named by UTC time first), or None."""
    names = sorted(blob.name for blob in container.list_blobs(name_starts_with=CHANGES))
    return names[-1] if names else None


def chunks(container: Any, name: str) -> Iterator[bytes]:
    """A blob's bytes in the SDK's chunks (the snapshot can be large); SnapshotError when it is missing."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        yield from container.download_blob(name).chunks()
    except ResourceNotFoundError:
        raise SnapshotError(f"There is no {name} yet: run a sync (curl -s -X POST http://127.0.0.1:7071/api/sync)") from None


def copy(container: Any, name: str, out: IO[bytes]) -> int:
    size = 0
    for chunk in chunks(container, name):
        out.write(chunk)
        size += len(chunk)
    return size


def summary(container: Any, out: IO[str]) -> None:
    """status.json, users.jsonl's size and line count, and the newest changes/ blob's name and lines."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        status = json.loads(b"".join(chunks(container, STATUS)))
    except SnapshotError:
        raise SnapshotError("No sync has run against this storage yet: curl -s -X POST http://127.0.0.1:7071/api/sync") from None
    out.write(f"{STATUS}:\n{json.dumps(status, indent=2)}\n")
    try:
        props = container.get_blob_client(USERS).get_blob_properties()
        lines = sum(chunk.count(b"\n") for chunk in chunks(container, USERS))
        out.write(f"{USERS}: {lines} users, {props.size} bytes, written {props.last_modified.isoformat()}\n")
    except ResourceNotFoundError:
        out.write(f"{USERS}: not written yet\n")
    change = newest_change(container)
    if change is None:
        out.write(f"{CHANGES}: none yet (an incremental round that changed something writes one)\n")
    else:
        lines = sum(chunk.count(b"\n") for chunk in chunks(container, change))
        out.write(f"newest {CHANGES}: {change}, {lines} changes (./scripts/snapshot changes prints it)\n")


def export(container: Any, target: Path, out: IO[str]) -> None:
    """users.jsonl, status.json, state.json and the newest changes/ blob, into ``target``."""
    from azure.core.exceptions import ResourceNotFoundError

    target.mkdir(parents=True, exist_ok=True)
    names = [USERS, STATUS, STATE]
    change = newest_change(container)
    if change is not None:
        names.append(change)
    for name in names:
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "wb") as handle:
                size = copy(container, name, handle)
        except (SnapshotError, ResourceNotFoundError):
            path.unlink(missing_ok=True)
            out.write(f"{name}: not written yet\n")
            continue
        out.write(f"{path}: {size} bytes\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/snapshot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", choices=("summary", "users", "changes", "status"), default="summary")
    parser.add_argument("--export", type=Path, metavar="DIR", help="write the blobs into DIR instead of printing")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the storage folder (default .run/azurite, or .run/azurite-real with --real), as ./scripts/serve's",
    )
    parser.add_argument("--real", action="store_true", help="the storage of ./scripts/serve --real")
    parser.add_argument("--container", default="user-sync", help="USER_SYNC_CONTAINER (default user-sync)")
    args = parser.parse_args(argv)

    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    location: Path = args.data_dir or RUN / ("azurite-real" if args.real else "azurite")
    started: Azurite | None = None
    try:
        connection, started = connect(location)
        container = ContainerClient.from_connection_string(connection, args.container)
        if args.export is not None:
            export(container, args.export, sys.stdout)
        elif args.what == "summary":
            summary(container, sys.stdout)
        else:
            name = {"users": USERS, "status": STATUS}.get(args.what) or newest_change(container)
            if name is None:
                raise SnapshotError("No changes/ blob yet: change the emulated tenant (see ./scripts/serve's banner) and sync")
            sys.stdout.flush()
            copy(container, name, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return 0
    except ResourceNotFoundError:
        print(f"error: there is no container {args.container!r} yet: no sync has run against this storage", file=sys.stderr)
        return 1
    except (SnapshotError, RuntimeError) as exc:  # RuntimeError: Azurite did not start
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if started is not None:
            started.stop()


if __name__ == "__main__":
    sys.exit(main())
