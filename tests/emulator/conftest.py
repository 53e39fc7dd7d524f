"""Fixtures for the emulator's service modules, called directly: a tenant, and requests to hand them."""

from __future__ import annotations

import pytest

from emulator.state import Tenant

PORT = 8443  # an address for the tenant's URLs; nothing listens on it


@pytest.fixture(scope="session")
def _tenant() -> Tenant:
    tenant = Tenant(users=30, seed=5)
    tenant.port = PORT
    return tenant


@pytest.fixture
def tenant(_tenant: Tenant) -> Tenant:
    """A small tenant, reset, whose URLs name a port nothing listens on."""
    _tenant.reset()
    return _tenant
