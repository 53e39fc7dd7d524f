"""The interleaving explorer: two sync runs over one in-memory container, the first paused at a chosen storage step.

A schedule is ``(scenario, pause, crash)``: run R1 until its ``pause``-th storage
operation, let its lease lapse there, run R2 to completion (``crash=None``) or
until it dies just before its ``crash``-th write (every later operation of a dead
run raises ``Crash``, so not even its ``finally`` blocks reach storage), then
resume R1. After R1 ends, one more run with nothing in its way. ``check`` then
holds the outcome against the tenant: the snapshot, the change log, and every
statement each run made in status.json about what it replaced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphusers.storage import CHECKPOINT_BLOB, STATE_BLOB, USERS_BLOB, SyncStore
from graphusers.sync import UserSync
from testkit.fake_storage import FakeContainer
from testkit.sync_fakes import DAY, SELECT, Clock, PagedGraph, removed, user

WRITES = ("write", "commit", "delete")  # the operations that change what storage holds


class Crash(BaseException):
    """The worker died here (a BaseException: no ``except Exception`` of the sync sees it)."""


@dataclass
class Scenario:
    """A tenant, the storage it starts from, and what its change log must say."""

    name: str
    tenant: dict[str, dict[str, Any]]  # id -> the record the snapshot must hold
    changes: dict[str, str] = field(default_factory=dict)  # id -> added | updated | removed (incremental)
    prepare: Callable[[PagedGraph, FakeContainer, Clock], None] = lambda graph, container, wall: None
    pages: list[list[dict[str, Any]]] = field(default_factory=list)
    reconcile: bool = False
    kind: str = "delta"  # the full round's kind (USER_SYNC_FULL_ROUND)


def _record(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": item["id"], **{f: item.get(f) for f in SELECT if f != "id"}}


def _pages(users: list[dict[str, Any]], per_page: int) -> list[list[dict[str, Any]]]:
    return [users[i : i + per_page] for i in range(0, len(users), per_page)]


def scenarios() -> list[Scenario]:
    """Full, resumed, incremental and reconciliation rounds, each small enough to explore every step."""
    base = [user(f"u{n}") for n in range(9)]
    # A full round with a repeat (u1 again, renamed) and a removal of a user seen earlier (u4).
    full_pages = [*_pages(base, 3), [{"id": "u1", "displayName": "U1 renamed"}, removed("u4")]]
    full_tenant = {u["id"]: _record(u) for u in base}
    full_tenant["u1"]["displayName"] = "U1 renamed"
    del full_tenant["u4"]

    def resumed(graph: PagedGraph, container: FakeContainer, wall: Clock) -> None:
        graph.fail_at = 2  # the first round stops before page 3, leaving a checkpoint
        try:
            sync(graph, container, wall, "setup").run()
        except Exception:
            pass
        assert CHECKPOINT_BLOB in container.blobs

    old = [user(n) for n in ("a", "b", "c", "e")]
    new_a = {"id": "a", "displayName": "A2"}
    inc_tenant = {u["id"]: _record(u) for u in old if u["id"] != "b"}
    inc_tenant["a"]["displayName"] = "A2"
    inc_tenant["d"] = _record(user("d"))

    def incremental(graph: PagedGraph, container: FakeContainer, wall: Clock) -> None:
        graph.pages = _pages(old, 2)
        sync(graph, container, wall, "setup").run()
        state = json.loads(container.text(STATE_BLOB))
        graph.changes[state["deltaLink"]] = [removed("b"), user("d"), new_a]
        graph.pages = _pages([user("a", "A2"), user("c"), user("e"), user("d")], 2)

    drifted = [user(f"r{n}") for n in range(6)]

    def reconcile(graph: PagedGraph, container: FakeContainer, wall: Clock) -> None:
        graph.pages = _pages([*drifted[:5], user("gone")], 2)  # what delta had kept: r5 missing, "gone" extra
        sync(graph, container, wall, "setup").run()
        graph.pages = _pages(drifted, 2)
        wall.now += 8 * DAY  # past USER_SYNC_FULL_EVERY: the next run reconciles

    # A listing round: "sync from now", then the live users page by page (no repeats, no removals:
    # what changed meanwhile comes in the next round of changes, which is empty here).
    listing_pages = _pages(base, 3)
    listing_tenant = {u["id"]: _record(u) for u in base}

    def listing_resumed(graph: PagedGraph, container: FakeContainer, wall: Clock) -> None:
        graph.fail_at = 2  # the first listing stops before page 3, leaving a checkpoint with its deltaLink
        try:
            sync(graph, container, wall, "setup", "listing").run()
        except Exception:
            pass
        assert CHECKPOINT_BLOB in container.blobs

    return [
        Scenario("full", full_tenant, pages=full_pages),
        Scenario("listing", listing_tenant, pages=listing_pages, kind="listing"),
        Scenario("listing-resumed", listing_tenant, pages=listing_pages, prepare=listing_resumed, kind="listing"),
        Scenario("resumed", full_tenant, pages=full_pages, prepare=resumed),
        Scenario("incremental", inc_tenant, {"a": "updated", "b": "removed", "d": "added"}, prepare=incremental),
        Scenario("reconcile", {u["id"]: _record(u) for u in drifted}, prepare=reconcile, reconcile=True),
    ]


def sync(graph: PagedGraph, container: FakeContainer, wall: Clock, tag: str, kind: str = "delta") -> UserSync:
    """A run over a store of its own (its own client, as another worker would have) on the shared container."""
    container.tags[threading.get_ident()] = tag
    return UserSync(
        graph,  # type: ignore[arg-type]
        # Lines are about 60 bytes: R1 cuts two to a block, R2 one, the clean run four. So the same
        # block number holds other lines in another run's staging, as when two workers flush at other times.
        SyncStore(container, block_size={"R1": 120, "R2": 50}.get(tag, 200)),
        SELECT,
        wall=wall,
        clock=Clock(0.0),
        seen_filter_bits=1 << 12,
        tenant="t1",
        full_every=7 * DAY,
        checkpoint_interval=0.0,  # a checkpoint after every page: every resume point is a step
        full_round=kind,
    )


class _Control:
    """Counts one run's storage operations; pauses or kills it at the chosen one."""

    def __init__(self, pause: int | None = None, crash: int | None = None, lose: int | None = None) -> None:
        self.pause, self.crash, self.lose = pause, crash, lose
        self.ops = 0
        self.writes = 0
        self.dead = False
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.seen: list[tuple[str, str]] = []

    def __call__(self, container: FakeContainer, operation: str, name: str) -> None:
        if self.dead:
            raise Crash()
        self.ops += 1
        self.seen.append((operation, name))
        if operation in WRITES:
            self.writes += 1
            if self.crash is not None and self.writes == self.crash:
                self.dead = True
                raise Crash()
            if self.lose is not None and self.writes == self.lose:
                container.lost_responses.add((operation, name))
        if self.pause is not None and self.ops == self.pause:
            self.paused.set()
            assert self.resume.wait(30), "R1 was never resumed"


