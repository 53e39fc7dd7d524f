"""The demo never overwrites local.settings.json: its emulator settings go to .run/local.settings.emulator.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.demo import write_local_settings

pytestmark = [pytest.mark.integration, pytest.mark.harness]

ROOT = Path(__file__).resolve().parents[2]
HAND_WRITTEN = b'{\n  "IsEncrypted": false,\n  "Values": {"GRAPH_TENANT_ID": "contoso.onmicrosoft.com", "MY_OWN": "kept"}\n}\n'


def test_two_demo_runs_leave_a_hand_written_local_settings_byte_identical(tmp_path: Path) -> None:
    """Run the demo twice (once asking to write local.settings.json): the user's file stays byte for byte."""
    app = tmp_path / "app"
    shutil.copytree(
        ROOT,
        app,
        ignore=shutil.ignore_patterns(".venv*", ".git", "node_modules", ".run", "local.settings.json", "__pycache__", "*_cache"),
    )
    (app / "node_modules").symlink_to(ROOT / "node_modules")
    settings = app / "local.settings.json"
    settings.write_bytes(HAND_WRITTEN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    for extra in ([], ["--write-local-settings"]):
        done = subprocess.run(
            [sys.executable, "-m", "devtools.demo", "--users", "30", *extra],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert settings.read_bytes() == HAND_WRITTEN
    assert "left local.settings.json as it is" in done.stdout
    emulator_settings = json.loads((app / ".run" / "local.settings.emulator.json").read_text())["Values"]
    assert emulator_settings["GRAPH_ENDPOINT"].startswith("https://127.0.0.1:")


def test_write_local_settings_only_when_missing_or_forced(tmp_path: Path) -> None:
    """Missing: written. Present: left as it is. With --force: replaced."""
    path = tmp_path / "local.settings.json"
    assert "wrote" in write_local_settings({"A": "1"}, force=False, path=path)
    assert json.loads(path.read_text())["Values"]["A"] == "1"
    path.write_bytes(HAND_WRITTEN)
    assert "left" in write_local_settings({"A": "2"}, force=False, path=path)
    assert path.read_bytes() == HAND_WRITTEN
    assert "wrote" in write_local_settings({"A": "3"}, force=True, path=path)
    assert json.loads(path.read_text())["Values"]["A"] == "3"
