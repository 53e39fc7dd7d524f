"""Checks of infra/ that need no Azure: each .bicep file parsed with pycep-parser, and a function per rule
that returns the problems it finds (tests/unit/test_templates.py asserts on them)."""

from __future__ import annotations

import ast
import copy
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pycep import BicepParser

from graphusers import config

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CONFIG_SOURCE = ROOT / "graphusers" / "config.py"

Sources = dict[str, str]  # path relative to infra/ -> Bicep source

# Built-in role ids. https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
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
    "AZURE_VNET_ENABLED",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "GRAPH_CLIENT_ID",
}
# "// Left to the user: NAME - why" in main.bicep marks a setting the code reads and the template
# deliberately does not set (the code's default is right for a deployment).
LEFT_TO_USER = re.compile(r"^\s*//\s*Left to the user:\s*([A-Za-z_][A-Za-z0-9_]*)\s+-\s+(\S.{9,})$", re.M)
ENV_NAMES = {"env", "environ", "environment"}
# Storage and Key Vault DNS suffixes of the public and sovereign clouds, which environment() provides.
CLOUD_SUFFIX = re.compile(r"core\.(windows\.net|usgovcloudapi\.net|chinacloudapi\.cn)|vaultcore\.|vault\.azure\.(net|cn)")


def read_sources() -> Sources:
    return {str(p.relative_to(INFRA)): p.read_text() for p in sorted(INFRA.rglob("*.bicep"))}


def parse(text: str) -> dict[str, Any]:
    """The pycep model of a Bicep source (a fresh copy: callers may change it)."""
    return copy.deepcopy(_parse(text))


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> dict[str, Any]:
    # Parsing is slow (about a second for main.bicep) and the layouts parse each file many times.
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


# ---- the templates as deployed: conditions and conditional values evaluated -------------------------
#
# A deployment is main.bicep with some parameter values. Each module call whose `if` holds deploys its
# file with the values main passes; each resource whose `if` holds is deployed with its properties
# evaluated. Ternaries, and/or/not, ==/!=, empty() and `module.?outputs.x ?? default` are evaluated
# when their operands are known; a reference to something known only in Azure (a resource id, a module
# output) stays a Ref, which is not empty; anything else this evaluator cannot compute is UNKNOWN.


@dataclass(frozen=True)
class Ref:
    """A value Azure fills in at deployment time, named by the expression that reads it."""

    path: str


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


_IDENT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _op(node: Any) -> str | None:
    """The operator of a parsed expression node ({"operator": {"type", "operands"}}), None for plain values."""
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("operator"), dict):
        kind = node["operator"].get("type")
        return kind if isinstance(kind, str) else None
    return None


def _chain(node: Any) -> tuple[list[str], Any, bool] | None:
    """``a.b.c ?? d`` (pycep nests it as a.(b.(c ?? d))) as (["a", "b", "c"], d, True); None if not a chain."""
    parts: list[str] = []
    while _op(node) == "property_accessor":
        head = node["operator"]["operands"]["operand_1"]
        if not isinstance(head, str):
            return None
        parts.append(head)
        node = node["operator"]["operands"]["operand_2"]
    if _op(node) == "coalesce" and parts:
        last = node["operator"]["operands"]["operand_1"]
        if not isinstance(last, str):
            return None
        return [*parts, last], node["operator"]["operands"]["operand_2"], True
    if parts and isinstance(node, str):
        return [*parts, node], None, False
    return None


