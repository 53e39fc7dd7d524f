"""Check a real answer of the HTTP API against the checked-in OpenAPI document (openapi.yaml)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import requests
import schemathesis

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.yaml")


def check_response(method: str, response: requests.Response) -> None:
    """Raise (naming the operation) unless the document describes this answer: status, headers, schema."""
    path = urlsplit(response.url).path
    operation = SCHEMA.find_operation_by_path(method, path)
    assert operation is not None, f"{method} {path} is not in openapi.yaml"
    operation.validate_response(response)
