"""What a real deployment needs from infra/, checked without Azure by parsing every .bicep file.

The Bicep CLI cannot run here, so each file is parsed with the current pycep-parser release into its
JSON model, and the checks below read that model (and, for comments, the source). Every check is a
function that returns a list of problems: the tests assert it is empty for the files as committed,
and non-empty for copies with one thing removed, so each check is shown to be able to fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit.templates import (
    CHECKS,
    CLOUDS,
    CONFIG_SOURCE,
    INFRA,
    LAYOUTS,
    PRIVATE_ENDPOINT,
    REQUIRED_OUTPUTS,
    SITE,
    STORAGE_ACCOUNT,
    VAULT,
    Ref,
    Sources,
    app_network_problems,
    app_registration_problems,
    app_role_problems,
    cloud_url_problems,
    conditional_output_problems,
    deploy,
    description_problems,
    evaluate,
    expected_zone,
    hook_network_problems,
    output_problems,
    parse,
    poison_queue_problems,
    private_endpoint_problems,
    public_access_problems,
    read_sources,
    render_cloud,
    resources_of,
    settings_problems,
    storage_sku_problems,
)

# ---- the committed templates pass -----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.bicep")), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses_with_the_current_parser(path: Path) -> None:
    """Each file parses, unchanged (extension statement and deployer() included), into a model with content."""
    tree = parse(path.read_text())
    assert tree.get("parameters") or tree.get("resources"), f"{path.name} parsed to nothing"


@pytest.mark.parametrize("name", list(CHECKS))
def test_templates_pass_check(name: str) -> None:
    """The committed templates have none of the deployment defects this check looks for."""
    assert CHECKS[name](read_sources()) == []


def test_template_sets_every_setting_the_code_reads() -> None:
    """graphusers/config.py's settings are all set by the template or deliberately left to the user."""
    assert settings_problems(read_sources(), CONFIG_SOURCE.read_text()) == []


# ---- and each check fails when the thing it guards is removed ------------------------------------


def remove_block(text: str, start: str) -> str:
    """Drop a top-level declaration starting with ``start`` (through its closing brace) and the comments above it."""
    lines = text.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith(start))
    j = next(n for n in range(i, len(lines)) if lines[n].startswith("}"))
    while i > 0 and lines[i - 1].startswith("//"):
        i -= 1
    return "".join(lines[:i] + lines[j + 1 :])


def mutated(path: str, change: Callable[[str], str]) -> Sources:
    sources = read_sources()
    new = change(sources[path])
    assert new != sources[path], "the mutation changed nothing"
    sources[path] = new
    return sources


def test_removing_the_poison_queue_permission_fails() -> None:
    """Without the role on the poison queue the check names the poison queue."""
    sources = mutated("app/storage.bicep", lambda t: remove_block(t, "resource poisonQueueContributor "))
    assert any("poison queue" in p for p in poison_queue_problems(sources))


def test_scoping_the_queue_role_to_the_sync_queue_only_fails() -> None:
    """Pointing the poison queue's role at the sync queue is the original defect, and is caught."""
    sources = mutated("app/storage.bicep", lambda t: t.replace("scope: poisonQueue", "scope: syncQueue"))
    assert poison_queue_problems(sources)


def test_account_scope_satisfies_the_poison_queue_check() -> None:
    """A queue role on the whole account also covers the poison queue (the other documented fix)."""

    def account_scope(text: str) -> str:
        return remove_block(text, "resource poisonQueueContributor ").replace("scope: syncQueue", "scope: account")

    assert poison_queue_problems(mutated("app/storage.bicep", account_scope)) == []


@pytest.mark.parametrize("output", sorted(REQUIRED_OUTPUTS))
def test_removing_an_output_fails(output: str) -> None:
    """Each output docs/deploy.md and the hooks need is required by name."""

    def drop(text: str) -> str:
        return re.sub(rf"@description\('[^\n]*'\)\noutput {output} [^\n]*\n", "", text)

    assert output_problems(mutated("main.bicep", drop)) == [f"main.bicep lacks output {output}"]


@pytest.mark.parametrize(
    "path,line",
    [
        ("main.bicep", "@description('Optional. Storage account SKU"),
        ("app/storage.bicep", "@description('Name of the poison queue"),
        ("graph/app-registration.bicep", "@description('Required. Immutable unique name"),
    ],
)
def test_removing_a_description_fails(path: str, line: str) -> None:
    """A parameter or output without @description is reported with its file and name."""

    def drop(text: str) -> str:
        return "".join(row for row in text.splitlines(keepends=True) if not row.startswith(line))

    problems = description_problems(mutated(path, drop))
    assert len(problems) == 1 and problems[0].startswith(f"{path}: ")


