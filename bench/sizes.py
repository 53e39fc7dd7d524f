"""Installed size of distributions and everything they require, in the running environment.

python bench/sizes.py NAME [NAME ...]   -> prints {"bytes": N, "distributions": [...]}
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [r.lower().replace("_", "-") for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return seen


def size(names: set[str]) -> int:
    total = 0
    for name in names:
        for f in metadata.distribution(name).files or []:
            try:
                total += Path(f.locate()).stat().st_size
            except OSError:
                pass
    return total


if __name__ == "__main__":
    names = closure(sys.argv[1:])
    print(json.dumps({"bytes": size(names), "distributions": sorted(names)}))
