"""The process-wide wiring: settings, the token provider and the Graph client, built once.

Nothing here runs at import. The first invocation that needs Graph builds the
services behind a lock; every later invocation, of any trigger, reuses them.
A ``ConfigError`` is not cached, so each invocation reports it until fixed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .config import Settings, load_settings, load_storage_settings
from .credentials import TokenProvider, credential_source
from .graph import GraphClient
from .storage import SyncStore, container_client


@dataclass(frozen=True)
class Services:
    """What the triggers use."""

    settings: Settings
    tokens: TokenProvider
    graph: GraphClient


_lock = threading.Lock()
_services: Services | None = None
_store: SyncStore | None = None


def build_services(settings: Settings) -> Services:
    """Wire the production services for ``settings``; performs no I/O."""
    tokens = TokenProvider(settings, credential_source(settings))
    return Services(settings=settings, tokens=tokens, graph=GraphClient(settings.graph_endpoint, tokens))


def get_services() -> Services:
    """The shared services, built on first use."""
    global _services
    services = _services
    if services is None:
        with _lock:
            if _services is None:
                _services = build_services(load_settings())
            services = _services
    return services


def set_services(services: Services | None) -> None:
    """Replace (or with ``None``, forget) the shared services; a seam for tests and tools."""
    global _services
    with _lock:
        _services = services


def get_store() -> SyncStore:
    """The sync's blob store, built on first use (separately: the user API works without storage)."""
    global _store
    store = _store
    if store is None:
        with _lock:
            if _store is None:
                _store = SyncStore(container_client(load_storage_settings()))
            store = _store
    return store


def set_store(store: SyncStore | None) -> None:
    """Replace (or forget) the shared store; a seam for tests."""
    global _store
    with _lock:
        _store = store
