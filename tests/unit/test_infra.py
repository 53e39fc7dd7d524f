"""The Bicep template sets exactly the app settings the code reads (parsed with checkov's parser, pycep)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from graphusers import config
from tools.check_infra import parser_text

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def parse(path: Path) -> dict[str, Any]:
    text, _ = parser_text(path.read_text())
    return dict(BicepParser().parse(text=text))


def settings_read_by(source: str) -> set[str]:
    """Names the configuration code reads: ``env.get("X")`` and ``_required(env, "X")`` calls."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_get = isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name) \
            and func.value.id == "env"
        is_required = isinstance(func, ast.Name) and func.id == "_required"
        args = node.args[1:] if is_required else node.args
        if (is_get or is_required) and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            names.add(args[0].value)
    return names


def settings_set_by_template() -> set[str]:
    main = parse(INFRA / "main.bicep")
    app_settings = main["modules"]["functionApp"]["config"]["params"]["appSettings"]
    platform = parse(INFRA / "app" / "function-app.bicep")["variables"]["platformSettings"]["value"]
    return set(app_settings) | set(platform)


def coverage_problems(read: set[str], template: set[str]) -> list[str]:
    problems = []
    for name in sorted(read):
        if name not in template and config.LOCAL_ALTERNATIVES.get(name) not in template:
            problems.append(f"{name} is read by the code but not set by infra/")
    for name in sorted(template - read - config.HOST_SETTINGS):
        problems.append(f"{name} is set by infra/ but nothing reads it")
    return problems


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.bicep")), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses_and_documents_its_parameters(path: Path) -> None:
    """Each .bicep file parses; every parameter and output has a @description."""
    tree = parse(path)
    for kind in ("parameters", "outputs"):
        for name, item in tree.get(kind, {}).items():
            decorators = [d["type"] for d in item.get("decorators", [])]
            assert "description" in decorators, f"{path.name}: {kind[:-1]} {name} has no @description"


def test_registry_matches_what_the_configuration_code_reads() -> None:
    """config.SETTINGS lists exactly the settings config.py reads."""
    assert settings_read_by((ROOT / "graphusers" / "config.py").read_text()) == set(config.SETTINGS)


def test_template_sets_exactly_the_settings_the_code_reads() -> None:
    """Every setting the code reads is set by the template, and the template sets none that nothing reads."""
    read = settings_read_by((ROOT / "graphusers" / "config.py").read_text())
    assert coverage_problems(read, settings_set_by_template()) == []


def test_coverage_check_catches_a_new_setting() -> None:
    """Adding a setting to the code but not to the template makes the check fail, naming it."""
    source = (ROOT / "graphusers" / "config.py").read_text()
    source += '\n\ndef extra(env):\n    return env.get("USER_SYNC_PAGE_SIZE", "999")\n'
    problems = coverage_problems(settings_read_by(source), settings_set_by_template())
    assert problems == ["USER_SYNC_PAGE_SIZE is read by the code but not set by infra/"]


def test_role_assignments_are_deterministic_and_named() -> None:
    """Every role assignment's name is a guid(...) and a comment names the role above it."""
    for path in INFRA.rglob("*.bicep"):
        tree = parse(path)
        lines = path.read_text().splitlines()
        for name, res in tree.get("resources", {}).items():
            if res["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            body = res["config"].get("config", res["config"])  # a conditional resource nests its body
            assert body["name"]["function"]["type"] == "guid", f"{path.name}:{name} name is not guid(...)"
            start = next(i for i, line in enumerate(lines) if line.startswith(f"resource {name} "))
            assert lines[start - 1].startswith("//"), f"{path.name}:{name} has no comment naming the role"
