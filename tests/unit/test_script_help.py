"""Every script's --help says what it does, what it starts and what it leaves behind, and installs nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").iterdir() if p.is_file() and p.stat().st_mode & 0o111)


def test_the_scripts_are_found() -> None:
    """The list below is not empty by accident."""
    assert {"demo", "serve", "test", "bench"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_what_it_starts_and_leaves_behind(script: str) -> None:
    """--help exits 0 at once with the script's description, what it starts and what it leaves behind."""
    done = subprocess.run([f"./scripts/{script}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Starts:" in text and "Leaves behind:" in text, text
    assert "==>" not in text  # no install or other step ran
