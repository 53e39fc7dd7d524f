"""The azd hooks in infra/hooks, run by sh against recording stand-ins for the az and azd CLIs.

The stand-ins answer as the real CLIs do for the few commands the hooks call (exit status, the
``SecretNotFound`` / ``Forbidden`` error text on stderr, the password on stdout) and log every call,
so each test can say which Azure calls a hook made, and which it did not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT / "infra" / "hooks"
PASSWORD = "pw~Example.Secret-Value_0123456789"  # what the fake az returns as the new password

FAKE_CLI = r"""
import json, os, sys
state_path = os.environ["FAKE_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
calls = state.setdefault("calls", [])
calls.append([os.path.basename(sys.argv[0])] + args)

def answer(code, out="", err=""):
    json.dump(state, open(state_path, "w"))
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(code)

def opt(name):
    return args[args.index(name) + 1]

if os.path.basename(sys.argv[0]) == "azd":
    if args[:2] == ["env", "set"]:
        state.setdefault("env", {})[args[2]] = args[3]
    answer(0)
if args[:3] == ["keyvault", "secret", "show"]:
    replies = state.get("secret_show", [])
    reply = replies.pop(0) if len(replies) > 1 else (replies[0] if replies else "missing")
    if reply == "exists":
        answer(0, "https://vault/secrets/x/1\n")
    if reply == "forbidden":
        answer(1, err="ERROR: (Forbidden) Caller is not authorized to perform action on resource.\nCode: Forbidden\n")
    answer(1, err="ERROR: (SecretNotFound) A secret with (name/id) x was not found in this key vault.\n")
if args[:4] == ["ad", "app", "credential", "reset"]:
    answer(0, state["password"] + "\n")
if args[:3] == ["keyvault", "secret", "set"]:
    state["stored"] = open(opt("--file"), encoding="utf-8").read()
    answer(0, "https://vault/secrets/x/2\n")
if args[:2] == ["keyvault", "show"]:
    answer(0 if state.get("vault") == "exists" else 3, "kv\n" if state.get("vault") == "exists" else "",
           "" if state.get("vault") == "exists" else "ERROR: (ResourceNotFound) not found\n")
if args[:2] == ["keyvault", "show-deleted"]:
    answer(0 if state.get("vault") == "deleted" else 3, "kv\n" if state.get("vault") == "deleted" else "",
           "" if state.get("vault") == "deleted" else "ERROR: (NotFound) not found\n")
answer(2, err="fake az: unexpected call " + " ".join(args) + "\n")
"""


@pytest.fixture
def cli(tmp_path: Path) -> Path:
    """A bin directory with the az and azd stand-ins; the state file sits beside it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("az", "azd"):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\n{FAKE_CLI}")
        script.chmod(0o755)
    return bin_dir


def run_hook(
    cli: Path, hook: str, env: dict[str, str], state: dict[str, object]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    state_file = cli.parent / "state.json"
    state_file.write_text(json.dumps({"password": PASSWORD, **state}))
    # Only the stand-ins and the basic tools: no real az or azd can be reached.
    path = os.pathsep.join([str(cli), str(Path(shutil.which("sh") or "/bin/sh").parent), "/usr/bin", "/bin"])
    full_env = {"PATH": path, "FAKE_STATE": str(state_file), "GRAPHUSERS_HOOK_DELAY": "0", **env}
    proc = subprocess.run(["sh", str(HOOKS / hook)], env=full_env, capture_output=True, text=True, timeout=60, check=False)
    final: dict[str, Any] = json.loads(state_file.read_text())
    return proc, final


SECRET_MODE = {
    "AZURE_KEY_VAULT_NAME": "kv-abc",
    "AZURE_KEY_VAULT_SECRET_NAME": "graph-client-secret",
    "GRAPH_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
}


def commands(state: dict[str, Any]) -> list[str]:
    return [" ".join(call[1:4]) for call in state.get("calls", [])]


def test_postprovision_does_nothing_outside_secret_mode(cli: Path) -> None:
    """Certificate or federation mode (no secret name output): no Azure call at all."""
    proc, state = run_hook(
        cli,
        "postprovision.sh",
        {"AZURE_KEY_VAULT_NAME": "kv-abc", "GRAPH_CREDENTIAL": "certificate", "AZURE_KEY_VAULT_SECRET_NAME": ""},
        {},
    )
    assert proc.returncode == 0, proc.stderr
    assert state.get("calls") is None
    assert "not secret" in proc.stdout


def test_postprovision_keeps_an_existing_secret(cli: Path) -> None:
    """A secret already in the vault is left alone: no new password on the app registration."""
    proc, state = run_hook(cli, "postprovision.sh", SECRET_MODE, {"secret_show": ["exists"]})
    assert proc.returncode == 0, proc.stderr
    assert commands(state) == ["keyvault secret show"]
    assert "already exists" in proc.stdout


def test_postprovision_creates_a_missing_secret_without_printing_it(cli: Path) -> None:
    """Missing: one password is added and stored exactly (no trailing newline), and never printed."""
    proc, state = run_hook(cli, "postprovision.sh", SECRET_MODE, {"secret_show": ["missing"]})
    assert proc.returncode == 0, proc.stderr
    assert commands(state) == ["keyvault secret show", "ad app credential", "keyvault secret set"]
    reset = state["calls"][1]
    assert "--append" in reset and reset[reset.index("--id") + 1] == SECRET_MODE["GRAPH_CLIENT_ID"]
    assert state["stored"] == PASSWORD
    assert PASSWORD not in proc.stdout + proc.stderr
    assert not any(PASSWORD in arg for call in state["calls"] for arg in call)


def test_postprovision_waits_for_the_role_assignment(cli: Path) -> None:
    """403 while the Secrets Officer role propagates: it retries, then creates the secret."""
    proc, state = run_hook(cli, "postprovision.sh", SECRET_MODE, {"secret_show": ["forbidden", "forbidden", "missing"]})
    assert proc.returncode == 0, proc.stderr
    assert commands(state).count("keyvault secret show") == 3
    assert state["stored"] == PASSWORD
    assert "retrying" in proc.stdout


def test_postprovision_gives_up_naming_the_role(cli: Path) -> None:
    """Still 403 after the attempts: exit 1, naming the role and the re-run."""
    env = {**SECRET_MODE, "GRAPHUSERS_HOOK_ATTEMPTS": "3"}
    proc, state = run_hook(cli, "postprovision.sh", env, {"secret_show": ["forbidden"]})
    assert proc.returncode == 1
    assert "Key Vault Secrets Officer" in proc.stderr and "azd provision" in proc.stderr
    assert "ad app credential" not in commands(state)


def test_postprovision_leaves_a_foreign_app_registration_alone(cli: Path) -> None:
    """An app registration the template did not create gets no password from the hook."""
    env = {**SECRET_MODE, "GRAPHUSERS_CREATE_APP_REGISTRATION": "false"}
    proc, state = run_hook(cli, "postprovision.sh", env, {"secret_show": ["missing"]})
    assert proc.returncode == 0, proc.stderr
    assert commands(state) == ["keyvault secret show"]
    assert "az keyvault secret set" in proc.stdout


@pytest.mark.parametrize("vault,seeded", [("exists", False), ("deleted", True), ("gone", False)])
def test_preprovision_renames_only_a_soft_deleted_vault(cli: Path, vault: str, seeded: bool) -> None:
    """A new GRAPHUSERS_KEY_VAULT_SEED only when the recorded vault is soft-deleted."""
    proc, state = run_hook(cli, "preprovision.sh", {"AZURE_KEY_VAULT_NAME": "kv-abc"}, {"vault": vault})
    assert proc.returncode == 0, proc.stderr
    assert ("GRAPHUSERS_KEY_VAULT_SEED" in state.get("env", {})) is seeded


def test_preprovision_before_the_first_deployment(cli: Path) -> None:
    """No vault recorded yet: no Azure call."""
    proc, state = run_hook(cli, "preprovision.sh", {}, {})
    assert proc.returncode == 0, proc.stderr
    assert state.get("calls") is None


def test_postprovision_without_the_azure_cli_fails_at_once(cli: Path) -> None:
    """Secret mode with no az on PATH: a clear error, not five minutes of retries."""
    (cli / "az").unlink()
    if shutil.which("az", path=os.pathsep.join(["/usr/bin", "/bin"])):
        pytest.skip("a real az is installed in /usr/bin or /bin")
    env = {**SECRET_MODE, "GRAPHUSERS_HOOK_DELAY": "5"}
    proc, _ = run_hook(cli, "postprovision.sh", env, {})
    assert proc.returncode == 1
    assert "Azure CLI (az) is required" in proc.stderr
    assert "retrying" not in proc.stdout
