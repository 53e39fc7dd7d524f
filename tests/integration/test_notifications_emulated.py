"""Change notifications end to end over HTTPS: the emulator's /subscriptions, its validation POSTs and deliveries,
the app's subscription manager (the real Graph client code) and the app's batch check and coalescing."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests as http
from testkit.fake_storage import FakeContainer

from emulator import Emulator
from graphusers import notifications, subscriptions
from graphusers.storage import SyncStore
from graphusers.subscriptions import Desired, GraphSubscriptions, SubscriptionError, SubscriptionManager
from graphusers.sync import requests

SECRET = "client-state-of-the-test"


class Receiver:
    """The app's two URLs on a loopback HTTPS server with the emulator's certificate; answers as the app would."""

    def __init__(self, emu: Emulator, store: SyncStore) -> None:
        self.store = store
        self.validations: list[str] = []
        self.batches: list[bytes] = []
        self.fail_next = 0  # answer this many deliveries 503
        self.echo_wrong = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "validationToken" in query:
                    token = query["validationToken"][0]
                    receiver.validations.append(urlsplit(self.path).path)
                    self._answer(200, (token + "x" if receiver.echo_wrong else token).encode(), "text/plain")
                    return
                receiver.batches.append(body)
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self._answer(503, b"", "text/plain")
                    return
                answer = notifications.receive(
                    body,
                    secrets=lambda: (SECRET,),
                    subscription_ids=lambda: subscriptions.subscription_ids(receiver.store),
                    store=lambda: receiver.store,
                    lifecycle=self.path.startswith("/api/notifications/lifecycle"),
                )
                self._answer(answer.status, b"", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(emu.state_dir / "server.pem", emu.state_dir / "server.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}/api"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Tokens:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def get_token(self) -> str:
        resp = http.get(f"{self.emu.url}/_emulator/token", verify=str(self.emu.ca_path), timeout=10)
        return str(resp.json()["access_token"])


@pytest.fixture
def stack(emu: Emulator) -> Iterator[tuple[Emulator, Receiver, SubscriptionManager, GraphSubscriptions]]:
    store = SyncStore(FakeContainer())
    receiver = Receiver(emu, store)
    session = http.Session()
    session.verify = str(emu.ca_path)
    api = GraphSubscriptions(emu.url, Tokens(emu), session=session)
    desired = Desired(f"{receiver.base}/notifications/users?code=k", f"{receiver.base}/notifications/lifecycle?code=k", SECRET)
    yield emu, receiver, SubscriptionManager(api, store, desired), api
    emu.tenant.notifier.stop()
    receiver.stop()


def control(emu: Emulator, action: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = http.post(f"{emu.url}/_emulator/{action}", json=body, verify=str(emu.ca_path), timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_for(check: Any, timeout: float = 10.0) -> None:
    ends = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def test_the_manager_subscribes_after_both_urls_are_validated_and_changes_reach_the_flag(stack: Any) -> None:
    """Create validates both URLs; changes made through the control API arrive, pass the checks and make one flag."""
    emu, receiver, manager, _ = stack
    outcome = manager.run()
    assert outcome.action == "created" and outcome.resync is True
    assert sorted(receiver.validations) == ["/api/notifications/lifecycle", "/api/notifications/users"]
    control(emu, "users", {"update": 3, "remove": 1})
    wait_for(lambda: requests.flag_name() in receiver.store.container.blobs)
    wait_for(lambda: sum(b.count(b'"subscriptionId"') for b in receiver.batches) >= 4)
    assert len(receiver.batches) <= 2  # one control call's changes come batched
    kinds = b"".join(receiver.batches)
    assert b'"changeType":"deleted"' in kinds.replace(b" ", b"") and b'"changeType":"updated"' in kinds.replace(b" ", b"")


def test_a_non_2xx_answer_is_delivered_again(stack: Any) -> None:
    """The emulator retries a 503 on its short timeline, as Graph does for up to 4 hours."""
    emu, receiver, manager, _ = stack
    manager.run()
    control(emu, "notifications", {"retryDelays": [0.1, 0.1]})
    receiver.fail_next = 1
    control(emu, "users", {"update": 1})
    wait_for(lambda: [s for _, s in emu.tenant.notifier.deliveries] == [503, 202])


def test_duplicates_are_sent_and_coalesce(stack: Any) -> None:
    """With duplicates on, each change comes twice; the app still records one pending run."""
    emu, receiver, manager, _ = stack
    manager.run()
    control(emu, "notifications", {"duplicates": True})
    control(emu, "users", {"update": 2})
    wait_for(lambda: sum(b.count(b'"subscriptionId"') for b in receiver.batches) == 4)
    assert [n for n in receiver.store.list_names(requests.REQUESTS_PREFIX)] == [requests.flag_name()]


def test_silent_expiry_is_recreated_by_the_next_run(stack: Any) -> None:
    """An expired subscription vanishes from the list with no event; the manager creates a new one and resyncs."""
    emu, _, manager, _ = stack
    first = manager.run().subscription_id
    control(emu, "notifications", {"expire": True})
    outcome = manager.run()
    assert (outcome.action, outcome.resync) == ("created", True) and outcome.subscription_id != first


def test_a_duplicate_is_created_not_refused_and_the_manager_removes_it(stack: Any) -> None:
    """Graph creates a second identical subscription (no 409); the manager keeps its own and deletes the other."""
    _, _, manager, api = stack
    known = manager.run().subscription_id
    state, _ = manager.store.read_json(subscriptions.STATE_BLOB)
    body = {
        "resource": "users",
        "changeType": "updated,deleted",
        "notificationUrl": manager.desired.notification_url,
        "lifecycleNotificationUrl": manager.desired.lifecycle_url,
        "expirationDateTime": state["expirationDateTime"][:19] + "Z",
        "clientState": SECRET,
    }
    duplicate = api.create(body)["id"]
    assert duplicate != known
    outcome = manager.run()
    assert (outcome.subscription_id, outcome.deleted) == (known, 1)
    assert [s["id"] for s in api.list()] == [known]


def test_reauthorization_required_reaches_the_manager(stack: Any) -> None:
    """The lifecycle event passes the checks; the manager reauthorizes and renews on its next run."""
    emu, receiver, manager, _ = stack
    sid = manager.run().subscription_id
    control(emu, "notifications", {"lifecycle": "reauthorizationRequired"})
    wait_for(lambda: any(b"reauthorizationRequired" in b for b in receiver.batches))
    # The lifecycle trigger's own step (function_app.lifecycle_notifications) records it for the manager:
    subscriptions.mark_reauthorize(receiver.store, str(sid), "reauthorizationRequired")
    assert manager.run().action == "reauthorized"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"changeType": "created,updated"}, 400),
        ({"clientState": "x" * 129}, 400),
        ({"notificationUrl": "http://127.0.0.1:1/api/notifications/users"}, 400),
        ({"expirationDateTime": "2999-01-01T00:00:00Z"}, 400),
    ],
)
def test_graphs_rules_for_a_create(stack: Any, change: dict[str, Any], status: int) -> None:
    """The documented limits for users are refused as Graph refuses them."""
    _, _, manager, api = stack
    manager.run()
    state, _ = manager.store.read_json(subscriptions.STATE_BLOB)
    body = {
        "resource": "users",
        "changeType": "updated,deleted",
        "notificationUrl": manager.desired.notification_url,
        "lifecycleNotificationUrl": manager.desired.lifecycle_url,
        "expirationDateTime": state["expirationDateTime"][:19] + "Z",
        "clientState": SECRET,
        **change,
    }
    with pytest.raises(SubscriptionError) as caught:
        api.create(body)
    assert caught.value.status == status


def test_the_quota_and_a_failed_validation_are_refused(stack: Any) -> None:
    """Beyond the quota: 403; an endpoint that echoes the wrong token: 400 ValidationError."""
    emu, receiver, manager, _ = stack
    receiver.echo_wrong = True
    assert manager.run().action == "failed"
    state, _ = manager.store.read_json(subscriptions.STATE_BLOB)
    assert (state["error"]["status"], state["error"]["code"]) == (400, "ValidationError")
    receiver.echo_wrong = False
    control(emu, "notifications", {"quota": 0})
    assert manager.run().action == "failed"
    state, _ = manager.store.read_json(subscriptions.STATE_BLOB)
    assert state["error"]["status"] == 403


def test_the_process_wiring_subscribes_with_the_key_vault_client_state(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """notifications.manage as the triggers call it: settings, the clientState read from Key Vault, the function key."""
    emu, receiver, _, api = stack
    monkeypatch.setenv("NOTIFICATIONS_ENABLED", "true")
    monkeypatch.setenv("NOTIFICATIONS_PUBLIC_URL", receiver.base.removesuffix("/api"))
    monkeypatch.setenv("NOTIFICATIONS_FUNCTION_KEY", "the-key")
    notifications.set_runtime(None)
    try:
        outcome = notifications.manage(receiver.store)
    finally:
        notifications.set_runtime(None)
    assert outcome.action == "created"
    sub = emu.tenant.notifier.subscriptions[outcome.subscription_id]
    assert sub["notificationUrl"] == f"{receiver.base}/notifications/users?code=the-key"
    assert sub["lifecycleNotificationUrl"] == f"{receiver.base}/notifications/lifecycle?code=the-key"
    assert sub["clientState"] == emu.tenant.client_state
    assert [s["id"] for s in api.list()] == [outcome.subscription_id]
