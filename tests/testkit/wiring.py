"""Production wiring with test seams: recorded (not slept) backoff, short timeouts and cool-down."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from graphusers import service
from graphusers.config import load_settings
from graphusers.credentials import TokenProvider, credential_source
from graphusers.graph import GraphClient, RetryPolicy


@dataclass
class Wired:
    """The installed services and every backoff the Graph client asked for."""

    services: service.Services
    sleeps: list[float] = field(default_factory=list)


def wire(
    *, read_timeout: float = 30.0, cooldown: float = 10.0, retry: RetryPolicy | None = None, record_sleeps: bool = True
) -> Wired:
    """Build the app's services from the current environment, with seams set, and install them."""
    settings = load_settings()
    tokens = TokenProvider(settings, credential_source(settings), failure_cooldown=cooldown)
    sleeps: list[float] = []
    graph = GraphClient(
        settings.graph_endpoint,
        tokens,
        retry=retry or RetryPolicy(),
        timeout=(3.05, read_timeout),
        sleep=sleeps.append if record_sleeps else time.sleep,
    )
    wired = Wired(service.Services(settings=settings, tokens=tokens, graph=graph), sleeps)
    service.set_services(wired.services)
    return wired
