"""deadline.run's threads: reused when idle, never queued behind a stuck action, ended when idle too long."""

from __future__ import annotations

import threading

import pytest

from graphusers import deadline
from graphusers.errors import DeadlineError


def test_a_finished_invocations_thread_runs_the_next_one() -> None:
    """Warm invocations one after another reuse one thread rather than starting one each."""
    deadline.run(threading.get_ident, 10)
    before = {t.ident for t in threading.enumerate()}
    used = {deadline.run(threading.get_ident, 10) for _ in range(5)}
    assert used <= before
    assert threading.get_ident() not in used


def test_a_stuck_action_does_not_hold_up_the_next() -> None:
    """With every reused thread busy, the next action gets a thread of its own at once."""
    stuck = threading.Event()
    try:
        with pytest.raises(DeadlineError):
            deadline.run(stuck.wait, 0.05)
        # The stuck thread is not idle: this one must not wait for it.
        assert deadline.run(lambda: deadline.remaining(), 10) <= 10
    finally:
        stuck.set()


def test_each_action_sees_its_own_deadline() -> None:
    """A reused thread runs each action in that call's context, not the previous one's."""
    assert deadline.run(lambda: deadline.remaining(), 5) <= 5
    assert 5 < deadline.run(lambda: deadline.remaining(), 50) <= 50
    assert deadline.current() is None


def test_an_idle_thread_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads idle for IDLE_SECONDS end, so a burst of invocations leaves no threads behind."""
    runners = deadline._Runners()
    monkeypatch.setattr(runners, "IDLE_SECONDS", 0.01)
    ran: list[threading.Thread] = []
    done = threading.Event()
    runners.start(lambda: ran.append(threading.current_thread()), done, "test-runner")
    assert done.wait(5)
    ran[0].join(5)
    assert not ran[0].is_alive()
    assert runners._idle == 0
