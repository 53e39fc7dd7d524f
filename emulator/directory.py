"""The emulated directory: synthetic users, their change log, and Graph's query options over them.

Graph's query language itself (``$filter``, ``$search``) lives in ``odata``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

from .odata import QueryError, check_property, compile_filter, parse_search

__all__ = ["Directory", "QueryError", "make_user", "represent"]

FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Karen",
    "Leslie",
    "Niklaus",
    "Shafi",
    "Tony",
    "Whitfield",
]
LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Backus",
    "Jones",
    "Lamport",
    "Wirth",
    "Goldwasser",
    "Hoare",
    "Diffie",
]
DEPARTMENTS = ["Engineering", "Sales", "Finance", "Legal", "Support", "Research"]
TITLES = ["Engineer", "Manager", "Analyst", "Director", "Designer", "Consultant"]

# What Graph returns for /users without $select.
DEFAULT_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)


def represent(user: dict[str, Any], select: tuple[str, ...]) -> dict[str, Any]:
    """A delta entry for a whole user: ``id`` and every selected property that has a value."""
    return {"id": user["id"], **{f: user[f] for f in select if f != "id" and user.get(f) is not None}}


def make_user(rng: random.Random, n: int, domain: str) -> dict[str, Any]:
    """One synthetic user, deterministic for ``rng``'s state."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    upn = f"{first}.{last}{n}@{domain}".lower().replace("-", "")
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "displayName": f"{first} {last}",
        "givenName": first,
        "surname": last,
        "userPrincipalName": upn,
        "mail": upn,
        "accountEnabled": rng.random() > 0.1,
        "jobTitle": rng.choice(TITLES),
        "department": rng.choice(DEPARTMENTS),
        "officeLocation": f"{rng.randint(1, 40)}/{rng.randint(100, 999)}",
        "mobilePhone": None,
        "businessPhones": [],
        "preferredLanguage": "en-US",
        "createdDateTime": f"20{rng.randint(15, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T09:00:00Z",
        "userType": "Member",
    }


