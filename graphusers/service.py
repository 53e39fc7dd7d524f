"""The process-wide wiring: settings, the token provider, the Graph client and the sync store, built once.

Nothing here runs at import. The first invocation that needs a service builds
it behind a lock; every later invocation, of any trigger, reuses it. A
``ConfigError`` is not cached, so each invocation reports it until it is fixed.
The store is separate because the user API works without storage settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .config import Settings, load_settings, load_storage_settings
from .credentials import TokenProvider, TokenSource, credential_source
from .graph import GraphClient
from .storage import SyncStore, container_client


@dataclass(frozen=True)
class Services:
    """What the triggers use."""

    settings: Settings
    tokens: TokenSource
    graph: GraphClient


class Lazy[T]:
    """One value for the process, built by ``build`` on first use; ``set`` is the seam for tests."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def set(self, value: T | None) -> None:
        with self._lock:
            self._value = value


def build_services(settings: Settings) -> Services:
    """Wire the production services for ``settings``; performs no I/O."""
    tokens = TokenProvider(settings, credential_source(settings))
    return Services(settings=settings, tokens=tokens, graph=GraphClient(settings.graph_endpoint, tokens))


_services: Lazy[Services] = Lazy(lambda: build_services(load_settings()))
_store: Lazy[SyncStore] = Lazy(lambda: SyncStore(container_client(load_storage_settings())))

# The shared services, built on first use.
get_services = _services.get
# The sync's blob store, built on first use.
get_store = _store.get
# Replace (or with None, forget) them: seams for tests and tools.
set_services = _services.set
set_store = _store.set