def evaluate(node: Any, env: Mapping[str, Any], absent: frozenset[str] = frozenset()) -> Any:
    """The value of a parsed Bicep expression given known parameter and variable values.

    ``absent`` names the conditional modules and resources that are not deployed, whose safe
    dereference (``x.?outputs.y ?? d``) gives the default.
    """
    if isinstance(node, str):
        if node in env:
            return env[node]
        # '${name}-poison' with name known: fill it in (other interpolations stay as written).
        return _IDENT.sub(lambda m: env[m.group(1)] if isinstance(env.get(m.group(1)), str) else m.group(0), node)
    if node is None or isinstance(node, bool | int | float):
        return node
    if isinstance(node, list):
        return [evaluate(item, env, absent) for item in node]
    if not isinstance(node, dict):
        return UNKNOWN
    op = _op(node)
    if op is not None:
        operands = node["operator"]["operands"]
        if op == "conditional":
            condition = evaluate(operands["condition"], env, absent)
            if condition is True:
                return evaluate(operands["true_value"], env, absent)
            if condition is False:
                return evaluate(operands["false_value"], env, absent)
            return UNKNOWN
        if op in ("and", "or"):
            values = [evaluate(v, env, absent) for v in operands.values()]
            if (op == "and" and False in values) or (op == "or" and True in values):
                return op == "or"
            return (op == "and") if all(isinstance(v, bool) for v in values) else UNKNOWN
        if op == "not":
            value = evaluate(operands["bool_value"], env, absent)
            return not value if isinstance(value, bool) else UNKNOWN
        if op in ("equals", "not_equals"):
            if _op(operands["operand_2"]) == "conditional":
                # pycep 0.7 reads `a == 'b' ? x : y` as `a == ('b' ? x : y)`; Bicep reads (a == 'b') ? x : y.
                raise AssertionError(f"parenthesize the comparison before `?` so the parser reads it as Bicep does: {node}")
            left, right = (evaluate(operands[k], env, absent) for k in ("operand_1", "operand_2"))
            if UNKNOWN in (left, right) or isinstance(left, Ref) or isinstance(right, Ref):
                return UNKNOWN
            return (left == right) == (op == "equals")
        if op in ("property_accessor", "coalesce"):
            chain = _chain(node)
            if chain is None:
                return UNKNOWN
            parts, default, has_default = chain
            if parts[0] in absent:
                return evaluate(default, env, absent) if has_default else None
            head = env.get(parts[0])
            for i, part in enumerate(parts[1:], 1):
                if not isinstance(head, dict):
                    return Ref(".".join(parts))
                head = head.get(part)
                if head is None:
                    return Ref(".".join(parts[: i + 1]))
            return head if head is not None else Ref(".".join(parts))
        return UNKNOWN
    if len(node) == 1 and isinstance(node.get("function"), dict) and "type" in node["function"]:
        function = node["function"]
        if function["type"] == "subscription_resource_id":
            # subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '<role id>') -> "<type>/<id>"
            return "/".join(str(evaluate(v, env, absent)) for v in function["parameters"].values() if v is not None)
        if function["type"] == "empty":
            (item,) = function["parameters"].values()
            value = evaluate(item, env, absent)
            if isinstance(value, Ref):
                return False
            return len(value) == 0 if isinstance(value, str | list | dict) else UNKNOWN
        return Ref(repr(function)[:80])
    return {key: evaluate(value, env, absent) for key, value in node.items()}


@dataclass
class Deployed:
    """One .bicep file as deployed: its parameter values, and the resources and module calls whose `if` held."""

    path: str  # relative to infra/
    via: str  # the module chain from main.bicep, e.g. "network/blobEndpoint"
    env: dict[str, Any]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"type", "body"}
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"path", "params"}
    absent: set[str] = field(default_factory=set)  # conditional resources and modules not deployed


def _condition(config: dict[str, Any], env: Mapping[str, Any], absent: frozenset[str], where: str) -> bool:
    if "condition" not in config:
        return True
    value = evaluate(config["condition"], env, absent)
    if not isinstance(value, bool):
        raise AssertionError(f"{where}: cannot evaluate the condition {config['condition']!r} (got {value!r})")
    return value


