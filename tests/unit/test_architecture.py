"""What each folder may import from this repository (CONTRIBUTING.md, "What each folder may import")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The repository's own top-level packages and modules.
OWN = {"graphusers", "function_app", "emulator", "devtools", "tools", "bench", "tests", "testkit"}
ALLOWED = {
    "graphusers": {"graphusers"},
    "function_app.py": {"function_app", "graphusers"},
    "emulator": {"emulator"},
    "devtools": {"devtools", "graphusers", "emulator"},
    "tools": {"tools", "graphusers", "emulator", "devtools"},
    "bench": {"bench", "graphusers", "emulator", "devtools"},
}


def own_imports(path: Path) -> set[str]:
    """The repository's top-level names that ``path`` imports, anywhere in the file (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OWN


def sources(place: str) -> list[Path]:
    target = ROOT / place
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("place", sorted(ALLOWED))
def test_folder_imports_only_what_it_may(place: str) -> None:
    """No module in the folder imports a part of the repository its row does not allow."""
    files = sources(place)
    assert files, f"{place} has no Python files"
    broken = {str(f.relative_to(ROOT)): sorted(own_imports(f) - ALLOWED[place]) for f in files}
    assert {name: bad for name, bad in broken.items() if bad} == {}


def test_the_check_sees_an_import_it_must_refuse(tmp_path: Path) -> None:
    """A lazy ``import tests...`` inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tests.testkit import fakes\n    import emulator.server\n")
    assert own_imports(module) == {"tests", "emulator"}
