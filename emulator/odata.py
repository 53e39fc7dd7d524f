"""Graph's query language over users: ``$filter`` and ``$search``, and the errors Graph answers.

Supported ``$filter`` subset (Graph's syntax, clauses joined by ``and``):
``prop eq|ne 'text'|true|false|null``, ``startswith(prop,'text')``,
``endswith(prop,'text')``, ``prop in ('a','b')`` and ``not`` before any of
them. Which operator works on which property, and which only as an advanced
query (``ConsistencyLevel: eventual`` plus ``$count=true``), follows Graph's
table for users: https://learn.microsoft.com/graph/aad-advanced-queries
Supported ``$search``: ``"prop:text"`` clauses joined by ``AND``/``OR``;
a clause matches when a word of the property starts with the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Properties of microsoft.graph.user this directory knows; $select of others is a 400 as in Graph.
PROPERTIES = frozenset(
    {
        "id",
        "displayName",
        "givenName",
        "surname",
        "userPrincipalName",
        "mail",
        "accountEnabled",
        "jobTitle",
        "department",
        "officeLocation",
        "mobilePhone",
        "businessPhones",
        "preferredLanguage",
        "createdDateTime",
        "userType",
    }
)


class QueryError(ValueError):
    """A query option Graph would reject; ``code`` is Graph's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_LITERAL = r"(?:'((?:[^']|'')*)'|(true|false|null))"
_CLAUSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"^(\w+)\s+(eq|ne)\s+{_LITERAL}$", re.I), "cmp"),
    (re.compile(rf"^(startswith|endswith)\(\s*(\w+)\s*,\s*{_LITERAL}\s*\)$", re.I), "affix"),
    (re.compile(r"^(\w+)\s+in\s+\(\s*('(?:[^']|'')*'(?:\s*,\s*'(?:[^']|'')*')*)\s*\)$", re.I), "in"),
]
_NOT = re.compile(r"^not(?:\s+|(?=\())(.+)$", re.I | re.S)

# Graph's support for $filter on user properties this directory knows: "default"
# (works as is), "advanced" (needs ConsistencyLevel: eventual and $count=true),
# absent (Request_UnsupportedQuery even as an advanced query). ne is advanced
# wherever listed. https://learn.microsoft.com/graph/aad-advanced-queries#user-properties
_D, _A = "default", "advanced"


def _table(default: str = "", advanced: str = "") -> dict[str, str]:
    return {**dict.fromkeys(default.split(), _D), **dict.fromkeys(advanced.split(), _A)}


_SUPPORT: dict[str, dict[str, str]] = {
    "eq": _table(
        "accountEnabled businessPhones createdDateTime department displayName givenName id jobTitle mail surname "
        "userPrincipalName userType",
        "mobilePhone officeLocation preferredLanguage",
    ),
    "not": _table(advanced="accountEnabled businessPhones createdDateTime department displayName id userType"),
    "in": _table(
        "accountEnabled department displayName givenName id jobTitle mail surname userPrincipalName userType",
        "createdDateTime mobilePhone officeLocation preferredLanguage",
    ),
    "startswith": _table(
        "department displayName givenName mail surname userPrincipalName", "mobilePhone officeLocation preferredLanguage"
    ),
    # endsWith: mail, otherMails, userPrincipalName and proxyAddresses, as advanced queries only.
    "endswith": _table(advanced="mail userPrincipalName"),
    "null": _table(
        advanced="department displayName givenName jobTitle mobilePhone officeLocation preferredLanguage surname userType"
    ),
}
_SUPPORT["ne"] = {p: _A for p in _SUPPORT["eq"] if p != "businessPhones"}
_OPERATOR_NAMES = {
    "ne": "ne",
    "not": "not",
    "endswith": "endsWith",
    "null": "null",
    "in": "in",
    "startswith": "startsWith",
    "eq": "eq",
}


def _literal(text: str | None, word: str | None) -> Any:
    if text is not None:
        return text.replace("''", "'")
    return {"true": True, "false": False, "null": None}[(word or "").lower()]


def check_property(name: str) -> None:
    if name not in PROPERTIES:
        raise QueryError("Request_BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")