@dataclass
class Outcome:
    """What the runs of one schedule reported."""

    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # run id -> the summary it recorded
    tags: dict[str, str] = field(default_factory=dict)  # run id -> R1 | R2 | clean
    errors: dict[str, str] = field(default_factory=dict)  # tag -> exception type
    # (tag, run id, how many writes storage had seen) at each status record: a run's writes are its
    # thread's writes since the previous record of that thread (a run records its status last).
    marks: list[tuple[str, str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


class Explorer:
    """Runs schedules over fresh containers and checks each outcome."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def _setup(self) -> tuple[PagedGraph, FakeContainer, Clock]:
        graph, container, wall = PagedGraph(self.scenario.pages), FakeContainer(chunk_size=50), Clock()
        self.scenario.prepare(graph, container, wall)
        container.writes.clear()
        return graph, container, wall

    def ops_of_a_clean_run(self) -> tuple[int, int]:
        """How many storage operations (and writes) one run of the scenario makes on its own."""
        graph, container, wall = self._setup()
        control = _Control()
        container.hook = lambda op, name: control(container, op, name)
        sync(graph, container, wall, "R1", self.scenario.kind).run()
        return control.ops, control.writes

    def schedule(self, pause: int, crash: int | None, lose: int | None = None) -> Outcome:
        """One schedule: R1 paused before its ``pause``-th operation, R2 run (dying before its ``crash``-th write)."""
        graph, container, wall = self._setup()
        outcome = Outcome()
        controls = {"R1": _Control(pause=pause, lose=lose), "R2": _Control(crash=crash), "clean": _Control()}
        by_thread: dict[int, _Control] = {}

        def hook(op: str, name: str) -> None:
            control = by_thread.get(threading.get_ident())
            if control is not None:
                control(container, op, name)

        from graphusers.sync import run as run_module
        from graphusers.sync.status import write_status as real_write_status

        container.hook = hook

        def record_status(store: SyncStore, summary: Any) -> None:
            tag = container.tags.get(threading.get_ident(), "?")
            outcome.summaries[summary.runId] = json.loads(json.dumps(summary.as_dict()))
            outcome.tags[summary.runId] = tag
            outcome.marks.append((tag, summary.runId, len(container.writes)))
            real_write_status(store, summary)

        run_module.write_status = record_status  # type: ignore[attr-defined]
        try:

            def run(tag: str) -> None:
                by_thread[threading.get_ident()] = controls[tag]
                try:
                    summary = sync(graph, container, wall, tag, self.scenario.kind).run()
                    outcome.summaries[summary.runId] = summary.as_dict()
                    outcome.tags[summary.runId] = tag
                    if summary.status == "succeeded":
                        self._check_tenant(container, f"{tag} reported succeeded", outcome)
                except Crash:
                    outcome.errors[tag] = "Crash"
                except Exception as exc:
                    outcome.errors[tag] = type(exc).__name__

            r1 = threading.Thread(target=run, args=("R1",), daemon=True)
            r1.start()
            while r1.is_alive() and not controls["R1"].paused.wait(0.01):
                pass
            if controls["R1"].paused.is_set():
                container.lapse()  # R1 stalled past its lease
                r2 = threading.Thread(target=run, args=("R2",), daemon=True)
                r2.start()
                r2.join(30)
                assert not r2.is_alive(), "R2 hung"
            controls["R1"].resume.set()
            r1.join(30)
            assert not r1.is_alive(), "R1 hung"
            container.lapse()  # a crashed run's lease runs out
            clean = threading.Thread(target=run, args=("clean",), daemon=True)
            by_thread.clear()
            clean.start()
            clean.join(30)
        finally:
            run_module.write_status = real_write_status  # type: ignore[attr-defined]
            for control in controls.values():
                control.resume.set()
        self._check(container, outcome)
        return outcome

    # -- the checks --------------------------------------------------------------------------------------------

    def _check_tenant(self, container: FakeContainer, when: str, outcome: Outcome) -> None:
        try:
            lines = container.text(USERS_BLOB).splitlines()
        except KeyError:
            outcome.violations.append(f"{when}: no users.jsonl")
            return
        records = [json.loads(line) for line in lines]
        got = {r["id"]: r for r in records}
        if len(got) != len(records):
            outcome.violations.append(f"{when}: duplicate lines in users.jsonl")
        if got != self.scenario.tenant:
            missing = sorted(set(self.scenario.tenant) - set(got))
            extra = sorted(set(got) - set(self.scenario.tenant))
            wrong = sorted(k for k in got.keys() & self.scenario.tenant.keys() if got[k] != self.scenario.tenant[k])
            outcome.violations.append(f"{when}: users.jsonl missing={missing} extra={extra} wrong={wrong}")
        if self.scenario.changes:
            self._check_changes(container, when, outcome)

    def _check_changes(self, container: FakeContainer, when: str, outcome: Outcome) -> None:
        logged: dict[str, str] = {}
        for name in (n for n in container.blobs if n.startswith("changes/")):
            for line in container.text(name).splitlines():
                entry = json.loads(line)
                logged[entry["id"]] = entry["change"]
        if logged != self.scenario.changes:
            outcome.violations.append(f"{when}: changes/ says {logged}, the round changed {self.scenario.changes}")

    def _check(self, container: FakeContainer, outcome: Outcome) -> None:
        if outcome.errors.get("clean"):
            outcome.violations.append(f"the clean run failed: {outcome.errors['clean']}")
        clean = [s for rid, s in outcome.summaries.items() if outcome.tags[rid] == "clean"]
        if not clean or clean[-1]["status"] != "succeeded":
            outcome.violations.append(f"the clean run did not succeed: {clean[-1:] or 'no summary'}")
        self._check_tenant(container, "after the clean run", outcome)
        if CHECKPOINT_BLOB in container.blobs:
            outcome.violations.append("a checkpoint is left after the clean run")
        leftovers = [n for n in container.blobs if n.startswith("staging/") and not n.startswith("staging/commit-")]
        if leftovers:
            outcome.violations.append(f"staging blobs left after the clean run: {leftovers}")
        # Every statement about what a run replaced is what storage saw that run do.
        since: dict[str, int] = {}
        for tag, run_id, upto in outcome.marks:
            start, since[tag] = since.get(tag, 0), upto
            did = {
                name
                for wtag, op, name, _ in container.writes[start:upto]
                if wtag == tag and op in ("write", "commit") and (name in (USERS_BLOB, STATE_BLOB) or name.startswith("changes/"))
            }
            summary = outcome.summaries[run_id]
            said = set(summary.get("replaced") or ())
            if said != did:
                outcome.violations.append(
                    f"{tag} ({summary['status']}) said it replaced {sorted(said)}, it replaced {sorted(did)}"
                )
            if "are unchanged" in summary.get("message", "") and did & {USERS_BLOB, STATE_BLOB}:
                outcome.violations.append(f"{tag} said users.jsonl and state.json are unchanged; it replaced {sorted(did)}")


Step = Callable[[str, str], bool]  # (operation, blob name) -> True at the chosen step


def overlap(
    container: FakeContainer,
    first: Callable[[], Any],
    second: Callable[[], Any],
    *,
    pause_first: Step,
    crash_second: Step | None = None,
    lapse: bool = True,
) -> dict[str, Any]:
    """Run ``first`` until ``pause_first`` holds, let its lease lapse, run ``second`` (killed where ``crash_second``
    holds), then resume ``first``; each one's result or exception type under "first" / "second"."""
    results: dict[str, Any] = {}
    paused, resume = threading.Event(), threading.Event()
    roles: dict[int, str] = {}
    dead: set[str] = set()

    def hook(op: str, name: str) -> None:
        role = roles.get(threading.get_ident())
        if role in dead:
            raise Crash()
        if role == "first" and not paused.is_set() and pause_first(op, name):
            paused.set()
            assert resume.wait(30)
        if role == "second" and crash_second is not None and crash_second(op, name):
            dead.add(role)
            raise Crash()

    def run(role: str, job: Callable[[], Any]) -> None:
        roles[threading.get_ident()] = role
        container.tags[threading.get_ident()] = role
        try:
            results[role] = job()
        except Crash:
            results[role] = "Crash"
        except Exception as exc:
            results[role] = exc

    container.hook = hook
    try:
        one = threading.Thread(target=run, args=("first", first), daemon=True)
        one.start()
        while one.is_alive() and not paused.wait(0.01):
            pass
        assert paused.is_set(), f"the first run never reached its pause: {results}"
        if lapse:
            container.lapse()
        two = threading.Thread(target=run, args=("second", second), daemon=True)
        two.start()
        two.join(30)
        results["during"] = dict(results)
    finally:
        resume.set()
    one.join(30)
    container.hook = None
    container.lapse()
    return results


def counter(operation: str, prefix: str, nth: int) -> Step:
    """A step: the ``nth`` ``operation`` on a blob whose name starts with ``prefix``."""
    seen = [0]

    def step(op: str, name: str) -> bool:
        if op == operation and name.startswith(prefix):
            seen[0] += 1
            return seen[0] == nth
        return False

    return step
