"""The settings registry matches the configuration code; role assignments are deterministic and named.

The template checks themselves (settings coverage included) are in test_templates.py.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from testkit.templates import CONFIG_SOURCE, INFRA, body, parse, settings_read_by

from graphusers import config

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
