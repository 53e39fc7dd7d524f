"""Check real answers of the HTTP API against the checked-in OpenAPI document (openapi.yaml).

``check_response`` checks one ``requests`` answer. ``record`` keeps an answer
the suite got some other way (a trigger called in-process, or the runtime
harness); the session checks every recorded one at its end (``recorded_failures``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import schemathesis
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
# What an answer must meet: a documented status, content type, headers and body schema.
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# (method, path, status, headers, body) of every answer recorded this session.
RECORDED: list[tuple[str, str, int, dict[str, str], bytes]] = []


def check_response(method: str, response: requests.Response) -> None:
    """Raise (naming the operation) unless the document describes this answer: status, headers, schema."""
    path = urlsplit(response.url).path
    operation = SCHEMA.find_operation_by_path(method, path)
    assert operation is not None, f"{method} {path} is not in openapi.yaml"
    _case(operation, path).validate_response(response, checks=CHECKS)


def _case(operation: Any, path: str) -> Any:
    """A Schemathesis case for this operation with the path parameters taken from ``path``."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(operation.path))
    match = re.fullmatch(pattern, path)
    return operation.Case(path_parameters=match.groupdict() if match else {})


def record(method: str, path: str, status: int, headers: dict[str, str], body: bytes) -> None:
    RECORDED.append((method, path, status, dict(headers), body))


def _as_response(method: str, path: str, status: int, headers: dict[str, str], body: bytes) -> Any:
    """A recorded answer as Schemathesis's own response type."""
    from schemathesis.core.transport import Response

    url = f"http://localhost:7071{path}"
    return Response(
        status_code=status,
        headers={k.lower(): [v] for k, v in headers.items()},
        content=body,
        request=requests.Request(method, url).prepare(),
        elapsed=0.0,
        message="",
        encoding="utf-8",
        http_version="1.1",
        verify=False,
    )


def recorded_failures(answers: list[tuple[str, str, int, dict[str, str], bytes]] | None = None) -> list[str]:
    """Each recorded answer (or each of ``answers``) the document does not describe, with the reason."""
    failures = []
    for method, path, status, headers, body in RECORDED if answers is None else answers:
        try:
            operation = SCHEMA.find_operation_by_path(method, path)
            assert operation is not None, f"{method} {path} is not in openapi.yaml"
            _case(operation, path).validate_response(_as_response(method, path, status, headers, body), checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:  # every failure is reported, all together
            found = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
            # The first line names the check; the rest says what in the body broke it.
            reason = "; ".join(" ".join(line for line in str(e).splitlines()[:12] if line.strip()) for e in found)
            failures.append(f"{method} {path} -> {status}: {reason[:1200]} body={body[:400]!r}")
    return failures


def recording(app: Any) -> dict[str, Callable[..., Any]]:
    """The app's functions by name; the HTTP ones record each answer they return."""
    import azure.functions as func

    functions: dict[str, Callable[..., Any]] = {}
    for fn in app.get_functions():
        user_function = fn.get_user_function()
        trigger = next(b for b in fn.get_bindings() if b.type.endswith("Trigger"))
        if trigger.type != "httpTrigger":
            functions[fn.get_function_name()] = user_function
            continue

        @functools.wraps(user_function)
        def call(
            req: func.HttpRequest,
            *args: Any,
            _fn: Any = user_function,
            _route: str = trigger.route,
            _methods: tuple[str, ...] = tuple(str(getattr(m, "value", m)) for m in trigger.methods or ()),
            **kwargs: Any,
        ) -> Any:
            answer = _fn(req, *args, **kwargs)
            # A request the host would never route here (another method) answers nothing to check.
            if isinstance(answer, func.HttpResponse) and (not _methods or req.method.upper() in _methods):
                path = "/api/" + re.sub(
                    r"\{(\w+)\}", lambda m: quote(req.route_params.get(m[1]) or "-", safe="@", errors="surrogatepass"), _route
                )
                headers = dict(answer.headers)
                if answer.mimetype and not any(k.lower() == "content-type" for k in headers):
                    # The runtime sends mimetype and charset as the Content-Type header.
                    headers["Content-Type"] = f"{answer.mimetype}; charset={answer.charset}"
                record(req.method, path, answer.status_code, headers, answer.get_body())
            return answer

        functions[fn.get_function_name()] = call
    return functions