def test_hard_coding_the_storage_sku_fails() -> None:
    """A literal SKU is the zone-redundancy defect."""
    sources = mutated("app/storage.bicep", lambda t: t.replace("name: skuName", "name: 'Standard_ZRS'"))
    assert storage_sku_problems(sources)


def test_dropping_the_owner_or_declaring_key_credentials_fails() -> None:
    """No owner, or a declared keyCredentials list, is reported."""
    path, audience = "graph/app-registration.bicep", "  signInAudience: 'AzureADMyOrg'\n"
    no_owner = mutated(path, lambda t: t.replace("deployer().objectId", "'00000000-0000-0000-0000-000000000000'"))
    assert app_registration_problems(no_owner)
    creds = mutated(path, lambda t: t.replace(audience, audience + "  keyCredentials: []\n"))
    assert any("keyCredentials" in p for p in app_registration_problems(creds))


def test_hard_coded_cloud_urls_fail() -> None:
    """The login host written out, or Graph's host outside a parameter default, is reported."""
    login = mutated(
        "main.bicep", lambda t: t.replace("environment().authentication.loginEndpoint", "'https://login.microsoftonline.com'")
    )
    assert any("loginEndpoint" in p for p in cloud_url_problems(login))
    graph = mutated(
        "main.bicep", lambda t: t.replace("GRAPH_ENDPOINT: graphEndpoint", "GRAPH_ENDPOINT: 'https://graph.microsoft.com'")
    )
    assert any("outside a parameter default" in p for p in cloud_url_problems(graph))


def test_plain_dereference_of_a_conditional_module_fails() -> None:
    """keyVault.outputs without the safe-dereference operator is reported."""
    sources = mutated("main.bicep", lambda t: t.replace("keyVault.?outputs.uri ?? ''", "keyVault.outputs.uri", 1))
    assert conditional_output_problems(sources)


def test_a_new_setting_in_the_code_fails_until_set_or_left_to_the_user() -> None:
    """A setting read through a helper is caught; a reasoned 'Left to the user' comment accepts it."""
    code = CONFIG_SOURCE.read_text() + '\n\ndef _extra(env):\n    return _seconds(env, "HTTP_EXAMPLE_SECONDS", 25)\n'
    sources = read_sources()
    assert [p.split(" ")[0] for p in settings_problems(sources, code)] == ["HTTP_EXAMPLE_SECONDS"]
    sources["main.bicep"] += "\n// Left to the user: HTTP_EXAMPLE_SECONDS - the code's default suits every deployment\n"
    assert settings_problems(sources, code) == []
    sources["main.bicep"] += "// Left to the user: NOT_READ_ANYWHERE - a reason that is long enough\n"
    assert settings_problems(sources, code) == ["NOT_READ_ANYWHERE is marked left to the user but the code does not read it"]


# ---- the two layouts (vnetEnabled true and false) --------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_deploys_what_it_promises(layout: str) -> None:
    """Read as deployed: private has the network and four (three without a vault) endpoints, storage and the
    vault closed and the app in the subnet; public has none of it; the app's inbound is public in both."""
    params = LAYOUTS[layout]
    deployment = deploy(read_sources(), params)
    private = params["vnetEnabled"]
    vault = params.get("graphCredential") != "managed-identity-federation"
    groups = sorted(
        g
        for _, _, pe in resources_of(deployment, PRIVATE_ENDPOINT)
        for c in pe["properties"]["privateLinkServiceConnections"]
        for g in c["properties"]["groupIds"]
    )
    assert groups == (sorted(["blob", "queue", "table"] + ["vault"] * vault) if private else [])
    closed = [
        res["properties"]["publicNetworkAccess"]
        for kind in (STORAGE_ACCOUNT, VAULT)
        for _, _, res in resources_of(deployment, kind)
    ]
    assert closed == ["Disabled" if private else "Enabled"] * (1 + vault)
    (site,) = [res for _, _, res in resources_of(deployment, SITE)]
    assert site["properties"]["publicNetworkAccess"] == "Enabled"
    assert site["properties"]["virtualNetworkSubnetId"] == (Ref("network.outputs.appSubnetId") if private else None)


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_zone_names_follow_the_cloud(cloud: str) -> None:
    """The four zones rendered with a cloud's environment() values are Microsoft's names for that cloud."""
    deployment = deploy(read_sources(), LAYOUTS["private"])
    names = {
        part.env["groupId"]: render_cloud(part.env["zoneName"], CLOUDS[cloud][0])
        for part in deployment
        if part.path == "app/private-endpoint.bicep"
    }
    assert names == {group: expected_zone(group, cloud) for group in ("blob", "queue", "table", "vault")}
    assert expected_zone("vault", "AzureUSGovernment") == "privatelink.vaultcore.usgovcloudapi.net"


