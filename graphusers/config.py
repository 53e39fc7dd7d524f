"""App settings, read from the environment (Functions app settings) and validated once."""

from __future__ import annotations

import datetime
import functools
import itertools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError
from .properties import unknown_user_properties

logger = logging.getLogger(__name__)

DEFAULT_SECRET_NAME = "graph-client-secret"  # noqa: S105 - a name, not a secret
DEFAULT_CERTIFICATE_NAME = "graph-client-certificate"
# The audience Entra expects on a managed identity token used as a client
# assertion (public cloud; sovereign clouds have their own, e.g. ...USGov).
# https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
DEFAULT_FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
CREDENTIAL_MODES = ("secret", "certificate", "managed-identity-federation")
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_ENDPOINT = "https://graph.microsoft.com"
DEFAULT_USER_SELECT = ("id", "displayName", "userPrincipalName", "mail", "accountEnabled")
DEFAULT_SYNC_CONTAINER = "user-sync"
# The queue POST /api/sync writes to and the queue trigger reads; fixed, since
# binding expressions that do not resolve keep the function from loading.
SYNC_QUEUE = "user-sync-requests"
# NCRONTAB with seconds: at second 0 of every 30th minute.
DEFAULT_SYNC_SCHEDULE = "0 */30 * * * *"
# Every HTTP invocation answers within this many seconds, whatever its
# dependencies do. Azure's front end drops a call with no answer after 230 s.
# https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout
DEFAULT_HTTP_DEADLINE = 30.0
MAX_HTTP_DEADLINE = 230.0
# The sync stops this long before the host's functionTimeout, so that it can
# fail cleanly (release its lease, log its summary) instead of being killed.
SYNC_DEADLINE_MARGIN = 60.0
DEFAULT_FUNCTION_TIMEOUT = 30 * 60.0  # Flex Consumption's default

# Every setting the app's code reads, with whether it is required. The infra
# test checks this against the code and against what the Bicep template sets.
SETTINGS: dict[str, bool] = {
    "GRAPH_TENANT_ID": True,
    "GRAPH_CLIENT_ID": True,
    "KEY_VAULT_URL": True,  # not needed with GRAPH_CREDENTIAL=managed-identity-federation
    "GRAPH_CREDENTIAL": False,
    "GRAPH_CLIENT_SECRET_NAME": False,
    "GRAPH_CLIENT_CERTIFICATE_NAME": False,
    "GRAPH_FEDERATION_AUDIENCE": False,
    "AUTHORITY_HOST": False,
    "GRAPH_ENDPOINT": False,
    "USER_SELECT": False,
    "AZURE_CLIENT_ID": False,
    "USER_SYNC_SCHEDULE": False,
    "USER_SYNC_FULL_EVERY": False,
    "USER_SYNC_FULL_ROUND": False,
    "USER_SYNC_CONTAINER": False,
    "HTTP_DEADLINE_SECONDS": False,
    # The Functions host's own storage, which the sync shares: a connection
    # string locally, identity-based (__blobServiceUri, ...) in Azure.
    "AzureWebJobsStorage": False,
    "AzureWebJobsStorage__blobServiceUri": False,
    "AzureWebJobsStorage__clientId": False,
    # Change notifications (off unless NOTIFICATIONS_ENABLED); WEBSITE_HOSTNAME is App Service's own.
    "NOTIFICATIONS_ENABLED": False,
    "NOTIFICATIONS_PUBLIC_URL": False,
    "WEBSITE_HOSTNAME": False,
    "NOTIFICATIONS_CLIENT_STATE_SECRET_NAME": False,
    "NOTIFICATIONS_PREVIOUS_CLIENT_STATE_SECRET_NAME": False,
    "NOTIFICATIONS_FUNCTION_KEY": False,
    "NOTIFICATIONS_MANAGER_SCHEDULE": False,
}

