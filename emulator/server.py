"""The emulator's HTTPS server: routing, protocol behaviour, fault injection and a request log.

One loopback port serves every service, told apart by path:

    /{tenant}/v2.0/.well-known/openid-configuration   Entra OIDC discovery   ("discovery")
    /{tenant}/discovery/v2.0/keys                     signing keys           ("discovery")
    /{tenant}/oauth2/v2.0/token                       client credentials     ("token")
    /msi/token                                        App Service managed identity ("identity")
    /secrets/{name}[/{version}]                       Key Vault secrets      ("keyvault"; the
                                                      unauthenticated challenge is "keyvault-challenge")
    /v1.0/users, /v1.0/users/{id}, /v1.0/users('{id}') Microsoft Graph       ("graph")
    /_emulator/...                                    control API for tools ("control")

Key Vault's challenge names the resource ``https://0.0.1:PORT``: the SDK accepts
a challenge only when the vault's host ends with "." + the resource's host
(as ``myvault.vault.azure.net`` does with ``vault.azure.net``), and
``127.0.0.1:PORT`` ends with ``.0.0.1:PORT``.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import json
import random
import re
import secrets
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .directory import Directory, QueryError
from .tls import make_certificates, make_client_certificate, thumbprints

# Every secret, private key and token any emulator in this process handed out,
# for tests that assert none of them ever reaches a log or a response.
ISSUED_SECRETS: list[str] = []

GRAPH_ROLE = "User.Read.All"
SECRET_NAME = "graph-client-secret"
CERTIFICATE_NAME = "graph-client-certificate"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = 3599


@dataclass
class Fault:
    """A fault to inject into the next matching requests.

    ``kind``: ``status`` (answer ``status`` with ``body`` and ``headers``),
    ``reset`` (drop the TCP connection), ``malformed`` (200 with a body that is
    not JSON), ``delay`` (answer normally after ``delay`` seconds),
    ``no-value`` (a Graph page without ``value``), ``foreign-link`` (a Graph
    page whose nextLink points at another host). Faults in the body, on any
    service: ``truncate`` (the headers promise the whole body, half of it
    arrives, then the connection closes), ``reset-body`` (half the body, then
    a TCP reset), ``bad-gzip`` (``Content-Encoding: gzip`` over bytes that are
    not gzip), ``trickle`` (the body one byte every ``delay`` seconds) and
    ``html`` (200 with a proxy's HTML page instead of the service's answer).
    ``count=None`` never runs out.
    """

    service: str
    kind: str = "status"
    status: int = 503
    count: int | None = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    delay: float = 0.0
    path: str | None = None  # regex searched in the request's path and query


class Chaos:
    """Random Graph faults for chaos runs: each request fails with probability ``rate``, seeded.

    The kinds cover what Graph and the network do: throttling with either
    Retry-After form, 5xx, resets, slow answers past the client's read
    timeout, expired tokens, malformed pages, pages cut or reset mid-body or
    badly compressed, and a nextLink to another host.
    """

    KINDS = ("429", "429-date", "500", "503", "504", "reset", "slow", "401", "malformed", "no-value", "foreign-link",
             "truncate", "reset-body", "bad-gzip")

    def __init__(self, seed: int, rate: float = 0.2, slow_seconds: float = 0.6) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.slow_seconds = slow_seconds
        self.injected: Counter[str] = Counter()

    def draw(self) -> Fault | None:
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(self.KINDS)
        self.injected[kind] += 1
        if kind == "429":
            return Fault("graph", status=429, headers={"Retry-After": "0"})
        if kind == "429-date":
            return Fault("graph", status=429, headers={"Retry-After": http_date(0)})
        if kind in ("500", "503", "504", "401"):
            return Fault("graph", status=int(kind))
        if kind == "slow":
            return Fault("graph", kind="delay", delay=self.slow_seconds)
        return Fault("graph", kind=kind)


# 400 texts Graph answers to a delta or skip token whose state cannot continue, as users
# report them (Graph's reference gives no list): a full round that did not reach its
# deltaLink in time, and a request carrying both tokens.
# https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
DELTA_STATE_ERRORS = {
    "steady-state": "Sync must reach steady state within 30 days.",
    "both-tokens": "Both skiptoken and deltatoken can't be in the same request.",
}

# Fault kinds that change how the answer's body is sent rather than what it says.
BODY_FAULTS = frozenset({"truncate", "reset-body", "bad-gzip", "trickle"})


@dataclass(frozen=True)
class Record:
    """One request the emulator answered."""

    service: str
    method: str
    path: str  # path and query string
    status: int


class _Reply(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a handler to answer at once."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Emulator:
    """The emulated tenant. ``start()`` serves it on ``127.0.0.1``; ``stop()`` ends it."""

    def __init__(self, users: int = 200, seed: int = 1, port: int = 0, state_dir: Path | None = None) -> None:
        self.seed = seed
        self._user_count = users
        self._port = port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="graphusers-emulator-")
            state_dir = Path(self._tmp.name)
        self.state_dir = state_dir
        self.ca_path, self._cert, self._key = make_certificates(state_dir)
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(8)
        self.lock = threading.RLock()
        self.log: list[Record] = []
        self.faults: list[Fault] = []
        self.latency: dict[str, float] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- state --------------------------------------------------------------

    def reset(self) -> None:
        """Restore the initial tenant: same ids, users, secret; no faults; empty log."""
        rnd = random.Random(self.seed)
        with self.lock:
            self.tenant_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.client_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.identity_client_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.identity_principal_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.identity_header = f"{rnd.getrandbits(96):024x}"
            self.directory = Directory(self._user_count, self.seed, "emulated.onmicrosoft.example")
            # Entra's view of the app's secrets: value -> expired?
            self.client_secrets: dict[str, bool] = {}
            # Key Vault: name -> versions (oldest first) of (version id, value, created epoch, content type).
            self.vault: dict[str, list[tuple[str, str, int, str | None]]] = {}
            # The app registration's certificates (public parts), by base64url SHA-256 and SHA-1 thumbprint.
            self.app_certificates: dict[str, Any] = {}
            # Federated identity credentials on the app registration: (issuer, subject, audience).
            self.federated_credentials: list[tuple[str, str, str]] = []
            self.seen_assertion_ids: set[str] = set()
            self.secret = self.add_client_secret()
            self.consented = True
            self.token_lifetime = TOKEN_LIFETIME
            self.token_generation = 0
            self.vault_role = True
            # Names whose current version is disabled in the vault (see disable_secret).
            self.disabled_secrets: set[str] = set()
            # The function app of this template has only a user-assigned identity.
            self.system_identity = False
            self.delta_replay = False
            # Delta switches (see _Handler._delta) and the id order of each full round in progress.
            self.delta_expiry_status = 410
            self.delta_minimal = False
            self.delta_unify = False
            self.delta_removed_then_live = 0.0
            # A full round left open: its pages from this offset on answer 503 (None: never).
            self.delta_outage_from: int | None = None
            # Stored tokens answered 400 with one of Graph's texts (DELTA_STATE_ERRORS), or None.
            self.delta_state_error: str | None = None
            # While the next full round runs, edit this many users it already served, and start its
            # deltaLink after those edits: delta never shows them (reconciliation must find them).
            self.delta_lose_edits = 0
            self.lossy_rounds: set[str] = set()
            # Key Vault: secret name -> "exp" attribute (epoch seconds) of its current version.
            self.secret_expiry: dict[str, int] = {}
            self.rounds: dict[str, list[str]] = {}
            self.chaos: Chaos | None = None
            self.faults = []
            self.latency = {}
            self.log = []
            # Requests per service counted as they arrive: the log records an
            # answer when it is sent, which for a slow fault may be minutes later.
            self.arrivals: Counter[str] = Counter()
            self._verified: dict[tuple[str, str], dict[str, Any]] = {}
            # Serialised /users pages by query and directory version (see _list_users).
            self.page_cache: dict[tuple[Any, ...], bytes] = {}
            # Every token issued (Graph and managed identity), for leak checks.
            self.issued: list[str] = []

    def add_client_secret(self, *, store_in_vault: bool = True) -> str:
        """Create a new client secret for the app (and by default store it as the vault's current version)."""
        value = "emu~" + secrets.token_urlsafe(30)
        ISSUED_SECRETS.append(value)
        with self.lock:
            self.client_secrets[value] = False
            if store_in_vault:
                self.set_vault_secret(SECRET_NAME, value)
        return value

    def set_vault_secret(self, name: str, value: str, content_type: str | None = None) -> str:
        """Store a new version of a vault secret; returns the version id."""
        version = uuid.uuid4().hex
        with self.lock:
            self.vault.setdefault(name, []).append((version, value, int(time.time()), content_type))
        return version

    def disable_secret(self, name: str = SECRET_NAME, disabled: bool = True) -> None:
        """Disable (or enable again) the current version of a vault secret."""
        with self.lock:
            (self.disabled_secrets.add if disabled else self.disabled_secrets.discard)(name)

    def untrust_identity(self) -> None:
        """Remove every federated identity credential from the app registration."""
        with self.lock:
            self.federated_credentials.clear()

    def add_certificate(self, *, name: str = CERTIFICATE_NAME, register: bool = True,
                        pkcs12: bool = False) -> Any:
        """Create a certificate as Key Vault does (its secret holds key and certificate) and register it on the app.

        ``register=False`` stores it in the vault only: an assertion signed with it is rejected (AADSTS700027).
        """
        cert, secret_value, content_type = make_client_certificate(pkcs12=pkcs12)
        # A line of the key's base64 body (or of the PKCS#12 blob) is enough to recognise a leak.
        ISSUED_SECRETS.append(secret_value.splitlines()[1] if not pkcs12 else secret_value[40:120])
        with self.lock:
            self.set_vault_secret(name, secret_value, content_type)
            if register:
                self.register_certificate(cert)
        return cert

    def register_certificate(self, cert: Any) -> None:
        """Add a certificate's public part to the app registration."""
        with self.lock:
            for key in thumbprints(cert):
                self.app_certificates[key] = cert

    def unregister_certificate(self, cert: Any) -> None:
        """Remove a certificate from the app registration."""
        with self.lock:
            for key in thumbprints(cert):
                self.app_certificates.pop(key, None)

    def rotate_certificate(self, old: Any, *, pkcs12: bool = False) -> Any:
        """A new certificate in the vault and on the app; the old one removed from the app."""
        new = self.add_certificate(pkcs12=pkcs12)
        self.unregister_certificate(old)
        return new

    def trust_identity(self, subject: str | None = None) -> None:
        """Add a federated identity credential trusting the managed identity (or ``subject``) on the app."""
        with self.lock:
            self.federated_credentials.append(
                (self.federation_issuer, subject or self.identity_principal_id, FEDERATION_AUDIENCE))

    @property
    def federation_issuer(self) -> str:
        """Issuer of managed identity tokens for the exchange audience (Entra's v2.0 issuer for the tenant)."""
        return f"{self.url}/{self.tenant_id}/v2.0"

    def rotate_secret(self, *, expire_old: bool = False) -> str:
        """Rotate the client secret: a new one in Entra and the vault; the old one removed (or expired)."""
        with self.lock:
            old = self.secret
            self.secret = self.add_client_secret()
            if expire_old:
                self.client_secrets[old] = True
            else:
                del self.client_secrets[old]
            return self.secret

    def revoke_tokens(self) -> None:
        """Make every Graph access token issued so far invalid (as if it expired)."""
        with self.lock:
            self.token_generation += 1

    def inject(self, *faults: Fault) -> None:
        """Queue faults; the first matching one with count left applies to each request."""
        with self.lock:
            self.faults.extend(faults)

    def count(self, service: str | None = None, status: int | None = None) -> int:
        """How many requests a service (or all) received, optionally only those answered ``status``."""
        with self.lock:
            return sum(
                1 for r in self.log
                if (service is None or r.service == service) and (status is None or r.status == status)
            )

    def counts(self) -> dict[str, int]:
        """Requests per service."""
        with self.lock:
            return dict(Counter(r.service for r in self.log if r.service != "control"))

    def clear_log(self) -> None:
        """Forget the requests seen so far."""
        with self.lock:
            self.log = []

    # -- addresses ----------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "emulator not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of every service."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def vault_resource(self) -> str:
        """The resource Key Vault's challenge names (see the module docstring)."""
        return f"https://0.0.1:{self.port}"

    def app_settings(self, mode: str = "secret") -> dict[str, str]:
        """App settings and environment that point the function app at this emulator.

        ``mode`` is GRAPH_CREDENTIAL; for ``managed-identity-federation`` there is no vault setting at all.
        """
        settings = {
            "GRAPH_TENANT_ID": self.tenant_id,
            "GRAPH_CLIENT_ID": self.client_id,
            "GRAPH_CREDENTIAL": mode,
            "KEY_VAULT_URL": self.url,
            "GRAPH_CLIENT_SECRET_NAME": SECRET_NAME,
            "GRAPH_CLIENT_CERTIFICATE_NAME": CERTIFICATE_NAME,
            "AUTHORITY_HOST": self.url,
            "GRAPH_ENDPOINT": self.url,
            "AZURE_CLIENT_ID": self.identity_client_id,
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }
        if mode == "managed-identity-federation":
            for name in ("KEY_VAULT_URL", "GRAPH_CLIENT_SECRET_NAME", "GRAPH_CLIENT_CERTIFICATE_NAME"):
                del settings[name]
        return settings

    # -- lifecycle ----------------------------------------------------------

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

    # -- tokens -------------------------------------------------------------

    def issue_token(self, audience: str, subject: str, roles: list[str] | None, lifetime: int,
                    *, object_id: str | None = None, issuer: str | None = None) -> tuple[str, int]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": issuer or f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "appid": subject,
            "azp": subject,
            "oid": object_id or subject,
            "sub": object_id or subject,
            "tid": self.tenant_id,
            "idtyp": "app",
            "ver": "1.0",
            "uti": secrets.token_urlsafe(16),
            # Which revocation generation issued it; see revoke_tokens().
            "xms_gen": self.token_generation,
        }
        if roles:
            claims["roles"] = roles
        token = jwt.encode(claims, self._signing_key, algorithm="RS256", headers={"kid": self._kid})
        with self.lock:
            self.issued.append(token)
        ISSUED_SECRETS.append(token)
        return token, now + lifetime

    def verify_token(self, token: str, audience: str) -> dict[str, Any]:
        # An RSA signature check per request would make the emulator the
        # bottleneck of throughput benchmarks; a token verified once is cached
        # until it expires (revocation is still checked on every request).
        cached = self._verified.get((token, audience))
        if cached is not None and cached["exp"] > time.time():
            claims = cached
        else:
            claims = jwt.decode(
                token, self._signing_key.public_key(), algorithms=["RS256"], audience=audience, leeway=0
            )
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[(token, audience)] = claims
        if audience == self.url and claims.get("xms_gen") != self.token_generation:
            raise jwt.ExpiredSignatureError("revoked")
        return claims

    def jwks(self) -> dict[str, Any]:
        key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._signing_key.public_key()))
        key.update({"kid": self._kid, "use": "sig", "alg": "RS256"})
        return {"keys": [key]}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read timeout) or a reset we injected closes the
        # socket under a handler; that is expected here, not worth a traceback.
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


