"""Change notifications: the handshake, the checked batch, coalescing into the sync's pending requests, the switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from testkit.contract import recording
from testkit.fake_storage import FakeContainer
from testkit.sync_fakes import PagedGraph, make, user

from graphusers import notifications
from graphusers.notifications import NotificationSettings
from graphusers.service import set_store
from graphusers.storage import SyncStore
from graphusers.sync import requests

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-client-state"
OLD_SECRET = "old-client-state"
SUB = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
ON = {"NOTIFICATIONS_ENABLED": "true", "NOTIFICATIONS_PUBLIC_URL": "https://app.example"}


def item(sub: str = SUB, state: str = SECRET, **extra: Any) -> dict[str, Any]:
    return {
        "subscriptionId": sub,
        "clientState": state,
        "changeType": "updated",
        "resource": "Users/0000",
        "resourceData": {"id": "0000"},
        "tenantId": "t1",
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        **extra,
    }


def batch(*items: Any) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def store_with_subscription(container: FakeContainer) -> SyncStore:
    store = SyncStore(container, block_size=64)
    store.write_json("subscription.json", {"id": SUB, "expirationDateTime": "2030-01-01T00:00:00Z"}, None)
    return store


def receive(store: SyncStore, body: bytes, *, lifecycle: bool = False) -> notifications.Answer:
    return notifications.receive(
        body,
        secrets=lambda: (SECRET, OLD_SECRET),
        subscription_ids=lambda: frozenset({SUB}),
        store=lambda: store,
        lifecycle=lifecycle,
    )


class _Out:
    def __init__(self) -> None:
        self.values: list[str] = []

    def set(self, value: str) -> None:
        self.values.append(value)


class _Refusing:
    """A store or a runtime that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"touched {name}")


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Callable[..., Any]]]:
    """The notification functions as the host would index them with the feature on."""
    import function_app

    for key, value in ON.items():
        monkeypatch.setenv(key, value)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(function_app.notification_functions)
    yield recording(app)
    set_store(None)
    notifications.set_runtime(None)


def post(fn: Callable[..., Any], url: str, body: bytes = b"", params: dict[str, str] | None = None, *outs: _Out) -> Any:
    req = func.HttpRequest(method="POST", url=url, params=params or {}, body=body, headers={})
    return fn(req, *outs)


# -- the handshake ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "route", "outs"),
    [("change_notifications", "notifications/users", 1), ("lifecycle_notifications", "notifications/lifecycle", 2)],
)
def test_handshake_answers_the_decoded_token_as_text_without_any_io(
    on: dict[str, Callable[..., Any]], name: str, route: str, outs: int
) -> None:
    """Both URLs echo validationToken (as the host decoded it) as 200 text/plain, touching no store or secret."""
    set_store(_Refusing())  # type: ignore[arg-type]
    notifications.set_runtime(_Refusing())  # type: ignore[arg-type]
    token = "Validation: Testing client application reachability for subscription Request-Id: 1+2 &x"
    url = f"https://app.example/api/{route}?validationToken=Validation%3A%20Testing%201%2B2%20%26x"
    resp = post(on[name], url, b"", {"validationToken": token}, *[_Out() for _ in range(outs)])
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert resp.get_body().decode() == token


def test_handshake_imports_no_storage_key_vault_or_identity_sdk() -> None:
    """In a fresh interpreter the handshake leaves azure-storage-blob, Key Vault and azure-identity unimported."""
    probe = """
import sys, azure.functions as func
import function_app
app = func.FunctionApp()
app.register_functions(function_app.notification_functions)
fn = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}["change_notifications"]
class Out:
    def set(self, v): raise AssertionError("queued")
req = func.HttpRequest(method="POST", url="https://a/api/notifications/users", params={"validationToken": "t"}, body=b"")
resp = fn(req, Out())
heavy = [m for m in ("azure.storage.blob", "azure.keyvault.secrets", "azure.identity") if m in sys.modules]
print(resp.status_code, resp.get_body().decode(), heavy)
"""
    env = {**os.environ, **ON}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "200 t []"


# -- the batch -------------------------------------------------------------------------------------------------


def test_a_wrong_client_state_is_dropped_and_answered_202() -> None:
    """A notification with another clientState records nothing, and is still 202 (a 4xx/5xx would be retried)."""
    container = FakeContainer()
    store = store_with_subscription(container)
    answer = receive(store, batch(item(state="guess"), item(state=SECRET[:-1]), item(state="")))
    assert (answer.status, answer.wake) == (202, False)
    assert requests.flag_name() not in container.blobs


def test_the_previous_client_state_is_accepted_during_a_rotation() -> None:
    """After a rotation the old value still counts, so notifications of the old subscription are not lost."""
    store = store_with_subscription(FakeContainer())
    assert receive(store, batch(item(state=OLD_SECRET))).wake is True


