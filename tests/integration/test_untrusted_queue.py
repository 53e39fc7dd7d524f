"""An unusable sync queue message takes the poison-queue path through the real runtime, and syncs nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from devtools.azurite import Azurite
from devtools.harness import HarnessError, RuntimeHost
from emulator import Emulator
from graphusers.config import SYNC_QUEUE

pytestmark = pytest.mark.harness
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(users=20, seed=21) as emu:
        yield emu


def _queue(azurite: Azurite, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(
        azurite.connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    try:
        client.create_queue()
    except Exception:
        pass
    client.clear_messages()
    return client


def test_a_deeply_nested_queue_message_ends_in_the_poison_queue(tenant: Emulator, azurite: Azurite) -> None:
    """Defect 4's queue twin: 40,000 "[" fail the trigger five times before any sync, then wait in the poison queue."""
    work, poison = _queue(azurite, SYNC_QUEUE), _queue(azurite, f"{SYNC_QUEUE}-poison")
    body = "[" * 40_000  # base64 of it stays under a queue message's 64 KiB
    work.send_message(body)
    env = {**tenant.app_settings(), "AzureWebJobsStorage": azurite.connection_string, "USER_SYNC_CONTAINER": "poison-path"}
    with RuntimeHost(ROOT, env) as host:
        for _ in range(5):
            with pytest.raises(HarnessError, match="not usable"):
                host.run_queue("user_sync_queue")
        assert host.run_queue("user_sync_queue") == 0
        log = host.log_path.read_text() if host.log_path else ""
    assert [m.content for m in poison.receive_messages()] == [body]
    assert tenant.count("graph") == 0 and tenant.count("token") == 0  # nothing was synced for it
    assert "RecursionError" not in log and "goes to the poison queue" in log
    assert json.dumps(body)[:10] not in log  # the message itself is not logged
