"""A reader for the request file format of api.http (VS Code REST Client): enough to run it in a test."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests

_VARIABLE = re.compile(r"^@(\w+)\s*=\s*(.*)$")
_EXPECT = re.compile(r"^#\s*expect\s+(\d{3})(?:\s+within\s+(\d+)s)?\s*$")
_NAME = re.compile(r"^#\s*@name\s+(\w+)\s*$")
_REFERENCE = re.compile(r"\{\{([^}]+)\}\}")


@dataclass
class HttpRequest:
    """One request of the file, with the status its "# expect" line names."""

    title: str
    method: str
    url: str
    headers: dict[str, str]
    body: str
    expect: int
    within: float = 0
    name: str | None = None
    line: int = 0
    variables: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> list[HttpRequest]:
    """The requests of a .http file, in order; ``ValueError`` for one without a "# expect" line."""
    variables: dict[str, str] = {}
    requests_: list[HttpRequest] = []
    blocks = re.split(r"^###", text, flags=re.M)
    offset = blocks[0].count("\n") + 1
    for line in blocks[0].splitlines():
        if match := _VARIABLE.match(line.strip()):
            variables[match[1]] = match[2].strip()
    for block in blocks[1:]:
        lines = block.split("\n")
        title = lines[0].strip()
        expect: int | None = None
        within = 0.0
        name = None
        index = 1
        while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith("#")):
            comment = lines[index].strip()
            if match := _EXPECT.match(comment):
                expect, within = int(match[1]), float(match[2] or 0)
            elif match := _NAME.match(comment):
                name = match[1]
            index += 1
        if index >= len(lines):
            raise ValueError(f"request {title!r} has no request line")
        method, url = lines[index].split(None, 1)
        index += 1
        headers: dict[str, str] = {}
        while index < len(lines) and lines[index].strip():
            key, _, value = lines[index].partition(":")
            headers[key.strip()] = value.strip()
            index += 1
        body = "\n".join(lines[index:]).strip()
        if expect is None:
            raise ValueError(f"request {title!r} has no '# expect <status>' line")
        requests_.append(HttpRequest(title, method, url.strip(), headers, body, expect, within, name, offset, dict(variables)))
        offset += block.count("\n")
    return requests_


def _jsonpath(value: Any, path: str) -> Any:
    """A ``$.a.b[0].c`` path into a JSON value."""
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path.removeprefix("$")):
        value = value[key] if key else value[int(index)]
    return value


def run(requests_: list[HttpRequest], variables: dict[str, str]) -> list[tuple[HttpRequest, requests.Response]]:
    """Send each request in order, resolving ``{{variable}}`` and ``{{name.response.body.$.path}}``."""
    answers: dict[str, Any] = {}
    done: list[tuple[HttpRequest, requests.Response]] = []

    def resolve(text: str, request: HttpRequest) -> str:
        def one(match: re.Match[str]) -> str:
            ref = match[1].strip()
            if ref in variables:
                return variables[ref]
            if ref in request.variables:
                return resolve(request.variables[ref], request)
            name, _, rest = ref.partition(".response.body.")
            if name not in answers:
                raise KeyError(f"{request.title!r}: {{{{{ref}}}}} names no earlier request or variable")
            return str(_jsonpath(answers[name], rest))

        return _REFERENCE.sub(one, text)

    for request in requests_:
        url = resolve(request.url, request)
        headers = {k: resolve(v, request) for k, v in request.headers.items()}
        body = resolve(request.body, request).encode() if request.body else None
        deadline = time.monotonic() + request.within
        while True:
            response = requests.request(request.method, url, headers=headers, data=body, timeout=60)
            if response.status_code == request.expect or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if request.name:
            answers[request.name] = json.loads(response.content)
        done.append((request, response))
    return done
