"""./scripts/serve's own answers, over a fake runtime host: Host check, JSON errors, body cap, /docs, one log line per request."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, EnvironBuilder

from devtools import serve as serve_module
from devtools.harness import Function, HarnessError, HttpResult
from devtools.serve import MAX_BODY_BYTES, MAX_URL_BYTES, Serve, local_hosts, print_line, summarise_indexing

PORT = 7071


def http_function(name: str, route: str, methods: list[str]) -> Function:
    trigger = {"type": "httpTrigger", "name": "req", "route": route, "methods": methods, "direction": "IN"}
    return Function(name, name, [trigger, {"type": "http", "name": "$return", "direction": "OUT"}], None)


class FakeHost:
    """The runtime host's routing table and ``http()``; records each call."""

    def __init__(self, fail: bool = False) -> None:
        self.functions = {
            f.name: f
            for f in (
                http_function("list_users", "users", ["GET"]),
                http_function("get_user", "users/{id}", ["GET"]),
                http_function("request_sync", "sync", ["POST"]),
                http_function("openapi_document", "openapi.yaml", ["GET"]),
            )
        }
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def http(self, method: str, path: str, **kwargs: Any) -> HttpResult:
        self.calls.append({"method": method, "path": path, **kwargs})
        if self.fail:
            raise HarnessError("invocation of list_users failed in the runtime: boom\nTraceback ...")
        return HttpResult(200, {"Content-Type": "application/json"}, b'{"value":[]}')


def make_serve(host: FakeHost | None = None, allow: tuple[str, ...] = ()) -> Serve:
    serve = Serve(argparse.Namespace(port=PORT, allow_host=list(allow), real=False))
    serve.host = host or FakeHost()  # type: ignore[assignment]
    serve.allowed_hosts = local_hosts(PORT) | set(allow)
    return serve


def call(serve: Serve, method: str, path: str, host: str = f"127.0.0.1:{PORT}", **kwargs: Any) -> Any:
    return Client(serve.wsgi).open(path, method=method, headers={"Host": host, **kwargs.pop("headers", {})}, **kwargs)


def run_wsgi(serve: Serve, env: dict[str, Any]) -> Any:
    """Call the WSGI app on a hand-made environ (the test client would read the body itself)."""
    from werkzeug.wrappers import Response

    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer.update(status=int(status.split()[0]), headers=headers)

    body = b"".join(serve.wsgi(env, start_response))
    return Response(body, status=answer["status"], headers=answer["headers"])


def error(resp: Any) -> dict[str, str]:
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body: dict[str, dict[str, str]] = json.loads(resp.data)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return body["error"]


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:7071",  # a rebinding page's name for 127.0.0.1
        "localhost.evil.example:7071",
        "127.0.0.1:7072",
        "127.0.0.1",
        "localhost",
        "[::1]:7071",
        "",
    ],
)
def test_a_foreign_host_is_403_json_and_reaches_no_function(host: str) -> None:
    """DNS rebinding: a Host other than 127.0.0.1:<port> or localhost:<port> gets 403 and the app never runs."""
    fake = FakeHost()
    resp = call(make_serve(fake), "GET", "/api/users", host=host)
    assert resp.status_code == 403 and error(resp)["code"] == "host_not_allowed"
    assert "127.0.0.1:7071" in error(resp)["message"]
    assert fake.calls == []


@pytest.mark.parametrize("host", ["127.0.0.1:7071", "localhost:7071", "LocalHost:7071"])
def test_its_own_host_is_served(host: str) -> None:
    """By IP or by name, in any case (host names are case-insensitive)."""
    assert call(make_serve(), "GET", "/api/users", host=host).status_code == 200


def test_allowed_hosts_is_a_seam() -> None:
    """--allow-host (Serve.allowed_hosts) admits a name, e.g. a tunnel that delivers Graph's notifications."""
    serve = make_serve(allow=("notify.example:443",))
    assert call(serve, "GET", "/api/users", host="notify.example:443").status_code == 200
    assert call(serve, "GET", "/api/users", host="other.example:443").status_code == 403


def test_unknown_route_is_404_json_and_wrong_method_405_with_allow() -> None:
    """The host's empty 404s become the API's error shape; a known path with another method is 405."""
    serve = make_serve()
    missing = call(serve, "GET", "/api/nothing-here")
    assert missing.status_code == 404 and "/api/users" in error(missing)["message"]
    wrong = call(serve, "DELETE", "/api/users")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET" and error(wrong)["code"] == "method_not_allowed"
    assert call(serve, "GET", "/api/sync").headers["Allow"] == "POST"
    assert call(serve, "GET", "/api/openapiXyaml").status_code == 404  # the route's dot is a dot


