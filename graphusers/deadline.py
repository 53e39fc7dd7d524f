"""One deadline per invocation: every wait and every outbound call of the invocation fits inside it.

Azure's front end drops an HTTP call that has not answered within 230 s, and
the Functions host ends a function at ``functionTimeout``. A dependency that
hangs, trickles or keeps failing must not take the invocation with it: each
HTTP invocation runs under ``HTTP_DEADLINE_SECONDS`` (the sync under its own,
longer one), and the pieces that wait consult it:

- the token lock is acquired with the time left as its timeout;
- ``transport.BoundedSession`` caps connect and read timeouts at the time left
  and limits the whole body read, not only each read;
- ``transport.RetryPolicy`` never starts a retry that cannot finish in time;
- every Blob Storage request gets its connect and read timeouts from the time
  left, and its retries only while one still fits (``storage.container_client``);
- ``run`` caps its threads, so work a stalled dependency holds cannot pile up.

Past the deadline the invocation raises ``DeadlineError`` (503 with
``Retry-After``) and logs what it cut short. The deadline lives in a context
variable, so concurrent invocations on the worker's thread pool each see their
own, and it also counts the Graph requests each invocation sends.
https://learn.microsoft.com/azure/azure-functions/functions-scale#timeout
"""

from __future__ import annotations

import contextvars
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import DeadlineError, UnavailableError

logger = logging.getLogger(__name__)

# How long past its deadline an invocation may take to hand over its answer
# (a 503 it is shaping, a log line it is writing) before the caller gets one anyway.
GRACE_SECONDS = 0.5
# What an HTTP caller is told to wait after a deadline: a retry soon is fine,
# the dependency may have recovered by then.
DEADLINE_RETRY_AFTER = 5


class Deadline:
    """A point in time an invocation must finish by, and the Graph requests it sent so far."""

    def __init__(self, seconds: float, name: str = "HTTP", *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.name = name
        self._clock = clock
        self.ends = clock() + seconds
        self.graph_requests = 0

    def remaining(self) -> float:
        """Seconds left; zero or less once it has passed."""
        return self.ends - self._clock()

    def exceeded(self, what: str) -> DeadlineError:
        """The error for ``what`` being cut short, logged once here."""
        logger.warning(
            "The %s deadline of %.0f s cut short %s (%.1f s left)", self.name, self.seconds, what, max(0.0, self.remaining())
        )
        return DeadlineError(
            f"The request did not finish within its deadline of {self.seconds:.0f} s (HTTP_DEADLINE_SECONDS) "
            "because a dependency was slow; retry shortly.",
            retry_after=DEADLINE_RETRY_AFTER,
        )

    def check(self, what: str, *, needs: float = 0.0) -> float:
        """The time left; ``DeadlineError`` when less than ``needs`` seconds (or none) remain."""
        left = self.remaining()
        if left <= needs or left <= 0:
            raise self.exceeded(what)
        return left


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("graphusers_deadline", default=None)


def current() -> Deadline | None:
    """The deadline of the running invocation, if any."""
    return _current.get()


def remaining(default: float = math.inf) -> float:
    """Seconds left in the running invocation; ``default`` outside one."""
    deadline = _current.get()
    return default if deadline is None else deadline.remaining()


@contextmanager
def within(
    seconds: float | None, name: str = "HTTP", *, clock: Callable[[], float] = time.monotonic
) -> Iterator[Deadline | None]:
    """Run the block under a deadline of ``seconds`` (``None``: no deadline); ``clock`` is a seam for tests."""
    if seconds is None:
        yield None
        return
    deadline = Deadline(seconds, name, clock=clock)
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


# The most runner threads at once. Work that outlives its caller (a dependency that
# stalls) ends at its next deadline check, but a stall that never checks would
# otherwise pile up one thread per request; past this many the next invocation is
# refused at once with 503 rather than adding one more.
MAX_RUNNERS = 32


class RunnersBusyError(UnavailableError):
    """Every runner thread is still busy with earlier invocations (a dependency is stalling)."""

    code = "service_unavailable"


class _Runners:
    """Threads for ``run``: an idle one takes the next action, a new one starts when none is idle, up to ``limit``.

    Starting a thread per invocation cost a measurable share of a warm listing's CPU
    (bench/README.md, "3 runtime path"). Never queueing keeps ``run``'s promise: an
    action starts at once even when every earlier one is still stuck, and a stuck
    action holds only its own thread. A thread idle for ``IDLE_SECONDS`` ends.
    With ``limit`` threads alive and none idle, ``start`` raises ``RunnersBusyError``.
    """

    IDLE_SECONDS = 60.0

    def __init__(self, limit: int = MAX_RUNNERS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._idle = 0
        self._alive = 0

    @property
    def alive(self) -> int:
        """Runner threads alive now, busy or idle."""
        return self._alive

    def start(self, task: Callable[[], None], done: threading.Event, name: str) -> None:
        """Run ``task`` (which must not raise) on another thread; ``done`` is set after it, once that thread is free."""
        with self._lock:
            if self._idle:
                # The idle count never exceeds the threads waiting for a task, so one takes it now.
                self._idle -= 1
                self._tasks.put((task, done))
                return
            if self._alive >= self.limit:
                raise RunnersBusyError(
                    f"The function app is still finishing {self._alive} earlier requests that a slow dependency "
                    "holds up; retry shortly.",
                    retry_after=DEADLINE_RETRY_AFTER,
                )
            self._alive += 1
        try:
            threading.Thread(target=self._serve, args=(task, done), name=name, daemon=True).start()
        except BaseException:
            with self._lock:
                self._alive -= 1
            raise

    def _serve(self, task: Callable[[], None], done: threading.Event) -> None:
        while True:
            task()
            with self._lock:
                # Counted idle before the caller hears of it, so its next call reuses this thread.
                self._idle += 1
            done.set()
            try:
                task, done = self._tasks.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    # A task handed over just as the wait ended is still this thread's to run.
                    try:
                        task, done = self._tasks.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        self._alive -= 1
                        return


_runners = _Runners()


def run[T](action: Callable[[], T], seconds: float, name: str = "HTTP") -> T:
    """Run ``action`` under a deadline of ``seconds`` and return by then, whatever it is blocked in.

    The action runs in another thread (an idle one reused, else a new one), with
    this deadline in its context, so every deadline-aware wait inside it gives up
    by itself; the caller stops waiting at the deadline (plus a short grace) and
    gets ``DeadlineError``. Work still running then is bounded by the same
    deadline: its next outbound request, retry or lock wait ends it, and every
    Blob Storage call gets its timeouts and retries from the time left
    (``storage.container_client``). At most ``MAX_RUNNERS`` threads run actions;
    past that ``RunnersBusyError`` (503) answers at once.
    """
    bounded = Deadline(seconds, name)
    token = _current.set(bounded)
    try:
        context = contextvars.copy_context()
    finally:
        _current.reset(token)
    done = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = context.run(action)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as is
            box["error"] = exc

    try:
        _runners.start(target, done, f"{name.lower()}-invocation")
    except RunnersBusyError:
        logger.warning("Refused an invocation: all %d runner threads are busy with earlier ones", _runners.limit)
        raise
    if not done.wait(max(0.0, bounded.remaining()) + GRACE_SECONDS):
        raise bounded.exceeded("the invocation, which goes on in the background until its next deadline check")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
