"""The azd hooks in infra/hooks, run by sh against recording stand-ins for the az and azd CLIs.

The stand-ins answer as the real CLIs do for the few commands the hooks call (exit status, the
``SecretNotFound`` / ``Forbidden`` error text on stderr, the password on stdout) and log every call,
so each test can say which Azure calls a hook made, and which it did not.

In the private layout the stand-in vault is as strict as Key Vault's network rules: with public access
disabled every data-plane call is refused, and with it enabled (the firewall denying by default) only an
address with an IP rule gets through; the refusal names the caller's address as Key Vault's does
("Client address: ..."). https://learn.microsoft.com/azure/key-vault/general/network-security
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
net = state.get("network")  # None: a public vault; else {"public": "Disabled"|"Enabled", "rules": [...]}
if args[:2] == ["keyvault", "update"] and net is not None:
    if state.get("policy_denies"):
        answer(1, err="ERROR: (RequestDisallowedByPolicy) Resource was disallowed by policy.\n")
    if state.get("close_fails") and opt("--public-network-access") == "Disabled":
        answer(1, err="ERROR: (Conflict) The vault is busy; try again.\n")
    net["public"] = opt("--public-network-access")
    answer(0)
if args[:3] == ["keyvault", "network-rule", "add"] and net is not None:
    net["rules"].append(opt("--ip-address"))
    answer(0)
if args[:3] == ["keyvault", "network-rule", "remove"] and net is not None:
    rule = opt("--ip-address")
    answer(0 if rule in net["rules"] and not net["rules"].remove(rule) else 1)
if args[:2] == ["keyvault", "secret"] and net is not None and not state.get("inside_network"):
    lagging = net["public"] == "Enabled" and state.get("lag", 0) > 0  # the opening not applied yet
    if lagging:
        state["lag"] -= 1
    if net["public"] != "Enabled" or lagging:
        answer(1, err="ERROR: (Forbidden) Public network access is disabled and request is not from a trusted "
               "service nor via an approved private link.\nCode: Forbidden\n")
    if state.get("caller_ip", "203.0.113.7") + "/32" not in net["rules"]:
        where = state.get("caller_ip", "203.0.113.7") if state.get("names_address", True) else "unknown"
        where = state.get("seen_as", where)
        answer(1, err="ERROR: (Forbidden) Client address is not authorized and caller is not a trusted service.\n"
               f"Client address: {where}\nCaller: appid=x;oid=y\nVault: kv-abc;location=eastus\nCode: Forbidden\n")
if args[:3] == ["keyvault", "secret", "show"]:
    replies = state.get("secret_show", [])
    reply = replies.pop(0) if len(replies) > 1 else (replies[0] if replies else "missing")
    if reply == "exists":
        answer(0, "https://vault/secrets/x/1\n")
    if reply == "forbidden":
        answer(1, err="ERROR: (Forbidden) Caller is not authorized to perform action on resource.\nCode: Forbidden\n")
    answer(1, err="ERROR: (SecretNotFound) A secret with (name/id) x was not found in this key vault.\n")
if args[:4] == ["ad", "app", "credential", "reset"]:
    if state.get("reset_fails"):
        answer(1, err="ERROR: Insufficient privileges to complete the operation.\n")
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


PRIVATE = {**SECRET_MODE, "AZURE_VNET_ENABLED": "true", "AZURE_RESOURCE_GROUP": "rg-dev", "GRAPHUSERS_HOOK_ATTEMPTS": "3"}


def closed_vault(**extra: object) -> dict[str, object]:
    """State of a vault as the private layout leaves it: public access off, no IP rule."""
    return {"network": {"public": "Disabled", "rules": []}, **extra}


def vault_calls(state: dict[str, Any]) -> list[str]:
    """The vault's network changes, in order: update <public access>, rule add|remove <address>."""
    out = []
    for call in state.get("calls", []):
        if call[1:3] == ["keyvault", "update"]:
            out.append("update " + call[call.index("--public-network-access") + 1])
        elif call[1:3] == ["keyvault", "network-rule"]:
            out.append(f"rule {call[3]} {call[call.index('--ip-address') + 1]}")
    return out


def test_private_vault_is_opened_to_the_deployer_only_and_closed_again(cli: Path) -> None:
    """Private layout: public access on, a rule for the address the vault's refusal names, the secret
    stored, then the rule removed and public access off."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(secret_show=["missing"]))
    assert proc.returncode == 0, proc.stderr
    assert state["stored"] == PASSWORD
    assert vault_calls(state) == [
        "update Enabled",
        "rule add 203.0.113.7/32",
        "rule remove 203.0.113.7/32",
        "update Disabled",
    ]
    assert state["network"] == {"public": "Disabled", "rules": []}
    update = next(c for c in state["calls"] if c[1:3] == ["keyvault", "update"])
    assert update[update.index("--default-action") + 1] == "Deny" and "rg-dev" in update
    assert PASSWORD not in proc.stdout + proc.stderr


def test_private_vault_with_an_existing_secret_is_closed_again(cli: Path) -> None:
    """An existing secret: read through the temporary rule, nothing created, the vault closed."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(secret_show=["exists"]))
    assert proc.returncode == 0, proc.stderr
    assert "ad app credential" not in commands(state)
    assert state["network"] == {"public": "Disabled", "rules": []}


def test_private_vault_is_closed_when_a_later_step_fails(cli: Path) -> None:
    """The password cannot be created: the hook fails, and still removes its rule and closes the vault."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(secret_show=["missing"], reset_fails=True))
    assert proc.returncode != 0
    assert "stored" not in state
    assert state["network"] == {"public": "Disabled", "rules": []}


def test_private_vault_with_a_wrong_address_given_fails_naming_it(cli: Path) -> None:
    """GRAPHUSERS_DEPLOYER_IP is not the address the vault sees: exit 1 saying so, the vault closed again."""
    env = {**PRIVATE, "GRAPHUSERS_DEPLOYER_IP": "198.51.100.9"}
    proc, state = run_hook(cli, "postprovision.sh", env, closed_vault(secret_show=["missing"]))
    assert proc.returncode == 1
    assert "GRAPHUSERS_DEPLOYER_IP (198.51.100.9) is not the address Azure sees" in proc.stderr
    assert "Secrets Officer" not in proc.stderr
    assert state["network"] == {"public": "Disabled", "rules": []} and "stored" not in state


def test_closed_vault_without_the_layout_fails_at_once(cli: Path) -> None:
    """The hook run by hand without AZURE_VNET_ENABLED against a closed vault: a clear error, no retries."""
    env = {**SECRET_MODE, "GRAPHUSERS_HOOK_DELAY": "5"}
    proc, state = run_hook(cli, "postprovision.sh", env, closed_vault(secret_show=["missing"]))
    assert proc.returncode == 1
    assert "AZURE_VNET_ENABLED=true" in proc.stderr and "retrying" not in proc.stdout
    assert vault_calls(state) == []


def test_private_vault_that_cannot_be_closed_fails_the_hook(cli: Path) -> None:
    """The secret is stored but public access cannot be turned off again: the hook fails with the command to run."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(secret_show=["missing"], close_fails=True))
    assert proc.returncode == 1
    assert state["stored"] == PASSWORD and state["network"]["rules"] == []
    assert "az keyvault update --name kv-abc --public-network-access Disabled" in proc.stderr


def test_private_vault_waits_for_the_opening_to_apply(cli: Path) -> None:
    """The vault still refuses as closed for a while after the change: the hook waits, then proceeds."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(secret_show=["missing"], lag=2))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("network change to apply") == 2
    assert state["stored"] == PASSWORD and state["network"] == {"public": "Disabled", "rules": []}


def test_private_vault_uses_the_address_given(cli: Path) -> None:
    """GRAPHUSERS_DEPLOYER_IP (a NAT's address, say) is the one admitted; the vault's answer is not needed."""
    env = {**PRIVATE, "GRAPHUSERS_DEPLOYER_IP": "198.51.100.9"}
    proc, state = run_hook(cli, "postprovision.sh", env, closed_vault(secret_show=["missing"], caller_ip="198.51.100.9"))
    assert proc.returncode == 0, proc.stderr
    assert vault_calls(state)[1] == "rule add 198.51.100.9/32"
    assert state["stored"] == PASSWORD and state["network"]["rules"] == []


def test_private_vault_without_a_named_address_fails_naming_the_setting(cli: Path) -> None:
    """The refusal names no address: exit 1 naming GRAPHUSERS_DEPLOYER_IP, the vault closed again."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(names_address=False))
    assert proc.returncode == 1
    assert "GRAPHUSERS_DEPLOYER_IP" in proc.stderr
    assert state["network"] == {"public": "Disabled", "rules": []}
    assert "ad app credential" not in commands(state)


def test_private_vault_seen_over_ipv6_fails_at_once(cli: Path) -> None:
    """The vault sees an IPv6 address, which its IPv4-only rules cannot admit: exit 1 at once, no rule, closed."""
    env = {**PRIVATE, "GRAPHUSERS_HOOK_ATTEMPTS": "10", "GRAPHUSERS_HOOK_DELAY": "5"}
    proc, state = run_hook(cli, "postprovision.sh", env, closed_vault(seen_as="2001:db8::7"))
    assert proc.returncode == 1
    assert "GRAPHUSERS_DEPLOYER_IP" in proc.stderr and "retrying" not in proc.stdout
    assert vault_calls(state) == ["update Enabled", "update Disabled"]


def test_private_vault_a_policy_refuses_to_open(cli: Path) -> None:
    """A policy forbids public access: exit 1 with the way out (GRAPHUSERS_OPEN_VAULT), nothing left open."""
    proc, state = run_hook(cli, "postprovision.sh", PRIVATE, closed_vault(policy_denies=True))
    assert proc.returncode == 1
    assert "GRAPHUSERS_OPEN_VAULT=false" in proc.stderr
    assert vault_calls(state) == ["update Enabled"] and state["network"]["public"] == "Disabled"


def test_private_vault_from_inside_the_network_is_not_opened(cli: Path) -> None:
    """GRAPHUSERS_OPEN_VAULT=false (the deployer is inside the network): no network change at all."""
    env = {**PRIVATE, "GRAPHUSERS_OPEN_VAULT": "false"}
    proc, state = run_hook(cli, "postprovision.sh", env, closed_vault(secret_show=["missing"], inside_network=True))
    assert proc.returncode == 0, proc.stderr
    assert vault_calls(state) == [] and state["stored"] == PASSWORD


def test_public_layout_never_touches_the_vault_network(cli: Path) -> None:
    """AZURE_VNET_ENABLED=false: the secret is handled as before, with no network change."""
    env = {**SECRET_MODE, "AZURE_VNET_ENABLED": "false"}
    proc, state = run_hook(cli, "postprovision.sh", env, {"secret_show": ["missing"]})
    assert proc.returncode == 0, proc.stderr
    assert vault_calls(state) == [] and state["stored"] == PASSWORD