def test_the_evaluator_reads_conditions_as_bicep_does() -> None:
    """Ternaries, !, &&, ==, empty() and a safe dereference of an absent module, on small expressions."""
    tree = parse(
        "param on bool\nparam id string = ''\n"
        "var a = on ? 'Disabled' : 'Enabled'\nvar b = !on && empty(id)\nvar c = (id == '') ? 1 : 2\n"
        "var d = net.?outputs.subnet ?? 'none'\n"
    )["variables"]
    for on in (True, False):
        env = {"on": on, "id": ""}
        assert evaluate(tree["a"]["value"], env) == ("Disabled" if on else "Enabled")
        assert evaluate(tree["b"]["value"], env) is (not on)
        assert evaluate(tree["c"]["value"], env) == 1
    assert evaluate(tree["d"]["value"], {}, frozenset({"net"})) == "none"
    assert evaluate(tree["d"]["value"], {}) == Ref("net.outputs.subnet")
    misread = parse("var e = x == 'y' ? 1 : 2\n")["variables"]["e"]["value"]
    with pytest.raises(AssertionError, match="parenthesize"):
        evaluate(misread, {"x": "y"})


def test_dropping_a_zone_group_fails() -> None:
    """A private endpoint without its DNS zone group is reported for each endpoint."""
    sources = mutated("app/private-endpoint.bicep", lambda t: remove_block(t, "resource zoneGroup "))
    problems = private_endpoint_problems(sources)
    assert any("blob endpoint has no DNS zone group" in p for p in problems)
    assert any("vault endpoint has no DNS zone group" in p for p in problems)


def test_dropping_the_table_endpoint_fails() -> None:
    """Without the table endpoint the host's diagnostic events cannot reach storage: reported per private layout."""
    sources = mutated("app/network.bicep", lambda t: remove_block(t, "module tableEndpoint "))
    assert any("expected ['blob', 'queue', 'table'" in p for p in private_endpoint_problems(sources))


def test_unlinking_a_zone_or_hard_coding_its_name_fails() -> None:
    """A zone not linked to the network, or one named for the public cloud only, is reported."""
    unlinked = mutated("app/private-endpoint.bicep", lambda t: remove_block(t, "resource zoneLink "))
    assert any("not linked to the network" in p for p in private_endpoint_problems(unlinked))
    fixed = mutated(
        "app/network.bicep",
        lambda t: t.replace("'privatelink.queue.${environment().suffixes.storage}'", "'privatelink.queue.core.windows.net'"),
    )
    assert any("AzureUSGovernment the queue zone" in p for p in private_endpoint_problems(fixed))
    assert any("DNS suffix written out" in p for p in cloud_url_problems(fixed))


def test_an_app_outside_the_network_fails() -> None:
    """The app not given the subnet, in the private layout, is reported (storage would be unreachable)."""
    sources = mutated(
        "main.bicep",
        lambda t: t.replace("virtualNetworkSubnetId: network.?outputs.appSubnetId ?? ''", "virtualNetworkSubnetId: ''"),
    )
    assert any("virtualNetworkSubnetId is None" in p for p in app_network_problems(sources))
    assert public_access_problems(sources)


def test_an_undelegated_subnet_fails() -> None:
    """The app subnet without the Microsoft.App/environments delegation is reported."""
    sources = mutated(
        "app/network.bicep",
        lambda t: t.replace("serviceName: 'Microsoft.App/environments'", "serviceName: 'Microsoft.Web/serverFarms'"),
    )
    assert any("not a subnet delegated to Microsoft.App/environments" in p for p in app_network_problems(sources))


