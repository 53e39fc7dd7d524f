"""What the app can see of its Graph credential's expiry, and the daily warning before it.

Read without extra permissions: the Key Vault secret's ``expires`` attribute
(``exp`` in the REST answer; the secret read already returns it) and, for a
certificate, its ``notAfter``. Managed identity federation has no expiry to
see. Inside ``WARN_WITHIN`` the app logs one WARNING a day (per process),
``Graph credential expires ...``, which the infra alert matches; the sync
writes ``{mode, expiresOn}`` into status.json so the status answer shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger(__name__)

WARN_WITHIN = timedelta(days=30)

_lock = threading.Lock()
_mode: str | None = None
_expires_on: datetime | None = None
_warned_on: str | None = None  # the UTC date of the last warning


def note(mode: str, expires_on: datetime | None) -> None:
    """Record the credential just read: its mode and when it expires (``None``: no expiry seen)."""
    global _mode, _expires_on
    with _lock:
        _mode, _expires_on = mode, expires_on


def current() -> dict[str, Any] | None:
    """``{"mode", "expiresOn"}`` of the credential this process last read, or ``None`` before any read."""
    with _lock:
        if _mode is None:
            return None
        stamp = _expires_on.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if _expires_on else None
        return {"mode": _mode, "expiresOn": stamp}


def warn_if_due(wall: Callable[[], float] = time.time) -> bool:
    """Log the expiry WARNING if the credential expires within WARN_WITHIN and none was logged today."""
    global _warned_on
    now = datetime.fromtimestamp(wall(), UTC)
    with _lock:
        if _expires_on is None or _expires_on - now > WARN_WITHIN or _warned_on == now.date().isoformat():
            return False
        _warned_on = now.date().isoformat()
        mode, expires_on = _mode, _expires_on
    left = expires_on - now
    setting = "GRAPH_CLIENT_CERTIFICATE_NAME" if mode == "certificate" else "GRAPH_CLIENT_SECRET_NAME"
    if left.total_seconds() <= 0:
        logger.warning(
            "Graph credential expired on %s (%s): add a new version of the Key Vault object %s names; "
            "token requests fail until then",
            expires_on.strftime("%Y-%m-%d"),
            mode,
            setting,
        )
    else:
        logger.warning(
            "Graph credential expires on %s, in %d days (%s): add a new version of the Key Vault object %s names before then",
            expires_on.strftime("%Y-%m-%d"),
            left.days,
            mode,
            setting,
        )
    return True


def certificate_not_after(pem_certs: str) -> datetime | None:
    """The leaf certificate's notAfter from PEM text, or ``None`` if it cannot be read."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem_certs.encode()).not_valid_after_utc
    except ValueError:
        return None


def earliest(*moments: datetime | None) -> datetime | None:
    """The earliest of the moments given, ignoring ``None``."""
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def reset() -> None:
    """Forget what was recorded (for tests)."""
    global _mode, _expires_on, _warned_on
    with _lock:
        _mode = _expires_on = _warned_on = None
