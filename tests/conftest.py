"""Shared fixtures: the emulated tenant, app settings pointing at it, and trigger access."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from testkit.contract import record, recorded_failures, recording
from testkit.leaks import find_leaks
from testkit.logs import SESSION_LOG
from testkit.personal_data import (  # noqa: F401 - the suite-wide personal-data check: its hook and fixtures
    _no_personal_data_in_this_tests_logs,
    _no_personal_data_in_worker_or_serve_logs,
    pytest_configure,
)

from devtools.azurite import Azurite
from devtools.harness import HTTP_RESULTS, WORKER_LOGS
from emulator import Emulator
from graphusers import config, service

# Every setting the app reads (graphusers/config.py is the one list), the ones the
# host reads for it, and the environment azure-identity's credentials read: a
# value set in the developer's shell must not leak into a test.
SDK_ENVIRONMENT = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
)
APP_SETTINGS = tuple(sorted({*config.SETTINGS, *config.HOST_SETTINGS, *SDK_ENVIRONMENT}))


@pytest.fixture(autouse=True)
def _clean_app_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no app settings and no shared services."""
    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    service.set_services(None)
    service.set_store(None)
    yield
    service.set_services(None)
    service.set_store(None)


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[Emulator]:
    emu = Emulator(users=250, seed=7).start()
    yield emu
    emu.stop()


@pytest.fixture
def emu(_emulator_server: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulated tenant, reset, with the app's settings and trusted CA pointing at it."""
    _emulator_server.reset()
    # The Key Vault SDK caches the vault's challenge for the whole process;
    # clear it so each test starts like a fresh worker.
    from azure.keyvault.secrets._shared import HttpChallengeCache

    HttpChallengeCache.clear()
    for name, value in _emulator_server.app_settings().items():
        monkeypatch.setenv(name, value)
    return _emulator_server


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite (blob and queue) on free loopback ports for the whole session."""
    server = Azurite()
    yield server
    server.stop()


@pytest.fixture
def storage(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """AzureWebJobsStorage pointing at Azurite, with a fresh container name per test."""
    import uuid

    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    container = f"sync-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("USER_SYNC_CONTAINER", container)
    return container


@pytest.fixture(scope="session")
def triggers() -> dict[str, Callable[..., Any]]:
    """The app's functions by name, as the v2 model indexes them (once per app object)."""
    import function_app

    # HTTP answers are recorded, for the session's check against openapi.yaml.
    return recording(function_app.app)


@pytest.fixture(scope="session", autouse=True)
def _every_answer_in_openapi() -> Iterator[None]:
    """At the end of the session, every HTTP answer a trigger or the runtime harness gave is one openapi.yaml describes."""
    yield
    for method, path, result in HTTP_RESULTS:
        if result.status != 404 or result.body:  # the host's own 404 for no route has no operation
            record(method, path, result.status, result.headers, result.body)
    failures = recorded_failures()
    assert failures == [], "answers openapi.yaml does not describe:\n" + "\n".join(failures[:20])


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log() -> Iterator[None]:
    """Capture every record of every library at DEBUG; at the end of the session, no secret may be in one.

    The check reads every record this process logged and the logs of every
    runtime worker process, against every secret, certificate key and token
    the emulator issued during the session. It runs once, after every test,
    whatever their order; a leak fails the session as a teardown error.
    """
    from emulator.server import ISSUED_SECRETS

    root = logging.getLogger()
    previous = root.level
    root.addHandler(SESSION_LOG)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(SESSION_LOG)
    root.setLevel(previous)
    texts = list(SESSION_LOG.texts)
    texts += [path.read_text(errors="replace") for path in WORKER_LOGS if path.exists()]
    leaked = find_leaks("\n".join(texts), ISSUED_SECRETS)
    assert leaked == [], f"secrets, keys or tokens reached a log: {leaked}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests."""
    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
