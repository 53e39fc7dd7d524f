"""Shapes the app exchanges: Graph's JSON, the API's bodies, the sync summary, the HTTP session seam.

Graph's bodies are ``total=False``: a ``$select`` decides which user properties
come back, and ``return=minimal`` delta pages carry only what changed.
https://learn.microsoft.com/graph/api/resources/user
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    import requests


class HttpSession(Protocol):
    """What ``GraphClient`` calls on its session: ``requests.Session.get`` and nothing else.

    A ``requests.Session`` (``transport.bounded_session``) is one; tests hand in a scripted double.
    """

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = ...,
        headers: Mapping[str, str] | None = ...,
        timeout: tuple[float, float] | None = ...,
        allow_redirects: bool = ...,
    ) -> requests.Response:
        """Send a GET."""
        ...


# Keys with "@" are not identifiers, hence the functional syntax.
# https://learn.microsoft.com/graph/delta-query-overview#resource-representation-in-the-delta-query-response
GraphUser = TypedDict(
    "GraphUser",
    {
        "id": str,
        "displayName": str | None,
        "userPrincipalName": str | None,
        "mail": str | None,
        "accountEnabled": bool | None,
        "@removed": dict[str, str],
    },
    total=False,
)

# One page of /users or /users/delta.
# https://learn.microsoft.com/graph/paging
GraphPage = TypedDict(
    "GraphPage",
    {
        "value": list[dict[str, Any]],
        "@odata.nextLink": str,
        "@odata.deltaLink": str,
        "@odata.count": int,
    },
    total=False,
)


class GraphErrorDetail(TypedDict, total=False):
    """Graph's ``error`` object. https://learn.microsoft.com/graph/errors"""

    code: str
    message: str
    innerError: dict[str, str]


class GraphErrorBody(TypedDict, total=False):
    """Graph's error body."""

    error: GraphErrorDetail


class ApiErrorDetail(TypedDict):
    """This API's ``error`` object (openapi.yaml ``Error``)."""

    code: str
    message: str


class ApiErrorBody(TypedDict):
    """This API's one error shape."""

    error: ApiErrorDetail


class UsersListBody(TypedDict):
    """``GET /api/users``'s body (openapi.yaml ``UserPage``)."""

    value: list[dict[str, Any]]
    nextCursor: str | None
    count: NotRequired[int]


class SyncSummaryBody(TypedDict):
    """One run as stored in ``status.json`` and served by ``GET /api/sync/status``."""

    runId: str
    started: str
    finished: str
    mode: str  # full | incremental
    reason: str | None
    pages: int
    users: int
    added: int
    updated: int
    removed: int
    graphRequests: int
    status: str  # running | succeeded | skipped | failed
    message: str
    error: NotRequired[ApiErrorDetail]


class SyncStatusBody(TypedDict):
    """``status.json``: the last run and the last successful one."""

    lastRun: SyncSummaryBody
    lastSuccess: SyncSummaryBody | None