def test_a_long_url_is_414_json() -> None:
    """Over the host's 4 KB, the JSON error (the host itself sends an empty 414)."""
    resp = call(make_serve(), "GET", "/api/users?filter=" + "x" * MAX_URL_BYTES)
    assert resp.status_code == 414 and error(resp)["code"] == "uri_too_long"


class CountingStream(io.RawIOBase):
    """A request body of ``size`` bytes that counts what was read of it."""

    def __init__(self, size: int) -> None:
        self.size, self.read_bytes = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.read_bytes)
        buffer[:n] = b"x" * n
        self.read_bytes += n
        return n


def test_a_body_over_the_cap_is_413_unread() -> None:
    """Content-Length over the cap: 413 from the header alone, not one byte of a 200 MB body read."""
    fake = FakeHost()
    stream = CountingStream(200 * 1024 * 1024)
    env: dict[str, Any] = EnvironBuilder("/api/sync", method="POST", headers=[("Host", f"127.0.0.1:{PORT}")]).get_environ()
    env.update({"wsgi.input": stream, "CONTENT_LENGTH": str(stream.size)})
    resp = run_wsgi(make_serve(fake), env)
    assert resp.status_code == 413 and error(resp)["code"] == "payload_too_large"
    assert stream.read_bytes == 0 and fake.calls == []


def test_a_chunked_body_is_read_no_further_than_the_cap() -> None:
    """No Content-Length (chunked): at most cap + 1 bytes are read before the 413."""
    stream = CountingStream(10 * MAX_BODY_BYTES)
    env: dict[str, Any] = EnvironBuilder("/api/sync", method="POST", headers=[("Host", f"127.0.0.1:{PORT}")]).get_environ()
    env.pop("CONTENT_LENGTH", None)
    env.update({"wsgi.input": stream, "wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    resp = run_wsgi(make_serve(), env)
    assert resp.status_code == 413
    assert stream.read_bytes <= MAX_BODY_BYTES + 1


def test_a_body_at_the_cap_and_the_raw_query_reach_the_function() -> None:
    """The whole body up to the cap, and the query string as sent (repeats and all) for the app's own check."""
    fake = FakeHost()
    resp = call(make_serve(fake), "POST", "/api/sync?code=a&code=b", data=b"{" + b" " * (MAX_BODY_BYTES - 2) + b"}")
    assert resp.status_code == 200
    assert len(fake.calls[0]["body"]) == MAX_BODY_BYTES and fake.calls[0]["raw_query"] == "code=a&code=b"


def test_a_function_that_fails_in_the_runtime_is_500_json(caplog: pytest.LogCaptureFixture) -> None:
    """The host's bodiless 500 becomes the error shape, pointing at the worker log."""
    resp = call(make_serve(FakeHost(fail=True)), "GET", "/api/users")
    assert resp.status_code == 500 and "serve-worker.log" in error(resp)["message"]


def test_one_log_line_per_request_with_the_route_template_only(caplog: pytest.LogCaptureFixture) -> None:
    """Method, route template, status and time: no path, id, UPN or query string."""
    serve = make_serve()
    with caplog.at_level(logging.INFO, logger="serve"):
        call(serve, "GET", "/api/users/ada.lovelace@contoso.com?select=mail")
        call(serve, "GET", "/api/users?filter=startswith(displayName,'Ada')&cursor=abc")
        call(serve, "GET", "/api/nothing/ada.lovelace@contoso.com")
        call(serve, "GET", "/api/users", host="evil.example:7071")
    lines = [r.getMessage() for r in caplog.records if r.name == "serve"]
    assert len(lines) == 4, lines
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "GET /api/users/{id} 200",
        "GET /api/users 200",
        "GET (no route) 404",
        "GET (foreign Host) 403",
    ]
    assert not [line for line in lines if "ada" in line.lower() or "?" in line or "select" in line]


def test_docs_serves_the_page_its_script_and_swagger_ui_only() -> None:
    """/docs and its files, with a CSP that keeps the page offline; nothing else under /docs."""
    serve = make_serve()
    page = call(serve, "GET", "/docs")
    assert page.status_code == 200 and b'<div id="swagger-ui">' in page.data
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = call(serve, "GET", "/docs/docs.js")
    assert b'url: "/api/openapi.yaml"' in script.data and b"validatorUrl: null" in script.data
    for name in serve_module.DOCS_ASSETS:
        asset = call(serve, "GET", f"/docs/{name}")
        assert asset.status_code == 200 and asset.data == (serve_module.SWAGGER_UI / name).read_bytes()
    for path in ("/docs/package.json", "/docs/../README.md", "/docs/%2e%2e/README.md", "/docs/swagger-ui.js.map"):
        assert call(serve, "GET", path).status_code == 404, path
    assert call(serve, "POST", "/docs").status_code == 405


def test_the_terminal_gets_no_ansi_no_invocation_lines_and_a_short_indexing_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Worker lines to a file (not a terminal): no colour codes; the runtime's per-invocation line is dropped."""
    bindings = ", ".join(f"Function Name: f{i}, Function Binding: [('httpTrigger', 'req', '')]" for i in range(40))
    indexing = "2026-12-04 02:53:51,164 INFO azure.functions: " + json.dumps(
        {"message": "Successfully indexed function app.", "function_count": 8, "functions": bindings}
    )
    print_line("2026-12-04 02:54:00,935 INFO azure.functions: Function name: list_users, Function Type: sync")
    print_line("\x1b[31m2026-12-04 02:54:01,245 WARNING graphusers.graph: retry\x1b[0m")
    print_line(indexing)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[worker] 2026-12-04 02:54:01,245 WARNING graphusers.graph: retry",
        "[worker] 2026-12-04 02:53:51,164 INFO azure.functions: Successfully indexed function app: 8 functions "
        "(bindings in .run/serve-worker.log)",
    ]
    assert len(indexing) > 2000 and summarise_indexing("short line") == "short line"