def _supported(operator: str, prop: str) -> str | None:
    """None when the operator works on ``prop`` by default; its name when it needs an advanced query."""
    support = _SUPPORT[operator].get(prop)
    if support is None:
        raise QueryError(
            "Request_UnsupportedQuery",
            f"Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'.",
        )
    return _OPERATOR_NAMES[operator] if support == _A else None


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _split_and(expression: str) -> list[str]:
    """Clauses joined by ``and`` outside string literals."""
    masked = re.sub(r"'(?:[^']|'')*'", lambda m: "'" + "x" * (len(m.group()) - 2) + "'", expression)
    clauses, start = [], 0
    for m in re.finditer(r"\s+and\s+", masked, flags=re.I):
        clauses.append(expression[start : m.start()])
        start = m.end()
    clauses.append(expression[start:])
    return clauses


def _compile_clause(clause: str) -> tuple[Callable[[dict[str, Any]], bool], str | None]:
    clause = clause.strip()
    negated = _NOT.match(clause)
    if negated:
        inner = negated.group(1).strip()
        if inner.startswith("(") and inner.endswith(")"):
            inner = inner[1:-1].strip()
        pred, needs = _compile_clause(inner)
        prop = _clause_property(inner)
        check_property(prop)
        return (lambda u, p=pred: not p(u)), _supported("not", prop) or needs
    for pattern, kind in _CLAUSES:
        m = pattern.match(clause)
        if not m:
            continue
        if kind == "cmp":
            prop, op = m.group(1), m.group(2).lower()
            check_property(prop)
            value = _literal(m.group(3), m.group(4))
            needs = _supported("null", prop) if value is None else None
            needs = _supported(op, prop) or needs
            folded, negate = _fold(value), op == "ne"
            return (lambda u, p=prop, v=folded, n=negate: (_fold(u.get(p)) == v) != n), needs
        if kind == "affix":
            func, prop = m.group(1).lower(), m.group(2)
            check_property(prop)
            needs = _supported(func, prop)
            text = str(_literal(m.group(3), m.group(4))).lower()
            if func == "startswith":
                return (lambda u, p=prop, s=text: str(u.get(p) or "").lower().startswith(s)), needs
            return (lambda u, p=prop, s=text: str(u.get(p) or "").lower().endswith(s)), needs
        prop = m.group(1)
        check_property(prop)
        needs = _supported("in", prop)
        values = {v.replace("''", "'").lower() for v in re.findall(r"'((?:[^']|'')*)'", m.group(2))}
        return (lambda u, p=prop, vs=values: _fold(u.get(p)) in vs), needs
    if re.match(r"^[\w\s'(),.@:-]*$", clause) and clause:
        raise QueryError("Request_UnsupportedQuery", "Unsupported Query.")
    raise QueryError("BadRequest", f"Invalid filter clause: syntax error in '{clause[:100]}'.")


def _clause_property(clause: str) -> str:
    m = re.match(r"^(?:\w+\(\s*)?(\w+)", clause)
    return m.group(1) if m else ""


def compile_filter(expression: str) -> tuple[Callable[[dict[str, Any]], bool], str | None]:
    """Compile the supported ``$filter`` subset: the predicate and the first operator needing an advanced query."""
    preds: list[Callable[[dict[str, Any]], bool]] = []
    needs: str | None = None
    for clause in _split_and(expression.strip()):
        pred, clause_needs = _compile_clause(clause)
        preds.append(pred)
        needs = needs or clause_needs
    return (lambda u: all(p(u) for p in preds)), needs


def parse_filter(expression: str) -> Callable[[dict[str, Any]], bool]:
    """Compile the supported ``$filter`` subset; ``QueryError`` for anything else."""
    return compile_filter(expression)[0]


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
                    'Invalid $search: use quoted clauses such as "displayName:ada" joined by AND or OR.',
                )
            check_property(m.group(1))
            clauses.append((m.group(1), m.group(2).lower()))
        alternatives.append(clauses)

    def match(user: dict[str, Any]) -> bool:
        return any(
            all(any(w.startswith(t) for w in re.split(r"[\s.@_-]+", str(user.get(p) or "").lower())) for p, t in cl)
            for cl in alternatives
        )

    return match