def deploy(sources: Sources, params: Mapping[str, Any], path: str = "main.bicep", via: str = "") -> list[Deployed]:
    """Every file deployed by ``path`` with ``params`` (unset parameters take their defaults), depth first."""
    tree = parse(sources[path])
    env: dict[str, Any] = {}
    for name, param in tree.get("parameters", {}).items():
        if name in params:
            env[name] = params[name]
        elif "default" in param:
            value = evaluate(param["default"], env)
            env[name] = value if value is not UNKNOWN else Ref(name)
        else:
            env[name] = Ref(name)
    for name, variable in tree.get("variables", {}).items():
        value = evaluate(variable["value"], env)
        if value is not UNKNOWN:
            env[name] = value
    here = Deployed(path, via or path, env)
    out = [here]
    for name, res in tree.get("resources", {}).items():
        if res.get("existing"):
            continue
        if not _condition(res["config"], env, frozenset(here.absent), f"{path}:{name}"):
            here.absent.add(name)
            continue
        here.resources[name] = {"type": res["type"], "body": evaluate(body(res), env, frozenset(here.absent))}
    for name, module in tree.get("modules", {}).items():
        config = module["config"]
        if not _condition(config, env, frozenset(here.absent), f"{path}:{name}"):
            here.absent.add(name)
            continue
        inner = config.get("config", config) if "condition" in config else config
        child = str(PurePosixPath(path).parent / module["detail"]["path"])
        passed = evaluate(inner.get("params", {}), env, frozenset(here.absent))
        here.modules[name] = {"path": child, "params": passed}
    # A module's outputs are read after every conditional sibling is known, so evaluate again.
    for name, module in here.modules.items():
        raw = tree["modules"][name]["config"]
        inner = raw.get("config", raw) if "condition" in raw else raw
        module["params"] = evaluate(inner.get("params", {}), env, frozenset(here.absent))
        out += deploy(sources, module["params"], module["path"], f"{here.via}/{name}")
    return out


def resources_of(deployment: list[Deployed], kind: str) -> Iterator[tuple[Deployed, str, dict[str, Any]]]:
    for part in deployment:
        for name, res in part.resources.items():
            if res["type"] == kind:
                yield part, name, res["body"]


# The layouts main.bicep offers: private (the default) and public, in each credential mode that has a vault
# and in the one without.
LAYOUTS: dict[str, dict[str, Any]] = {
    "private": {"vnetEnabled": True},
    "public": {"vnetEnabled": False},
    "private, federation": {"vnetEnabled": True, "graphCredential": "managed-identity-federation"},
    "public, federation": {"vnetEnabled": False, "graphCredential": "managed-identity-federation"},
}
APP_PRINCIPAL = Ref("identity.outputs.principalId")
PRIVATE_ENDPOINT = "Microsoft.Network/privateEndpoints"
ZONE_GROUP = "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
DNS_ZONE = "Microsoft.Network/privateDnsZones"
ZONE_LINK = "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
VAULT = "Microsoft.KeyVault/vaults"
SITE = "Microsoft.Web/sites"
# Sovereign clouds' environment() values and Microsoft's private DNS zone names for them.
# https://learn.microsoft.com/azure/private-link/private-endpoint-dns (Commercial, Government, China)
CLOUDS: dict[str, tuple[dict[str, str], str]] = {  # cloud -> (environment().suffixes, Key Vault zone's tail)
    "AzureCloud": ({"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"}, "azure.net"),
    "AzureUSGovernment": ({"storage": "core.usgovcloudapi.net", "keyvaultDns": ".vault.usgovcloudapi.net"}, "usgovcloudapi.net"),
    "AzureChinaCloud": ({"storage": "core.chinacloudapi.cn", "keyvaultDns": ".vault.azure.cn"}, "azure.cn"),
}
_SUFFIX = re.compile(r"\$\{environment\(\)\.suffixes\.(\w+)\}")
_REPLACE = re.compile(r"\$\{replace\(environment\(\)\.suffixes\.(\w+), '([^']*)', '([^']*)'\)\}")


