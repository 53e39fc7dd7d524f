"""The suite's check of real answers against openapi.yaml tells a conforming answer from one that is not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from testkit.contract import recorded_failures

JSON = {"Content-Type": "application/json; charset=utf-8"}
USER = {"id": "6ec9d286-63ca-428d-95f4-b3b2e4b06ce6", "displayName": "Ada", "accountEnabled": True}
ERROR = json.dumps({"error": {"code": "service_unavailable", "message": "Graph is throttling."}}).encode()


@pytest.mark.parametrize(
    "answer",
    [
        ("GET", "/api/health", 200, JSON, b'{"status":"ok"}'),
        ("GET", "/api/users", 200, JSON, json.dumps({"value": [USER], "nextCursor": None, "count": 1}).encode()),
        ("GET", f"/api/users/{USER['id']}", 200, JSON, json.dumps(USER).encode()),
        ("GET", "/api/users", 503, {**JSON, "Retry-After": "30"}, ERROR),
        ("POST", "/api/sync", 202, JSON, b'{"status":"queued","statusUrl":"/api/sync/status","requestId":"0f3c"}'),
        (
            "GET",
            "/api/sync/status",
            200,
            JSON,
            json.dumps(
                {
                    "lastRun": {
                        "runId": "r1",
                        "started": "2026-12-01T04:00:00Z",
                        "finished": "2026-12-01T04:00:01Z",
                        "status": "succeeded",
                        "mode": "full",
                        "reason": "initial",
                        "pages": 1,
                        "users": 3,
                        "added": 3,
                        "updated": 0,
                        "removed": 0,
                        "graphRequests": 1,
                        "somethingNew": 1,
                    },
                    "lastSuccess": None,
                }
            ).encode(),
        ),
        # An incremental run has no reason.
        (
            "GET",
            "/api/sync/status",
            200,
            JSON,
            json.dumps(
                {
                    "lastRun": {
                        "runId": "r2",
                        "started": "2026-12-01T04:05:00Z",
                        "finished": "2026-12-01T04:05:01Z",
                        "status": "succeeded",
                        "mode": "incremental",
                        "reason": None,
                        "pages": 1,
                        "users": 3,
                        "added": 0,
                        "updated": 1,
                        "removed": 0,
                        "graphRequests": 1,
                        "message": "",
                    },
                    "lastSuccess": None,
                }
            ).encode(),
        ),
        # A skipped run (another sync held the lock) never chose a mode.
        (
            "GET",
            "/api/sync/status",
            200,
            JSON,
            json.dumps(
                {
                    "lastRun": {
                        "runId": "r3",
                        "started": "2026-12-01T04:06:00Z",
                        "finished": "2026-12-01T04:06:00Z",
                        "status": "skipped",
                        "mode": None,
                        "reason": None,
                        "pages": 0,
                        "users": 0,
                        "added": 0,
                        "updated": 0,
                        "removed": 0,
                        "graphRequests": 0,
                        "message": "A sync is already running; this request did nothing.",
                    },
                    "lastSuccess": None,
                }
            ).encode(),
        ),
    ],
)
def test_conforming_answers_pass(answer: tuple[Any, ...]) -> None:
    """Documented status, content type, headers and shape (unknown extra properties allowed)."""
    assert recorded_failures([answer]) == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (("GET", "/api/health", 200, {}, b'{"status":"ok"}'), "Content-Type"),
        (("GET", "/api/users", 503, JSON, ERROR), "headers"),  # no Retry-After
        (("GET", "/api/users", 418, JSON, ERROR), "status code"),
        (("GET", "/api/users", 200, JSON, b'{"value": "not a list", "nextCursor": null}'), "schema"),
        (
            (
                "GET",
                "/api/sync/status",
                200,
                JSON,
                json.dumps(
                    {"lastRun": {"runId": "r1", "started": "x", "status": "done", "mode": "full"}, "lastSuccess": None}
                ).encode(),
            ),
            "schema",
        ),
        (("DELETE", "/api/users", 200, JSON, b"{}"), "not in openapi.yaml"),
    ],
)
def test_answers_that_do_not_conform_are_named(answer: tuple[Any, ...], reason: str) -> None:
    """Each kind of mismatch is reported with the operation and why."""
    failures = recorded_failures([answer])
    assert len(failures) == 1 and failures[0].startswith(f"{answer[0]} {answer[1]} -> {answer[2]}")
    assert reason.lower() in failures[0].lower(), failures[0]