# Settings the Functions host reads on the app's behalf (the app's code does
# not): the template sets them too, and the infra test allows them.
HOST_SETTINGS = frozenset(
    {
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "AzureWebJobsStorage__queueServiceUri",
        # Diagnostic events (infra/app/storage.bicep tableContributor).
        "AzureWebJobsStorage__tableServiceUri",
        "AzureWebJobsStorage__credential",
    }
)
# Settings that local runs use and Azure replaces with another one: the
# connection string locally, the identity-based service URI in Azure.
LOCAL_ALTERNATIVES = {"AzureWebJobsStorage": "AzureWebJobsStorage__blobServiceUri"}

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# A tenant is a GUID or a verified domain such as contoso.onmicrosoft.com.
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
# Key Vault object names: 1-127 alphanumerics and dashes.
# https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates#object-identifiers
_VAULT_OBJECT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
PROPERTY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Settings:
    """Validated app settings; build with ``load_settings``."""

    tenant_id: str
    client_id: str
    key_vault_url: str | None
    credential_mode: str = "secret"
    client_secret_name: str = DEFAULT_SECRET_NAME
    client_certificate_name: str = DEFAULT_CERTIFICATE_NAME
    federation_audience: str = DEFAULT_FEDERATION_AUDIENCE
    authority_host: str = DEFAULT_AUTHORITY_HOST
    graph_endpoint: str = DEFAULT_GRAPH_ENDPOINT
    user_select: tuple[str, ...] = DEFAULT_USER_SELECT
    managed_identity_client_id: str | None = None

    @property
    def authority(self) -> str:
        """The tenant's authority URL for MSAL."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def graph_scope(self) -> str:
        """The client-credentials scope: every application permission granted on Graph."""
        return f"{self.graph_endpoint}/.default"


# local.settings.example.json marks what to fill in as <...>. No real setting holds '<' or '>' (GUIDs,
# domains, URLs, vault names, property lists, schedules, storage connection strings), and Entra never
# issues the nil GUID as a tenant, app or identity id. Such a value is named as a placeholder here,
# instead of passing the format checks (https://<your-vault>.vault.azure.net is a well-formed https
# URL) and failing later as a 503 from Key Vault or Entra.
_PLACEHOLDER = re.compile(r"<[^<>]*>|[<>]")
NIL_GUID = "00000000-0000-0000-0000-000000000000"
# What to put in place of each placeholder of the example file.
PLACEHOLDER_FIXES = {
    "GRAPH_TENANT_ID": "your directory (tenant) id (az account show --query tenantId -o tsv)",
    "GRAPH_CLIENT_ID": "the app registration's application (client) id (az ad app list --display-name NAME "
    "--query [].appId -o tsv)",
    "KEY_VAULT_URL": "your vault's URI (az keyvault show --name VAULT --query properties.vaultUri -o tsv)",
    "AZURE_CLIENT_ID": "the client id of the function app's user-assigned managed identity",
}
# Settings whose value may carry a credential: their placeholder is not quoted back.
_SENSITIVE = re.compile(r"SECRET|PASSWORD|TOKEN|CONNECTION|^AzureWebJobsStorage$", re.IGNORECASE)


def placeholder_problem(name: str, value: str) -> str | None:
    """What is wrong when ``value`` is still an example placeholder (to follow "App setting NAME"), else None."""
    value = value.strip()
    match = _PLACEHOLDER.search(value)
    if match is None and value != NIL_GUID:
        return None
    shown = "" if _SENSITIVE.search(name) else f" {(match.group(0) if match else value)!r}"
    fix = PLACEHOLDER_FIXES.get(name, "its real value")
    return (
        f"still holds the placeholder{shown} from local.settings.example.json: replace it with {fix} "
        "(docs/real-tenant.md, step 5)"
    )


def _setting(environ: Mapping[str, str], name: str) -> str:
    """The setting's value, stripped ("" when unset); ``ConfigError`` when it is still a placeholder."""
    value = environ.get(name, "").strip()
    problem = placeholder_problem(name, value)
    if problem is not None:
        raise ConfigError(name, problem)
    return value


def _required(environ: Mapping[str, str], name: str) -> str:
    value = _setting(environ, name)
    if not value:
        raise ConfigError(name, "is not set; add it to the function app's settings (local.settings.json locally)")
    return value