def render_cloud(text: str, suffixes: Mapping[str, str]) -> str:
    """A zone-name template with ``${environment().suffixes.x}`` and ``${replace(environment().suffixes.x, a, b)}`` filled in."""
    text = _REPLACE.sub(lambda m: suffixes[m.group(1)].replace(m.group(2), m.group(3)), text)
    return _SUFFIX.sub(lambda m: suffixes[m.group(1)], text)


def expected_zone(group: str, cloud: str) -> str:
    """Microsoft's recommended private DNS zone for a sub-resource in a cloud (the table cited above)."""
    suffixes, vault_tail = CLOUDS[cloud]
    if group == "vault":
        return f"privatelink.vaultcore.{vault_tail}"
    return f"privatelink.{group}.{suffixes['storage']}"


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
    """No Entra login host or storage/vault DNS suffix written out; Microsoft Graph's host only as a parameter default."""
    problems = []
    for path, text in sources.items():
        for number, line in enumerate(text.splitlines(), 1):
            if "login.microsoftonline.com" in line:
                problems.append(f"{path}:{number}: use environment().authentication.loginEndpoint")
            if CLOUD_SUFFIX.search(line) and not line.lstrip().startswith("//"):
                problems.append(f"{path}:{number}: a cloud's DNS suffix written out; use environment().suffixes")
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


# ---- the layouts (vnetEnabled true and false), checked as deployed ---------------------------------


def _output(sources: Sources, part: Deployed, name: str) -> Any:
    return evaluate(parse(sources[part.path])["outputs"][name]["value"], part.env, frozenset(part.absent))


def _has_vault(deployment: list[Deployed]) -> bool:
    return any(True for _ in resources_of(deployment, VAULT))


def private_endpoint_problems(sources: Sources) -> list[str]:
    """Private layout: an endpoint for blob, queue, table (and vault, when there is one), each with its DNS
    zone group, pointing at a zone with Microsoft's name for the cloud, linked to the endpoint's network.
    Public layout: no endpoint."""
    problems = []
    targets = {"blob": "storage", "queue": "storage", "table": "storage", "vault": "keyVault"}
    for layout, params in LAYOUTS.items():
        deployment = deploy(sources, params)
        want = set()
        if params["vnetEnabled"]:
            want = {"blob", "queue", "table"} | ({"vault"} if _has_vault(deployment) else set())
        seen = set()
        for part, name, endpoint in resources_of(deployment, PRIVATE_ENDPOINT):
            where = f"{layout}: {part.via}:{name}"
            connections = endpoint["properties"].get("privateLinkServiceConnections", [])
            groups = [g for c in connections for g in c["properties"].get("groupIds", [])]
            if len(groups) != 1:
                problems.append(f"{where}: expected one sub-resource, found {groups}")
                continue
            group = groups[0]
            seen.add(group)
            target = connections[0]["properties"].get("privateLinkServiceId")
            if target != Ref(f"{targets.get(group, '?')}.outputs.id"):
                problems.append(f"{where}: the {group} endpoint connects to {target!r}, not {targets.get(group)}")
            subnet = str(endpoint["properties"].get("subnet", {}).get("id", ""))
            mine = [r["body"] for r in part.resources.values() if r["type"] == ZONE_GROUP and r["body"].get("parent") == name]
            if not mine:
                problems.append(f"{where}: the {group} endpoint has no DNS zone group, so its name never resolves privately")
                continue
            zone_ids = [c["properties"].get("privateDnsZoneId") for b in mine for c in b["properties"]["privateDnsZoneConfigs"]]
            zones = {n: part.resources[n]["body"] for n in part.resources if part.resources[n]["type"] == DNS_ZONE}
            linked = [z for z in zone_ids if isinstance(z, Ref) and z.path.removesuffix(".id") in zones]
            if not linked:
                problems.append(f"{where}: the zone group points at {zone_ids}, not a zone deployed with the endpoint")
                continue
            zone_name = linked[0].path.removesuffix(".id")
            for cloud in CLOUDS:
                rendered = render_cloud(str(zones[zone_name]["name"]), CLOUDS[cloud][0])
                if rendered != expected_zone(group, cloud):
                    problems.append(f"{where}: in {cloud} the {group} zone is {rendered!r}, not {expected_zone(group, cloud)!r}")
            links = [b for b in part.resources.values() if b["type"] == ZONE_LINK and b["body"].get("parent") == zone_name]
            network = [b["body"]["properties"]["virtualNetwork"]["id"] for b in links]
            if not any(isinstance(n, Ref) and subnet.startswith("${" + n.path + "}/subnets/") for n in network):
                problems.append(f"{where}: the {group} zone is not linked to the network of the endpoint's subnet ({subnet})")
        if seen != want:
            problems.append(f"{layout}: private endpoints for {sorted(seen)}, expected {sorted(want)}")
    return problems


