"""The fidelity ledger (emulator/FIDELITY.md) has a row for every switch, and every test it names exists."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from emulator.faults import BODY_FAULTS, Chaos, Fault

ROOT = Path(__file__).resolve().parents[2]
LEDGER = (ROOT / "emulator" / "FIDELITY.md").read_text()
ROWS = [line for line in LEDGER.splitlines() if line.startswith("|") and not line.startswith("|---")]
# Fault kinds the Fault docstring documents, besides the body faults and the chaos kinds.
FAULT_KINDS = {"status", "reset", "malformed", "delay", "no-value", "foreign-link", "html"}


def control_switches() -> set[str]:
    """Every control action and payload key in emulator/control.py, read from its source."""
    tree = ast.parse((ROOT / "emulator" / "control.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "action":
            names |= {c.value for c in node.comparators if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "payload" and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "payload":
            if isinstance(node.slice, ast.Constant):
                names.add(str(node.slice.value))
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            if any(isinstance(c, ast.Name) and c.id == "payload" for c in node.comparators):
                names.add(node.left.value)
    return names


def switches() -> set[str]:
    fields = {f.name for f in dataclasses.fields(Fault)}
    return control_switches() | fields | FAULT_KINDS | set(BODY_FAULTS) | set(Chaos.KINDS)


def test_the_reader_finds_the_switches() -> None:
    """The source reader sees actions and payload keys of every form (so a new one cannot slip past)."""
    found = control_switches()
    assert {"faults", "delta", "paging", "shape", "users"} <= found  # actions
    assert {"expiryStatus", "replayOld", "tokenLifetime", "gzip", "softRemove", "expireOld"} <= found  # keys


def test_every_switch_has_a_row() -> None:
    """Each switch appears, as `name`, in a row of the ledger."""
    missing = sorted(name for name in switches() if not any(f"`{name}`" in row for row in ROWS))
    assert missing == [], f"emulator/FIDELITY.md has no row for: {missing}"


def test_every_test_the_ledger_names_exists() -> None:
    """Each `dir/file.py::test_name` (and each `::test_name` after it in the same cell) is a real test."""
    for row in ROWS:
        for cell in row.split("|"):
            current: Path | None = None
            for path, name in re.findall(r"`((?:emulator|integration|unit)/test_\w+\.py)?(?:::(\w+))?`", cell):
                if path:
                    current = ROOT / "tests" / path
                    assert current.exists(), f"{path} (named in the ledger) does not exist"
                if name:
                    assert current is not None, f"::{name} without a file before it"
                    assert re.search(rf"^def {name}\(", current.read_text(), re.M), f"{current.name}::{name} does not exist"