# -- the HTTP handler -------------------------------------------------------

_GUIDISH = re.compile(r"^[0-9A-Za-z.\-]+$")


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

    # -- plumbing -----------------------------------------------------------

    def _service(self, path: str) -> str:
        if path.startswith("/v1.0/"):
            return "graph"
        if path.startswith("/secrets/"):
            return "keyvault" if self.headers.get("Authorization") else "keyvault-challenge"
        if path.startswith("/msi/"):
            return "identity"
        if path.startswith("/_emulator/"):
            return "control"
        if path.endswith("/oauth2/v2.0/token"):
            return "token"
        return "discovery"

    def _dispatch(self, method: str) -> None:
        emu = self.emulator
        parts = urlsplit(self.path)
        path = parts.path
        service = self._service(path)
        length = int(self.headers.get("Content-Length") or 0)
        self._rid: str | None = None  # keep-alive reuses this handler: a fresh request-id per request
        self.body = self.rfile.read(length) if length else b""
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

        with emu.lock:
            emu.arrivals[service] += 1
            # The log this request belongs to: an answer held back past reset() or
            # clear_log() must not appear in the next test's log.
            self._arrival_log = emu.log
        fault = self._take_fault(service, self.path)
        delay = emu.latency.get(service, 0.0) + (fault.delay if fault and fault.kind != "trickle" else 0.0)
        if delay:
            time.sleep(delay)
            if emu._server is None:  # stopped while this answer was held back: nobody is waiting for it
                self.close_connection = True
                return
        if fault is not None and fault.kind == "reset":
            self._record(service, method, self.path, 0)
            self._reset()
            return
        try:
            if fault is not None and fault.kind == "status" and fault.status == 401 and service == "graph":
                raise self._graph_reply(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
            if fault is not None and fault.kind == "status":
                # Graph sends its request-id on every answer, errors included.
                headers = {**self._graph_headers(), **fault.headers} if service == "graph" else dict(fault.headers)
                if service == "graph" and fault.status == 429:
                    # Which limit was hit and why. https://learn.microsoft.com/graph/throttling
                    headers = {"x-ms-throttle-scope": f"Tenant_Application/Read/{emu.tenant_id}/{emu.client_id}",
                               "x-ms-throttle-reason": "ApplicationRequestLimitExceeded", **headers}
                raise _Reply(fault.status, fault.body or self._fault_body(service, fault.status), headers)
            if fault is not None and fault.kind == "malformed":
                raise _Reply(200, b'{"value": [ {"id": ')
            if fault is not None and fault.kind == "html":
                # What a proxy or a captive portal answers in the service's place.
                raise _Reply(200, b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
                                  b"<body><h1>Proxy authentication required</h1></body></html>",
                             {"Content-Type": "text/html; charset=utf-8"})
            handler = {
                "graph": self._graph,
                "keyvault": self._keyvault,
                "keyvault-challenge": self._keyvault,
                "identity": self._identity,
                "token": self._token,
                "discovery": self._discovery,
                "control": self._control,
            }[service]
            status, body, headers = handler(method, path)
            if fault is not None and service == "graph" and fault.kind in ("no-value", "foreign-link"):
                if isinstance(body, bytes):
                    body = json.loads(body)  # a cached page: edit a copy
                if fault.kind == "no-value":
                    body.pop("value", None)
                elif fault.kind == "foreign-link":
                    link = (fault.body or {}).get("link", "https://attacker.example/v1.0/users?$skiptoken=x")
                    body.pop("@odata.deltaLink", None)
                    body["@odata.nextLink"] = link
        except _Reply as reply:
            status, body, headers = reply.status, reply.body, reply.headers
        self._record(service, method, self.path, status)
        self._send(status, body, headers, fault if fault is not None and fault.kind in BODY_FAULTS else None)

    def _take_fault(self, service: str, path: str) -> Fault | None:
        emu = self.emulator
        with emu.lock:
            for fault in emu.faults:
                if fault.service != service or (fault.path and not re.search(fault.path, path)):
                    continue
                if fault.count is not None:
                    if fault.count <= 0:
                        continue
                    fault.count -= 1
                return fault
            if service == "graph" and emu.chaos is not None:
                return emu.chaos.draw()
        return None

    def _record(self, service: str, method: str, path: str, status: int) -> None:
        with self.emulator.lock:
            getattr(self, "_arrival_log", self.emulator.log).append(Record(service, method, path, status))

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        self.close_connection = True
        try:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()
        except OSError:
            pass

    def _send(self, status: int, body: Any, headers: dict[str, str], fault: Fault | None = None) -> None:
        if isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body, separators=(",", ":")).encode()
        if fault is not None and fault.kind == "bad-gzip":
            headers = {**headers, "Content-Encoding": "gzip"}
            data = b"\x1f\x8b\x08\x00" + data[:64]  # a gzip header, then bytes that are not deflate
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json; charset=utf-8"))
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault is None or fault.kind == "bad-gzip":
            self.wfile.write(data)
        elif fault.kind == "trickle":
            # Each byte arrives well within any read timeout; the whole never does.
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(fault.delay or 0.05)
        elif fault.kind == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.request.shutdown(socket.SHUT_RDWR)
        elif fault.kind == "reset-body":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()

    def _fault_body(self, service: str, status: int) -> Any:
        if service == "token":
            return {"error": "temporarily_unavailable", "error_description": "AADSTS50001: emulated outage"}
        if service == "graph":
            return self._graph_error_body(
                {429: "TooManyRequests", 403: "Authorization_RequestDenied"}.get(status, "UnknownError"),
                {429: "Too many requests.", 403: "Insufficient privileges to complete the operation."}.get(
                    status, "Emulated service error."),
            )
        if service.startswith("keyvault"):
            code = {403: "Forbidden", 404: "SecretNotFound"}.get(status, "InternalServerError")
            return {"error": {"code": code, "message": f"Emulated Key Vault error {status}."}}
        return {"error": {"code": "EmulatedFault", "message": f"Emulated error {status}."}}

    # -- Entra --------------------------------------------------------------

    def _aad_error(self, status: int, error: str, code: int, text: str) -> _Reply:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return _Reply(status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} "
                                 f"Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{self.emulator.url}/error?code={code}",
        })

    def _tenant(self, path: str) -> str:
        tenant = path.split("/")[1]
        if tenant != self.emulator.tenant_id:
            raise self._aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant[:64]}' not found.")
        return tenant

    def _discovery(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        if path.endswith("/discovery/v2.0/keys"):
            self._tenant(path)
            return 200, emu.jwks(), {}
        if not path.endswith("/v2.0/.well-known/openid-configuration"):
            raise _Reply(404, {"error": "not_found", "error_description": "No such endpoint."})
        tenant = self._tenant(path)
        base = f"{emu.url}/{tenant}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "emulator",
        }, {}

    def _token(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        if method != "POST":
            raise self._aad_error(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        self._tenant(path)
        form = {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            raise self._aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        if client_id != emu.client_id:
            raise self._aad_error(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id[:64]}' was not found in the directory '{emu.tenant_id}'.",
            )
        if form.get("client_assertion_type") == JWT_BEARER and form.get("client_assertion"):
            self._check_assertion(form["client_assertion"], path)
            return self._issue_graph_token(form)
        secret = form.get("client_secret")
        with emu.lock:
            expired = emu.client_secrets.get(secret) if secret else None
        if not secret:
            raise self._aad_error(401, "invalid_client", 7000216,
                                  "'client_assertion', 'client_secret' or 'request' is required.")
        if expired is None:
            raise self._aad_error(
                401, "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{emu.client_id}'.",
            )
        if expired:
            raise self._aad_error(
                401, "invalid_client", 7000222,
                f"The provided client secret keys for app '{emu.client_id}' are expired.",
            )
        return self._issue_graph_token(form)

    def _issue_graph_token(self, form: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        scope = form.get("scope", "")
        if scope.split() != [f"{emu.url}/.default"]:
            raise self._aad_error(
                400, "invalid_scope", 1002012,
                f"The provided value for scope {scope[:100]} is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        token, _ = emu.issue_token(emu.url, emu.client_id, [GRAPH_ROLE] if emu.consented else None,
                                   emu.token_lifetime)
        return 200, {
            "token_type": "Bearer",
            "expires_in": emu.token_lifetime,
            "ext_expires_in": emu.token_lifetime,
            "access_token": token,
        }, {}

    def _check_assertion(self, assertion: str, path: str) -> None:
        """Validate a client assertion: a certificate-signed JWT, or a managed identity token (federation)."""
        emu = self.emulator
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise self._aad_error(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from None
        if "x5t#S256" in header or "x5t" in header:
            self._check_certificate_assertion(assertion, header, path)
            return
        try:
            claims = jwt.decode(assertion, emu._signing_key.public_key(), algorithms=["RS256"],
                                options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            raise self._aad_error(401, "invalid_client", 700024, "Client assertion is not within its valid time range.") from None
        except jwt.PyJWTError:
            raise self._aad_error(401, "invalid_client", 700027, "Client assertion failed signature validation.") from None
        with emu.lock:
            trusted = list(emu.federated_credentials)
        # Entra rejects a federated assertion it cannot match as a client
        # authentication failure: 401 invalid_client, as for a bad secret.
        # https://learn.microsoft.com/entra/workload-id/workload-identity-federation-create-trust
        # (observed answers: github.com/external-secrets/external-secrets/issues/2783,
        # github.com/microsoft/Agents/issues/202, github.com/Azure/azure-workload-identity/issues/1200)
        if not any(c[0] == claims.get("iss") for c in trusted):
            raise self._aad_error(401, "invalid_client", 700211,
                                  "No matching federated identity record found for presented assertion issuer "
                                  f"'{str(claims.get('iss'))[:100]}'.")
        if not any(c[0] == claims.get("iss") and c[2] == claims.get("aud") for c in trusted):
            raise self._aad_error(401, "invalid_client", 700212,
                                  "No matching federated identity record found for presented assertion audience "
                                  f"'{str(claims.get('aud'))[:100]}'.")
        if not any(c == (claims.get("iss"), claims.get("sub"), claims.get("aud")) for c in trusted):
            raise self._aad_error(401, "invalid_client", 700213,
                                  "No matching federated identity record found for presented assertion subject "
                                  f"'{str(claims.get('sub'))[:100]}'. Check your federated identity credential "
                                  "Subject, Audience and Issuer against the presented assertion.")

    def _check_certificate_assertion(self, assertion: str, header: dict[str, Any], path: str) -> None:
        emu = self.emulator
        key = str(header.get("x5t#S256") or header.get("x5t")).rstrip("=")  # with or without padding
        with emu.lock:
            cert = emu.app_certificates.get(str(key))
        if cert is None:
            raise self._aad_error(
                401, "invalid_client", 700027,
                f"The certificate with identifier used to sign the client assertion is not registered on "
                f"application. [Reason - The key was not found., Thumbprint of key used by client: '{str(key)[:64]}']")
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=["PS256", "RS256"],
                                audience=f"{emu.url}{path}", options={"require": ["exp", "aud", "iss", "sub", "jti"]})
        except jwt.ExpiredSignatureError:
            raise self._aad_error(401, "invalid_client", 700024, "Client assertion is not within its valid time range.") from None
        except jwt.InvalidAudienceError:
            raise self._aad_error(401, "invalid_client", 700027,
                                  "Client assertion contains an invalid audience; it must be the token endpoint.") from None
        except jwt.PyJWTError:
            raise self._aad_error(401, "invalid_client", 700027, "Client assertion failed signature validation.") from None
        if claims["iss"] != emu.client_id or claims["sub"] != emu.client_id:
            raise self._aad_error(401, "invalid_client", 700027,
                                  "Client assertion issuer and subject must be the application's client id.")
        with emu.lock:
            if claims["jti"] in emu.seen_assertion_ids:
                raise self._aad_error(401, "invalid_client", 700027, "Client assertion was already used (jti replay).")
            emu.seen_assertion_ids.add(claims["jti"])

    # -- managed identity (App Service protocol) ---------------------------

    def _identity(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        if self.headers.get("X-IDENTITY-HEADER") != emu.identity_header:
            raise _Reply(401, {"statusCode": 401, "message": "Missing or wrong X-IDENTITY-HEADER."})
        resource = self.query.get("resource", "")
        if not resource:
            raise _Reply(400, {"statusCode": 400, "message": "Missing 'resource' query parameter."})
        client_id = self.query.get("client_id")
        if not client_id and not emu.system_identity:
            # Without client_id (or principal_id, mi_res_id) App Service uses the
            # system-assigned identity, and this app has none: Azure answers 400.
            # https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
            # (the answer as observed: github.com/Azure/azure-sdk-for-net/issues/43691)
            raise _Reply(400, {"statusCode": 400, "message": "Unable to load the proper Managed Identity.",
                               "correlationId": str(uuid.uuid4())})
        client_id = client_id or emu.identity_client_id
        if client_id != emu.identity_client_id:
            raise _Reply(400, {"statusCode": 400, "message": f"No identity with client_id {client_id[:64]}."})
        issuer = emu.federation_issuer if resource.rstrip("/") == FEDERATION_AUDIENCE else None
        token, expires_on = emu.issue_token(resource.rstrip("/"), emu.identity_client_id, None, 86399,
                                            object_id=emu.identity_principal_id, issuer=issuer)
        return 200, {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": emu.identity_client_id,
        }, {}

    # -- Key Vault ----------------------------------------------------------

    def _keyvault(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        if "api-version" not in self.query:
            raise _Reply(400, {"error": {"code": "BadParameter", "message": "The 'api-version' parameter is missing."}})
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise _Reply(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                {"WWW-Authenticate": f'Bearer authorization="{emu.url}/{emu.tenant_id}", '
                                     f'resource="{emu.vault_resource}"'},
            )
        try:
            emu.verify_token(auth[7:], emu.vault_resource)
        except jwt.PyJWTError:
            raise _Reply(401, {"error": {"code": "Unauthorized", "message": "AKV10032: Invalid issuer or token."}}) from None
        if not emu.vault_role:
            raise _Reply(403, {"error": {
                "code": "Forbidden",
                "message": "Caller is not authorized to perform action on resource. "
                           "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                "innererror": {"code": "ForbiddenByRbac"}}})
        segments = [unquote(s) for s in path.split("/")[2:] if s]
        if method != "GET" or not segments or len(segments) > 2:
            raise _Reply(405, {"error": {"code": "BadParameter", "message": "Unsupported operation."}})
        with emu.lock:
            versions = list(emu.vault.get(segments[0], []))
        if len(segments) == 2:
            versions = [v for v in versions if v[0] == segments[1]]
        if not versions:
            raise _Reply(404, {"error": {
                "code": "SecretNotFound",
                "message": f"A secret with (name/id) {segments[0][:127]} was not found in this key vault."}})
        version, value, created, content_type = versions[-1]
        if segments[0] in emu.disabled_secrets:
            # https://learn.microsoft.com/azure/key-vault/general/rest-error-codes#http-403-insufficient-permissions
            # (the answer as observed: github.com/Azure/azure-sdk-for-java/issues/17991)
            raise _Reply(403, {"error": {"code": "Forbidden",
                                         "message": "Operation get is not allowed on a disabled secret.",
                                         "innererror": {"code": "SecretDisabled"}}})
        body: dict[str, Any] = {
            "value": value,
            "id": f"{emu.url}/secrets/{segments[0]}/{version}",
            "attributes": {"enabled": True, "created": created, "updated": created,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
            "tags": {},
        }
        with emu.lock:
            expiry = emu.secret_expiry.get(segments[0])
        if expiry is not None:
            # The secret's expiration date, in seconds since the epoch: the "exp" attribute.
            # https://learn.microsoft.com/rest/api/keyvault/secrets/get-secret/get-secret#secretattributes
            body["attributes"]["exp"] = expiry
        if content_type:
            # A certificate's backing secret: Key Vault marks it managed and names the certificate's key.
            body.update(contentType=content_type, managed=True,
                        kid=f"{emu.url}/keys/{segments[0]}/{version}")
        return 200, body, {}

    # -- Microsoft Graph ----------------------------------------------------

    def _graph_error_body(self, code: str, message: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": message, "innerError": {
            "date": _now_iso(),
            "request-id": self._request_id,
            "client-request-id": self.headers.get("client-request-id", self._request_id),
        }}}

    @property
    def _request_id(self) -> str:
        rid: str | None = getattr(self, "_rid", None)
        if rid is None:
            rid = str(uuid.uuid4())
            self._rid = rid
        return rid

    def _graph_reply(self, status: int, code: str, message: str) -> _Reply:
        return _Reply(status, self._graph_error_body(code, message), self._graph_headers())

    def _graph_headers(self) -> dict[str, str]:
        headers = {"request-id": self._request_id, "Content-Type": "application/json;odata.metadata=minimal;"
                   "odata.streaming=true;IEEE754Compatible=false;charset=utf-8"}
        crid = self.headers.get("client-request-id")
        if crid:
            headers["client-request-id"] = crid
        return headers

    def _graph(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        self._rid = None
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= 7:
            raise self._graph_reply(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = emu.verify_token(auth[7:], emu.url)
        except jwt.ExpiredSignatureError:
            raise self._graph_reply(401, "InvalidAuthenticationToken",
                                    "Lifetime validation failed, the token is expired.") from None
        except jwt.PyJWTError:
            raise self._graph_reply(401, "InvalidAuthenticationToken",
                                    "Access token validation failure. Invalid audience.") from None
        if GRAPH_ROLE not in claims.get("roles", []):
            raise self._graph_reply(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        if method != "GET":
            raise self._graph_reply(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
        rest = path[len("/v1.0/"):]
        try:
            if rest == "users":
                body = self._list_users()
            elif rest == "users/delta":
                body = self._delta()
            elif rest.startswith("users/") and rest.count("/") == 1:
                key = unquote(rest[len("users/"):])
                if key.startswith("$"):
                    # OData reserves $ for system segments: a UPN starting with $
                    # needs /users('$x@y.com'). https://learn.microsoft.com/graph/api/user-get
                    raise self._graph_reply(400, "BadRequest", f"Resource not found for the segment '{key[:64]}'.")
                body = self._get_user(key)
            elif rest.startswith("users(") and "/" not in rest:
                literal = re.fullmatch(r"users\('((?:[^']|'')*)'\)", unquote(rest))
                if literal is None:
                    raise self._graph_reply(400, "BadRequest", "Bad Request - Error in query syntax.")
                body = self._get_user(literal.group(1).replace("''", "'"))
            else:
                raise self._graph_reply(400, "BadRequest", f"Resource not found for the segment '{rest[:64]}'.")
        except QueryError as exc:
            raise self._graph_reply(400, exc.code, exc.message) from None
        return 200, body, self._graph_headers()

    def _get_user(self, key: str) -> dict[str, Any]:
        user = self.emulator.directory.find(key)
        if user is None:
            raise self._graph_reply(
                404, "Request_ResourceNotFound",
                f"Resource '{key[:128]}' does not exist or one of its queried reference-property objects are not present.",
            )
        return self.emulator.directory.select(self.query.get("$select"))(user)

    def _list_users(self) -> dict[str, Any]:
        emu, q = self.emulator, self.query
        raw_top = q.get("$top", "100")
        if not (raw_top.isdigit() and 1 <= int(raw_top) <= 999):
            raise QueryError("Request_BadRequest",
                             f"Invalid page size specified: '{raw_top[:20]}'. Must be between 1 and 999 inclusive.")
        top = int(raw_top)
        # Advanced queries: https://learn.microsoft.com/graph/aad-advanced-queries#error-handling-for-advanced-queries-on-directory-objects
        eventual = self.headers.get("ConsistencyLevel", "").lower() == "eventual"
        if "$search" in q and not eventual:
            raise QueryError("Request_UnsupportedQuery", "Request with $search query parameter only works through "
                             "MSGraph with a special request header: 'ConsistencyLevel: eventual'")
        # Without the header, $count=true is silently ignored (no @odata.count),
        # and it does not make an advanced query.
        count = eventual and q.get("$count", "").lower() == "true"
        key = (emu.directory.seq, len(emu.directory.users), tuple(sorted(q.items())), eventual)
        cached = emu.page_cache.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        project = emu.directory.select(q.get("$select"))
        offset = 0
        if "$skiptoken" in q:
            try:
                offset = int(base64.urlsafe_b64decode(q["$skiptoken"] + "==").decode().removeprefix("o:"))
            except ValueError:
                raise QueryError("Directory_ExpiredPageToken", "The specified page token value has expired and "
                                 "can no longer be included in your request.") from None
        with emu.lock:
            matches = emu.directory.query(q.get("$filter"), q.get("$search"), advanced=count)
        body: dict[str, Any] = {"@odata.context": f"{emu.url}/v1.0/$metadata#users"}
        if count and offset == 0:
            body["@odata.count"] = len(matches)
        body["value"] = [project(u) for u in matches[offset:offset + top]]
        if offset + top < len(matches):
            options = {k: v for k, v in q.items() if k != "$skiptoken"}
            options["$skiptoken"] = base64.urlsafe_b64encode(f"o:{offset + top}".encode()).decode().rstrip("=")
            body["@odata.nextLink"] = f"{emu.url}/v1.0/users?" + urlencode(options, safe="$,:'()")
        # Pages are kept serialised: benchmarks read the same pages many times,
        # and the emulator must never be what limits a client's throughput.
        data = json.dumps(body, separators=(",", ":")).encode()
        with emu.lock:
            if len(emu.page_cache) > 5000:
                emu.page_cache.clear()
            emu.page_cache[key] = data
        return data  # type: ignore[return-value]

    def _delta(self) -> dict[str, Any]:
        """``/users/delta``: a full round, then rounds of changes; state travels in the tokens.

        Switches on the emulator: ``delta_expiry_status`` (410 ``resyncRequired``
        or 400 ``syncStateNotFound`` for an expired token), ``delta_minimal``
        (minimal updates even without ``Prefer: return=minimal``),
        ``delta_unify`` (one entry per object in a round of changes),
        ``delta_removed_then_live`` (share of users a full round also sends as an
        earlier removal), ``delta_replay`` (the first entry of each page again),
        ``delta_outage_from`` (a full round's pages from that offset answer 503: the
        round is left open and can be resumed from its last link), ``delta_state_error``
        (the next stored token answered 400 with a DELTA_STATE_ERRORS text) and
        ``delta_lose_edits`` (users a full round edits while it runs and delta never shows).
        """
        emu, q = self.emulator, self.query
        directory = emu.directory
        prefer = self.headers.get("Prefer", "")
        size_match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        size = min(999, max(1, int(size_match.group(1)))) if size_match else 100
        # Without the preference an update carries every selected property that has a value;
        # with it, id and the changed properties only. https://learn.microsoft.com/graph/api/user-delta
        minimal = emu.delta_minimal or bool(re.search(r"return=minimal", prefer))
        with emu.lock:
            if "$skiptoken" in q and "$deltatoken" in q:
                raise self._graph_reply(400, "BadRequest", DELTA_STATE_ERRORS["both-tokens"])
            if ("$skiptoken" in q or "$deltatoken" in q) and emu.delta_state_error:
                text, emu.delta_state_error = DELTA_STATE_ERRORS[emu.delta_state_error], None  # once
                raise self._graph_reply(400, "BadRequest", text)
            if "$skiptoken" in q or "$deltatoken" in q:
                raw = q.get("$skiptoken") or q.get("$deltatoken") or ""
                try:
                    token = json.loads(base64.urlsafe_b64decode(raw + "=="))
                except ValueError:
                    raise QueryError("Request_BadRequest", "The delta or skip token is malformed.") from None
                if token.get("epoch") != directory.delta_epoch or (token["full"] and token.get("round") not in emu.rounds):
                    raise self._expired_delta_state()
                if "$deltatoken" in q:  # a new round of changes since the token's position
                    token = {**token, "base": token["target"], "target": directory.seq, "offset": 0, "full": False}
            else:
                select = tuple(f for f in (q.get("$select") or "id,displayName").split(",") if f)
                directory.select(",".join(select))  # 400 for unknown properties, as Graph
                # A full round serves the users as they were ordered when it started.
                round_id = uuid.uuid4().hex
                emu.rounds[round_id] = list(directory.users)
                while len(emu.rounds) > 8:
                    emu.rounds.pop(next(iter(emu.rounds)))
                token = {"select": select, "full": True, "base": 0, "target": directory.seq, "offset": 0,
                         "epoch": directory.delta_epoch, "round": round_id}
            select = tuple(token["select"])
            offset = token["offset"]
            if token["full"] and emu.delta_outage_from is not None and offset >= emu.delta_outage_from:
                raise self._graph_reply(503, "serviceNotAvailable", "The service is temporarily unavailable.")
            if token["full"] and offset > 0 and emu.delta_lose_edits:
                for uid in emu.rounds[token["round"]][: min(offset, emu.delta_lose_edits)]:
                    if uid in directory.users:
                        directory.update(uid, displayName=f"Edited during a round {uid[:8]}")
                emu.lossy_rounds.add(token["round"])
                emu.delta_lose_edits = 0
            if token["full"]:
                ids = emu.rounds[token["round"]]
                total = len(ids)
                page = directory.full_round_page(ids, offset, size, select, emu.delta_removed_then_live)
            else:
                items = directory.changes_since(token["base"], token["target"], select, minimal=minimal,
                                                unify=emu.delta_unify)
                total = len(items)
                page = items[offset:offset + size]
            if emu.delta_replay and page:
                page = [*page, dict(page[0])]  # Graph may return an object more than once
        body: dict[str, Any] = {"@odata.context": f"{emu.url}/v1.0/$metadata#users(delta)", "value": page}
        base_url = f"{emu.url}/v1.0/users/delta?"

        def encode(t: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(t).encode()).decode().rstrip("=")

        if offset + size < total:
            body["@odata.nextLink"] = base_url + "$skiptoken=" + encode({**token, "offset": offset + size})
        else:
            end = {**token, "offset": 0, "full": False, "round": None}
            if token["full"] and token["round"] in emu.lossy_rounds:
                end["target"] = directory.seq  # the edits made during the round never show
            body["@odata.deltaLink"] = base_url + "$deltatoken=" + encode(end)
        return body

    def _expired_delta_state(self) -> _Reply:
        """An expired delta state, answered the way ``delta_expiry_status`` says Graph may answer it.

        410 Gone with ``resyncRequired``, or 400 with ``syncStateNotFound`` (what
        directory objects get once a token is older than 7 days):
        https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset
        https://devblogs.microsoft.com/microsoft365dev/duration-of-change-tracking-tokens-for-identity-and-education-resources/
        """
        if self.emulator.delta_expiry_status == 400:
            return self._graph_reply(400, "syncStateNotFound", "The sync state generation is not found. The delta "
                                     "token is expired and data must be synchronized again.")
        return self._graph_reply(410, "resyncRequired", "Resync required. Replace any local cached copies of the "
                                 "directory objects with the objects returned by a new delta query.")

    # -- control API --------------------------------------------------------

    def _control(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        emu = self.emulator
        action = path[len("/_emulator/"):]
        payload = json.loads(self.body or b"{}")
        if action == "requests" and method == "GET":
            return 200, emu.counts(), {}
        if action == "settings" and method == "GET":
            return 200, emu.app_settings(), {}
        if action == "clear-log" and method == "POST":
            emu.clear_log()
            return 200, {"cleared": True}, {}
        # Benchmark helpers: clients that measure paging only, and the SDK peer
        # (which takes a client secret as its documentation shows), need these.
        if action == "token" and method == "GET":
            token, _ = emu.issue_token(emu.url, emu.client_id, [GRAPH_ROLE], emu.token_lifetime)
            return 200, {"access_token": token}, {}
        if action == "client-secret" and method == "GET":
            return 200, {"client_secret": emu.secret}, {}
        if action == "rotate-secret" and method == "POST":
            emu.rotate_secret(expire_old=bool(payload.get("expireOld")))
            return 200, {"rotated": True}, {}
        if action == "faults" and method == "POST":
            emu.inject(Fault(**payload))
            return 200, {"queued": True}, {}
        if action == "latency" and method == "POST":
            with emu.lock:
                emu.latency.update({str(k): float(v) for k, v in payload.items()})
            return 200, emu.latency, {}
        if action == "users" and method == "POST":
            # Change the tenant: {"update": n, "remove": n, "softRemove": n, "restore": n, "add": n}
            # (updates on the first users, removals on the last ones).
            with emu.lock:
                directory = emu.directory
                ids = list(directory.users)
                for uid in ids[: int(payload.get("update", 0))]:
                    directory.update(uid, jobTitle="Changed " + uid[:8])
                for uid in ids[len(ids) - int(payload.get("remove", 0)):]:
                    directory.remove(uid)
                for uid in list(directory.users)[:: -1][: int(payload.get("softRemove", 0))]:
                    directory.remove(uid, soft=True)
                for uid in list(directory.deleted)[: int(payload.get("restore", 0))]:
                    directory.restore(uid)
                for _ in range(int(payload.get("add", 0))):
                    directory.add()
            return 200, {"users": len(emu.directory.users)}, {}
        if action == "users" and method == "GET":
            # The tenant's ids as a count and a digest, to check a snapshot without moving them all.
            with emu.lock:
                ids = sorted(emu.directory.users)
            return 200, {"count": len(ids), "idsSha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}, {}
        if action == "delta" and method == "POST":
            # Delta behaviour: {"expiryStatus": 410|400, "expire": true, "minimal": bool, "unify": bool,
            # "removedThenLive": share, "replay": bool}
            with emu.lock:
                if "expiryStatus" in payload:
                    emu.delta_expiry_status = int(payload["expiryStatus"])
                if payload.get("expire"):
                    emu.directory.delta_epoch += 1
                emu.delta_minimal = bool(payload.get("minimal", emu.delta_minimal))
                emu.delta_unify = bool(payload.get("unify", emu.delta_unify))
                emu.delta_replay = bool(payload.get("replay", emu.delta_replay))
                emu.delta_removed_then_live = float(payload.get("removedThenLive", emu.delta_removed_then_live))
                if "outageFrom" in payload:
                    emu.delta_outage_from = None if payload["outageFrom"] is None else int(payload["outageFrom"])
                if "stateError" in payload:
                    emu.delta_state_error = payload["stateError"]
                emu.delta_lose_edits = int(payload.get("loseEdits", emu.delta_lose_edits))
            return 200, {"updated": True}, {}
        if action == "reset" and method == "POST":
            emu.reset()
            return 200, {"reset": True}, {}
        raise _Reply(404, {"error": "unknown control action"})


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` in the future, for ``Retry-After``."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)
