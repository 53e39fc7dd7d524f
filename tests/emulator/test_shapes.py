"""How the emulated Graph sends its answers: chunked, gzip when the client accepts it, Vary: Accept-Encoding."""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
from collections.abc import Iterator

import pytest

from emulator import Emulator
from emulator.wire import GRAPH_ROLE


@pytest.fixture(scope="module")
def live() -> Iterator[Emulator]:
    with Emulator(users=40, seed=2) as emu:
        yield emu


def _get(emu: Emulator, path: str, **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
    token, _ = emu.tenant.issue_token(emu.url, emu.client_id, [GRAPH_ROLE], 600)
    conn = http.client.HTTPSConnection("127.0.0.1", emu.port, context=ssl.create_default_context(cafile=str(emu.ca_path)))
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", **headers})
    resp = conn.getresponse()
    raw = resp.read()  # http.client undoes the chunking, not the compression
    conn.close()
    return resp, raw


def test_gzip_for_a_client_that_accepts_it(live: Emulator) -> None:
    """With Accept-Encoding: gzip the page is compressed and chunked, with no Content-Length."""
    resp, raw = _get(live, "/v1.0/users?$top=30", **{"Accept-Encoding": "gzip, deflate"})
    assert resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
    assert resp.getheader("Transfer-Encoding") == "chunked" and resp.getheader("Content-Length") is None
    assert resp.getheader("Vary") == "Accept-Encoding"
    assert len(json.loads(gzip.decompress(raw))["value"]) == 30


def test_identity_for_a_client_that_does_not(live: Emulator) -> None:
    """Without gzip in Accept-Encoding (or with q=0) the page is chunked but not compressed; errors too."""
    for headers in ({}, {"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0"}):
        resp, raw = _get(live, "/v1.0/users?$top=3", **headers)
        assert resp.getheader("Content-Encoding") is None and resp.getheader("Transfer-Encoding") == "chunked"
        assert len(json.loads(raw)["value"]) == 3
    resp, raw = _get(live, "/v1.0/users?$top=0", **{"Accept-Encoding": "gzip"})
    assert resp.status == 400 and resp.getheader("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(raw))["error"]["code"] == "Request_BadRequest"


def test_the_shape_switches_turn_it_off(live: Emulator) -> None:
    """tenant.graph_chunked=False restores Content-Length answers (for tools that need them)."""
    live.graph_chunked = False
    try:
        resp, raw = _get(live, "/v1.0/users?$top=2", **{"Accept-Encoding": "gzip"})
    finally:
        live.graph_chunked = True
    assert resp.getheader("Content-Length") == str(len(raw)) and resp.getheader("Content-Encoding") is None


@pytest.mark.parametrize("kind", ["truncate", "reset-body"])
def test_a_cut_chunked_answer_has_no_last_chunk(live: Emulator, kind: str) -> None:
    """A body fault on a chunked Graph answer sends half the body in whole chunks, then ends the connection."""
    from emulator import Fault

    live.inject(Fault("graph", kind=kind))
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        _get(live, "/v1.0/users?$top=40", **{"Accept-Encoding": "gzip"})
