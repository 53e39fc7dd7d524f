"""The control API and the routing table, through the facade without a server: what tools change and read."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from emulator import control
from emulator.server import Emulator, Record, route
from emulator.wire import Reply, Request


@pytest.fixture(scope="module")
def _facade() -> Iterator[Emulator]:
    emu = Emulator(users=20, seed=4)
    emu.tenant.port = 8443
    yield emu
    emu.stop()  # removes its temporary state; it never served


@pytest.fixture
def emu(_facade: Emulator) -> Emulator:
    _facade.reset()
    return _facade


def _call(emu: Emulator, method: str, action: str, payload: dict[str, Any] | None = None) -> Any:
    status, body, _ = control.handle(emu, Request(method, f"/_emulator/{action}", {}, json.dumps(payload or {}).encode()))
    assert status == 200
    return body


@pytest.mark.parametrize(
    ("path", "headers", "service"),
    [
        ("/v1.0/users", {}, "graph"),
        ("/secrets/x/", {}, "keyvault-challenge"),
        ("/secrets/x/", {"Authorization": "Bearer t"}, "keyvault"),
        ("/msi/token", {}, "identity"),
        ("/_emulator/requests", {}, "control"),
        ("/t/oauth2/v2.0/token", {}, "token"),
        ("/t/v2.0/.well-known/openid-configuration", {}, "discovery"),
    ],
)
def test_routing_table(path: str, headers: dict[str, str], service: str) -> None:
    """Each path goes to its service; a vault request without a token counts as the challenge."""
    assert route(Request("GET", path, headers))[0] == service


def test_requests_and_clear_log(emu: Emulator) -> None:
    """requests counts per service without control calls; clear-log empties the log."""
    emu.log += [Record("graph", "GET", "/v1.0/users", 200), Record("control", "GET", "/_emulator/x", 200)]
    assert _call(emu, "GET", "requests") == {"graph": 1}
    _call(emu, "POST", "clear-log")
    assert emu.log == []


def test_settings_token_and_secret(emu: Emulator) -> None:
    """settings point at the tenant; token is a Graph token; client-secret and rotate-secret follow Entra."""
    assert _call(emu, "GET", "settings")["GRAPH_TENANT_ID"] == emu.tenant.tenant_id
    assert emu.tenant.verify_token(_call(emu, "GET", "token")["access_token"], emu.tenant.url)["roles"] == ["User.Read.All"]
    old = _call(emu, "GET", "client-secret")["client_secret"]
    _call(emu, "POST", "rotate-secret", {"expireOld": True})
    assert emu.tenant.client_secrets[old] is True
    assert _call(emu, "GET", "client-secret")["client_secret"] != old


def test_faults_and_latency(emu: Emulator) -> None:
    """faults queues a fault as given; latency sets a service's delay."""
    _call(emu, "POST", "faults", {"service": "graph", "status": 429, "count": 2})
    assert [(f.service, f.status, f.count) for f in emu.injector.faults] == [("graph", 429, 2)]
    assert _call(emu, "POST", "latency", {"graph": 0.25}) == {"graph": 0.25}


def test_users_change_and_digest(emu: Emulator) -> None:
    """users changes the directory as asked, and its GET digests the ids."""
    before = len(emu.tenant.directory.users)
    assert _call(emu, "POST", "users", {"remove": 2, "softRemove": 1, "add": 3}) == {"users": before}
    assert len(emu.tenant.directory.deleted) == 1
    ids = sorted(emu.tenant.directory.users)
    assert _call(emu, "GET", "users") == {"count": before, "idsSha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def test_delta_switches_and_reset(emu: Emulator) -> None:
    """delta sets each switch on the tenant; reset restores them."""
    payload = {
        "expiryStatus": 400,
        "expire": True,
        "minimal": True,
        "unify": True,
        "replay": True,
        "removedThenLive": 0.5,
        "outageFrom": 10,
        "stateError": "steady-state",
        "loseEdits": 3,
    }
    _call(emu, "POST", "delta", payload)
    t = emu.tenant
    switches = (t.delta_expiry_status, t.delta_minimal, t.delta_unify, t.delta_replay, t.delta_removed_then_live)
    assert switches == (400, True, True, True, 0.5)
    assert (t.delta_outage_from, t.delta_state_error, t.delta_lose_edits, t.directory.delta_epoch) == (10, "steady-state", 3, 1)
    _call(emu, "POST", "reset")
    assert (emu.tenant.delta_expiry_status, emu.tenant.delta_outage_from, emu.tenant.directory.delta_epoch) == (410, None, 0)


def test_facade_reads_and_writes_through_to_its_parts(emu: Emulator) -> None:
    """Tests and tools set switches on the facade; they land on the tenant and the injector."""
    emu.consented = False
    emu.latency = {"graph": 1.0}
    assert (emu.tenant.consented, emu.injector.latency) == (False, {"graph": 1.0})
    assert emu.delta_expiry_status == 410


def test_unknown_action_is_404(emu: Emulator) -> None:
    """An action the API does not know is 404."""
    with pytest.raises(Reply) as caught:
        control.handle(emu, Request("GET", "/_emulator/nothing"))
    assert caught.value.status == 404


def test_paging_shape_and_replay_switches(emu: Emulator) -> None:
    """/_emulator/paging, /shape and delta's replayOld set the tenant's switches, and reset restores them."""
    assert _call(emu, "POST", "paging", {"tokenLifetime": 2.5}) == {"tokenLifetime": 2.5}
    assert _call(emu, "POST", "shape", {"gzip": False}) == {"chunked": True, "gzip": False}
    _call(emu, "POST", "delta", {"replayOld": 0.25})
    assert (emu.page_token_lifetime, emu.graph_gzip, emu.delta_replay_old) == (2.5, False, 0.25)
    emu.reset()
    assert (emu.page_token_lifetime, emu.graph_gzip, emu.delta_replay_old) == (3600.0, True, 0.0)