def test_a_mixed_batch_is_handled_whole() -> None:
    """Every item is checked: valid ones (not only the first) count, others are dropped by reason."""
    store = store_with_subscription(FakeContainer())
    body = batch(item(sub="other-subscription"), "not an object", item(state="wrong"), item(), item(changeType="deleted"))
    checked = notifications.check_batch(body, (SECRET,), {SUB})
    assert len(checked.accepted) == 2
    assert checked.dropped == {"subscriptionId": 1, "malformed": 1, "clientState": 1}
    answer = receive(store, body)
    assert (answer.status, answer.wake) == (202, True)
    last = json.loads(store.read_lines(notifications.LAST_NOTIFICATION_BLOB)[-1])  # type: ignore[index]
    assert (last["accepted"], last["dropped"]) == (2, {"clientState": 1, "malformed": 1, "subscriptionId": 1})


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"{", b'{"value": {}}', b"[" * 100 + b"]" * 100, b'{"value": [' + b"1," * 600_000 + b"1]}"],
)
def test_malformed_or_oversized_bodies_are_dropped_not_errors(body: bytes) -> None:
    """Whatever the body, the answer is 202 and nothing is recorded."""
    container = FakeContainer()
    assert receive(store_with_subscription(container), body) == notifications.Answer(202)
    assert requests.flag_name() not in container.blobs


def test_valid_notifications_that_cannot_be_recorded_answer_503() -> None:
    """The one non-2xx: storage refused the flag, so Graph's retry is the only record of the change."""
    from azure.core.exceptions import ServiceRequestError

    container = FakeContainer()
    store = store_with_subscription(container)
    container.failures[("write", requests.flag_name())] = ServiceRequestError("storage down")
    assert receive(store, batch(item())).status == 503


# -- coalescing --------------------------------------------------------------------------------------------------


def _synced() -> tuple[PagedGraph, FakeContainer, Any]:
    graph = PagedGraph([[user("a"), user("b")]])
    container = FakeContainer()
    sync = make(graph, container)
    assert sync.run().mode == "full"
    store_with_subscription(container)
    return graph, container, sync


def _incremental_runs(graph: PagedGraph) -> int:
    return sum("$deltatoken" in link for link in graph.fetched)


def test_a_thousand_notifications_make_one_run() -> None:
    """1,000 notifications (one per batch) wake the sync once; the run serves them all and leaves none pending."""
    graph, container, sync = _synced()
    store = SyncStore(container, block_size=64)
    wakes = sum(receive(store, batch(item())).wake for _ in range(1000))
    assert wakes == 1
    assert sync.run().status == "succeeded"  # the one queue message's run
    assert _incremental_runs(graph) == 1
    assert requests.pending(store) == []
    assert requests.flag_name() not in container.blobs


def test_a_notification_during_a_run_makes_exactly_one_more() -> None:
    """Notifications that come while a run is under way make one follow-up round, however many they are."""
    graph, container, sync = _synced()
    store = SyncStore(container, block_size=64)
    assert receive(store, batch(item())).wake is True
    during: list[bool] = []

    def hook(operation: str, name: str) -> None:
        # Once the first round has claimed the flag: three more notifications arrive.
        if operation == "write" and name == "state.json" and not during:
            during.extend(receive(store, batch(item())).wake for _ in range(3))

    container.hook = hook
    assert sync.run().status == "succeeded"
    container.hook = None
    assert during == [True, False, False]  # one new flag, then coalesced
    assert _incremental_runs(graph) == 2
    assert requests.pending(store) == []


def test_a_run_that_failed_keeps_the_notification_pending() -> None:
    """The claimed flag goes back to pending when the run fails: the next run serves it."""
    from graphusers.errors import UnavailableError

    graph, container, sync = _synced()
    store = SyncStore(container, block_size=64)
    receive(store, batch(item()))
    link = "https://graph.example/v1.0/users/delta?$deltatoken=1"
    graph.changes[link] = UnavailableError("down", retry_after=1)
    with pytest.raises(UnavailableError):
        sync.run()
    del graph.changes[link]
    assert [r["source"] for r in requests.pending(store)] == ["notification"]
    assert sync.run().status == "succeeded"
    assert requests.pending(store) == []


def test_a_lost_wake_up_is_sent_again_once_the_flag_is_stale() -> None:
    """A flag older than STALE_FLAG_SECONDS with no run: the next notification wakes the sync again."""
    store = store_with_subscription(FakeContainer())
    now = [1_800_000_000.0]
    assert notifications.request_run(store, wall=lambda: now[0]) is True
    now[0] += 10
    assert notifications.request_run(store, wall=lambda: now[0]) is False
    now[0] += notifications.STALE_FLAG_SECONDS
    assert notifications.request_run(store, wall=lambda: now[0]) is True


def test_the_wake_message_runs_the_sync_without_a_request_of_its_own() -> None:
    """The queue trigger knows a wake-up; a POST /api/sync message is still a request."""
    assert notifications.is_wake_message(notifications.wake_message().encode())
    assert not notifications.is_wake_message(b'{"requestId": "abc", "mode": "incremental"}')
    assert not notifications.is_wake_message(b"[")


