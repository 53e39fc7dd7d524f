"""The user property table (docs as data), and the app's advanced-query rules checked against it, cell by cell."""

from __future__ import annotations

import pytest

from emulator.odata import QueryError, compile_filter
from emulator.userschema import ADVANCED, DEFAULT, USER
from graphusers.graph import needs_advanced_query
from graphusers.properties import USER_PROPERTIES

_LITERAL = {"s": "'x'", "b": "true", "d": "2020-01-01T00:00:00Z", "S": "'x'"}


def _sample(name: str, kind: str, op: str) -> str | None:
    """A filter that uses ``op`` on property ``name``, as a caller would write it; None where no form exists."""
    if kind in ("c", "C"):
        # Complex values are filtered on their sub-properties, which the table does not list.
        return f"{name}/$count eq 0" if op == "$count" else None
    lit = _LITERAL[kind]
    target = "p" if kind == "S" else name

    def wrap(expr: str) -> str:
        return f"{name}/any(p:{expr})" if kind == "S" else expr

    forms = {
        "eq": wrap(f"{target} eq {lit}"),
        "ne": wrap(f"{target} ne {lit}"),
        "ge": wrap(f"{target} ge {lit}"),
        "le": wrap(f"{target} le {lit}"),
        "in": None if kind == "S" else f"{name} in ({lit})",
        "startswith": wrap(f"startswith({target},'x')"),
        "endswith": wrap(f"endswith({target},'x')"),
        "null": None if kind == "S" else f"{name} eq null",
        "not": None if kind == "S" else f"not({name} eq {lit})",
        "$count": f"{name}/$count eq 0",
    }
    return forms[op]


CELLS = [
    (name, op, support)
    for name, prop in USER.items()
    for op, support in prop.support.items()
    if _sample(name, prop.kind, op) is not None
]


def test_the_table_has_every_property_the_app_knows() -> None:
    """The emulator's table and the app's $select list name the same properties of the v1.0 user page."""
    assert set(USER) == set(USER_PROPERTIES) and len(USER) > 75


@pytest.mark.parametrize(("name", "op", "support"), CELLS, ids=[f"{n}-{o}" for n, o, _ in CELLS])
def test_app_advanced_rules_match_the_documented_cell(name: str, op: str, support: str) -> None:
    """For each documented (property, operator) the app asks for advanced mode exactly when Graph needs it."""
    expression = _sample(name, USER[name].kind, op)
    assert expression is not None
    try:
        _, needs = compile_filter(expression)
    except QueryError as exc:
        # not() also needs eq; a cell for not without one for eq is a query Graph cannot run.
        assert op == "not" and "eq" not in USER[name].support, exc.message
        return
    assert (needs is not None) == (support == ADVANCED or (op == "not" and USER[name].support["eq"] == ADVANCED))
    assert needs_advanced_query(expression) == (needs is not None), expression


@pytest.mark.parametrize(("name", "op"), [(n, o) for n, p in USER.items() for o in ("eq", "startswith") if o not in p.support])
def test_operators_without_a_cell_are_unsupported(name: str, op: str) -> None:
    """Where the table has no cell, Graph answers Request_UnsupportedQuery (or a type error for complex values)."""
    kind = USER[name].kind
    expression = f"{name} eq 'x'" if op == "eq" else f"startswith({name},'x')"
    with pytest.raises(QueryError) as caught:
        compile_filter(expression)
    assert caught.value.code in ("Request_UnsupportedQuery", "BadRequest") and (
        caught.value.code == "Request_UnsupportedQuery" or kind in ("b", "d", "S", "C", "c")
    )


def test_defaults_are_marked() -> None:
    """Spot checks against the page: accountEnabled eq by default, ne advanced; mobilePhone eq advanced."""
    assert USER["accountEnabled"].support["eq"] == DEFAULT and USER["accountEnabled"].support["ne"] == ADVANCED
    assert USER["mobilePhone"].support["eq"] == ADVANCED and USER["mail"].support["endswith"] == ADVANCED
    assert "startswith" not in USER["jobTitle"].support and USER["otherMails"].support["$count"] == ADVANCED
