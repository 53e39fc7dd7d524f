"""The emulator's HTTPS server: a routing table, the request log, and the ``Emulator`` facade.

One loopback port serves every service, told apart by path (``ROUTES``):

    /{tenant}/v2.0/.well-known/openid-configuration   Entra OIDC discovery   ("discovery")
    /{tenant}/discovery/v2.0/keys                     signing keys           ("discovery")
    /{tenant}/oauth2/v2.0/token                       client credentials     ("token")
    /msi/token                                        App Service managed identity ("identity")
    /secrets/{name}[/{version}]                       Key Vault secrets      ("keyvault"; the
                                                      unauthenticated challenge is "keyvault-challenge")
    /v1.0/users, /v1.0/users/{id}, /v1.0/users('{id}') Microsoft Graph       ("graph")
    /_emulator/...                                    control API for tools ("control")

Each service is a module that reads and changes only the ``Tenant`` it is
handed; faults apply to every service the same way (``faults``).
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import control, entra, faults, graph, identity, keyvault
from .delta import DELTA_STATE_ERRORS
from .faults import BODY_FAULTS, Chaos, Fault, Injector
from .state import Tenant
from .tls import make_certificates
from .wire import CERTIFICATE_NAME, GRAPH_ROLE, ISSUED_SECRETS, SECRET_NAME, Answer, Reply, Request, http_date

# Names tools and tests import from here.
__all__ = ["CERTIFICATE_NAME", "DELTA_STATE_ERRORS", "GRAPH_ROLE", "ISSUED_SECRETS", "SECRET_NAME"]
__all__ += ["ROUTES", "Chaos", "Emulator", "Fault", "Record", "http_date"]


@dataclass(frozen=True)
class Record:
    """One request the emulator answered."""

    service: str
    method: str
    path: str  # path and query string
    status: int


@dataclass(frozen=True)
class Route:
    """Requests whose path passes ``match`` go to ``handle`` and count as ``service``."""

    service: str
    match: Callable[[str], bool]
    handle: Callable[[Emulator, Request], Answer]


def _of_tenant(handle: Callable[[Tenant, Request], Answer]) -> Callable[[Emulator, Request], Answer]:
    """A service handler, handed the emulator's tenant only."""
    return lambda emu, req: handle(emu.tenant, req)


# First match wins; discovery takes what is left, as Entra's paths are the tenant's.
ROUTES = (
    Route("graph", lambda p: p.startswith("/v1.0/"), _of_tenant(graph.handle)),
    Route("keyvault", lambda p: p.startswith("/secrets/"), _of_tenant(keyvault.handle)),
    Route("identity", lambda p: p.startswith("/msi/"), _of_tenant(identity.handle)),
    Route("control", lambda p: p.startswith("/_emulator/"), control.handle),
    Route("token", lambda p: p.endswith("/oauth2/v2.0/token"), _of_tenant(entra.token)),
    Route("discovery", lambda p: True, _of_tenant(entra.discovery)),
)


def route(req: Request) -> tuple[str, Route]:
    """The service name a request counts as, and its route."""
    found = next(r for r in ROUTES if r.match(req.path))
    if found.service == "keyvault" and not req.header("Authorization"):
        return "keyvault-challenge", found
    return found.service, found