def _https_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(name, f"must be an https URL such as https://example.net, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(name, "must not have a query string or fragment")
    return value.rstrip("/")


def _host_only(name: str, value: str, example: str) -> str:
    # A path here would be joined with the app's own (/v1.0/users, /secrets/...)
    # and reach the wrong resource, or none.
    if urlsplit(value).path not in ("", "/"):
        raise ConfigError(name, f"must be the scheme and host only, such as {example}, without a path; got {value!r}")
    return value


def parse_select_setting(name: str, value: str) -> tuple[str, ...]:
    """Parse a comma list of Graph user property names; ``name`` is used in the error."""
    fields = tuple(f.strip() for f in value.split(","))
    bad = [f for f in fields if not PROPERTY_NAME.match(f)]
    if not fields or bad:
        raise ConfigError(name, f"must be a comma list of property names; bad entries: {bad!r}")
    unknown = unknown_user_properties(fields)
    if unknown:
        raise ConfigError(
            name,
            f"names {', '.join(repr(u) for u in unknown)}, not a property of Microsoft Graph's user type; "
            "remove it or fix its spelling (names are case-sensitive, e.g. userPrincipalName), see "
            "https://learn.microsoft.com/graph/api/resources/user#properties",
        )
    return fields


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ``ConfigError`` naming the first bad one."""
    env = os.environ if environ is None else environ

    tenant_id = _required(env, "GRAPH_TENANT_ID")
    if not (_GUID.match(tenant_id) or _DOMAIN.match(tenant_id)):
        raise ConfigError("GRAPH_TENANT_ID", "must be the directory (tenant) ID, a GUID, or a verified domain name")

    client_id = _required(env, "GRAPH_CLIENT_ID")
    if not _GUID.match(client_id):
        raise ConfigError("GRAPH_CLIENT_ID", "must be the application (client) ID, a GUID")

    mode = _setting(env, "GRAPH_CREDENTIAL").lower() or "secret"
    if mode not in CREDENTIAL_MODES:
        raise ConfigError("GRAPH_CREDENTIAL", f"must be one of {', '.join(CREDENTIAL_MODES)}, got {mode!r}")

    # Federation needs no vault: the managed identity's token is the credential.
    raw_vault = _setting(env, "KEY_VAULT_URL")
    if mode == "managed-identity-federation" and not raw_vault:
        key_vault_url = None
    else:
        key_vault_url = _host_only(
            "KEY_VAULT_URL",
            _https_url("KEY_VAULT_URL", _required(env, "KEY_VAULT_URL")),
            "https://contoso-kv.vault.azure.net (the vault's URI from its Overview page)",
        )

    secret_name = _setting(env, "GRAPH_CLIENT_SECRET_NAME") or DEFAULT_SECRET_NAME
    if not _VAULT_OBJECT_NAME.match(secret_name):
        raise ConfigError("GRAPH_CLIENT_SECRET_NAME", "must be 1-127 letters, digits and dashes")

    certificate_name = _setting(env, "GRAPH_CLIENT_CERTIFICATE_NAME") or DEFAULT_CERTIFICATE_NAME
    if not _VAULT_OBJECT_NAME.match(certificate_name):
        raise ConfigError("GRAPH_CLIENT_CERTIFICATE_NAME", "must be 1-127 letters, digits and dashes")

    audience = _setting(env, "GRAPH_FEDERATION_AUDIENCE") or DEFAULT_FEDERATION_AUDIENCE
    if not audience.startswith("api://") or any(c.isspace() for c in audience):
        raise ConfigError("GRAPH_FEDERATION_AUDIENCE", "must be an api:// audience such as api://AzureADTokenExchange")

    authority_host = _https_url("AUTHORITY_HOST", _setting(env, "AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST)
    if urlsplit(authority_host).path not in ("", "/"):
        raise ConfigError("AUTHORITY_HOST", "must be a host only, such as https://login.microsoftonline.com")

    graph_endpoint = _https_url("GRAPH_ENDPOINT", _setting(env, "GRAPH_ENDPOINT") or DEFAULT_GRAPH_ENDPOINT)
    _host_only("GRAPH_ENDPOINT", graph_endpoint, "https://graph.microsoft.com (the app adds /v1.0)")

    raw_select = _setting(env, "USER_SELECT")
    user_select = parse_select_setting("USER_SELECT", raw_select) if raw_select else DEFAULT_USER_SELECT
    if "id" not in user_select:
        # Lookups, cursors and the sync key everything on the object id.
        user_select = ("id", *user_select)

    mi_client_id = _setting(env, "AZURE_CLIENT_ID") or None
    if mi_client_id is not None and not _GUID.match(mi_client_id):
        raise ConfigError("AZURE_CLIENT_ID", "must be the client ID (a GUID) of the user-assigned managed identity")

    return Settings(
        tenant_id=tenant_id,
        client_id=client_id,
        key_vault_url=key_vault_url,
        credential_mode=mode,
        client_secret_name=secret_name,
        client_certificate_name=certificate_name,
        federation_audience=audience,
        authority_host=authority_host,
        graph_endpoint=graph_endpoint,
        user_select=user_select,
        managed_identity_client_id=mi_client_id,
    )


# Container names: 3-63 lowercase letters, digits and single dashes.
_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class StorageSettings:
    """Where the sync keeps its snapshot: the storage behind ``AzureWebJobsStorage``."""

    container: str = DEFAULT_SYNC_CONTAINER
    connection_string: str | None = None
    blob_service_uri: str | None = None
    client_id: str | None = None


def load_storage_settings(environ: Mapping[str, str] | None = None) -> StorageSettings:
    """Read the sync's storage settings; ``ConfigError`` names the missing or bad one."""
    env = os.environ if environ is None else environ
    container = _setting(env, "USER_SYNC_CONTAINER") or DEFAULT_SYNC_CONTAINER
    if not _CONTAINER.match(container):
        raise ConfigError("USER_SYNC_CONTAINER", "must be 3-63 lowercase letters, digits and dashes")
    connection = _setting(env, "AzureWebJobsStorage")
    if connection:
        if "UseDevelopmentStorage=true" in connection or "AccountName=" in connection or "BlobEndpoint=" in connection:
            return StorageSettings(container=container, connection_string=connection)
        raise ConfigError("AzureWebJobsStorage", "is not a storage connection string")
    uri = _setting(env, "AzureWebJobsStorage__blobServiceUri")
    if uri:
        client_id = _setting(env, "AzureWebJobsStorage__clientId") or _setting(env, "AZURE_CLIENT_ID") or None
        return StorageSettings(
            container=container, blob_service_uri=_https_url("AzureWebJobsStorage__blobServiceUri", uri), client_id=client_id
        )
    raise ConfigError(
        "AzureWebJobsStorage",
        "is not set: set AzureWebJobsStorage (a connection string) or AzureWebJobsStorage__blobServiceUri "
        "with a managed identity",
    )


_NCRONTAB_FIELD = re.compile(r"^[0-9A-Za-z*/,\-]+$")
# NCRONTAB's six fields, their ranges and the names months and weekdays may use.
# https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_SCHEDULE_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("weekday", 0, 6, {d: i for i, d in enumerate(_WEEKDAYS)}),
)


