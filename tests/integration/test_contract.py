"""The OpenAPI contract (openapi.yaml) against ./scripts/serve: Schemathesis generates requests, every answer must conform.

Bounded: a fixed number of examples per operation, so that the run stays well
under two minutes. The checks are the response-side ones (documented status,
content type, headers and schema; no 5xx).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from testkit.contract import check_response
from testkit.serve import ROOT, ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.harness]

SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = 25


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    # Change notifications on, so that every route the document describes is served.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NOTIFICATIONS_ENABLED", "true")
        env.setenv("NOTIFICATIONS_PUBLIC_URL", "https://app.example")
        with ServeProcess("--users", "60", "--no-timer") as running:
            yield running


def test_the_document_is_openapi_3_1_and_covers_every_route() -> None:
    """Each HTTP function of the app is in the document, and every response is described."""
    raw = SCHEMA.raw_schema
    assert raw["openapi"].startswith("3.1")
    routes = {f"/api/{r}" for r in ("health", "openapi.yaml", "users", "users/{id}", "sync", "sync/status")}
    routes |= {"/api/notifications/users", "/api/notifications/lifecycle"}  # with NOTIFICATIONS_ENABLED
    assert set(raw["paths"]) == routes
    for path, item in raw["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert response, f"{method.upper()} {path} {status} has no description"


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_every_answer_conforms(case: schemathesis.Case[Any], serve: ServeProcess) -> None:
    """Generated requests, sent to ./scripts/serve; each answer is one the document describes."""
    response = case.call(base_url=serve.base, timeout=60)
    case.validate_response(response, checks=CHECKS)


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in SCHEMA.raw_schema["paths"].items()
        for method, operation in item.items()
    ]


def _sync_body_cases() -> list[tuple[str, bytes | None, int]]:
    """POST /api/sync's edge cases, read off the request body schema: each with the status it must get."""
    operation = SCHEMA.raw_schema["paths"]["/api/sync"]["post"]
    body = operation["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    cases: list[tuple[str, bytes | None, int]] = []
    if not body.get("required", False):
        cases.append(("no body", None, 202))
    if not schema.get("required"):
        cases.append(("{}", b"{}", 202))
    for name, prop in schema["properties"].items():
        for value in prop["enum"]:
            cases.append((f"{name}={value}", json.dumps({name: value}).encode(), 202))
        cases.append((f"{name} not in enum", json.dumps({name: "not-" + prop["enum"][0]}).encode(), 400))
        cases.append((f"{name} null", json.dumps({name: None}).encode(), 400))
    cases += [
        ("an unknown property", b'{"other": 1}', 400),
        ("an array", b"[]", 400),
        ("a string", b'"full"', 400),
        ("null", b"null", 400),
        ("not JSON", b"{", 400),
    ]
    # The cap the description states ("over 65,536 bytes ... 413").
    cap = int(re.search(r"over ([\d,]+) bytes", operation["description"])[1].replace(",", ""))  # type: ignore[index]
    cases.append(("at the cap", b"{" + b" " * (cap - 2) + b"}", 202))
    cases.append(("over the cap", b"{" + b" " * (cap - 1) + b"}", 413))
    return cases


@pytest.mark.parametrize(("case", "body", "status"), _sync_body_cases(), ids=[c[0] for c in _sync_body_cases()])
def test_post_sync_answers_the_schemas_edge_cases(serve: ServeProcess, case: str, body: bytes | None, status: int) -> None:
    """What openapi.yaml allows is accepted (202), what it refuses is 400, over the stated cap 413; all documented."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    resp = requests.post(f"{serve.base}/api/sync", data=body, headers=headers, timeout=60)
    assert resp.status_code == status, (case, resp.text[:300])
    check_response("POST", resp)


def _query_parameters() -> list[tuple[str, str, str, str]]:
    cases = []
    for method, path, operation in _operations():
        for param in operation.get("parameters", []):
            if param["in"] != "query":
                continue
            schema = param["schema"]
            value = {"integer": str(schema.get("minimum", 1)), "boolean": "true"}.get(schema.get("type", ""), "")
            cases.append((method, path, param["name"], value or str(param.get("example", "a"))))
    assert cases
    return cases


@pytest.mark.parametrize(("method", "path", "name", "value"), _query_parameters())
def test_a_repeated_query_parameter_is_400_naming_it(serve: ServeProcess, method: str, path: str, name: str, value: str) -> None:
    """Each query parameter of each operation, sent twice with a valid value: 400 naming it, not a silent pick."""
    concrete = path.replace("{id}", "6ec9d286-63ca-428d-95f4-b3b2e4b06ce6")
    query = urlencode([(name, value), (name, value)])
    resp = requests.request(method, f"{serve.base}{concrete}?{query}", timeout=60)
    assert resp.status_code == 400, resp.text[:300]
    assert f"{name!r} is given more than once" in resp.json()["error"]["message"]
    check_response(method, resp)
