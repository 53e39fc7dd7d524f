"""api.http, the request file for the HTTP API: every request in it answers as it says, against ./scripts/serve."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testkit import httpfile
from testkit.contract import check_response
from testkit.serve import ROOT, ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.harness]

REQUESTS = httpfile.parse((ROOT / "api.http").read_text())


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    with ServeProcess("--users", "60", "--no-timer") as running:
        yield running


def test_the_file_covers_every_endpoint() -> None:
    """Each route of the app, paging by cursor, select/filter/search/count, id and UPN, and both sync bodies."""
    lines = [f"{r.method} {r.url} {r.body}" for r in REQUESTS]
    text = "\n".join(lines)
    for needle in (
        "GET {{baseUrl}}/health",
        "/users?top=3",
        "cursor={{firstPage.response.body.$.nextCursor}}",
        "select=",
        "filter=",
        "search=",
        "count=true",
        "/users/{{firstPage.response.body.$.value[0].id}}",
        "/users/{{firstPage.response.body.$.value[0].userPrincipalName}}",
        "POST {{baseUrl}}/sync ",
        'POST {{baseUrl}}/sync {"mode": "full"}',
        "GET {{baseUrl}}/sync/status",
        "GET {{baseUrl}}/openapi.yaml",
        "POST {{baseUrl}}/sync {}",
    ):
        assert needle in text, needle
    assert REQUESTS[0].variables["baseUrl"] == "http://127.0.0.1:7071/api"  # ./scripts/serve's default port


def test_every_request_answers_as_the_file_says(serve: ServeProcess) -> None:
    """Run the file top to bottom against ./scripts/serve; each status matches its "# expect" line."""
    answered = httpfile.run(REQUESTS, {"baseUrl": f"{serve.base}/api"})
    wrong = [
        f"{r.title}: expected {r.expect}, got {resp.status_code} {resp.text[:300]}"
        for r, resp in answered
        if resp.status_code != r.expect
    ]
    assert not wrong, "\n".join(wrong) + "\n" + serve.output()[-2000:]
    assert len(answered) == len(REQUESTS) >= 13
    for request, response in answered:
        kind = "application/yaml" if request.url.endswith("/openapi.yaml") else "application/json"
        assert response.headers["Content-Type"].startswith(kind), request.title
        check_response(request.method, response)  # and the answer is one openapi.yaml describes
