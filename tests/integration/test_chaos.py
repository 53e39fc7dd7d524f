"""Chaos sync: random Graph faults on about 20% of requests while the tenant changes between runs.

Each seed runs 20 syncs under faults, checking after every failed run that
users.jsonl and state.json are byte-identical to before it, then one clean run
after which the snapshot must equal the tenant exactly. Between runs the tenant
changes (updates, two changes of one user, soft and permanent deletes, restores,
additions), full rounds may repeat users as an earlier removal, and the delta
token sometimes expires, answered as 410 or as 400. The suite runs 5
seeds; ``CHAOS_SEEDS=50`` runs 50 (docs/operations.md, "Chaos sync"). A failure names its
seed; ``CHAOS_SEED_START`` replays from any seed.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from testkit.wiring import wire

from devtools.azurite import Azurite
from emulator import Emulator
from emulator.server import Chaos
from graphusers import service
from graphusers.errors import AppError
from graphusers.graph import RetryPolicy
from graphusers.sync import UserSync

FIRST = int(os.environ.get("CHAOS_SEED_START", "1"))
SEEDS = range(FIRST, FIRST + int(os.environ.get("CHAOS_SEEDS", "5")))
SELECT = ("id", "displayName", "userPrincipalName", "mail", "accountEnabled")


@pytest.fixture(scope="module")
def chaos_tenant() -> Iterator[Emulator]:
    with Emulator(users=300, seed=5) as emu:
        yield emu


def read(container: Any, name: str) -> bytes | None:
    try:
        return bytes(container.get_blob_client(name).download_blob().readall())
    except ResourceNotFoundError:
        return None


def mutate(emu: Emulator, rng: random.Random, drawn: Counter[str]) -> None:
    """Change the tenant a little, as a directory changes between two syncs; count the delta cases drawn."""
    directory = emu.directory
    ids = list(directory.users)
    for uid in rng.sample(ids, rng.randint(0, 8)):
        edits: list[dict[str, Any]] = [
            {"displayName": f"Renamed {rng.randint(0, 10**6)}"},
            {"accountEnabled": rng.random() < 0.5},
            {"mail": f"m{rng.randint(0, 10**6)}@emulated.example"},
            {"mail": None},
        ]
        directory.update(uid, **rng.choice(edits))
        if rng.random() < 0.3:  # a second change of the same user: two partial records in one round
            directory.update(uid, displayName=f"Again {rng.randint(0, 10**6)}")
    for uid in rng.sample(ids, rng.randint(0, 4)):
        if uid in directory.users:
            # Soft deletes come as removals with reason "changed", permanent ones with "deleted".
            directory.remove(uid, soft=rng.random() < 0.5)
    for uid in rng.sample(sorted(directory.deleted), min(len(directory.deleted), rng.randint(0, 2))):
        directory.restore(uid)  # removed, then live again: both entries in the next round
        drawn["restored"] += 1
    for _ in range(rng.randint(0, 4)):
        directory.add()
    # Graph may repeat an object within a round: full rounds send some users as a removal first.
    emu.delta_removed_then_live = rng.choice([0.0, 0.0, 0.05, 0.3])
    drawn["removed-then-live"] += emu.delta_removed_then_live > 0
    if rng.random() < 0.1:
        # The stored delta token expires: 410 resyncRequired or 400 syncStateNotFound, then a full resync.
        emu.delta_expiry_status = rng.choice([410, 400])
        directory.delta_epoch += 1
        drawn[f"expired-{emu.delta_expiry_status}"] += 1


@pytest.mark.parametrize("kind", ["listing", "delta"])
@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
def test_chaos_sync_converges(
    seed: int, kind: str, chaos_tenant: Emulator, azurite: Azurite, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 syncs under random faults lose nothing, with full rounds of either kind; one clean run then makes
    users.jsonl equal the tenant."""
    from azure.keyvault.secrets._shared import HttpChallengeCache

    emu = chaos_tenant
    emu.reset()
    HttpChallengeCache.clear()
    for name, value in emu.app_settings().items():
        monkeypatch.setenv(name, value)
    wired = wire(read_timeout=0.25, retry=RetryPolicy(total=2, backoff_factor=0.001, max_wait=2))
    store = service.get_store()
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(storage)
    rng = random.Random(seed)
    emu.chaos = chaos = Chaos(seed, rate=0.2, slow_seconds=0.4)
    outcomes: Counter[str] = Counter()
    drawn: Counter[str] = Counter()
    print(f"chaos seed {seed}")
    for run in range(20):
        mutate(emu, rng, drawn)
        before = (read(container, "users.jsonl"), read(container, "state.json"))
        try:
            summary = UserSync(wired.services.graph, store, SELECT, page_size=20, full_round=kind).run()
            outcomes[f"{summary.status}-{summary.mode}"] += 1
        except AppError as exc:
            outcomes[f"failed-{type(exc).__name__}"] += 1
            after = (read(container, "users.jsonl"), read(container, "state.json"))
            assert after == before, f"seed {seed} run {run}: a failed sync changed the blobs"
    emu.chaos = None
    final = UserSync(wired.services.graph, store, SELECT, page_size=20, full_round=kind).run()
    assert final.status == "succeeded", f"seed {seed}"
    lines = (read(container, "users.jsonl") or b"").decode().splitlines()
    users = [json.loads(line) for line in lines]
    expected = {uid: {f: u.get(f) for f in SELECT} for uid, u in emu.directory.users.items()}
    assert len(users) == len(expected), f"seed {seed}: {len(users)} lines for {len(expected)} users"
    assert {u["id"]: u for u in users} == expected, f"seed {seed}: snapshot differs from the tenant"
    assert sum(chaos.injected.values()) > 0 and outcomes, f"seed {seed}: no faults injected"
    print(f"chaos seed {seed}: faults {dict(chaos.injected)}, delta cases {dict(drawn)}, runs {dict(outcomes)}")
