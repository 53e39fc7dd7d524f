"""Fault injection and chaos, once for every service: faults queued by tests, latency, and random Graph faults.

A fault either answers in the service's place (``status``, ``malformed``,
``html``, and Key Vault's ``firewall``, ``access-policy`` and ``reject-token``),
changes what a Graph page says (``no-value``, ``foreign-link``), changes how
the body is sent (``BODY_FAULTS``), or drops the connection (``reset``).
"""

from __future__ import annotations

import io
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .wire import Reply, Request, graph_error_body, graph_headers, graph_reply, http_date, vault_error

if TYPE_CHECKING:
    from .state import Tenant

# Fault kinds that change how the answer's body is sent rather than what it says.
BODY_FAULTS = frozenset({"truncate", "reset-body", "bad-gzip", "trickle"})


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
    Key Vault's refusals, each with its documented status and body:
    ``firewall`` (403 ``ForbiddenByFirewall``: the vault's firewall does not allow
    the caller's address), ``access-policy`` (403 ``ForbiddenByPolicy``: a vault
    in access-policy mode without the Get secret permission for the caller) and
    ``reject-token`` (401 with the ``WWW-Authenticate`` challenge for a token the
    vault does not accept; the SDK fetches a new token and retries).
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

    KINDS = (
        "429",
        "429-date",
        "429-fraction",
        "500",
        "503",
        "504",
        "reset",
        "slow",
        "401",
        "malformed",
        "no-value",
        "foreign-link",
        "truncate",
        "reset-body",
        "bad-gzip",
    )

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
        if kind == "429-fraction":
            # Graph's own sample 429 waits a fraction of a second too ("Retry-After: 2.128").
            # https://learn.microsoft.com/graph/throttling#sample-response
            return Fault("graph", status=429, headers={"Retry-After": "0.128"})
        if kind in ("500", "503", "504", "401"):
            return Fault("graph", status=int(kind))
        if kind == "slow":
            return Fault("graph", kind="delay", delay=self.slow_seconds)
        return Fault("graph", kind=kind)


class Injector:
    """The queued faults, the latency per service and the chaos source, behind the tenant's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.faults: list[Fault] = []
            self.latency: dict[str, float] = {}
            self.chaos: Chaos | None = None

    def take(self, service: str, target: str) -> Fault | None:
        """The first queued fault for ``service`` whose path matches, using one of its count; else chaos's draw."""
        with self.lock:
            for fault in self.faults:
                if fault.service != service or (fault.path and not re.search(fault.path, target)):
                    continue
                if fault.count is not None:
                    if fault.count <= 0:
                        continue
                    fault.count -= 1
                return fault
            if service == "graph" and self.chaos is not None:
                return self.chaos.draw()
        return None

    def delay(self, service: str, fault: Fault | None) -> float:
        """Seconds to hold the answer back."""
        return self.latency.get(service, 0.0) + (fault.delay if fault and fault.kind != "trickle" else 0.0)


# Key Vault's refusals that name the caller and the vault; the text as the service sends it.
VAULT_FAULTS = frozenset({"firewall", "access-policy", "reject-token"})


def throttle_scope(app_id: str, tenant_id: str) -> str:
    """Graph's ``x-ms-throttle-scope`` for a read limit on this app in this tenant: ``<Scope>/<Limit>/<AppId>/<TenantId>``.

    https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits
    """
    return f"Tenant_Application/Read/{app_id}/{tenant_id}"


