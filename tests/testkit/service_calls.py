"""Calling the emulator's service modules directly, without a server: the reply a handler raises."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emulator.state import Tenant
from emulator.wire import Reply, Request


def reply_of(handler: Callable[[Tenant, Request], object], tenant: Tenant, req: Request) -> Reply:
    """The reply a handler raises for ``req`` (fails the test when it answers normally)."""
    with pytest.raises(Reply) as caught:
        handler(tenant, req)
    return caught.value
