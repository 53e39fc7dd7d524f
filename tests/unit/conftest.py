"""Unit tests are fast and offline: no real sleeps (code under test gets a clock or sleep seam)."""

from __future__ import annotations

import sys
import time

import pytest

# Sleeps from these places fail a unit test; the standard library's own short waits
# (subprocess polling, thread joins) pass through.
_NO_SLEEP_FROM = ("graphusers", "function_app", "devtools", "unit.", "testkit")


@pytest.fixture(autouse=True)
def _no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.sleep`` from the app or a test fails the test: hand the code a fake sleep or clock instead."""
    real_sleep = time.sleep

    def guarded(seconds: float) -> None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith(_NO_SLEEP_FROM) or "test_" in caller:
            raise AssertionError(f"{caller} slept {seconds!r} s in a unit test; pass a sleep or clock seam instead")
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", guarded)