@pytest.mark.parametrize("path", ["app/storage.bicep", "app/key-vault.bicep"])
def test_public_access_left_on_fails(path: str) -> None:
    """Storage or the vault left public in the private layout is reported."""
    sources = mutated(
        path, lambda t: t.replace("publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'", "publicNetworkAccess: 'Enabled'")
    )
    problems = public_access_problems(sources)
    assert problems and all(p.startswith("private") for p in problems)


@pytest.mark.parametrize("path", ["app/storage.bicep", "app/key-vault.bicep"])
def test_not_resetting_ip_rules_fails(path: str) -> None:
    """Without `ipRules: []` a redeployment would keep an opening someone forgot to close."""
    sources = mutated(path, lambda t: t.replace("      ipRules: []\n", ""))
    assert any("does not reset ipRules" in p for p in public_access_problems(sources))


def test_a_module_not_told_the_layout_fails() -> None:
    """main.bicep not passing vnetEnabled to storage: the module's default closes storage in the public layout."""
    sources = mutated(
        "main.bicep",
        lambda t: t.replace(
            "    principalId: identity.outputs.principalId\n    vnetEnabled: vnetEnabled\n",
            "    principalId: identity.outputs.principalId\n",
            1,
        ),
    )
    assert any(p.startswith("public: app/storage.bicep") for p in public_access_problems(sources))


@pytest.mark.parametrize(
    "block,what",
    [
        ("resource tableContributor ", "diagnostic-event tables"),
        ("resource blobOwner ", "the host's containers"),
        ("resource poisonQueueContributor ", "poison queue"),
    ],
)
def test_dropping_an_app_role_fails(block: str, what: str) -> None:
    """Each data-plane role the app needs is required, in every layout."""
    problems = app_role_problems(mutated("app/storage.bicep", lambda t: remove_block(t, block)))
    assert len([p for p in problems if what in p]) == len(LAYOUTS)


def test_dropping_the_vault_reader_fails_only_where_there_is_a_vault() -> None:
    """Key Vault Secrets User is required with a vault, and not asked for in federation mode."""
    problems = app_role_problems(mutated("app/key-vault.bicep", lambda t: remove_block(t, "resource secretsUser ")))
    assert sorted(p.split(":")[0] for p in problems) == ["private", "public"]


def test_the_hook_path_follows_the_network() -> None:
    """No AZURE_VNET_ENABLED output, a vault that allows by default under the hook's opening, or a hook
    that never closes the vault: each is reported."""
    no_output = mutated(
        "main.bicep", lambda t: re.sub(r"@description\('Whether the private[^\n]*\)\noutput AZURE_VNET_ENABLED[^\n]*\n", "", t)
    )
    assert "no AZURE_VNET_ENABLED output" in hook_network_problems(no_output)[0]
    allowing = mutated(
        "app/key-vault.bicep", lambda t: t.replace("defaultAction: vnetEnabled ? 'Deny' : 'Allow'", "defaultAction: 'Allow'")
    )
    assert any("would admit everyone" in p for p in hook_network_problems(allowing))
    hook = (INFRA / "hooks" / "postprovision.sh").read_text()
    assert any(
        "Disabled" in p for p in hook_network_problems(read_sources(), hook.replace("--public-network-access Disabled", ""))
    )


# Name length limits, https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
NAME_LIMITS = {
    "Microsoft.Network/virtualNetworks": 64,
    "Microsoft.Network/privateEndpoints": 64,
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": 80,
    "Microsoft.Web/sites": 60,
    "Microsoft.KeyVault/vaults": 24,
    "Microsoft.Storage/storageAccounts": 24,
}


@pytest.mark.parametrize("layout", ["private", "public"])
def test_names_fit_with_the_longest_environment_name(layout: str) -> None:
    """With a 40-character environment name (main.bicep's maximum) every name stays within its resource's limit."""
    deployment = deploy(read_sources(), {**LAYOUTS[layout], "environmentName": "e" * 40})
    seen = 0
    for kind, limit in NAME_LIMITS.items():
        for part, name, res in resources_of(deployment, kind):
            # resourceToken and any other uniqueString() are 13 characters.
            full = re.sub(r"\$\{[^{}]*(resourceToken|uniqueString)[^{}]*\}", "t" * 13, str(res["name"]))
            assert "${" not in full, f"{part.via}:{name} name {full!r} not fully known"
            assert len(full) <= limit, f"{part.via}:{name} name {full!r} is {len(full)} characters, over {limit}"
            seen += 1
    assert seen >= (10 if layout == "private" else 3)
