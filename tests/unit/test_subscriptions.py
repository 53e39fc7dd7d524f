"""The subscription manager over Graph's rules (tests/testkit/graph_subscriptions.py) and the in-memory container."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from testkit.fake_storage import FakeContainer
from testkit.graph_subscriptions import FakeSubscriptions
from testkit.sync_fakes import Clock

from graphusers import subscriptions
from graphusers.storage import SyncStore
from graphusers.subscriptions import Desired, SubscriptionError, SubscriptionManager

DESIRED = Desired(
    "https://app.example/api/notifications/users?code=key1",
    "https://app.example/api/notifications/lifecycle?code=key1",
    "client-state",
)
DAY = 86400.0


def setup() -> tuple[Clock, FakeSubscriptions, SyncStore, SubscriptionManager]:
    wall = Clock()
    graph = FakeSubscriptions(wall)
    store = SyncStore(FakeContainer())
    return wall, graph, store, SubscriptionManager(graph, store, DESIRED, wall=wall)


def stamp(wall: Clock, days: float) -> str:
    return (datetime.fromtimestamp(wall(), UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_missing_subscription_is_created_within_graphs_limits_and_asks_for_a_resync() -> None:
    """The first run creates one subscription (accepted by Graph's rules) and asks for a delta run."""
    _, graph, store, manager = setup()
    outcome = manager.run()
    assert (outcome.action, outcome.resync) == ("created", True)
    assert list(graph.subs) == [outcome.subscription_id]
    sub = graph.subs[outcome.subscription_id or ""]
    assert (sub["changeType"], sub["resource"], sub["clientState"]) == ("updated,deleted", "users", "client-state")
    assert subscriptions.subscription_ids(store) == {outcome.subscription_id}


def test_a_second_run_keeps_it_and_makes_no_graph_write() -> None:
    """Far from expiry, a run only lists."""
    _, graph, _, manager = setup()
    first = manager.run()
    graph.calls.clear()
    outcome = manager.run()
    assert (outcome.action, outcome.subscription_id, outcome.resync) == ("kept", first.subscription_id, False)
    assert graph.calls == [("list", "")]


def test_it_renews_well_before_expiry() -> None:
    """With less than RENEW_BEFORE left the run PATCHes a new expiry, and records when."""
    wall, graph, store, manager = setup()
    sid = manager.run().subscription_id or ""
    wall.now += 27 * DAY  # 29 days of life: two left
    outcome = manager.run()
    assert outcome.action == "renewed" and ("renew", sid) in graph.calls
    state, _ = store.read_json(subscriptions.STATE_BLOB)
    assert state is not None and state["lastRenewal"] == stamp(wall, 0)


def test_an_expired_subscription_is_recreated_and_resyncs() -> None:
    """Graph drops an expired subscription silently: the next run creates a new one and asks for a delta run."""
    wall, graph, _, manager = setup()
    old = manager.run().subscription_id
    wall.now += 30 * DAY  # past the expiry, no run in between
    outcome = manager.run()
    assert (outcome.action, outcome.resync) == ("created", True)
    assert outcome.subscription_id != old and list(graph.subs) == [outcome.subscription_id]


def test_a_duplicate_is_adopted_and_the_others_deleted() -> None:
    """Graph creates duplicates instead of a 409: the manager keeps one (the known one) and deletes the rest."""
    wall, graph, _store, manager = setup()
    known = manager.run().subscription_id or ""
    body = {
        "resource": "users",
        "changeType": "updated,deleted",
        "notificationUrl": "https://app.example/api/notifications/users?code=key2",  # the key rotated: same URL
        "lifecycleNotificationUrl": "https://app.example/api/notifications/lifecycle",
        "expirationDateTime": stamp(wall, 28),
        "clientState": "client-state",
    }
    duplicate = graph.create(body)["id"]
    other_app = graph.create({**body, "notificationUrl": "https://other.example/hook"})["id"]
    outcome = manager.run()
    assert (outcome.subscription_id, outcome.deleted) == (known, 1)
    assert set(graph.subs) == {known, other_app} and duplicate not in graph.subs


def test_with_no_state_a_found_subscription_is_adopted_not_recreated() -> None:
    """subscription.json lost: the app's subscription found by its URLs is adopted; none is created."""
    _wall, graph, store, manager = setup()
    sid = manager.run().subscription_id
    store.delete(subscriptions.STATE_BLOB)
    graph.calls.clear()
    outcome = manager.run()
    assert (outcome.action, outcome.subscription_id, outcome.resync) == ("adopted", sid, False)
    assert ("create", "") not in graph.calls


def test_reauthorization_required_reauthorizes_and_renews() -> None:
    """A reauthorizationRequired event (recorded by the lifecycle trigger) makes the next run reauthorize and renew."""
    _, graph, store, manager = setup()
    sid = manager.run().subscription_id or ""
    subscriptions.mark_reauthorize(store, sid, "reauthorizationRequired")
    outcome = manager.run()
    assert outcome.action == "reauthorized"
    assert ("reauthorize", sid) in graph.calls and ("renew", sid) in graph.calls
    state, _ = store.read_json(subscriptions.STATE_BLOB)
    assert state is not None and "reauthorize" not in state
    assert state["lastLifecycle"]["event"] == "reauthorizationRequired"


def test_subscription_removed_is_created_again() -> None:
    """subscriptionRemoved: the subscription is gone at Graph, and the next run creates a new one."""
    _, graph, store, manager = setup()
    sid = manager.run().subscription_id or ""
    del graph.subs[sid]
    subscriptions.mark_reauthorize(store, sid, "subscriptionRemoved")
    outcome = manager.run()
    assert (outcome.action, outcome.resync) == ("created", True) and outcome.subscription_id != sid


def test_a_refusal_is_recorded_for_the_status() -> None:
    """Graph's refusal (here the quota's 403) is in subscription.json's error and in the status view."""
    wall, _, store, _ = setup()
    full = FakeSubscriptions(wall, quota=0)
    outcome = SubscriptionManager(full, store, DESIRED, wall=wall).run()
    assert outcome.action == "failed"
    shown = subscriptions.status(store)
    assert shown is not None and shown["error"]["status"] == 403 and shown["id"] is None


@pytest.mark.parametrize(
    "desired",
    [
        Desired("http://app.example/n", "https://app.example/l", "s"),
        Desired("https://app.example/n", "https://app.example/l", "s" * 129),
    ],
)
def test_graphs_rules_refuse_what_the_manager_must_never_send(desired: Desired) -> None:
    """The fake follows Graph: HTTP URLs and over-long clientState are 400 (the settings refuse them first)."""
    wall, graph, store, _ = setup()
    assert SubscriptionManager(graph, store, desired, wall=wall).run().action == "failed"
    with pytest.raises(SubscriptionError):
        graph.create({"resource": "users", "changeType": "created,updated"})