def app_network_problems(sources: Sources) -> list[str]:
    """Private layout: the app's outbound goes through the delegated subnet; public: no subnet. Inbound public in both."""
    problems = []
    for layout, params in LAYOUTS.items():
        deployment = deploy(sources, params)
        networks = [p for p in deployment if p.path == "app/network.bicep"]
        for _, _, site in resources_of(deployment, SITE):
            subnet = site["properties"].get("virtualNetworkSubnetId")
            if site["properties"].get("publicNetworkAccess") != "Enabled":
                problems.append(f"{layout}: the app's inbound must stay public (function keys, Graph notifications)")
            if not params["vnetEnabled"]:
                if subnet is not None:
                    problems.append(f"{layout}: the app joins a subnet ({subnet!r}) although there is no network")
                continue
            if subnet != Ref("network.outputs.appSubnetId") or len(networks) != 1:
                problems.append(f"{layout}: the app's virtualNetworkSubnetId is {subnet!r}, not the network's app subnet")
                continue
            network = networks[0]
            value = str(_output(sources, network, "appSubnetId"))
            vnets = [b for b in network.resources.values() if b["type"] == "Microsoft.Network/virtualNetworks"]
            delegated = {
                s["name"]
                for v in vnets
                for s in v["body"]["properties"]["subnets"]
                if "Microsoft.App/environments"
                in [d["properties"]["serviceName"] for d in s["properties"].get("delegations", [])]
            }
            if not any(value.endswith(f"/subnets/{s}") for s in delegated):
                problems.append(f"{layout}: appSubnetId {value!r} is not a subnet delegated to Microsoft.App/environments")
    return problems


def public_access_problems(sources: Sources) -> list[str]:
    """Storage and the vault: public access off and Deny by default when the app is in the network, open when it is not."""
    problems = []
    for layout, params in LAYOUTS.items():
        deployment = deploy(sources, params)
        joined = {s["properties"].get("virtualNetworkSubnetId") is not None for _, _, s in resources_of(deployment, SITE)}
        if joined != {params["vnetEnabled"]}:
            problems.append(f"{layout}: the app's VNet integration is {joined}, but vnetEnabled is {params['vnetEnabled']}")
        want = ("Disabled", "Deny") if params["vnetEnabled"] else ("Enabled", "Allow")
        for kind in (STORAGE_ACCOUNT, VAULT):
            for part, name, res in resources_of(deployment, kind):
                props = res["properties"]
                got = (props.get("publicNetworkAccess"), props.get("networkAcls", {}).get("defaultAction"))
                if props.get("networkAcls", {}).get("ipRules") != []:
                    problems.append(
                        f"{layout}: {part.path}:{name} does not reset ipRules, so a temporary opening outlives a redeployment"
                    )
                if got != want:
                    problems.append(
                        f"{layout}: {part.path}:{name} has publicNetworkAccess/defaultAction {got}, expected {want} "
                        + ("(private endpoints only)" if params["vnetEnabled"] else "(the app has no network to come from)")
                    )
    return problems


