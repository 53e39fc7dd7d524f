"""The OpenAPI contract (openapi.yaml) against ./scripts/serve: Schemathesis generates requests, every answer must conform.

Bounded: a fixed number of examples per operation, so that the run stays well
under two minutes. The checks are the response-side ones (documented status,
content type, headers and schema; no 5xx).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
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
    with ServeProcess("--users", "60", "--no-timer") as running:
        yield running


def test_the_document_is_openapi_3_1_and_covers_every_route() -> None:
    """Each HTTP function of the app is in the document, and every response is described."""
    raw = SCHEMA.raw_schema
    assert raw["openapi"].startswith("3.1")
    routes = {f"/api/{r}" for r in ("health", "openapi.yaml", "users", "users/{id}", "sync", "sync/status")}
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
