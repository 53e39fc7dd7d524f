"""Small fakes for the app's seams: a scripted HTTP session and a token source."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

Answer = requests.Response | Exception | Callable[[str, dict[str, Any]], requests.Response]


def response(
    status: int = 200, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> requests.Response:
    """A requests.Response as a server would send it."""
    resp = requests.Response()
    resp.status_code = status
    resp._content = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    resp.headers = CaseInsensitiveDict({"Content-Type": "application/json", **(headers or {})})
    return resp


class ScriptedSession:
    """Answers GETs from a script, in order, and records each call."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        self.calls.append({"url": url, **kwargs})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer) and not isinstance(answer, requests.Response):
            return answer(url, kwargs)
        return answer


class FakeTokens:
    """Hands out numbered tokens; ``invalidate`` moves to the next one."""

    def __init__(self) -> None:
        self.generation = 0
        self.invalidated: list[str] = []

    def get_token(self) -> str:
        return f"token-{self.generation}"

    def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        self.generation += 1
