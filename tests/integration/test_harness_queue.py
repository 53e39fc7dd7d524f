"""The harness's queue extension, as ./scripts/serve uses it: base64 messages, dequeue count, poison queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from devtools.azurite import Azurite
from devtools.harness import HarnessError, RuntimeHost

pytestmark = pytest.mark.harness

APP = """
import json
import logging

import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="work", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    body = json.loads(msg.get_body())
    logging.warning("dequeue %s of %s", msg.dequeue_count, body["job"])
    if body["fail"]:
        raise RuntimeError("this job always fails")
"""


@pytest.fixture(scope="module")
def storage() -> Iterator[Azurite]:
    azurite = Azurite()
    yield azurite
    azurite.stop()


@pytest.fixture
def host(tmp_path: Path, storage: Azurite) -> Iterator[RuntimeHost]:
    (tmp_path / "function_app.py").write_text(APP)
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    with RuntimeHost(tmp_path, {"AzureWebJobsStorage": storage.connection_string}) as running:
        yield running


def queue(storage: Azurite, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(
        storage.connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    try:
        client.create_queue()
    except Exception:
        pass
    return client


def test_a_base64_message_runs_once_and_is_deleted(host: RuntimeHost, storage: Azurite) -> None:
    """A message enqueued base64-encoded (the host's default) reaches the function decoded, then is gone."""
    work = queue(storage, "work")
    work.clear_messages()
    work.send_message(json.dumps({"job": "ok-1", "fail": False}))
    assert host.run_queue("work") == 1
    assert host.run_queue("work") == 0
    assert host.log_path is not None and "dequeue 1 of ok-1" in host.log_path.read_text()


def test_a_failing_message_goes_to_the_poison_queue_after_five_dequeues(host: RuntimeHost, storage: Azurite) -> None:
    """Each failure makes the message visible again with a higher dequeue count; the fifth moves it to work-poison."""
    work, poison = queue(storage, "work"), queue(storage, "work-poison")
    work.clear_messages()
    poison.clear_messages()
    body = json.dumps({"job": "bad-1", "fail": True})
    work.send_message(body)
    for _ in range(5):
        with pytest.raises(HarnessError, match="this job always fails"):
            host.run_queue("work")
    assert host.run_queue("work") == 0  # nothing left to dequeue
    assert [m.content for m in poison.receive_messages()] == [body]
    log = host.log_path.read_text() if host.log_path else ""
    assert [f"dequeue {n} of bad-1" in log for n in range(1, 6)] == [True] * 5
    assert "dequeue 6 of bad-1" not in log
