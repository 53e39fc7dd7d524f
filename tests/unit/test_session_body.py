"""The bounded session reads bodies itself (with a total time limit) and fails exactly as plain requests fails."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from graphusers.transport import bounded_session

BODY = b'{"value": [' + b",".join(b'{"id": "%d"}' % i for i in range(3000)) + b"]}"

# Raw HTTP answers by path: whole, gzip-encoded, chunked, cut short, and stalled half-way.
ANSWERS = {
    "/whole": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "/gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(gzip.compress(BODY)), gzip.compress(BODY)),
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
    "/short": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY[:500]),
    "/stall": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY[:500]),
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP/1.1 server answering ANSWERS with keep-alive; it records one entry per connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    connections: list[int] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while not stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                conn.sendall(ANSWERS[path])
                if path in ("/short",):
                    return
                if path == "/stall":
                    stop.wait(5)
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", connections
    stop.set()
    listener.close()


def graph_session(endpoint: str) -> requests.Session:
    return bounded_session(endpoint=endpoint)


def sessions() -> tuple[requests.Session, requests.Session]:
    return requests.Session(), bounded_session()


@pytest.mark.parametrize("path", ["/whole", "/gzip", "/chunked"])
def test_body_is_the_same_as_requests_reads(server: tuple[str, list[int]], path: str) -> None:
    """Plain, gzip-encoded and chunked bodies come out decoded, as requests reads them."""
    url, _ = server
    plain, adapted = sessions()
    expected = plain.get(url + path, timeout=5)
    got = adapted.get(url + path, timeout=5)
    assert got.content == expected.content == BODY
    assert got.json() == expected.json()


def test_connection_is_reused(server: tuple[str, list[int]]) -> None:
    """A body read by the session gives the connection back to the pool: three requests, one connection."""
    url, connections = server
    _, adapted = sessions()
    before = len(connections)
    for _ in range(3):
        assert adapted.get(url + "/whole", timeout=5).content == BODY
    assert len(connections) - before == 1


@pytest.mark.parametrize(("path", "timeout"), [("/short", 5.0), ("/stall", 0.3)])
def test_failures_raise_what_requests_raises(server: tuple[str, list[int]], path: str, timeout: float) -> None:
    """A body cut short or stalled past the read timeout raises the same exception type as plain requests."""
    url, _ = server
    plain, adapted = sessions()
    with pytest.raises(requests.RequestException) as expected:
        plain.get(url + path, timeout=timeout)
    with pytest.raises(requests.RequestException) as got:
        adapted.get(url + path, timeout=timeout)
    assert type(got.value) is type(expected.value)


def test_graph_session_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies and the CA bundle come from the environment when the session is built, as requests would take them."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/graph-ca.pem")
    session = graph_session("https://graph.microsoft.com")
    assert session.proxies.get("https") == "http://proxy.example:3128"
    assert session.verify == "/etc/ssl/graph-ca.pem" and session.trust_env is False
    monkeypatch.setenv("NO_PROXY", "graph.microsoft.com")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    bypassed = graph_session("https://graph.microsoft.com")
    assert "https" not in bypassed.proxies and bypassed.verify is True


def test_graph_session_reads_gzip_bodies(server: tuple[str, list[int]]) -> None:
    """The Graph client's session (one endpoint, environment read once) decodes gzip bodies."""
    url, _ = server
    assert graph_session(url).get(url + "/gzip", timeout=5).content == BODY