class Emulator:
    """The emulated tenant. ``start()`` serves it on ``127.0.0.1``; ``stop()`` ends it.

    Attributes of its ``tenant`` and ``injector`` read and write through the
    facade too (``emu.consented = False``, ``emu.chaos = Chaos(1)``).
    """

    tenant: Tenant
    injector: Injector

    def __init__(self, users: int = 200, seed: int = 1, port: int = 0, state_dir: Path | None = None) -> None:
        self.tenant = Tenant(users, seed)
        self.injector = Injector(self.tenant.lock)
        self._port = port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="graphusers-emulator-")
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir
        self.ca_path, self._cert, self._key = make_certificates(state_dir)
        self.log: list[Record] = []
        # Requests per service counted as they arrive: the log records an
        # answer when it is sent, which for a slow fault may be minutes later.
        self.arrivals: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        # Only called for names the facade itself lacks.
        for part in ("tenant", "injector"):
            owner = self.__dict__.get(part)
            if owner is not None and hasattr(owner, name):
                return getattr(owner, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        for part in ("tenant", "injector"):
            owner = self.__dict__.get(part)
            if owner is not None and name in vars(owner):
                setattr(owner, name, value)
                return
        super().__setattr__(name, value)

    def reset(self) -> None:
        """Restore the initial tenant: same ids, users, secret; no faults; empty log."""
        with self.tenant.lock:
            self.tenant.reset()
            self.injector.reset()
            self.log = []
            self.arrivals = Counter()

    def inject(self, *faults: Fault) -> None:
        """Queue faults; the first matching one with count left applies to each request."""
        with self.tenant.lock:
            self.injector.faults.extend(faults)

    def count(self, service: str | None = None, status: int | None = None) -> int:
        """How many requests a service (or all) received, optionally only those answered ``status``."""
        with self.tenant.lock:
            return sum(
                1 for r in self.log if (service is None or r.service == service) and (status is None or r.status == status)
            )

    def counts(self) -> dict[str, int]:
        """Requests per service."""
        with self.tenant.lock:
            return dict(Counter(r.service for r in self.log if r.service != "control"))

    def clear_log(self) -> None:
        """Forget the requests seen so far."""
        with self.tenant.lock:
            self.log = []

    @property
    def port(self) -> int:
        assert self._server is not None, "emulator not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of every service."""
        return self.tenant.url

    def app_settings(self, mode: str = "secret") -> dict[str, str]:
        """App settings and environment that point the function app at this emulator (see ``Tenant.app_settings``)."""
        return self.tenant.app_settings(self.ca_path, mode)

    def start(self) -> Emulator:
        """Serve on 127.0.0.1 in a background thread."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert, self._key)
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = _Server(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        # The handshake runs in the connection's own thread (see _Handler.setup),
        # so one slow client cannot stall the accept loop.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self.tenant.port = self.port
        self._thread = threading.Thread(target=server.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the temporary state."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, req: Request, conn: socket.socket) -> tuple[int, Any, dict[str, str], Fault | None] | None:
        """One request through faults and its service: status, body, headers and a body fault; None if dropped."""
        service, found = route(req)
        with self.tenant.lock:
            self.arrivals[service] += 1
            # The log this request belongs to: an answer held back past reset() or
            # clear_log() must not appear in the next test's log.
            arrival_log = self.log
        fault = self.injector.take(service, req.target)
        delay = self.injector.delay(service, fault)
        if delay:
            time.sleep(delay)
            if self._server is None:  # stopped while this answer was held back: nobody is waiting for it
                return None
        if fault is not None and fault.kind == "reset":
            self._record(arrival_log, service, req, 0)
            faults.reset(conn)
            return None
        try:
            if fault is not None:
                # <Scope>/<Limit>/<ApplicationId>/<TenantId>, as Graph's identity service limits say:
                # https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits
                scope = f"Tenant_Application/Read/{self.tenant.client_id}/{self.tenant.tenant_id}"
                faults.answer_instead(fault, service, req, scope)
            status, body, headers = found.handle(self, req)
            if fault is not None:
                body = faults.edit_page(fault, service, body)
        except Reply as reply:
            status, body, headers = reply.status, reply.body, reply.headers
        self._record(arrival_log, service, req, status)
        return status, body, headers, fault if fault is not None and fault.kind in BODY_FAULTS else None

    def _record(self, log: list[Record], service: str, req: Request, status: int) -> None:
        with self.tenant.lock:
            log.append(Record(service, req.method, req.target, status))


# Bytes per chunk of a chunked answer.
CHUNK = 16384
# Compressed pages by the identity of their (cached, reused) serialised bytes: benchmarks read
# the same pages many times, and compressing each time would make the emulator the bottleneck.
_GZIPPED: dict[int, tuple[bytes, bytes]] = {}
_GZIP_LOCK = threading.Lock()


def _gzip(data: bytes) -> bytes:
    with _GZIP_LOCK:
        hit = _GZIPPED.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
    packed = gzip.compress(data, compresslevel=1, mtime=0)
    with _GZIP_LOCK:
        if len(_GZIPPED) > 256:
            _GZIPPED.clear()
        _GZIPPED[id(data)] = (data, packed)
    return packed


def _accepts_gzip(header: str) -> bool:
    """True when Accept-Encoding lists gzip (or *) without q=0."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            return True
    return False


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read timeout) or a reset we injected closes the
        # socket under a handler; that is expected here, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    server_version = "graphusers-emulator"
    sys_version = ""

    def setup(self) -> None:
        # Headers and body leave in separate writes; without TCP_NODELAY, Nagle's
        # algorithm and the client's delayed ACK add ~40 ms to some answers.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()
        self.request.settimeout(30)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the request log is the record; stderr stays quiet

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(method, self.path, dict(self.headers.items()), body)
        answered = self.emulator.answer(req, self.request)
        if answered is None:
            self.close_connection = True
            return
        status, data, headers, fault = answered
        tenant = self.emulator.tenant
        # Body faults that cut an answer short cut a chunked one too (no last chunk); the
        # others (bad-gzip, trickle) keep a Content-Length answer, which is what they are about.
        cut = fault.kind if fault is not None and fault.kind in ("truncate", "reset-body") else None
        if route(req)[0] == "graph" and (fault is None or cut) and tenant.graph_chunked:
            gzipped = tenant.graph_gzip and _accepts_gzip(req.header("Accept-Encoding"))
            self._send_chunked(status, data, headers, gzipped, cut)
            return
        self._send(status, data, headers, fault)

    def _send_chunked(self, status: int, body: Any, headers: dict[str, str], gzipped: bool, cut: str | None = None) -> None:
        """An answer as Graph sends it: chunked, gzip-compressed when the client accepts it, varying on it.

        Graph compresses answers for a client that sends ``Accept-Encoding: gzip``
        (the SDKs' compression handler relies on it:
        https://github.com/microsoftgraph/msgraph-sdk-design/blob/main/middleware/CompressionHandler.md),
        and its recorded answers carry ``Transfer-Encoding: chunked``, ``Content-Encoding``
        and ``Vary: Accept-Encoding`` with no ``Content-Length``.
        """
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        if gzipped:
            data = _gzip(data)
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8"))
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Vary", "Accept-Encoding")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        out = bytearray()
        whole = data if cut is None else data[: len(data) // 2]
        for start in range(0, len(whole), CHUNK):
            piece = whole[start : start + CHUNK]
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        if cut is None:
            out += b"0\r\n\r\n"
        self.wfile.write(bytes(out))
        if cut is not None:
            # Half the body in whole chunks, then the connection ends with no last chunk.
            self.wfile.flush()
            if cut == "truncate":
                self.request.shutdown(socket.SHUT_RDWR)
            else:
                faults.reset(self.request)
            self.close_connection = True

    def _send(self, status: int, body: Any, headers: dict[str, str], fault: Fault | None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        data, headers = faults.corrupt(fault, data, dict(headers))
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8"))
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if faults.write_body(fault, data, self.wfile, self.request):
            self.close_connection = True
