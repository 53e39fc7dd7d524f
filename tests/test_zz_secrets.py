"""Secrets stay secret: across every scenario the suite ran, no secret, key or token reached a log.

It runs last (conftest orders it) and reads what the session captured: every
log record of every library at DEBUG in this process, and the logs of every
runtime worker process. Responses are checked where they are made (the
hostile-input and no-leak tests).
"""

from __future__ import annotations

from emulator.server import ISSUED_SECRETS
from tests.conftest import SESSION_LOG
from tests.harness import WORKER_LOGS


def test_no_secret_key_or_token_in_any_log() -> None:
    """Client secrets, certificate keys, Graph tokens and managed identity (Key Vault) tokens never appear."""
    texts = list(SESSION_LOG.texts)
    texts += [path.read_text(errors="replace") for path in WORKER_LOGS if path.exists()]
    corpus = "\n".join(texts)
    assert len(ISSUED_SECRETS) > 20 and len(corpus) > 10_000, "the suite ran too little to judge"
    leaked = [value[:12] + "..." for value in set(ISSUED_SECRETS) if value in corpus]
    assert leaked == []
    # A JWT's signature alone would be a leak too.
    signatures = {value.rsplit(".", 1)[-1] for value in ISSUED_SECRETS if value.count(".") == 2}
    assert [s[:12] for s in signatures if s in corpus] == []
