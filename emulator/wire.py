"""The bottom layer every service uses: the request and reply types, error bodies, dates, request ids, constants.

It imports nothing else from the emulator.
"""

from __future__ import annotations

import datetime
import email.utils
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

GRAPH_ROLE = "User.Read.All"
SECRET_NAME = "graph-client-secret"
CERTIFICATE_NAME = "graph-client-certificate"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = 3599

# Every secret, private key and token any emulator in this process handed out,
# for tests that assert none of them ever reaches a log or a response.
ISSUED_SECRETS: list[str] = []

# What a handler answers: status, body (JSON-able, or bytes sent as they are) and headers.
Answer = tuple[int, Any, dict[str, str]]


class Reply(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a handler to answer at once."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


@dataclass
class Request:
    """One request as the services see it: method, target (path and query as sent), headers and body."""

    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    path: str = field(init=False)
    # Query options, the last value of each.
    query: dict[str, str] = field(init=False)
    _request_id: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}
        parts = urlsplit(self.target)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def request_id(self) -> str:
        """This request's id, made on first use (Graph sends one on every answer)."""
        if self._request_id is None:
            self._request_id = str(uuid.uuid4())
        return self._request_id


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` in the future, for ``Retry-After``."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def graph_headers(req: Request) -> dict[str, str]:
    """Headers Graph sends on every answer, errors included: its request-id and the client's client-request-id."""
    headers = {
        "request-id": req.request_id,
        "Content-Type": "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
    }
    crid = req.header("client-request-id")
    if crid:
        headers["client-request-id"] = crid
    return headers


def graph_error_body(req: Request, code: str, message: str) -> dict[str, Any]:
    """Graph's error body. https://learn.microsoft.com/graph/errors"""
    inner = {
        "date": now_iso(),
        "request-id": req.request_id,
        "client-request-id": req.header("client-request-id", req.request_id),
    }
    return {"error": {"code": code, "message": message, "innerError": inner}}


def graph_reply(req: Request, status: int, code: str, message: str) -> Reply:
    return Reply(status, graph_error_body(req, code, message), graph_headers(req))


def vault_error(status: int, code: str, message: str, inner: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    """Key Vault's error body. https://learn.microsoft.com/azure/key-vault/general/rest-error-codes"""
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innererror"] = {"code": inner}
    return Reply(status, {"error": error}, headers)
