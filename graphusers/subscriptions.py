"""The subscription manager: keeps exactly one Graph subscription on ``users`` alive for this app.

Run by its own timer (and woken by lifecycle events). Each run:

1. lists the app's subscriptions and keeps those on ``users`` whose notification and
   lifecycle URLs are this app's (compared without the query, so a function key rotation
   or a key in the URL never makes a mismatch, and never reaches a log);
2. adopts one of them (the one ``subscription.json`` names, else the one that lasts
   longest) and deletes the others: Graph is documented to refuse a duplicate with 409,
   but users report it creates one, so the manager never relies on the 409;
3. creates the subscription when none is left, and then asks for a sync run, because
   changes made while there was no subscription sent no notification;
4. renews (PATCH ``expirationDateTime``) when less than ``RENEW_BEFORE`` is left, or when a
   ``reauthorizationRequired`` event asked for it (``POST .../reauthorize`` first);
   a 404 on either means the subscription is gone: it is created again.

Its state is ``subscription.json`` in the sync container, never memory:
``{"id", "expirationDateTime", "lastRenewal", "lastCreated", "reauthorize", "error"}``.
Graph's subscription rules: https://learn.microsoft.com/graph/api/subscription-post-subscriptions
and https://learn.microsoft.com/graph/api/resources/subscription (users: changeType
``updated,deleted``; at most 41,760 minutes; clientState at most 128 characters).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

STATE_BLOB = "subscription.json"
RESOURCE = "users"
CHANGE_TYPE = "updated,deleted"
# Graph's maximum for users (41,760 minutes, just under 29 days), less a margin for clock skew.
MAX_LIFETIME = timedelta(minutes=41_760)
LIFETIME = MAX_LIFETIME - timedelta(hours=1)
# Renew this long before expiry: the manager's timer runs every few hours, and a run may fail.
RENEW_BEFORE = timedelta(days=3)


# Subscription ids are GUIDs; anything else from a list is never put into a URL path.
_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")


class SubscriptionError(Exception):
    """Graph refused a subscription call: its HTTP status and error code (the message is Graph's, no secret)."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message


class SubscriptionApi(Protocol):
    """The Graph calls the manager makes; ``GraphSubscriptions`` is the real one, tests hand in a fake."""

    def list(self) -> list[dict[str, Any]]: ...

    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def renew(self, subscription_id: str, expiration: str) -> dict[str, Any]: ...

    def reauthorize(self, subscription_id: str) -> None: ...

    def delete(self, subscription_id: str) -> None: ...


@dataclass(frozen=True)
class Desired:
    """The subscription this app wants."""

    notification_url: str
    lifecycle_url: str
    client_state: str

    def matches(self, subscription: dict[str, Any]) -> bool:
        """True for a subscription on users delivering to this app's two URLs."""
        return (
            subscription.get("resource") in (RESOURCE, f"/{RESOURCE}")
            and _base(subscription.get("notificationUrl")) == _base(self.notification_url)
            and _base(subscription.get("lifecycleNotificationUrl")) == _base(self.lifecycle_url)
        )


def _base(url: object) -> str:
    if not isinstance(url, str):
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Outcome:
    """What one manager run did; ``resync`` asks the caller to wake a sync run."""

    action: str  # adopted, renewed, reauthorized, created, kept, failed
    subscription_id: str | None
    deleted: int = 0
    resync: bool = False


class SubscriptionManager:
    """One run over a Graph seam and the sync store; ``wall`` is the clock seam."""

    def __init__(self, api: SubscriptionApi, store: Any, desired: Desired, *, wall: Callable[[], float] = time.time) -> None:
        self.api, self.store, self.desired, self.wall = api, store, desired, wall

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def run(self) -> Outcome:
        """Find, adopt, clean up, create or renew; records the result (and any error) in subscription.json."""
        state, etag = self.store.read_json(STATE_BLOB)
        state = dict(state or {})
        try:
            outcome = self._run(state)
        except SubscriptionError as exc:
            state["error"] = {"status": exc.status, "code": exc.code, "at": _stamp(self._now())}
            logger.error("Subscription manager: Graph answered %s %s", exc.status, exc.code)
            self._save(state, etag)
            return Outcome("failed", state.get("id"))
        except Exception as exc:
            # Token, network, deadline: recorded for the status, and raised for the host's log.
            state["error"] = {"status": 0, "code": type(exc).__name__, "at": _stamp(self._now())}
            self._save(state, etag)
            raise
        state.pop("error", None)
        self._save(state, etag)
        return outcome

    def _run(self, state: dict[str, Any]) -> Outcome:
        mine = [s for s in self.api.list() if self.desired.matches(s) and _ID.match(str(s.get("id")))]
        known = state.get("id")
        mine.sort(key=lambda s: (s.get("id") != known, -(_parse(s.get("expirationDateTime")) or self._now()).timestamp()))
        keep = mine[0] if mine else None
        deleted = 0
        for duplicate in mine[1:]:
            try:
                self.api.delete(str(duplicate.get("id")))
                deleted += 1
            except SubscriptionError as exc:
                if exc.status != 404:
                    raise
        if deleted:
            logger.warning("Subscription manager deleted %d duplicate subscription(s)", deleted)
        if keep is None:
            return self._create(state, deleted, reason="missing" if known is None else "gone")
        action = "adopted" if keep.get("id") != known else "kept"
        state["id"], state["expirationDateTime"] = keep.get("id"), keep.get("expirationDateTime")
        expiry = _parse(keep.get("expirationDateTime"))
        due = expiry is None or expiry - self._now() < RENEW_BEFORE
        try:
            if state.get("reauthorize"):
                self.api.reauthorize(str(keep["id"]))
                action = "reauthorized"
                due = True  # a reauthorization is answered with a renewal too (either is documented to satisfy it)
            if due:
                renewed = self.api.renew(str(keep["id"]), _stamp(self._now() + LIFETIME))
                state["expirationDateTime"] = renewed.get("expirationDateTime")
                state["lastRenewal"] = _stamp(self._now())
                action = "renewed" if action != "reauthorized" else action
        except SubscriptionError as exc:
            if exc.status != 404:
                raise
            logger.warning("Subscription %s is gone (404); creating it again", keep.get("id"))
            return self._create(state, deleted, reason="gone")
        state.pop("reauthorize", None)
        logger.info("Subscription manager: %s subscription %s (expires %s)", action, state["id"], state["expirationDateTime"])
        return Outcome(action, str(state["id"]), deleted)

    def _create(self, state: dict[str, Any], deleted: int, *, reason: str) -> Outcome:
        body = {
            "changeType": CHANGE_TYPE,
            "notificationUrl": self.desired.notification_url,
            "lifecycleNotificationUrl": self.desired.lifecycle_url,
            "resource": RESOURCE,
            "expirationDateTime": _stamp(self._now() + LIFETIME),
            "clientState": self.desired.client_state,
        }
        created = self.api.create(body)
        if not _ID.match(str(created.get("id"))):
            raise SubscriptionError(502, "unusableSubscriptionId", "Graph's answer to the create had no usable id")
        now = _stamp(self._now())
        state.update(id=created.get("id"), expirationDateTime=created.get("expirationDateTime"), lastCreated=now)
        state["lastRenewal"] = now
        state.pop("reauthorize", None)
        logger.info("Subscription manager created subscription %s (%s)", state["id"], reason)
        # Changes made while no subscription existed sent nothing: the caller wakes a delta run.
        return Outcome("created", str(state["id"]), deleted, resync=True)

    def _save(self, state: dict[str, Any], etag: str | None) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        try:
            self.store.write_json(STATE_BLOB, state, etag, run_id="subscription")
        except (ResourceExistsError, ResourceModifiedError):
            # A lifecycle event wrote it meanwhile: its flag stays, and the next run acts on it.
            logger.warning("subscription.json changed during the manager's run; the next run reads it again")


def mark_reauthorize(store: Any, subscription_id: str, event: str, *, attempts: int = 3) -> None:
    """Record a lifecycle event for the manager (``reauthorize`` flag, or a removed subscription)."""
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    for _ in range(attempts):
        state, etag = store.read_json(STATE_BLOB)
        state = dict(state or {})
        if state.get("id") not in (None, subscription_id):
            return  # an event for a subscription this app no longer uses
        if event == "subscriptionRemoved":
            state.pop("id", None)
            state.pop("expirationDateTime", None)
        else:
            state["reauthorize"] = True
        state["lastLifecycle"] = {"event": event, "at": _stamp(datetime.now(UTC))}
        try:
            store.write_json(STATE_BLOB, state, etag, run_id="lifecycle")
            return
        except (ResourceExistsError, ResourceModifiedError):
            continue


def subscription_ids(store: Any) -> frozenset[str]:
    """The subscription id notifications must carry (none before the manager made one)."""
    state, _ = store.read_json(STATE_BLOB)
    sub = (state or {}).get("id")
    return frozenset({sub}) if isinstance(sub, str) and sub else frozenset()


def status(store: Any) -> dict[str, Any] | None:
    """What ``GET /api/sync/status`` shows under ``subscription``; ``None`` when the feature never ran."""
    state, _ = store.read_json(STATE_BLOB)
    last, _ = _read_last(store)
    if not state and not last:
        return None
    state = state or {}
    body: dict[str, Any] = {
        "id": state.get("id"),
        "expirationDateTime": state.get("expirationDateTime"),
        "lastRenewal": state.get("lastRenewal"),
        "lastNotification": (last or {}).get("received"),
        "error": state.get("error"),
    }
    if state.get("lastLifecycle"):
        body["lastLifecycle"] = state["lastLifecycle"]
    return body


def _read_last(store: Any) -> tuple[dict[str, Any] | None, None]:
    import json

    from .notifications import LAST_NOTIFICATION_BLOB

    lines = store.read_lines(LAST_NOTIFICATION_BLOB)
    if not lines:
        return None, None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None, None
    return (value if isinstance(value, dict) else None), None


class GraphSubscriptions:
    """``SubscriptionApi`` over Graph's ``/v1.0/subscriptions``, as the app (its token provider and a bounded session)."""

    def __init__(self, endpoint: str, tokens: Any, *, session: Any = None, timeout: tuple[float, float] = (5.0, 15.0)) -> None:
        from .transport import bounded_session

        # 15 s read: Graph validates the notification URL (10 s limit) before it answers a create.
        self.base = f"{endpoint.rstrip('/')}/v1.0/subscriptions"
        self.tokens, self.timeout = tokens, timeout
        self.session = session if session is not None else bounded_session(endpoint=endpoint)

    def _call(self, method: str, path: str = "", body: dict[str, Any] | None = None) -> dict[str, Any]:
        token = self.tokens.get_token()
        resp = self.session.request(
            method,
            self.base + path,
            json=body,
            timeout=self.timeout,
            allow_redirects=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        if resp.status_code >= 400:
            code, message = "", ""
            try:
                error = resp.json().get("error") or {}
                code, message = str(error.get("code") or ""), str(error.get("message") or "")
            except ValueError:
                pass
            raise SubscriptionError(resp.status_code, code or "-", message)
        if resp.status_code == 204 or not resp.content:
            return {}
        value = resp.json()
        return value if isinstance(value, dict) else {}

    def list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = self._call("GET")
        while True:
            items += [s for s in page.get("value") or [] if isinstance(s, dict)]
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not link.startswith(self.base):
                return items
            page = self._call("GET", link[len(self.base) :])

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "", body)

    def renew(self, subscription_id: str, expiration: str) -> dict[str, Any]:
        return self._call("PATCH", f"/{subscription_id}", {"expirationDateTime": expiration})

    def reauthorize(self, subscription_id: str) -> None:
        self._call("POST", f"/{subscription_id}/reauthorize")

    def delete(self, subscription_id: str) -> None:
        self._call("DELETE", f"/{subscription_id}")
