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


@pytest.mark.parametrize(
    ("overrides", "setting", "fix"),
    [
        (
            {"KEY_VAULT_URL": "https://contoso-kv.vault.azure.net/secrets/graph"},
            "KEY_VAULT_URL",
            "https://contoso-kv.vault.azure.net",
        ),
        ({"GRAPH_ENDPOINT": "https://graph.microsoft.com/v1.0"}, "GRAPH_ENDPOINT", "https://graph.microsoft.com"),
        ({"GRAPH_ENDPOINT": "https://graph.microsoft.com/beta/"}, "GRAPH_ENDPOINT", "https://graph.microsoft.com"),
        ({"USER_SELECT": "id,displayName,costCentre"}, "USER_SELECT", "costCentre"),
        ({"USER_SELECT": "id,passwordprofile"}, "USER_SELECT", "passwordprofile"),
    ],
)
def test_paths_and_unknown_properties_are_named_with_the_fix(overrides: dict[str, str], setting: str, fix: str) -> None:
    """A vault or Graph URL with a path, or a USER_SELECT name Graph's user type lacks, names the setting and the fix."""
    with pytest.raises(ConfigError) as info:
        load_settings({**GOOD, **overrides})
    assert info.value.setting == setting
    assert setting in str(info.value) and fix in str(info.value)


def test_known_user_properties_and_extensions_are_accepted() -> None:
    """Graph user properties, directory extension attributes and a trailing slash are fine."""
    s = load_settings(
        {
            **GOOD,
            "GRAPH_ENDPOINT": "https://graph.microsoft.com/",
            "USER_SELECT": "id,employeeId,onPremisesSamAccountName,extension_0123456789abcdef0123456789abcdef_costCenter",
        }
    )
    assert s.graph_endpoint == "https://graph.microsoft.com"
    assert s.user_select[1:] == (
        "employeeId",
        "onPremisesSamAccountName",
        "extension_0123456789abcdef0123456789abcdef_costCenter",
    )


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("60 * * * * *", "second"),
        ("0 99 * * * *", "minute"),
        ("0 0 24 * * *", "hour"),
        ("0 0 0 0 * *", "day"),
        ("0 0 0 32 * *", "day"),
        ("0 0 0 * 13 *", "month"),
        ("0 0 0 * * 7", "weekday"),
        ("0 */0 * * * *", "minute"),
        ("0 5-2 * * * *", "minute"),
        ("0 1,2,61 * * * *", "minute"),
        ("0 0 0 * FOO *", "month"),
        ("0 0 24-23/2 * * *", "hour"),
    ],
)
def test_out_of_range_schedule_falls_back_and_names_the_field(value: str, field: str, caplog: pytest.LogCaptureFixture) -> None:
    """An out-of-range NCRONTAB field is logged naming USER_SYNC_SCHEDULE and the field; the default is used."""
    with caplog.at_level("ERROR", logger="graphusers.config"):
        assert sync_schedule({"USER_SYNC_SCHEDULE": value}) == DEFAULT_SYNC_SCHEDULE
    [record] = caplog.records
    assert "USER_SYNC_SCHEDULE" in record.getMessage() and field in record.getMessage()
    assert "out of range" in record.getMessage()


@pytest.mark.parametrize(
    "value",
    [
        "0 */5 * * * *",
        "0 0 9-17 * * MON-FRI",
        "0 30 9 1,15 JAN-JUN *",
        "59 59 23 31 12 6",
        "0 0 0 * * 0",
        "*/10 * * * * *",
        "0 0-30/10 * * * *",
    ],
)
def test_in_range_schedules_are_kept(value: str) -> None:
    """Valid NCRONTAB expressions, names and steps included, are used as given."""
    assert sync_schedule({"USER_SYNC_SCHEDULE": value}) == value
