"""One parser for JSON that comes from outside the app: cursors, queue messages, request bodies.

Every caller passes a size limit and gets ``UntrustedJSONError`` for anything
it cannot use: too large, not UTF-8, not JSON, nested deeper than ``max_depth``.
The callers turn that one error into their one answer: 400 for an HTTP caller,
the poison-queue path for a queue message. Nothing else can escape: the
standard library's ``json.loads`` raises ``RecursionError`` (not ``ValueError``)
on deeply nested input, which reached the HTTP boundary as a 500 with an ERROR
traceback; orjson stops at its own depth limit (1,024) with a ``ValueError``,
and the depth the caller allows is checked on the result without recursion.
"""

from __future__ import annotations

from typing import Any

import orjson

# Every document the app accepts is a flat object (a cursor's fields, a sync
# request, a queue message); a little room for what a later version may add.
MAX_DEPTH = 8


class UntrustedJSONError(ValueError):
    """Input that is not JSON the app can use; ``reason`` says why, without echoing the input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Azure Storage's own limit for a queue message: the largest sync request the app reads.
MAX_QUEUE_MESSAGE = 64 * 1024


def loads(data: bytes | bytearray | memoryview | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``data``; ``UntrustedJSONError`` if it is larger than ``max_bytes``, malformed or too deep."""
    size = len(data) if not isinstance(data, str) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise UntrustedJSONError(f"it is larger than {max_bytes} bytes")
    try:
        value = orjson.loads(data)
    except (ValueError, TypeError):
        # orjson.JSONDecodeError is a ValueError: bad syntax, invalid UTF-8, lone
        # surrogates, and nesting past orjson's own limit.
        raise UntrustedJSONError("it is not valid JSON") from None
    if depth(value, max_depth) > max_depth:
        raise UntrustedJSONError(f"it is nested deeper than {max_depth} levels")
    return value


def depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests arrays and objects (a scalar: 0), counted up to ``limit + 1`` without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest
