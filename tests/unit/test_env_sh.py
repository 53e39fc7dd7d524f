"""scripts/env.sh never reinstalls through a symlinked install: the link's target belongs to another checkout."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Stands in for npm: `npm ci` empties node_modules, following a link to its target, then replaces the
# link with a directory (what npm 10 does: "npm warn reify Removing non-directory .../node_modules").
FAKE_NPM = """#!/bin/sh
[ "$1" = ci ] || exit 2
find node_modules/ -mindepth 1 -delete 2>/dev/null
[ -L node_modules ] && rm node_modules
mkdir -p node_modules/.bin && printf '#!/bin/sh\\n' > node_modules/.bin/azurite && chmod +x node_modules/.bin/azurite
"""


def sha(*texts: str) -> str:
    return hashlib.sha256("".join(texts).encode()).hexdigest()


def test_a_linked_node_modules_with_another_lock_is_replaced_not_emptied(tmp_path: Path) -> None:
    """A different package-lock.json gets this checkout its own node_modules; the shared one keeps its files."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "env.sh", project / "scripts" / "env.sh")
    requirements, dev = "requests==2\n", "-r requirements.txt\n"
    (project / "requirements.txt").write_text(requirements)
    (project / "requirements-dev.txt").write_text(dev)
    (project / "package-lock.json").write_text('{"lockfileVersion": 3, "name": "this"}\n')

    # A shared venv whose stamp matches, so only node_modules needs an install.
    venv = tmp_path / "shared-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".requirements.sha256").write_text(sha(requirements, dev) + "\n")
    (project / ".venv").symlink_to(venv)

    # Another checkout's node_modules, installed for another lock.
    shared = tmp_path / "shared-node_modules"
    (shared / ".bin").mkdir(parents=True)
    (shared / ".bin" / "azurite").write_text("#!/bin/sh\n")
    (shared / ".bin" / "azurite").chmod(0o755)
    (shared / ".package-lock.sha256").write_text("another lock\n")
    (shared / "keep.txt").write_text("the other checkout's install\n")
    (project / "node_modules").symlink_to(shared)

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "npm").write_text(FAKE_NPM)
    (fake_bin / "npm").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}

    done = subprocess.run(
        ["bash", "-c", "source scripts/env.sh"], cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (shared / "keep.txt").exists() and (shared / ".bin" / "azurite").exists(), "the shared install was emptied"
    assert not (project / "node_modules").is_symlink() and (project / "node_modules" / ".bin" / "azurite").exists()
    assert "node_modules links to" in done.stdout
    assert (project / ".venv").is_symlink()  # its stamp matched: left alone
