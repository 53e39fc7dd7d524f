"""An in-memory ``/v1.0/subscriptions`` for the subscription manager's tests, with Graph's documented rules for users.

- changeType for users: ``updated`` and ``deleted`` only (``created`` is refused);
  at most 41,760 minutes ahead; clientState at most 128 characters; HTTPS URLs
  (https://learn.microsoft.com/graph/api/resources/subscription#properties,
  https://learn.microsoft.com/graph/change-notifications-delivery-webhooks);
- a duplicate (same resource, changeType and URLs) is created with its own id, not refused
  with 409: users report Graph no longer enforces it, and the manager must not rely on it;
- at most ``quota`` (100 for users per app and tenant) subscriptions, then 403;
- an expired subscription disappears without a word (users get no ``subscriptionRemoved``);
- PATCH, DELETE and reauthorize of an unknown id: 404.

Graph's error codes for these refusals are not documented; the fake uses ``InvalidRequest``
for 400 and ``ExtensionError`` for 403, and the manager relies on the statuses only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from graphusers.subscriptions import SubscriptionError

MAX_MINUTES = 41_760
_ids = itertools.count(1)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FakeSubscriptions:
    """Subscriptions of one app in one tenant; ``wall`` is the clock."""

    def __init__(self, wall: Callable[[], float], *, quota: int = 100) -> None:
        self.wall, self.quota = wall, quota
        self.subs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def _expire(self) -> None:
        for sid in [sid for sid, s in self.subs.items() if _parse(s["expirationDateTime"]) <= self._now()]:
            del self.subs[sid]  # silent expiry

    def _check_expiry(self, text: object) -> str:
        if not isinstance(text, str):
            raise SubscriptionError(400, "InvalidRequest", "expirationDateTime is required")
        moment = _parse(text)
        if moment <= self._now() or moment > self._now() + timedelta(minutes=MAX_MINUTES):
            raise SubscriptionError(400, "InvalidRequest", "expirationDateTime is out of range")
        return text

    def list(self) -> list[dict[str, Any]]:
        self.calls.append(("list", ""))
        self._expire()
        # Graph lists clientState as null: the manager cannot compare it.
        return [{**s, "clientState": None} for s in self.subs.values()]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", ""))
        self._expire()
        if body.get("resource") != "users":
            raise SubscriptionError(400, "InvalidRequest", "unsupported resource")
        kinds = set(str(body.get("changeType", "")).split(","))
        if not kinds or not kinds <= {"updated", "deleted"}:
            raise SubscriptionError(400, "InvalidRequest", "users support updated and deleted only")
        for url in ("notificationUrl", "lifecycleNotificationUrl"):
            if not str(body.get(url, "")).startswith("https://"):
                raise SubscriptionError(400, "InvalidRequest", f"{url} must be HTTPS")
        if len(str(body.get("clientState") or "")) > 128:
            raise SubscriptionError(400, "InvalidRequest", "clientState is longer than 128 characters")
        self._check_expiry(body.get("expirationDateTime"))
        if len(self.subs) >= self.quota:
            raise SubscriptionError(403, "ExtensionError", "subscription quota reached")
        sid = f"00000000-0000-4000-8000-{next(_ids):012d}"
        self.subs[sid] = {**body, "id": sid}
        return {**self.subs[sid]}

    def _get(self, sid: str) -> dict[str, Any]:
        self._expire()
        if sid not in self.subs:
            raise SubscriptionError(404, "ResourceNotFound", "no such subscription")
        return self.subs[sid]

    def renew(self, subscription_id: str, expiration: str) -> dict[str, Any]:
        self.calls.append(("renew", subscription_id))
        sub = self._get(subscription_id)
        sub["expirationDateTime"] = self._check_expiry(expiration)
        return {**sub}

    def reauthorize(self, subscription_id: str) -> None:
        self.calls.append(("reauthorize", subscription_id))
        self._get(subscription_id)

    def delete(self, subscription_id: str) -> None:
        self.calls.append(("delete", subscription_id))
        self._get(subscription_id)
        del self.subs[subscription_id]
