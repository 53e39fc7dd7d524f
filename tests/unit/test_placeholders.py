"""Each placeholder of local.settings.example.json is caught by the settings checks, with one message shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.serve import check_real_settings
from graphusers.config import NIL_GUID, load_settings, load_storage_settings, placeholder_problem
from graphusers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE: dict[str, str] = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
GOOD = {
    "GRAPH_TENANT_ID": "11111111-2222-3333-4444-555555555555",
    "GRAPH_CLIENT_ID": "66666666-7777-8888-9999-000000000000",
    "KEY_VAULT_URL": "https://contoso-kv.vault.azure.net/",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
# The example's placeholders: every value with <...> in it.
PLACEHOLDERS = {name: value for name, value in EXAMPLE.items() if "<" in value}


def logged_in(*args: str) -> tuple[int, str]:
    return 0, json.dumps({"tenantId": GOOD["GRAPH_TENANT_ID"]})


def test_the_example_has_the_placeholders_a_user_fills_in() -> None:
    """The three settings a user must fill in are placeholders in the example (so the tests below test something)."""
    assert {"GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "KEY_VAULT_URL"} <= set(PLACEHOLDERS)


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_each_example_placeholder_is_a_config_error_naming_the_setting(name: str) -> None:
    """The example's value, alone among good settings, fails load_settings naming the setting and the fix."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, name: PLACEHOLDERS[name]})
    assert caught.value.setting == name
    message = caught.value.message
    assert message.startswith(f"App setting {name} still holds the placeholder '<")
    assert "replace it with" in message and "docs/real-tenant.md" in message


def test_the_vault_placeholder_inside_a_well_formed_url_is_caught() -> None:
    """https://<your-vault>.vault.azure.net is a well-formed https URL on a vault host, and still a placeholder."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, "KEY_VAULT_URL": "https://<your-vault>.vault.azure.net"})
    assert "'<your-vault>'" in caught.value.message and "properties.vaultUri" in caught.value.message


@pytest.mark.parametrize("name", ["GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "AZURE_CLIENT_ID"])
def test_the_nil_guid_is_a_placeholder(name: str) -> None:
    """00000000-0000-0000-0000-000000000000 is never a tenant, app or identity id."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, name: NIL_GUID})
    assert caught.value.setting == name and "still holds the placeholder" in caught.value.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRAPH_CLIENT_SECRET_NAME", "<secret name>"),
        ("USER_SELECT", "id,<property>"),
        ("GRAPH_ENDPOINT", "https://<graph>"),
        ("AUTHORITY_HOST", "https://login.microsoftonline.com>"),
    ],
)
def test_a_placeholder_in_any_setting_read_is_caught(name: str, value: str) -> None:
    """Not only the example's three: every setting load_settings reads is checked the same way."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, name: value})
    assert caught.value.setting == name and "still holds the placeholder" in caught.value.message


def test_storage_placeholders_are_caught_without_quoting_the_value() -> None:
    """A connection string may hold a key, so its placeholder is named but not quoted."""
    value = "DefaultEndpointsProtocol=https;AccountName=<account>;AccountKey=c2VjcmV0"
    with pytest.raises(ConfigError) as caught:
        load_storage_settings({"AzureWebJobsStorage": value})
    assert caught.value.setting == "AzureWebJobsStorage"
    assert "still holds the placeholder from" in caught.value.message and "c2VjcmV0" not in caught.value.message


def test_real_values_are_not_placeholders() -> None:
    """Good values, and the example's own non-placeholder values, pass."""
    for name, value in {**GOOD, **{n: v for n, v in EXAMPLE.items() if n not in PLACEHOLDERS}}.items():
        assert placeholder_problem(name, value) is None, name
    load_settings({**EXAMPLE, **GOOD})


def test_serve_real_lists_every_placeholder_of_the_example(tmp_path: Path) -> None:
    """./scripts/serve --real's check names each placeholder of an unedited copy of the example, one line each."""
    path = tmp_path / "local.settings.json"
    path.write_text((ROOT / "local.settings.example.json").read_text())
    _, problems = check_real_settings(path, az=logged_in)
    assert [p.split(" ", 1)[0] for p in problems] == list(PLACEHOLDERS)
    for name, problem in zip(PLACEHOLDERS, problems, strict=True):
        assert problem.startswith(f"{name} in local.settings.json still holds the placeholder '<")
        assert "replace it with" in problem


def test_serve_real_catches_the_vault_placeholder_alone(tmp_path: Path) -> None:
    """With the ids filled in, the example's KEY_VAULT_URL still stops serve --real before any request."""
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {**EXAMPLE, **{k: GOOD[k] for k in ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID")}}}))
    _, problems = check_real_settings(path, az=logged_in)
    assert len(problems) == 1 and problems[0].startswith("KEY_VAULT_URL in local.settings.json still holds the placeholder")
