"""The suite-wide personal-data check itself: it fails a test that logs a UPN at WARNING, and only such tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.personal_data import DOMAIN, check_files, check_record, kinds_in

from emulator.state import Tenant

ROOT = Path(__file__).resolve().parents[2]
UPN = f"ada.lovelace7@{DOMAIN}"

INNER = f'''
import logging

def test_a_upn_at_warning():
    logging.getLogger("graphusers.transport").warning("The HTTP deadline cut short GET graph/v1.0/users/%s", "{UPN}")

def test_a_display_name_from_msal_at_info():
    logging.getLogger("msal.application").info("Signed in as Grace Hopper")

def test_a_hash_at_warning():
    logging.getLogger("graphusers.graph").warning("GET /v1.0/users/<sha256:0123456789ab> failed")

def test_urllib3_at_debug():
    logging.getLogger("urllib3.connectionpool").debug("GET /v1.0/users/{UPN}")

def test_the_emulator_is_not_the_app():
    logging.getLogger("emulator.server").warning("served {UPN}")
'''


@pytest.mark.exhaustive  # runs a pytest session of its own
def test_the_check_fails_the_tests_that_log_personal_data(tmp_path: Path) -> None:
    """Run as a plugin over five tests: the UPN at WARNING and the display name at INFO fail; the rest pass."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-p",
            "testkit.personal_data",
            "-rE",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    assert run.returncode == 1, out
    assert "5 passed, 2 errors" in out, out  # the two failures are errors in their tests' teardown
    assert (
        "ERROR test_inner.py::test_a_upn_at_warning" in out
        and "ERROR test_inner.py::test_a_display_name_from_msal_at_info" in out
    )
    assert "WARNING record of logger 'graphusers.transport' contains a userPrincipalName or mail" in out
    # The finding names the logger and the kind of data, never the data.
    assert "ada.lovelace7" not in "\n".join(line for line in out.splitlines() if "record of logger" in line)


def test_records_are_checked_by_level_and_logger() -> None:
    """INFO and above count for every logger but the emulator's; a percent-encoded UPN counts too."""

    def record(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    assert check_record(record("azure.identity", logging.INFO, f"x {UPN}"), "t") is not None
    assert check_record(record("graphusers.api", logging.ERROR, "GET /users/ada.lovelace7%40" + DOMAIN), "t") is not None
    assert check_record(record("urllib3", logging.DEBUG, UPN), "t") is None
    assert check_record(record("emulator", logging.ERROR, UPN), "t") is None
    assert kinds_in("Dennis Ritchie and tim.bernerslee3@" + DOMAIN) == ("a userPrincipalName or mail", "a display name")
    assert kinds_in("Ada Hopper-Smith is not ours? no: 'Ada Hopper' is a generated name") == ("a display name",)
    assert kinds_in("Lovelace, the id 8f5e9a60 and <sha256:abc>") == ()


def test_worker_and_serve_logs_are_read_record_by_record(tmp_path: Path) -> None:
    """The worker's and serve's log format: records at INFO+ with their tracebacks; DEBUG and the emulator exempt."""
    log = tmp_path / "worker.log"
    log.write_text(
        "starting\n"
        f"2026-12-04 03:00:00,001 DEBUG urllib3.connectionpool: GET /users/{UPN}\n"
        "2026-12-04 03:00:00,002 INFO graphusers.graph: listed 5 users\n"
        "2026-12-04 03:00:00,003 ERROR graphusers.api: Unexpected error\n"
        "Traceback (most recent call last):\n"
        f"KeyError: '{UPN}'\n"
        f"2026-12-04 03:00:00,004 WARNING emulator: {UPN}\n"
    )
    found = check_files([log, tmp_path / "missing.log"])
    assert [(f.logger, f.level) for f in found] == [("graphusers.api", "ERROR")]


def test_the_check_knows_the_emulated_tenants_domain() -> None:
    """The domain the check looks for is the one the emulated tenant's users have."""
    user = next(iter(Tenant(users=3, seed=1).directory.users.values()))
    assert user["userPrincipalName"].endswith("@" + DOMAIN) and kinds_in(user["displayName"]) == ("a display name",)