def answer_instead(fault: Fault, service: str, req: Request, throttle_scope: str, tenant: Tenant | None = None) -> None:
    """Raise the reply a fault sends in the service's place, if it is one of those."""
    if fault.kind == "status" and fault.status == 401 and service == "graph":
        raise graph_reply(req, 401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
    if fault.kind == "status":
        # Graph sends its request-id on every answer, errors included.
        headers = {**graph_headers(req), **fault.headers} if service == "graph" else dict(fault.headers)
        if service == "graph" and fault.status == 429:
            # Which limit was hit (x-ms-throttle-scope) and why (x-ms-throttle-information).
            # https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits
            headers = {
                "x-ms-throttle-scope": throttle_scope,
                "x-ms-throttle-information": "ResourceUnitLimitExceeded",
                **headers,
            }
        raise Reply(fault.status, fault.body or fault_body(service, fault.status, req), headers)
    if fault.kind in VAULT_FAULTS and service.startswith("keyvault"):
        raise vault_refusal(fault.kind, req, tenant)
    if fault.kind == "malformed":
        raise Reply(200, b'{"value": [ {"id": ')
    if fault.kind == "html":
        # What a proxy or a captive portal answers in the service's place.
        raise Reply(
            200,
            b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head>"
            b"<body><h1>Proxy authentication required</h1></body></html>",
            {"Content-Type": "text/html; charset=utf-8"},
        )


def vault_refusal(kind: str, req: Request, tenant: Tenant | None) -> Reply:
    """Key Vault's answer for a firewall, access-policy or token refusal, naming the caller as the vault does."""
    tenant_id = tenant.tenant_id if tenant is not None else "00000000-0000-0000-0000-000000000000"
    app_id = tenant.identity_client_id if tenant is not None else "00000000-0000-0000-0000-000000000000"
    oid = tenant.identity_principal_id if tenant is not None else app_id
    caller = f"appid={app_id};oid={oid};iss=https://sts.windows.net/{tenant_id}/"
    vault = "emulated;location=emulated"
    if kind == "firewall":
        # https://learn.microsoft.com/azure/key-vault/general/rest-error-codes#http-403-insufficient-permissions
        # (the answer as observed: github.com/MicrosoftDocs/azure-devops-docs/issues/8581)
        message = (
            "Client address is not authorized and caller is not a trusted service.\r\n"
            f"Client address: 127.0.0.1\r\nCaller: {caller}\r\nVault: {vault}"
        )
        return vault_error(403, "Forbidden", message, inner="ForbiddenByFirewall")
    if kind == "access-policy":
        # A vault in access-policy mode (not Azure RBAC) without the Get secret permission for the caller.
        # https://learn.microsoft.com/azure/key-vault/general/rest-error-codes#http-403-insufficient-permissions
        # (the answer as quoted in public reports, e.g. github.com/hashicorp/terraform-provider-azurerm/issues/17015;
        # some older answers carry innererror "AccessDenied" instead, which the app reads the same way)
        message = (
            f"The user, group or application '{caller}' does not have secrets get permission on key vault "
            f"'{vault}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
        )
        return vault_error(403, "Forbidden", message, inner="ForbiddenByPolicy")
    # "When an access token is not supplied, or when the service does not accept a token, an HTTP 401
    # error is returned to the client and includes the WWW-Authenticate header."
    # https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses#authentication-requirements
    challenge = {} if tenant is None else vault_challenge(tenant)
    return vault_error(401, "Unauthorized", "AKV10032: Invalid issuer or token.", headers=challenge)


def vault_challenge(tenant: Tenant) -> dict[str, str]:
    """The vault's ``WWW-Authenticate`` challenge (``keyvault.challenge``; imported here to keep one definition)."""
    from .keyvault import challenge

    return challenge(tenant)


def edit_page(fault: Fault, service: str, body: Any) -> Any:
    """A Graph page as ``no-value`` or ``foreign-link`` changes it; any other body as it is."""
    if service != "graph" or fault.kind not in ("no-value", "foreign-link"):
        return body
    if isinstance(body, bytes):
        body = json.loads(body)  # a cached page: edit a copy
    if fault.kind == "no-value":
        body.pop("value", None)
    else:
        body.pop("@odata.deltaLink", None)
        body["@odata.nextLink"] = (fault.body or {}).get("link", "https://attacker.example/v1.0/users?$skiptoken=x")
    return body


def fault_body(service: str, status: int, req: Request) -> Any:
    """The error body a service sends with ``status`` when a fault names none."""
    if service == "token":
        # AADSTS50001 would mean "the resource does not exist"; an outage is 90006.
        # https://learn.microsoft.com/entra/identity-platform/reference-error-codes#aadsts-error-codes
        return {
            "error": "temporarily_unavailable",
            "error_description": "AADSTS90006: ExternalServerRetryableError - The service is temporarily unavailable.",
            "error_codes": [90006],
        }
    if service == "graph":
        code = {429: "TooManyRequests", 403: "Authorization_RequestDenied"}.get(status, "UnknownError")
        text = {429: "Too many requests.", 403: "Insufficient privileges to complete the operation."}
        return graph_error_body(req, code, text.get(status, "Emulated service error."))
    if service.startswith("keyvault"):
        code = {403: "Forbidden", 404: "SecretNotFound"}.get(status, "InternalServerError")
        return {"error": {"code": code, "message": f"Emulated Key Vault error {status}."}}
    return {"error": {"code": "EmulatedFault", "message": f"Emulated error {status}."}}


def reset(sock: socket.socket) -> None:
    """Drop the connection with a TCP RST: SO_LINGER with a zero timeout makes close() send one."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def corrupt(fault: Fault | None, data: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """``bad-gzip``: a gzip header, then bytes that are not deflate, under ``Content-Encoding: gzip``."""
    if fault is None or fault.kind != "bad-gzip":
        return data, headers
    return b"\x1f\x8b\x08\x00" + data[:64], {**headers, "Content-Encoding": "gzip"}


def write_body(fault: Fault | None, data: bytes, out: io.BufferedIOBase, sock: socket.socket) -> bool:
    """Send the body as a body fault says (or whole); True when the connection must close."""
    if fault is None or fault.kind not in ("trickle", "truncate", "reset-body"):
        out.write(data)
        return False
    if fault.kind == "trickle":
        # Each byte arrives well within any read timeout; the whole never does.
        for i in range(len(data)):
            out.write(data[i : i + 1])
            out.flush()
            time.sleep(fault.delay or 0.05)
        return False
    out.write(data[: len(data) // 2])
    out.flush()
    if fault.kind == "truncate":
        sock.shutdown(socket.SHUT_RDWR)
    else:
        reset(sock)
    return True
