"""Graph's change notifications on users: ``/v1.0/subscriptions`` and the deliveries to the app.

Rules, each as Microsoft documents it (or, where marked, as users report it):

- create: ``resource`` ``users``, ``changeType`` only ``updated`` and ``deleted`` (``created`` is
  400), ``expirationDateTime`` in the future and at most 41,760 minutes ahead, ``clientState`` at
  most 128 characters, HTTPS ``notificationUrl`` and ``lifecycleNotificationUrl``; 201 with the
  subscription (https://learn.microsoft.com/graph/api/subscription-post-subscriptions,
  https://learn.microsoft.com/graph/api/resources/subscription#properties);
- before the 201 both URLs are validated: a POST with ``?validationToken=`` that must answer
  200 text/plain with the decoded token within 10 seconds, else 400 ValidationError
  (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation);
- a second subscription with the same resource, changeType and URLs is created with its own id:
  the documented 409 is not enforced (as users report), so the emulator is no kinder than that;
- at most ``subscription_quota`` subscriptions (100 per app and tenant for users): then 403;
- PATCH renews (``expirationDateTime`` only, same limits; a renewal is validated again, as users
  report), DELETE answers 204, ``POST .../reauthorize`` answers 204; an unknown id is 404;
- expired subscriptions disappear without a word (no lifecycle event is documented for users
  but ``reauthorizationRequired``);
- every change in the directory is sent to each subscription, batched per URL (up to
  ``notify_batch`` items), with duplicates when ``notify_duplicates`` is set; a non-2xx answer
  or no answer within the limit is retried with backoff (Graph: up to 4 hours; here
  ``notify_retry_delays``, a shortened timeline)
  (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks#http-codes-and-retry-logic).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from .wire import Answer, Request, graph_headers, graph_reply

MAX_MINUTES = 41_760
MAX_CLIENT_STATE = 128
VALIDATION_TIMEOUT = 10.0
# Graph's retries last up to 4 hours; the emulator's are this short timeline (seconds between attempts).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Notifier:
    """The tenant's subscriptions and the thread that delivers their notifications."""

    def __init__(self, tenant_id: str, ca_path: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.lock = threading.RLock()
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.quota = 100
        self.batch = 100
        self.duplicates = False
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS
        self.validation_timeout = VALIDATION_TIMEOUT
        self.ca_path = ca_path
        self.deliveries: list[tuple[str, int]] = []  # (URL without query, status or 0), for tests
        self._pending: list[tuple[float, int, str, list[dict[str, Any]]]] = []  # (due, attempt, url, items)
        self._wake = threading.Condition(self.lock)
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- the HTTP client (HTTPS only, as Graph) ---------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_path:
            context.load_verify_locations(self.ca_path)
        return context

    def _post(self, url: str, body: bytes | None, timeout: float) -> tuple[int, bytes, str]:
        request = urllib.request.Request(url, data=body or b"", method="POST")
        request.add_header("Content-Type", "application/json" if body else "text/plain")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._context()) as resp:
                return resp.status, resp.read(4096), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            return exc.code, b"", ""
        except (OSError, ValueError):
            return 0, b"", ""

    def _validate(self, url: str) -> bool:
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        joiner = "&" if urllib.parse.urlsplit(url).query else "?"
        target = f"{url}{joiner}validationToken={urllib.parse.quote(token)}"
        started = time.monotonic()
        status, body, content_type = self._post(target, None, self.validation_timeout)
        in_time = time.monotonic() - started <= self.validation_timeout
        return in_time and status == 200 and content_type.startswith("text/plain") and body.decode(errors="replace") == token

    # -- /v1.0/subscriptions ----------------------------------------------------------------------------------

    def handle(self, req: Request, app_id: str) -> Answer:
        """One subscriptions call (the caller checked the token)."""
        rest = req.path[len("/v1.0/subscriptions") :].strip("/")
        parts = rest.split("/") if rest else []
        self._expire()
        if not parts and req.method == "GET":
            with self.lock:
                items = [{**s, "clientState": None} for s in self.subscriptions.values()]
            return (
                200,
                {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions", "value": items},
                graph_headers(req),
            )
        if not parts and req.method == "POST":
            return 201, self._create(req, app_id), graph_headers(req)
        sub_id = parts[0] if parts else ""
        with self.lock:
            sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise graph_reply(req, 404, "ResourceNotFound", f"The object was not found: {sub_id[:64]}")
        if len(parts) == 1 and req.method == "GET":
            return 200, {**sub, "clientState": None}, graph_headers(req)
        if len(parts) == 1 and req.method == "DELETE":
            with self.lock:
                self.subscriptions.pop(sub_id, None)
            return 204, b"", graph_headers(req)
        if len(parts) == 1 and req.method == "PATCH":
            body = self._body(req)
            expiry = self._expiry(req, body.get("expirationDateTime"))
            if not self._validate(sub["notificationUrl"]):
                raise graph_reply(req, 400, "ValidationError", "Subscription validation request failed.")
            with self.lock:
                sub["expirationDateTime"] = _stamp(expiry)
            return 200, {**sub, "clientState": None}, graph_headers(req)
        if parts[1:] == ["reauthorize"] and req.method == "POST":
            return 204, b"", graph_headers(req)
        raise graph_reply(req, 405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")

    def _body(self, req: Request) -> dict[str, Any]:
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            raise graph_reply(req, 400, "BadRequest", "Invalid JSON.") from None
        if not isinstance(body, dict):
            raise graph_reply(req, 400, "BadRequest", "Invalid JSON.")
        return body

    def _expiry(self, req: Request, text: object) -> datetime:
        moment = _parse(text)
        now = datetime.now(UTC)
        if moment is None or moment <= now or moment > now + timedelta(minutes=MAX_MINUTES):
            raise graph_reply(
                req,
                400,
                "ExtensionError",
                f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.",
            )
        return moment

    def _create(self, req: Request, app_id: str) -> dict[str, Any]:
        body = self._body(req)
        if str(body.get("resource", "")).strip("/").lower() != "users":
            raise graph_reply(req, 400, "InvalidRequest", "The emulator models subscriptions on users only.")
        kinds = [k.strip() for k in str(body.get("changeType", "")).split(",") if k.strip()]
        if not kinds or not set(kinds) <= {"updated", "deleted"}:
            raise graph_reply(req, 400, "ExtensionError", "The changeType for users must be updated, deleted or both.")
        urls = [body.get("notificationUrl"), body.get("lifecycleNotificationUrl")]
        if not all(isinstance(u, str) and u.lower().startswith("https://") for u in urls):
            raise graph_reply(req, 400, "InvalidRequest", "The notification URLs must be HTTPS.")
        state = body.get("clientState")
        if state is not None and (not isinstance(state, str) or len(state) > MAX_CLIENT_STATE):
            raise graph_reply(req, 400, "InvalidRequest", f"clientState must be at most {MAX_CLIENT_STATE} characters.")
        expiry = self._expiry(req, body.get("expirationDateTime"))
        with self.lock:
            if len(self.subscriptions) >= self.quota:
                raise graph_reply(req, 403, "ExtensionError", "Subscription quota for this app and resource reached.")
        for url in urls:
            if not self._validate(str(url)):
                raise graph_reply(
                    req,
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                    "validation request.",
                )
        sub_id = str(uuid.uuid4())
        sub: dict[str, Any] = {
            "id": sub_id,
            "resource": "users",
            "applicationId": app_id,
            "changeType": ",".join(kinds),
            "clientState": state,
            "notificationUrl": urls[0],
            "lifecycleNotificationUrl": urls[1],
            "expirationDateTime": _stamp(expiry),
            "latestSupportedTlsVersion": "v1_2",
            "includeResourceData": False,
        }
        with self.lock:
            self.subscriptions[sub_id] = sub
        return {**sub}

    def _expire(self) -> None:
        now = datetime.now(UTC)
        with self.lock:
            for sub_id in [k for k, s in self.subscriptions.items() if (_parse(s["expirationDateTime"]) or now) <= now]:
                del self.subscriptions[sub_id]  # silently, as Graph does for users

    # -- control -------------------------------------------------------------------------------------------

    def expire_all(self) -> None:
        """Let every subscription lapse now, with no lifecycle event."""
        with self.lock:
            for sub in self.subscriptions.values():
                sub["expirationDateTime"] = _stamp(datetime.now(UTC) - timedelta(seconds=1))

    def lifecycle(self, event: str) -> None:
        """Send ``event`` (reauthorizationRequired, subscriptionRemoved, missed) for every subscription."""
        with self.lock:
            for sub in list(self.subscriptions.values()):
                item = {
                    "subscriptionId": sub["id"],
                    "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "tenantId": self.tenant_id,
                    "clientState": sub["clientState"],
                    "lifecycleEvent": event,
                }
                self._queue(sub["lifecycleNotificationUrl"], [item])
                if event == "subscriptionRemoved":
                    del self.subscriptions[sub["id"]]

    # -- deliveries ----------------------------------------------------------------------------------------

    def changed(self, user_id: str, kind: str, props: dict[str, Any]) -> None:
        """A directory change: one notification per subscription whose changeType covers it."""
        # A soft deletion and a creation are "updated"; only a permanent deletion is "deleted".
        change = "deleted" if kind == "removed" and props.get("reason") == "deleted" else "updated"
        self._expire()
        with self.lock:
            for sub in self.subscriptions.values():
                if change not in sub["changeType"].split(","):
                    continue
                item = {
                    "subscriptionId": sub["id"],
                    "subscriptionExpirationDateTime": sub["expirationDateTime"],
                    "changeType": change,
                    "resource": f"Users/{user_id}",
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.User",
                        "@odata.id": f"Users/{user_id}",
                        "id": user_id,
                        "organizationId": self.tenant_id,
                    },
                    "clientState": sub["clientState"],
                    "tenantId": self.tenant_id,
                }
                self._queue(sub["notificationUrl"], [item] * (2 if self.duplicates else 1))

    def _queue(self, url: str, items: list[dict[str, Any]]) -> None:
        with self.lock:
            for pending in self._pending:
                if pending[2] == url and pending[1] == 0 and len(pending[3]) + len(items) <= self.batch:
                    pending[3].extend(items)
                    break
            else:
                # A short window gathers the changes of one control call into one batch.
                self._pending.append((time.monotonic() + 0.05, 0, url, list(items)))
            self._start()
            self._wake.notify()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopped = False
            self._thread = threading.Thread(target=self._deliver_loop, name="emulator-notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stopped = True
            self._pending.clear()
            self._wake.notify()

    def _deliver_loop(self) -> None:
        while True:
            with self.lock:
                while not self._stopped and (not self._pending or min(p[0] for p in self._pending) > time.monotonic()):
                    wait = min((p[0] for p in self._pending), default=time.monotonic() + 1) - time.monotonic()
                    self._wake.wait(max(0.01, min(wait, 1.0)))
                if self._stopped:
                    return
                due = min(self._pending, key=lambda p: p[0])
                self._pending.remove(due)
            _, attempt, url, items = due
            status = self._post(url, json.dumps({"value": items}).encode(), self.validation_timeout)[0]
            with self.lock:
                self.deliveries.append((url.split("?")[0], status))
                if not 200 <= status < 300 and attempt < len(self.retry_delays):
                    self._pending.append((time.monotonic() + self.retry_delays[attempt], attempt + 1, url, items))