# -- lifecycle ----------------------------------------------------------------------------------------------------


def test_missed_asks_for_a_run_and_other_events_do_not() -> None:
    """A lifecycle ``missed`` makes the pending flag; ``reauthorizationRequired`` leaves that to the manager."""
    container = FakeContainer()
    store = store_with_subscription(container)
    reauth = receive(store, batch(item(lifecycleEvent="reauthorizationRequired")), lifecycle=True)
    assert (reauth.wake, reauth.lifecycle_events) == (False, (("reauthorizationRequired", SUB),))
    assert requests.flag_name() not in container.blobs
    missed = receive(store, batch(item(lifecycleEvent="missed")), lifecycle=True)
    assert missed.wake is True and requests.flag_name() in container.blobs


def test_lifecycle_trigger_marks_the_subscription_and_wakes_the_manager(
    on: dict[str, Callable[..., Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """reauthorizationRequired: subscription.json asks the manager to reauthorize, and the manager queue gets a message."""
    container = FakeContainer()
    store = store_with_subscription(container)
    set_store(store)
    runtime = notifications.Runtime(
        NotificationSettings(enabled=True, public_url="https://app.example"),
        notifications.ClientStateSecrets(lambda name: SECRET, NotificationSettings(enabled=True)),
    )
    notifications.set_runtime(runtime)
    wake, manage = _Out(), _Out()
    body = batch(item(lifecycleEvent="reauthorizationRequired"))
    resp = post(on["lifecycle_notifications"], "https://app.example/api/notifications/lifecycle", body, None, wake, manage)
    assert resp.status_code == 202
    assert (wake.values, len(manage.values)) == ([], 1)
    state, _ = store.read_json("subscription.json")
    assert state is not None and state["reauthorize"] is True


# -- off --------------------------------------------------------------------------------------------------------


def test_off_the_app_has_exactly_todays_functions_and_on_it_adds_four() -> None:
    """NOTIFICATIONS_ENABLED unset: the host indexes the same eight functions as before the feature."""
    probe = (
        "import json, function_app; print(json.dumps(sorted(f.get_function_name() for f in function_app.app.get_functions())))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATIONS_")}
    off = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout.splitlines()[-1]
    )
    on = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env={**env, **ON}, capture_output=True, text=True, timeout=60, check=True
        ).stdout.splitlines()[-1]
    )
    assert off == [
        "get_user",
        "health",
        "list_users",
        "openapi_document",
        "request_sync",
        "sync_status",
        "user_sync_queue",
        "user_sync_timer",
    ]
    assert sorted(set(on) - set(off)) == [
        "change_notifications",
        "lifecycle_notifications",
        "subscription_manager_queue",
        "subscription_manager_timer",
    ]


def test_off_the_status_reads_nothing_of_the_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the feature off the status has no subscription and reads neither of its blobs."""
    from graphusers.sync import read_status

    container = FakeContainer()
    store = store_with_subscription(container)
    _synced_store = make(PagedGraph([[user("a")]]), container)
    _synced_store.run()
    touched: list[str] = []
    container.hook = lambda operation, name: touched.append(name)
    monkeypatch.delenv("NOTIFICATIONS_ENABLED", raising=False)
    body = read_status(store)
    assert body is not None and "subscription" not in body
    assert "subscription.json" not in touched and notifications.LAST_NOTIFICATION_BLOB not in touched
    monkeypatch.setenv("NOTIFICATIONS_ENABLED", "true")
    monkeypatch.setenv("NOTIFICATIONS_PUBLIC_URL", "https://app.example")
    shown = read_status(store)
    assert shown is not None and shown["subscription"]["id"] == SUB


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"NOTIFICATIONS_ENABLED": "maybe"}, "NOTIFICATIONS_ENABLED"),
        ({"NOTIFICATIONS_ENABLED": "true"}, "NOTIFICATIONS_PUBLIC_URL"),
        ({"NOTIFICATIONS_ENABLED": "true", "NOTIFICATIONS_PUBLIC_URL": "http://app.example"}, "NOTIFICATIONS_PUBLIC_URL"),
    ],
)
def test_settings_name_the_bad_one(env: dict[str, str], problem: str) -> None:
    """A malformed setting is a ConfigError naming it; in Azure WEBSITE_HOSTNAME gives the public URL."""
    from graphusers.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        notifications.load_notification_settings(env)
    assert caught.value.setting == problem
    azure = notifications.load_notification_settings(
        {"NOTIFICATIONS_ENABLED": "true", "WEBSITE_HOSTNAME": "app.azurewebsites.net"}
    )
    assert azure.url(notifications.NOTIFICATION_ROUTE, "k") == "https://app.azurewebsites.net/api/notifications/users?code=k"
