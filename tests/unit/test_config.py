"""Settings validation: every missing or malformed setting is named in the error."""

from __future__ import annotations

import pytest

from graphusers.config import DEFAULT_SYNC_SCHEDULE, DEFAULT_USER_SELECT, load_settings, sync_schedule
from graphusers.errors import ConfigError

GOOD = {
    "GRAPH_TENANT_ID": "11111111-2222-3333-4444-555555555555",
    "GRAPH_CLIENT_ID": "66666666-7777-8888-9999-000000000000",
    "KEY_VAULT_URL": "https://contoso-kv.vault.azure.net/",
}


def test_defaults_apply_when_only_required_settings_are_set() -> None:
    """Optional settings take the documented defaults."""
    s = load_settings(GOOD)
    assert s.client_secret_name == "graph-client-secret"
    assert s.authority == "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555"
    assert s.graph_scope == "https://graph.microsoft.com/.default"
    assert s.user_select == DEFAULT_USER_SELECT
    assert s.key_vault_url == "https://contoso-kv.vault.azure.net"
    assert s.managed_identity_client_id is None


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"GRAPH_TENANT_ID": ""}, "GRAPH_TENANT_ID"),
        ({"GRAPH_TENANT_ID": "not a tenant"}, "GRAPH_TENANT_ID"),
        ({"GRAPH_CLIENT_ID": ""}, "GRAPH_CLIENT_ID"),
        ({"GRAPH_CLIENT_ID": "my-app"}, "GRAPH_CLIENT_ID"),
        ({"KEY_VAULT_URL": ""}, "KEY_VAULT_URL"),
        ({"KEY_VAULT_URL": "http://kv.vault.azure.net"}, "KEY_VAULT_URL"),
        ({"KEY_VAULT_URL": "kv.vault.azure.net"}, "KEY_VAULT_URL"),
        ({"GRAPH_CLIENT_SECRET_NAME": "bad_name!"}, "GRAPH_CLIENT_SECRET_NAME"),
        ({"AUTHORITY_HOST": "https://login.microsoftonline.com/tenant"}, "AUTHORITY_HOST"),
        ({"AUTHORITY_HOST": "ftp://login"}, "AUTHORITY_HOST"),
        ({"GRAPH_ENDPOINT": "https://graph.microsoft.com?x=1"}, "GRAPH_ENDPOINT"),
        ({"USER_SELECT": "id,display Name"}, "USER_SELECT"),
        ({"USER_SELECT": "id,,mail"}, "USER_SELECT"),
        ({"AZURE_CLIENT_ID": "identity"}, "AZURE_CLIENT_ID"),
    ],
)
def test_bad_setting_is_named(overrides: dict[str, str], setting: str) -> None:
    """A ConfigError names the setting at fault."""
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, **overrides})
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_tenant_may_be_a_domain_and_select_gains_id() -> None:
    """A verified domain is a valid tenant; USER_SELECT always includes id."""
    s = load_settings({**GOOD, "GRAPH_TENANT_ID": "contoso.onmicrosoft.com", "USER_SELECT": "displayName, mail"})
    assert s.tenant_id == "contoso.onmicrosoft.com"
    assert s.user_select == ("id", "displayName", "mail")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", DEFAULT_SYNC_SCHEDULE),
        ("0 */5 * * * *", "0 */5 * * * *"),
        ("*/5 * * * *", DEFAULT_SYNC_SCHEDULE),  # five fields: cron, not NCRONTAB
        ("0 0 * * * * extra", DEFAULT_SYNC_SCHEDULE),
        ("0 0 % * * *", DEFAULT_SYNC_SCHEDULE),
    ],
)
def test_sync_schedule_never_raises(value: str, expected: str) -> None:
    """A malformed USER_SYNC_SCHEDULE falls back to the default instead of breaking indexing."""
    assert sync_schedule({"USER_SYNC_SCHEDULE": value}) == expected
