"""The suite-wide personal-data check: no UPN, mail or display name of the emulated tenant's users in a log at INFO+.

The README promises that user keys appear in logs only as ``<sha256:…>``. This
check holds every log record of the app's process to it, whatever emitted it
(the app's loggers, MSAL's, the Azure SDK's, urllib3's), in every test:

- in-process records are checked after each test; a record at INFO or above
  that names a user of the emulated tenant fails that test (an error in its
  teardown, naming the logger and the level, never the data itself);
- the logs of every runtime worker (``devtools.harness``) and the output of
  every ``./scripts/serve`` the tests start (``testkit.serve``) are checked at
  the end of the session, record by record, as the secrets check reads them.

The emulator is not the app: its own records (loggers named ``emulator…``) are
exempt. DEBUG records are exempt too: urllib3 logs every URL at DEBUG, and no
deployment runs at DEBUG (host.json's ``logLevel`` starts at Information).

Used by ``tests/conftest.py``; loadable alone as a plugin (``-p testkit.personal_data``),
which is how ``tests/unit/test_personal_data_check.py`` shows that it fails.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator.directory import FIRST, LAST

# The emulated tenant's domain (emulator/state.py): every user's UPN and mail is <name><n>@ it.
DOMAIN = "emulated.onmicrosoft.example"
# Loggers that are not the app's: the emulator stands in for Microsoft's services.
EXEMPT_PREFIXES = ("emulator",)
# Log files the tests produce outside this process: ./scripts/serve's output (testkit.serve adds them).
SERVE_LOGS: list[Path] = []

_UPN = re.compile(r"[A-Za-z0-9._%+'-]+(?:@|%40)" + re.escape(DOMAIN), re.IGNORECASE)
_NAME = re.compile(r"\b(?:" + "|".join(map(re.escape, FIRST)) + r")(?:\s|%20|\+)(?:" + "|".join(map(re.escape, LAST)) + r")\b")
# One record of "%(asctime)s %(levelname)s %(name)s: %(message)s", the format of the worker and of serve.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): ")


@dataclass(frozen=True)
class Finding:
    """Where personal data reached a log: the logger, the level and what kind of data (never the data)."""

    where: str
    logger: str
    level: str
    kinds: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {self.level} record of logger {self.logger!r} contains {' and '.join(self.kinds)}"


def kinds_in(text: str) -> tuple[str, ...]:
    """Which kinds of the emulated users' personal data ``text`` contains."""
    kinds = []
    if _UPN.search(text):
        kinds.append("a userPrincipalName or mail")
    if _NAME.search(text):
        kinds.append("a display name")
    return tuple(kinds)


def _exempt(logger: str) -> bool:
    return logger.startswith(EXEMPT_PREFIXES)


def check_record(record: logging.LogRecord, where: str) -> Finding | None:
    """A finding for one in-process record, or None."""
    if record.levelno < logging.INFO or _exempt(record.name):
        return None
    try:
        text = record.getMessage()
    except Exception:  # a record whose arguments do not format: check its parts
        text = f"{record.msg} {record.args}"
    if record.exc_info and record.exc_info[1] is not None:
        text += f"\n{record.exc_info[1]!r}"
    kinds = kinds_in(text)
    return Finding(where, record.name, record.levelname, kinds) if kinds else None


def records_of(text: str) -> Iterator[tuple[str, str, str]]:
    """(level, logger, text) of each record in a log file of the worker's or serve's format; lines that follow a
    record (a traceback) belong to it, lines before the first record are nobody's."""
    level = logger = ""
    lines: list[str] = []
    for line in text.splitlines():
        match = _RECORD.match(line)
        if match is None:
            if level:
                lines.append(line)
            continue
        if level:
            yield level, logger, "\n".join(lines)
        level, logger, lines = match.group(1), match.group(2), [line]
    if level:
        yield level, logger, "\n".join(lines)


def check_files(paths: Iterable[Path]) -> list[Finding]:
    """Findings in the records at INFO+ of log files of the worker's or serve's format."""
    found = []
    for path in paths:
        if not path.exists():
            continue
        for level, logger, text in records_of(path.read_text(errors="replace")):
            if level == "DEBUG" or _exempt(logger):
                continue
            kinds = kinds_in(text)
            if kinds:
                found.append(Finding(path.name, logger, level, kinds))
    return found


class _Recorder(logging.Handler):
    """Keeps every record at INFO+ that names a user, with the test that was running."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.where = "(outside any test)"
        self.findings: list[Finding] = []

    def emit(self, record: logging.LogRecord) -> None:
        finding = check_record(record, self.where)
        if finding is not None:
            self.findings.append(finding)


RECORDER = _Recorder()


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    if RECORDER not in root.handlers:
        root.addHandler(RECORDER)
    # Records below the root's level never reach a handler: let INFO through (the
    # secrets check in tests/conftest.py lowers it to DEBUG for the session anyway).
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _no_personal_data_in_this_tests_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if any record at INFO+ it caused names a user of the emulated tenant."""
    RECORDER.where = request.node.nodeid
    start = len(RECORDER.findings)
    yield
    found = RECORDER.findings[start:]
    RECORDER.where = "(between tests)"
    if found:
        pytest.fail("personal data reached a log at INFO or above:\n" + "\n".join(map(str, found[:20])), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _no_personal_data_in_worker_or_serve_logs() -> Iterator[None]:
    """At the end of the session: the runtime workers' logs and ./scripts/serve's output hold no user's data."""
    yield
    from devtools.harness import WORKER_LOGS

    # Records logged outside any test (a session fixture's start-up or teardown) count too.
    found = [f for f in RECORDER.findings if f.where.startswith("(")]
    found += check_files([*WORKER_LOGS, *SERVE_LOGS])
    assert found == [], "personal data reached a log at INFO or above:\n" + "\n".join(map(str, found[:20]))