def _schedule_field_error(text: str, name: str, low: int, high: int, names: dict[str, int]) -> str | None:
    """Why one NCRONTAB field is out of range, or None when it is fine."""

    def value(token: str) -> int | None:
        if token.isdigit():
            return int(token)
        return names.get(token.upper())

    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) >= 1):
            return f"{name} step {step!r} is out of range (a whole number of 1 or more)"
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        start, end = value(first), (value(last) if dash else value(first))
        if start is None or end is None:
            named = f" or {min(names, key=names.__getitem__)}-{max(names, key=names.__getitem__)}" if names else ""
            return f"{name} {part!r} is out of range {low}-{high}{named}"
        if not (low <= start <= high and low <= end <= high):
            return f"{name} {part!r} is out of range {low}-{high}"
        if start > end:
            return f"{name} range {base!r} is out of range: its start is after its end"
    return None


def schedule_error(value: str) -> str | None:
    """What is wrong with an NCRONTAB expression, or None when the Functions host accepts it."""
    fields = value.split()
    if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
        return "is not a six-field NCRONTAB expression (second minute hour day month weekday)"
    for text, (name, low, high, names) in zip(fields, _SCHEDULE_FIELDS, strict=True):
        problem = _schedule_field_error(text, name, low, high, names)
        if problem:
            return f"has {problem}"
    return None


def sync_schedule(environ: Mapping[str, str] | None = None) -> str:
    """The timer's NCRONTAB schedule from ``USER_SYNC_SCHEDULE``; never raises.

    This is read while the host indexes the app, where an exception would make
    it find zero functions, so a malformed or out-of-range value is logged,
    naming the setting and the fix, and the default used.
    """
    env = os.environ if environ is None else environ
    value = env.get("USER_SYNC_SCHEDULE", "").strip()
    if not value:
        return DEFAULT_SYNC_SCHEDULE
    problem = schedule_error(value)
    if problem:
        logger.error(
            "App setting USER_SYNC_SCHEDULE=%r %s; set it to a six-field NCRONTAB expression such as %r "
            "(https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#ncrontab-expressions). "
            "Using %r until it is fixed",
            value,
            problem,
            DEFAULT_SYNC_SCHEDULE,
            DEFAULT_SYNC_SCHEDULE,
        )
        return DEFAULT_SYNC_SCHEDULE
    return value