def test_serve_caps_bodies_where_the_api_does() -> None:
    """serve's cap is the API's (graphusers.api.MAX_BODY_BYTES), which openapi.yaml states."""
    from graphusers import api

    assert MAX_BODY_BYTES == api.MAX_BODY_BYTES
    assert f"over {MAX_BODY_BYTES:,} bytes" in (serve_module.ROOT / "openapi.yaml").read_text()


def test_clean_refuses_a_folder_azurite_did_not_make(tmp_path: Path) -> None:
    """--clean --data-dir <somewhere else> leaves a folder of other files alone."""
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    serve = Serve(argparse.Namespace(in_memory=False, data_dir=tmp_path, clean=True, real=False, port=PORT, allow_host=[]))
    with pytest.raises(SystemExit, match="does not look like Azurite's data folder"):
        serve._azurite()
    assert keep.read_text() == "mine"


class BrokenStream(io.RawIOBase):
    """A chunked body that breaks off mid-way, as Werkzeug's de-chunking reports it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise ValueError("Invalid chunk header")


def test_an_unreadable_body_is_400_json_not_werkzeugs_html() -> None:
    """A malformed chunked body: the API's error shape, and no function runs."""
    fake = FakeHost()
    env: dict[str, Any] = EnvironBuilder("/api/sync", method="POST", headers=[("Host", f"127.0.0.1:{PORT}")]).get_environ()
    env.pop("CONTENT_LENGTH", None)
    env.update({"wsgi.input": BrokenStream(), "wsgi.input_terminated": True})
    resp = run_wsgi(make_serve(fake), env)
    assert resp.status_code == 400 and "could not be read (ValueError)" in error(resp)["message"]
    assert fake.calls == []


def test_a_failure_in_serve_itself_is_500_json(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever breaks inside serve, the answer is the error shape (Werkzeug's own 500 is HTML)."""
    serve = make_serve()
    serve.host = None  # the routing table is gone: answer() fails
    resp = call(serve, "GET", "/api/users")
    assert resp.status_code == 500 and error(resp)["code"] == "internal_error"
    assert "serve failed to answer a request" in caplog.text


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /api/users/ada.lovelace@contoso.com HTTP/9.9\r\n", 505),
        (b"NONSENSE\r\n", 400),
        (b"GET /api/users/ada.lovelace@contoso.com?x=" + b"x" * 70000 + b" HTTP/1.1\r\n", 414),
    ],
)
def test_requests_the_http_server_refuses_itself_get_json_and_no_echo(
    request_line: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Below the WSGI app, http.server refuses a bad request line or one over 64 KB: JSON, and the line is not repeated."""
    import socket
    import threading

    from werkzeug.serving import make_server

    serve = make_serve()
    server = make_server("127.0.0.1", 0, serve.wsgi, threaded=True, request_handler=serve_module._quiet_handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO), socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(request_line + b"Host: 127.0.0.1:7071\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        server.shutdown()
        server.server_close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.0 {status}".encode()) or head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert set(json.loads(body)["error"]) == {"code", "message"}
    assert b"ada" not in answer and "ada" not in caplog.text
