"""errors.py's docstring tree is the class tree."""

from __future__ import annotations

import inspect
import re

from graphusers import errors


def test_docstring_tree_names_every_error_under_its_parent() -> None:
    """Each class in the module docstring's tree sits under its base class, and every error class is in it."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*(?:[│ ]\s*)*(?:[├└]── )?)(\w+Error)\b", line)
        if not match:
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    classes = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AppError) and cls.__module__ == errors.__name__
    }
    assert set(parents) | {"AppError"} == set(classes)
    assert {name: cls.__mro__[1].__name__ for name, cls in classes.items() if name != "AppError"} == parents
