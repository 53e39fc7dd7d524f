"""./scripts/serve --real checks local.settings.json and the Azure login first, naming the setting and the fix."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.serve import ROOT, check_real_settings

TENANT = "11111111-2222-3333-4444-555555555555"
GOOD = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "GRAPH_TENANT_ID": TENANT,
    "GRAPH_CLIENT_ID": "66666666-7777-8888-9999-000000000000",
    "KEY_VAULT_URL": "https://contoso-graph.vault.azure.net/",
}


def write(tmp_path: Path, values: dict[str, str]) -> Path:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def logged_in(tenant: str = TENANT) -> Callable[..., tuple[int, str]]:
    return lambda *args: (0, json.dumps({"tenantId": tenant, "user": {"name": "dev@contoso.com"}}))


def test_good_settings_and_login_pass(tmp_path: Path) -> None:
    """Nothing to fix: no problems, and the values come back for the worker."""
    values, problems = check_real_settings(write(tmp_path, GOOD), az=logged_in())
    assert problems == [] and values["KEY_VAULT_URL"] == GOOD["KEY_VAULT_URL"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"KEY_VAULT_URL": "<https://<your-vault>.vault.azure.net>"}, "KEY_VAULT_URL in local.settings.json still holds"),
        (
            {"KEY_VAULT_URL": "https://contoso-graph.azurewebsites.net"},
            "KEY_VAULT_URL='https://contoso-graph.azurewebsites.net' is not a Key Vault URL",
        ),
        ({"KEY_VAULT_URL": "http://contoso-graph.vault.azure.net"}, "KEY_VAULT_URL"),
        ({"GRAPH_TENANT_ID": ""}, "GRAPH_TENANT_ID"),
        ({"GRAPH_CLIENT_ID": "not-a-guid"}, "GRAPH_CLIENT_ID"),
    ],
)
def test_a_wrong_setting_is_named(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    """Each wrong or missing setting is named, with what to put there."""
    _, problems = check_real_settings(write(tmp_path, {**GOOD, **change}), az=logged_in())
    assert problems and expected in problems[0]


def test_not_logged_in_says_az_login_with_the_tenant(tmp_path: Path) -> None:
    """az account show failing means: az login --tenant <GRAPH_TENANT_ID>."""
    _, problems = check_real_settings(write(tmp_path, GOOD), az=lambda *a: (1, "Please run 'az login' to setup account."))
    assert problems == [f"You are not logged in with the Azure CLI: run az login --tenant {TENANT}"]


def test_the_wrong_tenant_is_named(tmp_path: Path) -> None:
    """Logged in elsewhere: both tenants and the command that fixes it."""
    other = "99999999-8888-7777-6666-555555555555"
    _, problems = check_real_settings(write(tmp_path, GOOD), az=logged_in(other))
    assert len(problems) == 1 and other in problems[0] and f"az login --tenant {TENANT}" in problems[0]


def test_no_az_cli_says_how_to_get_it(tmp_path: Path) -> None:
    """Without the Azure CLI, the install link and the login command."""
    _, problems = check_real_settings(write(tmp_path, GOOD), az=lambda *a: (127, "az: not found"))
    assert "install-azure-cli" in problems[0] and f"az login --tenant {TENANT}" in problems[0]


def test_a_missing_file_says_to_copy_the_example(tmp_path: Path) -> None:
    """No local.settings.json: copy the example and fill in the three settings."""
    _, problems = check_real_settings(tmp_path / "local.settings.json", az=logged_in())
    assert "cp local.settings.example.json local.settings.json" in problems[0]


def test_serve_real_stops_before_starting_anything(tmp_path: Path) -> None:
    """./scripts/serve --real with a placeholder prints the problem and exits 2, starting no process."""
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps(example))
    done = subprocess.run(
        ["./scripts/serve", "--real", "--settings", str(path), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "GRAPH_TENANT_ID in local.settings.json still holds the placeholder" in done.stdout
    assert "Starting a Functions Python worker" not in done.stdout
