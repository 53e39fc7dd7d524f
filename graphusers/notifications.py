"""Change notifications from Graph: the validation handshake, the batch check, and the one pending run they make.

Graph POSTs a batch ``{"value": [...]}`` to the notification URL and lifecycle events
to the lifecycle URL. Nothing here calls Graph or reads the snapshot: a notification
only says "something changed", and the existing incremental sync (the delta query)
finds out what. Any number of notifications therefore become one pending request,
``requests/notify.json``, created with If-None-Match; the sync run that holds the lock
claims it (``sync.requests.claim`` renames it, so the next notification creates a new
one while that run is under way, and that run serves it in its follow-up round).

Authenticity, in two layers:

- the function key in the URL (``?code=``) keeps anyone who does not know the URL from
  reaching the function at all (the host answers 401 before any of this code runs);
- the ``clientState`` secret (Key Vault, compared in constant time against the current
  and the previous value) proves a notification came from a subscription this app made:
  users have no rich notifications, so no signed token comes with them
  (https://learn.microsoft.com/graph/change-notifications-with-resource-data);
- the ``subscriptionId`` must be this app's subscription, so a notification for a
  subscription the app deleted or never adopted is dropped.

Items that fail a check are dropped and counted, and the batch is still answered 202:
Graph retries anything but a 2xx for up to 4 hours, and marks an endpoint that answers
slowly as "slow" and then "drop"
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#http-codes-and-retry-logic).
The exceptions, answered 503: a batch with valid items that the app could not record at
all (Blob Storage down), and a batch the app could not check (Key Vault or the
subscription state unreadable). Graph's retry is then the only record of the change that
gets the sync to run before the next timer. A body that holds no object is dropped before
anything is read.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import untrusted

# The feature's settings live with the app's others; the triggers use them through this module.
from .config import SUBSCRIPTION_QUEUE as SUBSCRIPTION_QUEUE
from .config import NotificationSettings as NotificationSettings
from .config import enabled as enabled
from .config import function_key as function_key
from .config import load_notification_settings as load_notification_settings
from .config import misconfigured as misconfigured
from .config import subscription_schedule as subscription_schedule
from .errors import ConfigError
from .service import Lazy

logger = logging.getLogger(__name__)

NOTIFICATION_ROUTE = "notifications/users"
LIFECYCLE_ROUTE = "notifications/lifecycle"
# Graph batches notifications; a body this large is far beyond any batch of users notifications.
MAX_BATCH_BYTES = 1024 * 1024
MAX_DEPTH = 6  # {"value": [{"resourceData": {...}}]} and a little room
# The validation token is Graph's short opaque text; anything longer is not Graph's.
MAX_TOKEN_CHARS = 1024
# Documented maximum for clientState. https://learn.microsoft.com/graph/api/resources/subscription#properties
MAX_CLIENT_STATE = 128
# A pending flag this old whose wake-up never made a run (the queue send was lost): wake again.
STALE_FLAG_SECONDS = 120.0
# Key Vault is read at most this often per process for the clientState secrets.
SECRET_TTL_SECONDS = 300.0
LAST_NOTIFICATION_BLOB = "notifications/last.json"


# -- settings (in config.py, with the app's other settings) --------------------------------------------------

# -- the handshake -------------------------------------------------------------------------------------------


def validation_token(params: Mapping[str, str]) -> str | None:
    """The ``validationToken`` of a validation request (already URL-decoded by the host), or ``None``.

    Graph expects it back within 10 seconds, as 200 text/plain, decoded: nothing here does I/O.
    https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation
    """
    token = params.get("validationToken")
    if token is None:
        return None
    return token[:MAX_TOKEN_CHARS]


# -- the batch -----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """What one POST carried: the items that passed every check, and the count dropped per reason."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _state_matches(value: object, secrets: Sequence[bytes]) -> bool:
    if not isinstance(value, str) or not value or len(value) > MAX_CLIENT_STATE:
        return False
    given = value.encode("utf-8", "surrogatepass")
    matched = False
    for secret in secrets:
        # Every secret is compared (no early exit), each in constant time.
        matched |= hmac.compare_digest(given, secret)
    return matched


def parse_batch(body: bytes) -> list[Any] | None:
    """The items of a batch, or ``None`` for a body that is not ``{"value": [...]}`` within the bounds."""
    try:
        document = untrusted.loads(body, max_bytes=MAX_BATCH_BYTES, max_depth=MAX_DEPTH)
    except untrusted.UntrustedJSONError:
        return None
    items = document.get("value") if isinstance(document, dict) else None
    return items if isinstance(items, list) else None