# Data-plane roles the app's identity needs: (role, what it covers, resource type of the scope).
APP_ROLES = [
    (BLOB_DATA_OWNER, "the host's containers, the package and the snapshot", STORAGE_ACCOUNT, None),
    (QUEUE_DATA_CONTRIBUTOR, "the sync queue", "Microsoft.Storage/storageAccounts/queueServices/queues", ""),
    (
        QUEUE_DATA_CONTRIBUTOR,
        "the sync queue's poison queue",
        "Microsoft.Storage/storageAccounts/queueServices/queues",
        "-poison",
    ),
    (TABLE_DATA_CONTRIBUTOR, "the host's diagnostic-event tables", STORAGE_ACCOUNT, None),
    (SECRETS_USER, "the client secret or certificate", VAULT, None),
    (METRICS_PUBLISHER, "telemetry with Entra ID", "Microsoft.Insights/components", None),
]


def app_role_problems(sources: Sources) -> list[str]:
    """Every data-plane role the app needs is assigned to its identity, in every layout."""
    problems = []
    for layout, params in LAYOUTS.items():
        deployment = deploy(sources, params)
        granted: list[tuple[str, str, str]] = []  # (role id, scope type, scope name)
        for part, _, res in resources_of(deployment, "Microsoft.Authorization/roleAssignments"):
            if res["properties"].get("principalId") != APP_PRINCIPAL:
                continue
            scope = part.resources.get(str(res.get("scope")))
            if scope is None:
                continue
            role = str(res["properties"].get("roleDefinitionId")).rsplit("/", 1)[-1]
            granted.append((role, scope["type"], str(scope["body"].get("name"))))
        for role, what, kind, suffix in APP_ROLES:
            if kind == VAULT and not _has_vault(deployment):
                continue
            if suffix is None:
                ok = any(r == role and k == kind for r, k, _ in granted)
            else:
                queue = config.SYNC_QUEUE + suffix
                ok = any(r == role and (k == STORAGE_ACCOUNT or (k == kind and n == queue)) for r, k, n in granted)
            if not ok:
                problems.append(f"{layout}: no role {role} for the app's identity on {what}")
    return problems


HOOK = INFRA / "hooks" / "postprovision.sh"


def hook_network_problems(sources: Sources, hook: str | None = None) -> list[str]:
    """The postprovision hook learns the layout from main.bicep's output, and its temporary opening of a
    closed vault can only admit the address it adds."""
    text = HOOK.read_text() if hook is None else hook
    problems = []
    main = parse(sources["main.bicep"])
    output = main.get("outputs", {}).get("AZURE_VNET_ENABLED")
    if output is None:
        return ["main.bicep has no AZURE_VNET_ENABLED output, so the hook cannot tell the vault is closed"]
    for layout, params in LAYOUTS.items():
        deployment = deploy(sources, params)
        if evaluate(output["value"], deployment[0].env) is not params["vnetEnabled"]:
            problems.append(f"{layout}: AZURE_VNET_ENABLED does not say vnetEnabled")
        for part, name, vault in resources_of(deployment, VAULT):
            acls = vault["properties"].get("networkAcls", {})
            if params["vnetEnabled"] and acls.get("defaultAction") != "Deny":
                problems.append(
                    f"{layout}: {part.path}:{name} does not deny by default, so the hook's opening would admit everyone"
                )
    if "AZURE_VNET_ENABLED" not in text:
        problems.append("infra/hooks/postprovision.sh does not read AZURE_VNET_ENABLED")
    for needed in (
        "--public-network-access Enabled",
        "network-rule add",
        "network-rule remove",
        "--public-network-access Disabled",
    ):
        if needed not in text:
            problems.append(f"infra/hooks/postprovision.sh lacks `{needed}` (open to the deployer, then close)")
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
    "private endpoints": private_endpoint_problems,
    "app network": app_network_problems,
    "public access": public_access_problems,
    "app roles": app_role_problems,
    "hook network": hook_network_problems,
}
