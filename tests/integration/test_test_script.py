"""`./scripts/test --quick` runs pytest alone, on the unit tests unless told otherwise; CI runs everything."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK_STEPS = ("==> ruff", "==> mypy", "==> infra")


def run_test_script(*args: str) -> subprocess.CompletedProcess[str]:
    """./scripts/test with these arguments, from the project root."""
    return subprocess.run(["./scripts/test", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_quick_collects_the_unit_tests_only_and_runs_no_checks() -> None:
    """With no test path, --quick collects tests/unit and nothing else, and skips lint, types and infra."""
    done = run_test_script("--quick", "--collect-only", "-q", "-p", "no:randomly")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(step in done.stdout for step in CHECK_STEPS), done.stdout
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(ids) > 100
    assert {i.split("/")[1] for i in ids} == {"unit"}, sorted({i.split("::")[0] for i in ids})
    # The exhaustive tests (the interleaving explorer) are CI's, not --quick's.
    assert not any("test_explorer_" in i for i in ids), [i for i in ids if "test_explorer_" in i][:3]
    assert "deselected" in done.stdout


def test_quick_passes_a_test_path_and_failures_through() -> None:
    """--quick anywhere; a named test path replaces tests/unit, and pytest's failure is the script's exit code."""
    done = run_test_script("-q", "--quick", "-p", "no:randomly", "tests/emulator/test_control.py::no_such_test")
    assert done.returncode != 0
    assert "no_such_test" in done.stdout + done.stderr
    assert "tests/unit" not in done.stdout.splitlines()[0]


def test_ci_runs_the_whole_suite() -> None:
    """.ci/run calls ./scripts/test with no arguments, so CI keeps every check."""
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "./scripts/test" in commands
    assert not any("--quick" in line for line in commands)
