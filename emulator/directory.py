"""The emulated directory: synthetic users and Graph's query options over them.

Supported ``$filter`` subset (Graph's syntax, clauses joined by ``and``):
``prop eq 'text'``, ``prop ne 'text'``, ``prop eq true|false``,
``startswith(prop,'text')``, ``prop in ('a','b')``.
Supported ``$search``: ``"prop:text"`` clauses joined by ``AND``/``OR``;
a clause matches when a word of the property starts with the text.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from typing import Any

FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
         "Radia", "Tim", "Hedy", "John", "Karen", "Leslie", "Niklaus", "Shafi", "Tony", "Whitfield"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
        "Ritchie", "Perlman", "Berners-Lee", "Lamarr", "Backus", "Jones", "Lamport", "Wirth", "Goldwasser",
        "Hoare", "Diffie"]
DEPARTMENTS = ["Engineering", "Sales", "Finance", "Legal", "Support", "Research"]
TITLES = ["Engineer", "Manager", "Analyst", "Director", "Designer", "Consultant"]

# Properties of microsoft.graph.user this directory knows; $select of others is a 400 as in Graph.
PROPERTIES = frozenset({
    "id", "displayName", "givenName", "surname", "userPrincipalName", "mail", "accountEnabled",
    "jobTitle", "department", "officeLocation", "mobilePhone", "businessPhones", "preferredLanguage",
    "createdDateTime", "userType",
})
# What Graph returns for /users without $select.
DEFAULT_PROPERTIES = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                      "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")


class QueryError(ValueError):
    """A query option Graph would reject; ``code`` is Graph's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        # Bumped to expire every delta token issued so far (Graph answers 410).
        self.delta_epoch = 0
        for _ in range(count):
            self.add(_log=False)

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

    def remove(self, uid: str) -> None:
        """Delete a user."""
        del self.users[uid]
        self._log(uid, "removed", {})

    def changes_since(self, base: int, target: int, select: tuple[str, ...]) -> list[dict[str, Any]]:
        """What a delta round from ``base`` to ``target`` returns, as Graph shapes it.

        Added users come whole (selected properties); updated users with ``id``
        and only the selected properties that changed; deleted users as
        ``{"id", "@removed": {"reason": "deleted"}}``.
        """
        order: list[str] = []
        state: dict[str, dict[str, Any]] = {}
        for seq, uid, kind, props in self.events:
            if seq <= base or seq > target:
                continue
            entry = state.get(uid)
            if entry is None:
                entry = state[uid] = {"added": False, "removed": False, "props": {}}
                order.append(uid)
            if kind == "added":
                entry.update(added=True, removed=False)
            elif kind == "removed":
                entry["removed"] = True
            entry["props"].update(props)
        out: list[dict[str, Any]] = []
        for uid in order:
            entry = state[uid]
            user = self.users.get(uid)
            if entry["removed"] or user is None:
                out.append({"id": uid, "@removed": {"reason": "deleted"}})
            elif entry["added"]:
                out.append({f: user.get(f) for f in select} | {"id": uid})
            else:
                changed = {f: user.get(f) for f in select if f in entry["props"] and f != "id"}
                if changed:
                    out.append({"id": uid, **changed})
        return out

    def find(self, key: str) -> dict[str, Any] | None:
        """A user by object id or (case-insensitive) userPrincipalName."""
        user = self.users.get(key)
        if user is not None:
            return user
        key = key.lower()
        return next((u for u in self.users.values() if u["userPrincipalName"] == key), None)

    def select(self, select: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A projection for ``$select`` (Graph's default set when absent)."""
        if select is None:
            fields: tuple[str, ...] = DEFAULT_PROPERTIES
        else:
            fields = tuple(f.strip() for f in select.split(","))
            for name in fields:
                if name not in PROPERTIES:
                    raise QueryError(
                        "Request_BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.user'."
                    )
        return lambda user: {f: user.get(f) for f in fields}

    def query(self, filter_: str | None, search: str | None) -> list[dict[str, Any]]:
        """Users matching ``$filter`` and ``$search``, in directory order."""
        users = list(self.users.values())
        if filter_:
            pred = parse_filter(filter_)
            users = [u for u in users if pred(u)]
        if search:
            spred = parse_search(search)
            users = [u for u in users if spred(u)]
        return users


_LITERAL = r"(?:'((?:[^']|'')*)'|(true|false|null))"
_CLAUSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^(\w+)\s+(eq|ne)\s+{_LITERAL}$", re.I), "cmp"),
    (re.compile(rf"^startswith\(\s*(\w+)\s*,\s*{_LITERAL}\s*\)$", re.I), "startswith"),
    (re.compile(r"^(\w+)\s+in\s+\(\s*('(?:[^']|'')*'(?:\s*,\s*'(?:[^']|'')*')*)\s*\)$", re.I), "in"),
]


def _literal(text: str | None, word: str | None) -> Any:
    if text is not None:
        return text.replace("''", "'")
    return {"true": True, "false": False, "null": None}[(word or "").lower()]


def _check_property(name: str) -> None:
    if name not in PROPERTIES:
        raise QueryError("Request_BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def parse_filter(expression: str) -> Callable[[dict[str, Any]], bool]:
    """Compile the supported ``$filter`` subset; ``QueryError`` for anything else."""
    preds: list[Callable[[dict[str, Any]], bool]] = []
    for clause in re.split(r"\s+and\s+", expression.strip(), flags=re.I):
        clause = clause.strip()
        for pattern, kind in _CLAUSES:
            m = pattern.match(clause)
            if not m:
                continue
            prop = m.group(1)
            _check_property(prop)
            if kind == "cmp":
                value, negate = _fold(_literal(m.group(3), m.group(4))), m.group(2).lower() == "ne"
                preds.append(lambda u, p=prop, v=value, n=negate: (_fold(u.get(p)) == v) != n)
            elif kind == "startswith":
                prefix = str(_literal(m.group(2), m.group(3))).lower()
                preds.append(lambda u, p=prop, s=prefix: str(u.get(p) or "").lower().startswith(s))
            else:
                values = {v.replace("''", "'").lower() for v in re.findall(r"'((?:[^']|'')*)'", m.group(2))}
                preds.append(lambda u, p=prop, vs=values: _fold(u.get(p)) in vs)
            break
        else:
            if re.match(r"^[\w\s'(),.@:-]*$", clause) and clause:
                raise QueryError("Request_UnsupportedQuery", "Unsupported Query.")
            raise QueryError("BadRequest", f"Invalid filter clause: syntax error in '{clause[:100]}'.")
    return lambda u: all(p(u) for p in preds)


_SEARCH_CLAUSE = re.compile(r'^"(\w+):([^"]*)"$')


def parse_search(expression: str) -> Callable[[dict[str, Any]], bool]:
    """Compile ``$search``: quoted ``"prop:text"`` clauses joined by AND/OR (AND binds tighter)."""
    alternatives = []
    for part in re.split(r"\s+OR\s+", expression.strip()):
        clauses = []
        for clause in re.split(r"\s+AND\s+", part.strip()):
            m = _SEARCH_CLAUSE.match(clause.strip())
            if not m:
                raise QueryError(
                    "Request_BadRequest",
                    "Invalid $search: use quoted clauses such as \"displayName:ada\" joined by AND or OR.",
                )
            _check_property(m.group(1))
            clauses.append((m.group(1), m.group(2).lower()))
        alternatives.append(clauses)

    def match(user: dict[str, Any]) -> bool:
        return any(
            all(any(w.startswith(t) for w in re.split(r"[\s.@_-]+", str(user.get(p) or "").lower())) for p, t in cl)
            for cl in alternatives
        )

    return match
