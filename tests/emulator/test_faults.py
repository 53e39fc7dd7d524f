"""Fault injection alone: matching and counting, chaos draws, replies in a service's place, and body faults."""

from __future__ import annotations

import io
import json
import socket
import threading

import pytest

from emulator import faults
from emulator.faults import Chaos, Fault, Injector
from emulator.wire import Reply, Request


def test_take_matches_service_path_and_count() -> None:
    """A fault applies to its service and path only, as many times as its count; None never runs out."""
    box = Injector(threading.RLock())
    box.faults += [Fault("graph", path=r"delta", count=2), Fault("keyvault", count=None)]
    assert box.take("graph", "/v1.0/users") is None
    assert [box.take("graph", "/v1.0/users/delta") is not None for _ in range(3)] == [True, True, False]
    assert all(box.take("keyvault", "/secrets/x") is not None for _ in range(5))


def test_latency_adds_to_a_delay_fault_but_not_to_trickle() -> None:
    """The hold-back is the service's latency plus a delay fault's; trickle spends its delay per byte instead."""
    box = Injector(threading.RLock())
    box.latency["graph"] = 0.5
    assert box.delay("graph", Fault("graph", kind="delay", delay=1.0)) == 1.5
    assert box.delay("graph", Fault("graph", kind="trickle", delay=1.0)) == 0.5
    assert box.delay("token", None) == 0.0


def test_chaos_is_seeded_and_counts_what_it_injects() -> None:
    """The same seed draws the same faults, and every kind it draws is counted."""
    draws = [[(f.kind, f.status) if f else None for f in (c.draw() for _ in range(200))] for c in (Chaos(3), Chaos(3))]
    assert draws[0] == draws[1]
    chaos = Chaos(3, rate=1.0)
    assert all(chaos.draw() is not None for _ in range(50))
    assert sum(chaos.injected.values()) == 50
    assert set(chaos.injected) <= set(Chaos.KINDS)


def _instead(fault: Fault, service: str) -> Reply:
    with pytest.raises(Reply) as caught:
        faults.answer_instead(fault, service, Request("GET", "/v1.0/users", {"client-request-id": "c1"}), "scope")
    return caught.value


def test_graph_throttling_carries_graph_headers() -> None:
    """A Graph 429 names the throttle scope and reason and keeps Graph's ids and the fault's Retry-After."""
    reply = _instead(Fault("graph", status=429, headers={"Retry-After": "2"}), "graph")
    assert reply.status == 429
    assert reply.headers["x-ms-throttle-scope"] == "scope"
    assert reply.headers["Retry-After"] == "2"
    assert reply.headers["client-request-id"] == "c1"
    assert reply.body["error"]["code"] == "TooManyRequests"


@pytest.mark.parametrize(
    ("service", "status", "expected"),
    [
        ("graph", 401, "InvalidAuthenticationToken"),
        ("graph", 503, "UnknownError"),
        ("keyvault", 404, "SecretNotFound"),
        ("keyvault-challenge", 500, "InternalServerError"),
        ("identity", 500, "EmulatedFault"),
    ],
)
def test_status_fault_bodies(service: str, status: int, expected: str) -> None:
    """A status fault without a body gets the service's own error shape."""
    reply = _instead(Fault(service, status=status), service)
    assert (reply.status, reply.body["error"]["code"]) == (status, expected)


def test_token_outage_body_and_own_body() -> None:
    """Entra's outage body is OAuth's; a fault's own body replaces the default."""
    assert _instead(Fault("token"), "token").body["error"] == "temporarily_unavailable"
    assert _instead(Fault("token", body={"x": 1}), "token").body == {"x": 1}


def test_malformed_and_html() -> None:
    """malformed is 200 with broken JSON; html is 200 with a proxy's page."""
    with pytest.raises(json.JSONDecodeError):
        json.loads(_instead(Fault("graph", kind="malformed"), "graph").body)
    html = _instead(Fault("keyvault", kind="html"), "keyvault")
    assert html.headers["Content-Type"].startswith("text/html")
    faults.answer_instead(Fault("graph", kind="delay"), "graph", Request("GET", "/"), "s")  # answers nothing itself


def test_page_edits() -> None:
    """no-value drops value; foreign-link swaps the deltaLink for a nextLink elsewhere; other services are untouched."""
    page = json.dumps({"value": [], "@odata.deltaLink": "here"}).encode()
    assert faults.edit_page(Fault("graph", kind="no-value"), "graph", page) == {"@odata.deltaLink": "here"}
    linked = faults.edit_page(Fault("graph", kind="foreign-link", body={"link": "https://else"}), "graph", page)
    assert linked == {"value": [], "@odata.nextLink": "https://else"}
    assert faults.edit_page(Fault("token", kind="no-value"), "token", page) is page


def test_bad_gzip_claims_gzip_over_other_bytes() -> None:
    """bad-gzip sends a gzip header over bytes that are not deflate."""
    data, headers = faults.corrupt(Fault("graph", kind="bad-gzip"), b"{}" * 100, {})
    assert headers["Content-Encoding"] == "gzip"
    assert data.startswith(b"\x1f\x8b") and len(data) == 4 + 64
    assert faults.corrupt(None, b"x", {}) == (b"x", {})


@pytest.mark.parametrize("kind", ["truncate", "reset-body"])
def test_cut_bodies_send_half_then_close(kind: str) -> None:
    """truncate and reset-body write half the body and end the connection."""
    ours, theirs = socket.socketpair()
    out = io.BytesIO()
    with theirs:
        assert faults.write_body(Fault("graph", kind=kind), b"0123456789", out, ours) is True
        assert out.getvalue() == b"01234"
        assert theirs.recv(10) == b""  # closed or shut down: nothing more arrives
    ours.close()


def test_trickle_sends_one_byte_per_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """trickle writes each byte on its own, sleeping the fault's delay between them."""
    sleeps: list[float] = []
    monkeypatch.setattr("emulator.faults.time.sleep", sleeps.append)
    writes: list[bytes] = []

    class Recorder(io.BytesIO):
        def write(self, b: bytes) -> int:  # type: ignore[override]
            writes.append(bytes(b))
            return len(b)

    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert faults.write_body(Fault("graph", kind="trickle", delay=0.2), b"abc", Recorder(), ours) is False
    assert writes == [b"a", b"b", b"c"]
    assert sleeps == [0.2, 0.2, 0.2]
