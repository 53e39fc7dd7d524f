"""Snapshot lines through orjson are byte-identical to the standard library's; USER_SYNC_FULL_ROUND is validated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphusers.config import sync_full_round
from graphusers.errors import ConfigError
from graphusers.sync.records import dumps, snapshot_line


def reference(record: dict[str, Any]) -> str:
    """How every snapshot line was written before the fast path: json.dumps, then U+2028/U+2029 escaped."""
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


CASES: dict[str, dict[str, Any]] = {
    "plain": {"id": "a", "displayName": "Zoë Ångström", "mail": None, "accountEnabled": True},
    "escapes": {"id": "b", "displayName": 'quote " back \\ tab \t nl \n \x00 \x1f \x7f', "mail": "a/b"},
    "line separators": {"id": "c", "displayName": "one\u2028two\u2029three"},
    "astral and bom": {"id": "d", "displayName": "\U0001f600 \ufeff \u00ad"},
    "nested": {"id": "e", "businessPhones": ["+1 555", ""], "employeeOrgData": {"division": None, "costCenter": "x"}},
    "ints": {"id": "f", "n": 0, "big": 2**63 - 1, "neg": -(2**63)},
    "huge int": {"id": "g", "n": 2**64 + 1},  # orjson refuses it: the standard library writes it
    "floats": {"id": "h", "x": 1e-7, "y": 1e16, "z": 0.1, "nan": float("nan")},  # written as json writes them
    "empty": {"id": "i", "list": [], "dict": {}},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_lines_are_byte_identical_to_the_standard_library(case: str) -> None:
    """Every kind of value a user record can hold encodes to the bytes json.dumps wrote."""
    assert dumps(CASES[case]) == reference(CASES[case])


def test_the_fast_path_is_taken_for_plain_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records without floats do not go through json.dumps (the point of the change); a float one does."""
    calls: list[Any] = []
    real, want = json.dumps, reference(CASES["plain"])

    def counting(*args: Any, **kwargs: Any) -> str:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(json, "dumps", counting)
    assert snapshot_line(CASES["plain"], ("id", "displayName", "mail", "accountEnabled")) == want
    assert calls == []
    dumps(CASES["floats"])
    assert len(calls) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.mark.exhaustive
@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_any_json_record_is_byte_identical(record: dict[str, Any]) -> None:
    """For any record JSON can hold (floats, NaN, huge ints, any text), the line is the one json.dumps wrote."""
    try:
        expected = reference(record)
    except UnicodeEncodeError:  # pragma: no cover - json writes lone surrogates as they are
        return
    assert dumps(record) == expected


@pytest.mark.parametrize(("value", "kind"), [("", "listing"), ("listing", "listing"), (" Delta ", "delta")])
def test_full_round_setting(value: str, kind: str) -> None:
    """USER_SYNC_FULL_ROUND: listing by default, or delta (case and spaces aside)."""
    assert sync_full_round({"USER_SYNC_FULL_ROUND": value}) == kind


def test_a_wrong_full_round_setting_is_a_config_error_naming_it() -> None:
    """Anything else is a ConfigError naming the setting and both values."""
    with pytest.raises(ConfigError) as info:
        sync_full_round({"USER_SYNC_FULL_ROUND": "lsiting"})
    assert "USER_SYNC_FULL_ROUND" in info.value.message and "'listing'" in info.value.message
    assert "'delta'" in info.value.message
