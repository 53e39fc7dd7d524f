"""Requests as the Functions host hands them to a trigger."""

from __future__ import annotations

import azure.functions as func


def http_get(
    route: str,
    params: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
) -> func.HttpRequest:
    """An HTTP GET request as the host hands it to a trigger."""
    return func.HttpRequest(
        method="GET",
        url=f"http://localhost/api/{route}",
        params=params or {},
        route_params=route_params or {},
        body=b"",
        headers={},
    )
