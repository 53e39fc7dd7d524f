"""The suite-wide secrets check: no issued secret, key or token in any captured log."""

from __future__ import annotations

from collections.abc import Iterable


def find_leaks(corpus: str, secrets: Iterable[str]) -> list[str]:
    """Short prefixes of every secret (or JWT signature) that appears in ``corpus``."""
    values = set(secrets)
    leaked = [value[:12] + "..." for value in values if value and value in corpus]
    # A JWT's signature alone would be a leak too.
    signatures = {value.rsplit(".", 1)[-1] for value in values if value.count(".") == 2}
    leaked += [s[:12] + "..." for s in signatures if s and s in corpus]
    return sorted(leaked)
