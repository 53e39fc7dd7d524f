"""Shared fixtures: the emulated tenant, app settings pointing at it, and trigger access."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest

from emulator import Emulator
from graphusers import service
from tests.support.azurite import Azurite

APP_SETTINGS = (
    "GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "KEY_VAULT_URL", "GRAPH_CLIENT_SECRET_NAME", "AUTHORITY_HOST",
    "GRAPH_ENDPOINT", "USER_SELECT", "AZURE_CLIENT_ID", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
    "USER_SYNC_SCHEDULE", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID",
    "USER_SYNC_CONTAINER", "AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId",
)


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

    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


def http_get(route: str, params: dict[str, str] | None = None, route_params: dict[str, str] | None = None,
             ) -> func.HttpRequest:
    """An HTTP GET request as the host hands it to a trigger."""
    return func.HttpRequest(
        method="GET", url=f"http://localhost/api/{route}", params=params or {},
        route_params=route_params or {}, body=b"", headers={},
    )


class _Capture(logging.Handler):
    """Keeps every log record of the session, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.texts.append(self.format(record))
        except Exception:
            self.texts.append(str(record.msg))


SESSION_LOG = _Capture()


@pytest.fixture(scope="session", autouse=True)
def _capture_all_logs() -> Iterator[None]:
    """Every record of every library at DEBUG, for tests/test_zz_secrets.py."""
    root = logging.getLogger()
    previous = root.level
    root.addHandler(SESSION_LOG)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(SESSION_LOG)
    root.setLevel(previous)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark integration tests; run the suite-wide secrets check last, after every scenario."""
    for item in items:
        if f"{os.sep}integration{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.fspath.basename == "test_zz_secrets.py")
