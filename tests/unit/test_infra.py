"""The settings registry matches the configuration code; role assignments are deterministic and named.

The template checks themselves (settings coverage included) are in test_templates.py.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from testkit.templates import CONFIG_SOURCE, INFRA, body, parse, settings_read_by

from graphusers import config
from tools import check_infra

ROLE_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"


def test_registry_matches_what_the_configuration_code_reads() -> None:
    """config.SETTINGS lists exactly the settings config.py reads."""
    assert settings_read_by(CONFIG_SOURCE.read_text()) == set(config.SETTINGS)


def test_role_assignments_are_deterministic_and_named() -> None:
    """Every role assignment's name is a guid(...) and a comment names the role above it."""
    seen = 0
    for path in sorted(INFRA.rglob("*.bicep")):
        lines = Path(path).read_text().splitlines()
        for name, res in parse(path.read_text()).get("resources", {}).items():
            if res["type"] != ROLE_ASSIGNMENTS:
                continue
            seen += 1
            assert body(res)["name"]["function"]["type"] == "guid", f"{path.name}:{name} name is not guid(...)"
            start = next(i for i, line in enumerate(lines) if line.startswith(f"resource {name} "))
            assert lines[start - 1].startswith("//"), f"{path.name}:{name} has no comment naming the role"
    assert seen >= 7, f"expected the template's role assignments, found {seen}"


def test_funcignore_keeps_local_state_and_keys_out_of_the_package() -> None:
    """The azd environment (.azure/) and certificate or key files are never published."""
    patterns = [
        line.strip()
        for line in (INFRA.parent / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        return any(fnmatch(part, pattern.rstrip("/")) for pattern in patterns for part in parts)

    for path in (".azure/graphusers-dev/.env", "cert.pem", "client.pfx", "client.key", "certs/graph.pem"):
        assert ignored(path), f"{path} would be published"
    assert not ignored("function_app.py") and not ignored("graphusers/config.py")


def test_doctor_warnings_are_listed_by_name() -> None:
    """Each azure-functions-doctor warning and failure gets a line with its rule id, label and first finding line."""
    report = {
        "results": [
            {
                "items": [
                    {
                        "rule_id": "check_venv",
                        "label": "Virtual environment",
                        "status": "warn",
                        "value": "Targets not found\nmore",
                    },
                    {"rule_id": "check_programming_model_v2", "label": "Programming model v2", "status": "pass", "value": "ok"},
                ]
            },
            {"items": [{"rule_id": "check_func_cli", "label": "Core Tools", "status": "fail", "value": "func not found"}]},
        ]
    }
    assert check_infra.doctor_lines(report) == [
        "  warn check_venv (Virtual environment): Targets not found",
        "  fail check_func_cli (Core Tools): func not found",
    ]


def test_a_check_checkov_could_not_run_is_found_in_its_log() -> None:
    """checkov's 'Failed to run check' lines name the check and resource, so a crash cannot pass as a pass."""
    log = (
        "2026-12-04 02:57:59 [MainThread  ] [ERROR]  Failed to run check CKV_AZURE_189 on "
        "/tmp/x/infra/app/key-vault.bicep:Microsoft.KeyVault/vaults.vault\nTraceback (most recent call last):\n"
    )
    assert check_infra.crashed_checks(log) == {("CKV_AZURE_189", "Microsoft.KeyVault/vaults.vault")}
    assert check_infra.crashed_checks("checkov: 26 passed") == set()
