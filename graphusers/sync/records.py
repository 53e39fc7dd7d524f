"""Snapshot lines and delta entries: folding an id's entries, writing lines, telling repeats apart, drift digests."""

from __future__ import annotations

import hashlib
import json
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

import orjson


class Fold:
    """What the entries of one id in a round add up to: present or not, and the merged properties (JSON)."""

    __slots__ = ("present", "props", "reason")

    def __init__(self) -> None:
        self.present = False
        self.props = ""  # JSON text: a repeated id costs a few hundred bytes, not a dict
        self.reason = ""


def apply_entry(folds: dict[str, Fold], item: dict[str, Any]) -> None:
    """Fold one delta entry into ``folds``: the last occurrence decides presence, live copies merge."""
    fold = folds.get(item["id"])
    if fold is None:
        fold = folds[item["id"]] = Fold()
    removed = item.get("@removed")
    if removed is not None or "@removed" in item:
        # "changed": soft-deleted (restorable for 30 days); "deleted": gone for good. Either way it
        # leaves the snapshot. https://learn.microsoft.com/graph/api/user-delta
        fold.present = False
        fold.reason = str(removed.get("reason", "deleted")) if isinstance(removed, dict) else "deleted"
        return
    fold.present = True
    cleaned = clean(item)
    fold.props = dumps({**json.loads(fold.props), **cleaned} if fold.props else cleaned)


def clean(item: dict[str, Any]) -> dict[str, Any]:
    """A user record with "id" first and no OData annotations."""
    out = {"id": item["id"]}
    out.update((k, v) for k, v in item.items() if k != "id" and "@" not in k)
    return out


def dumps(record: dict[str, Any]) -> str:
    """One JSON line, compact, with U+2028/U+2029 escaped."""
    # U+2028/U+2029 are valid inside JSON strings but str.splitlines() splits
    # on them; JSON's \u escapes keep every record on one line for any reader.
    return escape(_encode(record))


def _encode(record: dict[str, Any]) -> str:
    """``json.dumps(record, separators=(",", ":"), ensure_ascii=False)``, through orjson when that gives the same text.

    orjson (the listing's encoder, see api.ApiResponse.json) writes those bytes about 10x as fast for
    strings, booleans, null, integers, lists and objects with string keys. It writes floats otherwise
    (``1e-7``, not ``1e-07``), NaN as null, and refuses integers past 64 bits and lone surrogates:
    a record holding a float takes the standard library's path, and so does one orjson refuses.
    """
    if not _has_float(record):
        try:
            return orjson.dumps(record).decode()
        except TypeError:  # orjson.JSONEncodeError: a huge int, a lone surrogate, a non-str key
            pass
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def _has_float(value: dict[str, Any] | list[Any]) -> bool:
    """True if ``value`` holds a float anywhere (Graph's user properties almost never do)."""
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for item in items:
        kind: type[Any] = type(item)
        if kind is str or item is None or kind is bool or kind is int:
            continue
        if kind is float or (kind in (dict, list) and _has_float(item)):
            return True
        if kind not in (dict, list) and isinstance(item, float | dict | list | tuple):
            return True  # a subclass or a tuple: the standard library decides how it looks
    return False


def escape(line: str) -> str:
    """``line`` with U+2028/U+2029 escaped."""
    if "\u2028" in line or "\u2029" in line:
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return line


def line_id(line: str) -> str:
    """The id of a snapshot line."""
    # Snapshot lines are written with "id" first: slice instead of parsing
    # every line of an unchanged tenant.
    if line.startswith('{"id":"'):
        end = line.find('"', 7)
        if end > 7:
            return line[7:end]
    return str(json.loads(line)["id"])


def snapshot_line(record: dict[str, Any], select: tuple[str, ...]) -> str:
    """A snapshot line: exactly the selected properties, "id" first, null where Graph sent none."""
    return dumps({"id": record["id"], **{f: record.get(f) for f in select if f != "id"}})


class SeenFilter:
    """A Bloom filter over ids: it may call a new id seen, never a seen id new."""

    def __init__(self, bits: int) -> None:
        self._size = max(8, bits)
        self._bits = bytearray((self._size + 7) // 8)

    def check_add(self, uid: str) -> bool:
        """True if ``uid`` was (probably) added before; adds it either way."""
        digest = hashlib.blake2b(uid.encode(), digest_size=12).digest()
        seen = True
        for i in (0, 4, 8):
            bit = int.from_bytes(digest[i : i + 4], "little") % self._size
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self._bits[byte] & mask:
                seen = False
                self._bits[byte] |= mask
        return seen


class Digests:
    """The old snapshot as sorted 64-bit keys (48 bits of the id's hash, 16 of the line's): 8 bytes a user.

    ``see`` each line of the new snapshot, then ``drift`` counts added, changed and
    removed users. Hash collisions can hide a change (about 1 in 65,536 per changed
    user) but never invent one.
    """

    def __init__(self, lines: Iterator[str]) -> None:
        keys = array("Q", (_digest(line_id(line), line) for line in lines))
        self.keys = array("Q", sorted(keys))
        del keys
        self.matched = 0
        self.added = self.changed = 0

    def see(self, line: str) -> None:
        key = _digest(line_id(line), line)
        i = bisect_left(self.keys, key & ~0xFFFF)
        if i < len(self.keys) and self.keys[i] >> 16 == key >> 16:
            self.matched += 1
            if self.keys[i] != key:
                self.changed += 1
        else:
            self.added += 1

    def drift(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed, "removed": len(self.keys) - self.matched}


def _digest(uid: str, line: str) -> int:
    head = int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=6).digest(), "big")
    tail = int.from_bytes(hashlib.blake2b(line.encode(), digest_size=2).digest(), "big")
    return head << 16 | tail


def compose(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two change logs of the same round as one: the second wins, but an addition stays an addition."""
    merged = {entry["id"]: entry for entry in first}
    for entry in second:
        before = merged.get(entry["id"])
        if before is not None and entry["change"] == "updated" and before["change"] in ("added", "updated"):
            entry = {**before, "properties": {**before.get("properties", {}), **entry["properties"]}}
        merged[entry["id"]] = entry
    return list(merged.values())