class Directory:
    """Users in a stable order, addressable by id and by userPrincipalName."""

    def __init__(self, count: int, seed: int, domain: str) -> None:
        self.domain = domain
        self._rng = random.Random(seed)
        self._next = 0
        self.users: dict[str, dict[str, Any]] = {}
        # The change log delta queries read: (seq, id, kind, changed properties).
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []
        self.seq = 0
        # Bumped to expire every delta token issued so far (Graph answers 410 or 400).
        self.delta_epoch = 0
        # Soft-deleted users (Graph's deleted items), restorable.
        self.deleted: dict[str, dict[str, Any]] = {}
        for _ in range(count):
            self.add(_log=False)
        self._initial = list(self.users)
        self._ids_at: dict[int, list[str]] = {}

    def _log(self, uid: str, kind: str, props: dict[str, Any]) -> None:
        self.seq += 1
        self.events.append((self.seq, uid, kind, props))

    def add(self, *, _log: bool = True, **props: Any) -> dict[str, Any]:
        """Add a synthetic user, with ``props`` overriding generated values."""
        user = make_user(self._rng, self._next, self.domain)
        self._next += 1
        user.update(props)
        self.users[user["id"]] = user
        if _log:
            self._log(user["id"], "added", dict(user))
        return user

    def update(self, uid: str, **props: Any) -> dict[str, Any]:
        """Change properties of a user."""
        user = self.users[uid]
        user.update(props)
        self._log(uid, "updated", dict(props))
        return user

    def remove(self, uid: str, *, soft: bool = False) -> None:
        """Delete a user: for good (delta reason "deleted"), or ``soft`` into deleted items ("changed")."""
        user = self.users.pop(uid)
        if soft:
            self.deleted[uid] = user
        self._log(uid, "removed", {"reason": "changed" if soft else "deleted"})

    def restore(self, uid: str) -> dict[str, Any]:
        """Restore a soft-deleted user."""
        user = self.users[uid] = self.deleted.pop(uid)
        self._log(uid, "added", dict(user))
        return user

    def changes_since(
        self, base: int, target: int, select: tuple[str, ...], *, minimal: bool = False, unify: bool = False
    ) -> list[dict[str, Any]]:
        """What a delta round from ``base`` to ``target`` returns, as Graph shapes it.

        Graph does not promise one entry per object: an object may appear once
        per change, in the order of the changes (``unify=False``), so a user can
        be removed and then come back, or change and then be removed, within one
        round. https://learn.microsoft.com/graph/delta-query-overview
        Removed users come as ``{"id", "@removed": {"reason"}}`` with "changed"
        for a soft delete and "deleted" for a permanent one
        (https://learn.microsoft.com/graph/api/user-delta). Added users come with
        every selected property that has a value. An update comes the same way
        by default; with ``minimal`` (``Prefer: return=minimal``) it carries
        ``id`` and only the selected properties that changed, nulls included.
        """
        events = [e for e in self.events if base < e[0] <= target]
        if unify:
            events = self._unified(events)
        out: list[dict[str, Any]] = []
        for _, uid, kind, props in events:
            if kind == "removed":
                out.append({"id": uid, "@removed": {"reason": props.get("reason", "deleted")}})
                continue
            current = self.users.get(uid) or {**props, "id": uid}  # a user since removed: what the event knew
            if kind == "updated":
                changed = [f for f in select if f in props and f != "id"]
                if not changed:
                    continue  # only selected properties are tracked for changes
                if minimal:
                    out.append({"id": uid, **{f: current.get(f) for f in changed}})
                    continue
                # Without return=minimal: every selected property that has a value, and the
                # changed ones even when set to null ("This includes properties being set to
                # null values"; never-set properties are left out).
                # https://learn.microsoft.com/graph/api/user-delta#request-headers
                # https://learn.microsoft.com/graph/delta-query-overview#resource-representation-in-the-delta-query-response
                out.append({**represent(current, select), **{f: None for f in changed if current.get(f) is None}})
                continue
            out.append(represent(current, select))
        return out

    @staticmethod
    def _unified(events: list[tuple[int, str, str, dict[str, Any]]]) -> list[tuple[int, str, str, dict[str, Any]]]:
        """One event per id: its final kind and every property changed along the way."""
        merged: dict[str, tuple[int, str, str, dict[str, Any]]] = {}
        for seq, uid, kind, props in events:
            before = merged.get(uid)
            if before is None:
                merged[uid] = (seq, uid, kind, dict(props))
            elif kind == "removed":
                merged[uid] = (before[0], uid, "removed", dict(props))
            else:
                was_added = before[2] == "added" or kind == "added"
                merged[uid] = (before[0], uid, "added" if was_added else "updated", {**before[3], **props})
        return sorted(merged.values())

    def full_round_page(
        self, ids: list[str], offset: int, size: int, select: tuple[str, ...], removed_then_live: float = 0.0
    ) -> list[dict[str, Any]]:
        """One page of a full round over ``ids``, the round's users in the order it started with.

        ``removed_then_live`` is the share of users that also come as a removal
        (reason "changed") one page before their live copy, as when a user is
        deleted and restored while the round runs. Users deleted after the round
        started come as removals: in their own place when not yet served, and on
        the last page when their live copy was served earlier.
        """

        def picked(uid: str) -> bool:
            return int(uid.replace("-", "")[-8:], 16) % 10_000 < removed_then_live * 10_000

        def removals(chunk: list[str], reason: str = "changed") -> list[dict[str, Any]]:
            return [{"id": u, "@removed": {"reason": reason}} for u in chunk if picked(u)] if removed_then_live else []

        page = ids[offset : offset + size]
        out = removals(page) if offset == 0 else []
        for uid in page:
            user = self.users.get(uid)
            if user is None:
                out.append({"id": uid, "@removed": {"reason": "changed" if uid in self.deleted else "deleted"}})
            else:
                out.append(represent(user, select))
        out += removals(ids[offset + size : offset + 2 * size])
        if offset + size >= len(ids):
            out += [
                {"id": u, "@removed": {"reason": "changed" if u in self.deleted else "deleted"}}
                for u in ids[:offset]
                if u not in self.users
            ]
        return out

    def ids_at(self, seq: int) -> list[str]:
        """The users' ids, in directory order, as they were once change ``seq`` was made.

        A full delta round serves the users as they were when it started; its
        state travels in its tokens (a start position), not in the emulator, as
        Graph's state tokens "represent a snapshot of the resource"
        (https://learn.microsoft.com/graph/delta-query-overview#state-tokens).
        """
        cached = self._ids_at.get(seq)
        if cached is not None:
            return cached
        order = dict.fromkeys(self._initial)
        for event_seq, uid, kind, _ in self.events:
            if event_seq > seq:
                break
            if kind == "added":
                order.pop(uid, None)
                order[uid] = None
            elif kind == "removed":
                order.pop(uid, None)
        if len(self._ids_at) > 64:
            self._ids_at.clear()
        ids = self._ids_at[seq] = list(order)
        return ids

    def find(self, key: str) -> dict[str, Any] | None:
        """A user by object id or (case-insensitive) userPrincipalName."""
        # Object ids are GUIDs, which Graph matches whatever their case (they are
        # compared as values, not text); ids here are stored lower-case, as Graph returns them.
        key = key.lower()
        user = self.users.get(key)
        if user is not None:
            return user
        return next((u for u in self.users.values() if str(u["userPrincipalName"]).lower() == key), None)

    def select(self, select: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A projection for ``$select`` (Graph's default set when absent)."""
        if select is None:
            fields: tuple[str, ...] = DEFAULT_PROPERTIES
        else:
            fields = tuple(f.strip() for f in select.split(","))
            for name in fields:
                check_property(name)
        return lambda user: {f: user.get(f) for f in fields}

    def query(self, filter_: str | None, search: str | None, *, advanced: bool = False) -> list[dict[str, Any]]:
        """Users matching ``$filter`` and ``$search``, in directory order.

        ``advanced``: the request carried both advanced query parameters; a
        filter that needs them is Graph's 400 without.
        """
        users = list(self.users.values())
        if filter_:
            pred, needs = compile_filter(filter_)
            if needs is not None and not advanced:
                raise QueryError(
                    "Request_UnsupportedQuery",
                    f"Operator '{needs}' is not supported because the required parameters might be missing. "
                    "Try adding $count=true query parameter and ConsistencyLevel:eventual header. "
                    "Refer to https://aka.ms/graph-docs/advanced-queries for more information",
                )
            users = [u for u in users if pred(u)]
        if search:
            spred = parse_search(search)
            users = [u for u in users if spred(u)]
        return users