DEFAULT_FULL_EVERY_DAYS = 7.0


def sync_full_every(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between reconciliation rounds from ``USER_SYNC_FULL_EVERY`` (days; ``0``: never); never raises."""
    env = os.environ if environ is None else environ
    value = env.get("USER_SYNC_FULL_EVERY", "").strip()
    if not value:
        return DEFAULT_FULL_EVERY_DAYS * 86400
    try:
        days = float(value)
        if not 0 <= days <= 3650:
            raise ValueError(value)
    except ValueError:
        logger.error(
            "App setting USER_SYNC_FULL_EVERY=%r is not a number of days from 0 to 3650; set it to e.g. "
            "7 (a full reconciliation round a week) or 0 (never). Using %g",
            value,
            DEFAULT_FULL_EVERY_DAYS,
        )
        return DEFAULT_FULL_EVERY_DAYS * 86400
    return days * 86400 or None


# How a full round reads the tenant: "listing" (a deltaLink from now on, then /users in pages of
# 999) or "delta" (a full round of /users/delta, at most 200 users a page). See docs/sync.md.
FULL_ROUND_KINDS = ("listing", "delta")
DEFAULT_FULL_ROUND = "listing"


def sync_full_round(environ: Mapping[str, str] | None = None) -> str:
    """``USER_SYNC_FULL_ROUND``: ``listing`` (the default) or ``delta``; ConfigError for anything else."""
    env = os.environ if environ is None else environ
    value = env.get("USER_SYNC_FULL_ROUND", "").strip().lower()
    if not value:
        return DEFAULT_FULL_ROUND
    if value not in FULL_ROUND_KINDS:
        raise ConfigError(
            "USER_SYNC_FULL_ROUND",
            f"must be 'listing' (the default: list /users, 999 a page, after a deltaLink from now on) or "
            f"'delta' (a full round of /users/delta); got {value[:40]!r}",
        )
    return value


def _expand(text: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    """The values one (valid) NCRONTAB field matches."""

    def value(token: str) -> int:
        return int(token) if token.isdigit() else names[token.upper()]

    out: set[int] = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        first, dash, last = base.partition("-")
        start, end = (low, high) if base == "*" else (value(first), value(last) if dash else value(first))
        if step and base != "*" and not dash:
            end = high
        out.update(range(start, end + 1, int(step) if step else 1))
    return out


@functools.lru_cache(maxsize=8)
def schedule_interval(schedule: str) -> float:
    """The longest gap in seconds between two firings of a valid NCRONTAB schedule (over two years)."""
    sets = [
        _expand(text, low, high, names) for text, (_, low, high, names) in zip(schedule.split(), _SCHEDULE_FIELDS, strict=True)
    ]
    seconds, minutes, hours, days, months, weekdays = sets
    daily = sorted(h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds)
    longest = max((b - a for a, b in itertools.pairwise(daily)), default=0)
    start = datetime.date(2026, 1, 1)
    firing = [
        n
        for n in range(731)
        if (d := start + datetime.timedelta(days=n)).month in months and d.day in days and (d.isoweekday() % 7) in weekdays
    ]
    for a, b in itertools.pairwise(firing):
        longest = max(longest, (b - a) * 86400 + daily[0] - daily[-1])
    return float(longest or 86400 * 366)


def http_deadline_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``HTTP_DEADLINE_SECONDS`` (1-230, default 30); never raises: a malformed value is logged, the default used."""
    env = os.environ if environ is None else environ
    raw = env.get("HTTP_DEADLINE_SECONDS", "").strip()
    if not raw:
        return DEFAULT_HTTP_DEADLINE
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 1 <= value <= MAX_HTTP_DEADLINE:
        logger.error(
            "App setting HTTP_DEADLINE_SECONDS=%r must be a number of seconds from 1 to %.0f; using %.0f",
            raw[:32],
            MAX_HTTP_DEADLINE,
            DEFAULT_HTTP_DEADLINE,
        )
        return DEFAULT_HTTP_DEADLINE
    return value


def sync_deadline_seconds(host_json: Path | None = None) -> float | None:
    """The sync's deadline: host.json's ``functionTimeout`` less a margin; ``None`` when it is unbounded (-1).

    https://learn.microsoft.com/azure/azure-functions/functions-host-json#functiontimeout
    """
    import json

    path = host_json or Path(__file__).resolve().parent.parent / "host.json"
    try:
        raw = str(json.loads(path.read_text()).get("functionTimeout", "")).strip()
    except (OSError, ValueError, AttributeError):
        raw = ""
    if raw == "-1":
        return None
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?", raw)
    if match is None:
        if raw:
            logger.error("host.json functionTimeout %r is not [d.]hh:mm:ss; assuming %.0f s", raw[:32], DEFAULT_FUNCTION_TIMEOUT)
        timeout = DEFAULT_FUNCTION_TIMEOUT
    else:
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        timeout = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return max(timeout - SYNC_DEADLINE_MARGIN, timeout / 2)


# -- change notifications (graphusers/notifications.py; docs/sync.md) -----------------------------------------


@dataclass(frozen=True)
class NotificationSettings:
    """``NOTIFICATIONS_*``: on or off, the public base URL, and the clientState secrets' names."""

    enabled: bool
    public_url: str = ""  # https://<host>, without /api
    secret_name: str = "notifications-client-state"  # noqa: S105 - a name, not a secret
    previous_secret_name: str = ""

    def url(self, route: str, key: str) -> str:
        """The URL Graph calls for ``route``, with the function key when there is one."""
        base = f"{self.public_url.rstrip('/')}/api/{route}"
        return f"{base}?code={key}" if key else base


def load_notification_settings(environ: Mapping[str, str] | None = None) -> NotificationSettings:
    """The feature's settings; off unless ``NOTIFICATIONS_ENABLED`` is true. ``ConfigError`` names a bad one."""
    env = os.environ if environ is None else environ
    raw = env.get("NOTIFICATIONS_ENABLED", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return NotificationSettings(enabled=False)
    if raw not in ("1", "true", "yes", "on"):
        raise ConfigError("NOTIFICATIONS_ENABLED", f"must be true or false, got {raw!r}")
    public = env.get("NOTIFICATIONS_PUBLIC_URL", "").strip()
    if not public and env.get("WEBSITE_HOSTNAME", "").strip():
        # In Azure the app's own host name (App Service sets WEBSITE_HOSTNAME).
        public = f"https://{env['WEBSITE_HOSTNAME'].strip()}"
    if not public.startswith("https://") or any(c.isspace() for c in public) or "?" in public:
        # Graph delivers to HTTPS only. https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
        raise ConfigError("NOTIFICATIONS_PUBLIC_URL", "must be the app's public https:// base URL (no path after /api, no query)")
    name = env.get("NOTIFICATIONS_CLIENT_STATE_SECRET_NAME", "").strip() or "notifications-client-state"
    previous = env.get("NOTIFICATIONS_PREVIOUS_CLIENT_STATE_SECRET_NAME", "").strip()
    return NotificationSettings(enabled=True, public_url=public, secret_name=name, previous_secret_name=previous)


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the feature is on; never raises (a malformed value counts as off here, the triggers report it)."""
    try:
        return load_notification_settings(environ).enabled
    except ConfigError:
        return False


def misconfigured(environ: Mapping[str, str] | None = None) -> bool:
    """True when a ``NOTIFICATIONS_*`` setting is malformed (the feature then stays off, and import logs it)."""
    try:
        load_notification_settings(environ)
    except ConfigError:
        return True
    return False


def function_key(environ: Mapping[str, str] | None = None) -> str:
    """The function key Graph's calls carry (``NOTIFICATIONS_FUNCTION_KEY``, a Key Vault reference in Azure)."""
    env = os.environ if environ is None else environ
    return env.get("NOTIFICATIONS_FUNCTION_KEY", "").strip()


# Lifecycle events (reauthorizationRequired, subscriptionRemoved) wake the manager through this queue.
SUBSCRIPTION_QUEUE = "user-sync-subscription"
# The manager renews days before expiry; every 6 hours leaves many chances.
DEFAULT_MANAGER_SCHEDULE = "0 17 */6 * * *"


def subscription_schedule(environ: Mapping[str, str] | None = None) -> str:
    """``NOTIFICATIONS_MANAGER_SCHEDULE``, an NCRONTAB expression (read at import: it must not raise)."""
    env = os.environ if environ is None else environ
    value = env.get("NOTIFICATIONS_MANAGER_SCHEDULE", "").strip()
    if value and schedule_error(value) is None:
        return value
    if value:
        logger.error("NOTIFICATIONS_MANAGER_SCHEDULE %r is not an NCRONTAB expression; using %s", value, DEFAULT_MANAGER_SCHEDULE)
    return DEFAULT_MANAGER_SCHEDULE
