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
    CONFIG_SOURCE,
    INFRA,
    REQUIRED_OUTPUTS,
    Sources,
    app_registration_problems,
    cloud_url_problems,
    conditional_output_problems,
    description_problems,
    output_problems,
    parse,
    poison_queue_problems,
    read_sources,
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
