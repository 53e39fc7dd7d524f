"""Checks of infra/ that need no Azure: each .bicep file parsed with pycep-parser, and a function per rule
that returns the problems it finds (tests/unit/test_templates.py asserts on them)."""

from __future__ import annotations

import ast
import copy
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycep import BicepParser

from graphusers import config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CONFIG_SOURCE = ROOT / "graphusers" / "config.py"

Sources = dict[str, str]  # path relative to infra/ -> Bicep source

# Built-in role ids. https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
# Outputs docs/deploy.md, the azd hooks and a redeployment read from the azd environment.
REQUIRED_OUTPUTS = {
    "AZURE_RESOURCE_GROUP",
    "AZURE_TENANT_ID",
    "AZURE_FUNCTION_APP_NAME",
    "SERVICE_API_URI",
    "AZURE_FUNCTION_IDENTITY_CLIENT_ID",
    "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID",
    "AZURE_KEY_VAULT_NAME",
    "AZURE_KEY_VAULT_URI",
    "AZURE_KEY_VAULT_SECRET_NAME",
    "GRAPH_CLIENT_ID",
}
# "// Left to the user: NAME - why" in main.bicep marks a setting the code reads and the template
# deliberately does not set (the code's default is right for a deployment).
LEFT_TO_USER = re.compile(r"^\s*//\s*Left to the user:\s*([A-Za-z_][A-Za-z0-9_]*)\s+-\s+(\S.{9,})$", re.M)
ENV_NAMES = {"env", "environ", "environment"}


def read_sources() -> Sources:
    return {str(p.relative_to(INFRA)): p.read_text() for p in sorted(INFRA.rglob("*.bicep"))}


def parse(text: str) -> dict[str, Any]:
    """The model of one Bicep source; each caller gets its own copy, so a check may change it."""
    return copy.deepcopy(_parse(text))


# Parsing dominates the unit tests' time (pycep's grammar is slow) and most checks parse the same
# unchanged files, so each distinct text is parsed once per process.
@functools.lru_cache(maxsize=64)
def _parse(text: str) -> dict[str, Any]:
    return dict(BicepParser().parse(text=text))


def models(sources: Sources) -> dict[str, dict[str, Any]]:
    return {path: parse(text) for path, text in sources.items()}


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's properties; a conditional resource nests them one level down."""
    config_: dict[str, Any] = resource["config"]
    nested: dict[str, Any] = config_.get("config", config_) if "condition" in config_ else config_
    return nested


def role_id(resource: dict[str, Any]) -> str | None:
    definition = body(resource).get("properties", {}).get("roleDefinitionId", {})
    if isinstance(definition, dict):
        name: str | None = definition.get("function", {}).get("parameters", {}).get("resource_name_1")
        return name
    return None


# ---- the checks ---------------------------------------------------------------------------------