def check_items(items: list[Any], secrets: Sequence[str], subscription_ids: Collection[str], *, lifecycle: bool = False) -> Batch:
    """Every item checked: a dict, this app's clientState and subscription; the rest dropped and counted."""
    batch = Batch()
    encoded = [s.encode("utf-8") for s in secrets if s]
    for item in items:
        if not isinstance(item, dict):
            batch.drop("malformed")
        elif not _state_matches(item.get("clientState"), encoded):
            batch.drop("clientState")
        elif item.get("subscriptionId") not in subscription_ids:
            batch.drop("subscriptionId")
        elif lifecycle and not isinstance(item.get("lifecycleEvent"), str):
            batch.drop("malformed")
        else:
            batch.accepted.append(item)
    return batch


def check_batch(body: bytes, secrets: Sequence[str], subscription_ids: Collection[str], *, lifecycle: bool = False) -> Batch:
    """``parse_batch`` then ``check_items``; a malformed body is one dropped ``malformed``."""
    items = parse_batch(body)
    if items is None:
        batch = Batch()
        batch.drop("malformed")
        return batch
    return check_items(items, secrets, subscription_ids, lifecycle=lifecycle)


# -- the secrets ---------------------------------------------------------------------------------------------


class ClientStateSecrets:
    """The current and previous clientState from Key Vault, read at most every ``ttl`` seconds."""

    def __init__(
        self,
        read: Callable[[str], str],
        settings: NotificationSettings,
        *,
        ttl: float = SECRET_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self._settings, self._ttl, self._clock = read, settings, ttl, clock
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self._until = -1.0

    def current(self) -> str:
        """The value new subscriptions carry."""
        return self.values()[0]

    def values(self) -> tuple[str, ...]:
        """Current first, then the previous one if configured and readable."""
        with self._lock:
            if self._values and self._clock() < self._until:
                return self._values
            current = self._read(self._settings.secret_name)
            if len(current) > MAX_CLIENT_STATE:
                raise ConfigError(
                    "NOTIFICATIONS_CLIENT_STATE_SECRET_NAME",
                    f"names a secret longer than Graph's {MAX_CLIENT_STATE}-character clientState limit",
                )
            values = [current]
            if self._settings.previous_secret_name:
                try:
                    values.append(self._read(self._settings.previous_secret_name))
                except Exception as exc:  # noqa: BLE001 - the previous value is optional after a rotation
                    logger.warning(
                        "Could not read the previous clientState secret (%s); only the current one is accepted",
                        type(exc).__name__,
                    )
            self._values, self._until = tuple(values), self._clock() + self._ttl
            return self._values


# -- coalescing ----------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_run(store: Any, *, source: str = "notification", wall: Callable[[], float] = time.time) -> bool:
    """Make sure one incremental run is pending; True when the caller should send the wake-up message.

    The flag is created with If-None-Match: of any number of concurrent callers, one creates it
    and wakes the sync; the others find it and send nothing. A flag older than
    ``STALE_FLAG_SECONDS`` means its wake-up was lost (or the run has not come): wake again.
    """
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    from .sync.requests import FLAG_ID, SyncRequest, flag_name, record_new

    request = SyncRequest(
        FLAG_ID, "incremental", datetime.fromtimestamp(wall(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), source=source
    )
    try:
        record_new(store, request)
        return True
    except (ResourceExistsError, ResourceModifiedError):
        pass
    body, _ = store.read_json(flag_name())
    if body is None:
        return True  # claimed between our write and this read: a run is serving it; one more costs little
    try:
        requested = datetime.strptime(str(body.get("requested")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return True
    return wall() - requested > STALE_FLAG_SECONDS


def note_received(store: Any, accepted: int, dropped: Mapping[str, int]) -> None:
    """Record when the last notification came (``GET /api/sync/status`` shows it); best effort."""
    try:
        store.write_lines(LAST_NOTIFICATION_BLOB, [_json({"received": _now(), "accepted": accepted, "dropped": dict(dropped)})])
    except Exception as exc:  # noqa: BLE001 - only the status reads it
        logger.warning("Could not record the last notification (%s)", type(exc).__name__)


def _json(body: Mapping[str, Any]) -> str:
    import json

    return json.dumps(body, separators=(",", ":"))


def wake_message(source: str = "notification") -> str:
    """The sync queue message that wakes a run for the pending flag (it carries no request of its own)."""
    return _json({"mode": "incremental", "source": source})


def is_wake_message(body: bytes) -> bool:
    """True for a message ``wake_message`` made: the queue trigger runs without recording a request."""
    try:
        message = untrusted.loads(body, max_bytes=untrusted.MAX_QUEUE_MESSAGE)
    except untrusted.UntrustedJSONError:
        return False
    return isinstance(message, dict) and message.get("source") in ("notification", "subscription") and "requestId" not in message


# -- the HTTP side -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the trigger answers: a status, a text/plain body for the handshake, and whether to wake the sync."""

    status: int
    text: str = ""
    wake: bool = False
    lifecycle_events: tuple[tuple[str, str], ...] = ()  # (event, subscription id) of accepted lifecycle items


def receive(
    body: bytes,
    *,
    secrets: Callable[[], Sequence[str]],
    subscription_ids: Callable[[], Collection[str]],
    store: Callable[[], Any],
    lifecycle: bool = False,
) -> Answer:
    """Check a batch and record what it asks for; the answer is 202 unless nothing could be recorded."""
    started = time.perf_counter()
    items = parse_batch(body)
    if items is None or not any(isinstance(item, dict) for item in items):
        # Nothing that could pass: dropped before any secret or storage is touched.
        logger.warning("Dropped a notification body that is not a batch of objects")
        return Answer(202)
    try:
        batch = check_items(items, secrets(), subscription_ids(), lifecycle=lifecycle)
    except Exception as exc:  # noqa: BLE001 - Key Vault or storage down: nothing can be checked, so nothing is trusted
        logger.error("Could not check a notification batch (%s); Graph retries it", type(exc).__name__)
        return Answer(503)
    if batch.dropped:
        # Counts only: a dropped item's fields are whatever the sender chose.
        logger.warning("Dropped %d notification(s): %s", sum(batch.dropped.values()), dict(sorted(batch.dropped.items())))
    if not batch.accepted:
        return Answer(202)
    events = tuple((str(item.get("lifecycleEvent")), str(item.get("subscriptionId"))) for item in batch.accepted if lifecycle)
    # A lifecycle batch asks for a run only for "missed"; the manager handles the others.
    needs_run = not lifecycle or any(event == "missed" for event, _ in events)
    wake = False
    try:
        target = store()
        if needs_run:
            wake = request_run(target)
        note_received(target, len(batch.accepted), batch.dropped)
    except Exception as exc:  # noqa: BLE001 - see the module docstring: the one non-2xx
        logger.error(
            "Could not record %d notification(s) (%s); answering 503 so Graph retries", len(batch.accepted), type(exc).__name__
        )
        return Answer(503)
    logger.info(
        "Notifications: %d accepted, %d dropped, run %s (%.0f ms)",
        len(batch.accepted),
        sum(batch.dropped.values()),
        "woken" if wake else "already pending" if needs_run else "not needed",
        (time.perf_counter() - started) * 1000,
    )
    return Answer(202, wake=wake, lifecycle_events=events)


# -- the process's wiring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """What the notification triggers and the manager use, built once per process on first use (no I/O)."""

    settings: NotificationSettings
    secrets: ClientStateSecrets


def _build_runtime() -> Runtime:
    from .config import load_settings
    from .credentials import KeyVault

    settings = load_notification_settings()
    app = load_settings()
    if not app.key_vault_url:
        raise ConfigError("KEY_VAULT_URL", "is needed for the clientState secret when NOTIFICATIONS_ENABLED is true")
    vault = KeyVault(app.key_vault_url, managed_identity_client_id=app.managed_identity_client_id)
    secrets = ClientStateSecrets(lambda name: vault.get(name, "NOTIFICATIONS_CLIENT_STATE_SECRET_NAME")[0], settings)
    return Runtime(settings, secrets)


_runtime: Lazy[Runtime] = Lazy(_build_runtime)
get_runtime: Callable[[], Runtime] = _runtime.get
set_runtime: Callable[[Runtime | None], None] = _runtime.set


def manage(store: Any, *, wall: Callable[[], float] = time.time) -> Any:
    """One subscription manager run with the process's services; its ``Outcome`` (``resync``: wake a sync)."""
    from .service import get_services
    from .subscriptions import Desired, GraphSubscriptions, SubscriptionManager

    runtime = get_runtime()
    services = get_services()
    key = function_key()
    desired = Desired(
        runtime.settings.url(NOTIFICATION_ROUTE, key), runtime.settings.url(LIFECYCLE_ROUTE, key), runtime.secrets.current()
    )
    api = GraphSubscriptions(services.settings.graph_endpoint, services.tokens)
    return SubscriptionManager(api, store, desired, wall=wall).run()