def poison_queue_problems(sources: Sources) -> list[str]:
    """The identity may write the sync queue's poison queue (account scope, or the queue itself)."""
    tree = parse(sources["app/storage.bicep"])
    resources = tree["resources"]
    queues = {
        n: body(r)["name"] for n, r in resources.items() if r["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues"
    }
    accounts = {n for n, r in resources.items() if r["type"] == "Microsoft.Storage/storageAccounts"}
    sync = [n for n, name in queues.items() if not str(name).endswith("-poison")]
    if len(sync) != 1:
        return [f"storage.bicep should declare one sync queue, found {sync}"]
    poison_name = "${" + str(queues[sync[0]]) + "}-poison"
    covering = []
    for name, res in resources.items():
        if res["type"] != "Microsoft.Authorization/roleAssignments" or role_id(res) != QUEUE_DATA_CONTRIBUTOR:
            continue
        scope = body(res).get("scope")
        if scope in accounts or queues.get(scope) == poison_name:
            covering.append(name)
    if not covering:
        return [
            f"no Storage Queue Data Contributor assignment covers the poison queue {poison_name} "
            "(scope it to the account or to a declared <queue>-poison queue)"
        ]
    return []


def sync_queue_name_problems(sources: Sources) -> list[str]:
    """main.bicep names the queue exactly as the code does (config.SYNC_QUEUE)."""
    value = parse(sources["main.bicep"])["variables"]["syncQueueName"]["value"]
    return [] if value == config.SYNC_QUEUE else [f"main.bicep syncQueueName {value!r} != {config.SYNC_QUEUE!r}"]


def storage_sku_problems(sources: Sources) -> list[str]:
    """The storage SKU is a parameter, defaulting to one every region offers."""
    problems = []
    storage = parse(sources["app/storage.bicep"])
    account = next(r for r in storage["resources"].values() if r["type"] == "Microsoft.Storage/storageAccounts")
    sku = body(account)["sku"]["name"]
    if sku not in storage.get("parameters", {}):
        problems.append(f"storage account SKU is {sku!r}, not a parameter")
    main = parse(sources["main.bicep"])
    passed = main["modules"]["storage"]["config"]["params"].get(sku)
    if passed not in main.get("parameters", {}):
        problems.append(f"main.bicep does not pass a parameter as the storage SKU ({passed!r})")
    elif main["parameters"][passed].get("default") != "Standard_LRS":
        problems.append("the storage SKU should default to Standard_LRS, which every region offers")
    return problems


def app_registration_problems(sources: Sources) -> list[str]:
    """The deployer owns the app registration; the template declares no credentials it does not own."""
    app = next(
        r
        for r in parse(sources["graph/app-registration.bicep"])["resources"].values()
        if r["type"] == "Microsoft.Graph/applications"
    )
    problems = []
    owners = body(app).get("owners", {}).get("relationships", [])
    if "'type': 'deployer'" not in repr(owners):
        problems.append("the app registration has no owners relationship with deployer().objectId")
    for key in ("keyCredentials", "passwordCredentials"):
        if key in body(app):
            problems.append(f"the app registration declares {key}, which a redeploy would reset")
    return problems


def output_problems(sources: Sources) -> list[str]:
    missing = REQUIRED_OUTPUTS - set(parse(sources["main.bicep"]).get("outputs", {}))
    return [f"main.bicep lacks output {name}" for name in sorted(missing)]


def description_problems(sources: Sources) -> list[str]:
    """Every parameter and output in every file has a non-empty @description."""
    problems = []
    for path, tree in models(sources).items():
        for kind in ("parameters", "outputs"):
            for name, item in tree.get(kind, {}).items():
                texts = [d.get("argument") for d in item.get("decorators", []) if d["type"] == "description"]
                if not texts or not str(texts[0]).strip():
                    problems.append(f"{path}: {kind[:-1]} {name} has no @description")
    return problems


def cloud_url_problems(sources: Sources) -> list[str]:
    """No Entra login host written out; Microsoft Graph's host only as a parameter default."""
    problems = []
    for path, text in sources.items():
        for number, line in enumerate(text.splitlines(), 1):
            if "login.microsoftonline.com" in line:
                problems.append(f"{path}:{number}: use environment().authentication.loginEndpoint")
            if "graph.microsoft.com" in line and not re.fullmatch(
                r"param \w+ string = 'https://graph\.microsoft\.com'", line.strip()
            ):
                problems.append(f"{path}:{number}: graph.microsoft.com outside a parameter default")
    for path, tree in models(sources).items():
        for name, param in tree.get("parameters", {}).items():
            if "graph.microsoft.com" in str(param.get("default")) and param["default"] != "https://graph.microsoft.com":
                problems.append(f"{path}: parameter {name} default {param['default']!r}")
    return problems


def conditional_output_problems(sources: Sources) -> list[str]:
    """Outputs of conditional modules are read with the safe-dereference operator (BCP318)."""
    problems = []
    for path, text in sources.items():
        for name, module in parse(text).get("modules", {}).items():
            if "condition" in module["config"] and re.search(rf"\b{name}\.outputs\b", text):
                problems.append(f"{path}: {name}.outputs of a conditional module; use {name}.?outputs ... ?? <default>")
    return problems


def settings_read_by(source: str) -> set[str]:
    """Settings the configuration code reads: env.get("X"), env["X"], helper(env, "X", ...)."""
    names: set[str] = set()

    def add(node: ast.expr | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ENV_NAMES:
            add(node.slice)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in ("get", "pop")
            and isinstance(func.value, ast.Name)
            and func.value.id in ENV_NAMES
            and node.args
        ):
            add(node.args[0])
        elif len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in ENV_NAMES:
            add(node.args[1])
    return names


def settings_set_by(sources: Sources) -> set[str]:
    main = parse(sources["main.bicep"])
    app_settings = main["modules"]["functionApp"]["config"]["params"]["appSettings"]
    platform = parse(sources["app/function-app.bicep"])["variables"]["platformSettings"]["value"]
    return set(app_settings) | set(platform)


def settings_problems(sources: Sources, code: str) -> list[str]:
    """Each setting the code reads is set by the template or left to the user with a reason."""
    read = settings_read_by(code) | set(config.SETTINGS)
    template = settings_set_by(sources)
    left = {m.group(1) for m in LEFT_TO_USER.finditer(sources["main.bicep"])}
    problems = []
    for name in sorted(read):
        if name in template or config.LOCAL_ALTERNATIVES.get(name) in template:
            continue
        if name not in left:
            problems.append(
                f"{name} is read by graphusers/config.py but neither set by infra/main.bicep nor "
                "marked '// Left to the user: NAME - reason' there"
            )
    for name in sorted(template - read - config.HOST_SETTINGS):
        problems.append(f"{name} is set by infra/ but nothing reads it")
    for name in sorted(left & template):
        problems.append(f"{name} is both set and marked left to the user")
    for name in sorted(left - read):
        problems.append(f"{name} is marked left to the user but the code does not read it")
    return problems


CHECKS: dict[str, Callable[[Sources], list[str]]] = {
    "poison queue": poison_queue_problems,
    "sync queue name": sync_queue_name_problems,
    "storage SKU": storage_sku_problems,
    "app registration": app_registration_problems,
    "outputs": output_problems,
    "descriptions": description_problems,
    "cloud URLs": cloud_url_problems,
    "conditional outputs": conditional_output_problems,
}
