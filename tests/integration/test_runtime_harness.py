"""The app on the real Functions Python runtime (azure-functions-runtime), driven like the host drives it."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.azurite import Azurite
from devtools.harness import HarnessError, RuntimeHost
from emulator import Emulator

pytestmark = pytest.mark.harness

ROOT = Path(__file__).resolve().parents[2]


def documented_functions() -> dict[str, dict[str, str]]:
    """The functions table of docs/api.md: name -> trigger, route, methods, auth, schedule."""
    text = (ROOT / "docs" / "api.md").read_text()
    table = text.split("<!-- functions-table -->")[1]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, trigger, route, methods, auth = (c.strip().strip("`") for c in line.strip("|").split("|"))
        rows[name] = {"trigger": trigger, "route": route, "methods": methods, "auth": auth}
    return rows


SYNC_CONTAINER = "harness-sync"


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(users=1234, seed=3) as emu:
        yield emu


@pytest.fixture(scope="module")
def host(tenant: Emulator, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeHost]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**tenant.app_settings(), "AzureWebJobsStorage": azurite.connection_string, "USER_SYNC_CONTAINER": SYNC_CONTAINER}
    with RuntimeHost(ROOT, env, log_path=log) as h:
        yield h


def test_indexing_without_settings_finds_every_documented_function() -> None:
    """With no app settings the runtime indexes every function with docs/api.md's routes, methods and auth."""
    documented = documented_functions()
    with RuntimeHost(ROOT, {}) as bare:
        assert set(bare.functions) == set(documented)
        for name, doc in documented.items():
            trigger = bare.functions[name].trigger
            assert trigger["type"] == doc["trigger"], name
            if doc["trigger"] == "httpTrigger":
                assert "api/" + trigger["route"] == doc["route"].removeprefix("/"), name
                assert ",".join(trigger["methods"]) == doc["methods"], name
                assert trigger["authLevel"].lower() == doc["auth"].lower(), name
            elif doc["trigger"] == "queueTrigger":
                assert trigger["queueName"] == doc["route"] and trigger["connection"] == "AzureWebJobsStorage"
            else:
                assert trigger["schedule"] == doc["route"] and trigger["runOnStartup"] is False
        answer = bare.http("GET", "/api/users", key=bare.function_key)
        assert answer.status == 503 and answer.json()["error"]["code"] == "configuration_error"
        assert bare.http("GET", "/api/health").status == 200


def test_key_vault_down_indexes_and_answers_503(tenant: Emulator) -> None:
    """An unreachable vault does not stop indexing; the invocation is a 503 JSON, not a worker crash."""
    env = {**tenant.app_settings(), "KEY_VAULT_URL": "https://127.0.0.1:9"}
    with RuntimeHost(ROOT, env) as down:
        answer = down.http("GET", "/api/users", key=down.function_key)
        assert answer.status == 503 and answer.json()["error"]["code"] == "key_vault_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
        assert down.http("GET", "/api/health").status == 200


def test_list_pages_through_every_user(host: RuntimeHost, tenant: Emulator) -> None:
    """GET /api/users with cursors returns all users exactly once."""
    seen: list[str] = []
    query = {"top": "500"}
    while True:
        answer = host.http("GET", "/api/users", query=query, key=host.function_key)
        assert answer.status == 200 and answer.headers["content-type"].startswith("application/json")
        body = answer.json()
        seen += [u["id"] for u in body["value"]]
        if not body["nextCursor"]:
            break
        query = {"cursor": body["nextCursor"]}
    assert sorted(seen) == sorted(tenant.directory.users)


def test_lookup_bad_request_and_keys(host: RuntimeHost, tenant: Emulator) -> None:
    """Route parameters reach the function; bad input is a JSON 400; a missing key is the host's 401."""
    user = list(tenant.directory.users.values())[42]
    answer = host.http("GET", f"/api/users/{user['userPrincipalName']}", key=host.function_key)
    assert answer.status == 200 and answer.json()["id"] == user["id"]
    missing = host.http("GET", "/api/users/00000000-0000-0000-0000-000000000000", key=host.function_key)
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    bad = host.http("GET", "/api/users", query={"top": "5000"}, key=host.function_key)
    assert bad.status == 400 and bad.json() == {
        "error": {"code": "invalid_request", "message": "Parameter 'top' must be an integer from 1 to 999."}
    }
    assert host.http("GET", "/api/users").status == 401
    assert host.http("GET", "/api/users", query={"code": host.function_key, "top": "1"}).status == 200


def empty_sync_container(azurite: Azurite) -> None:
    """Start from no snapshot, whatever the module's other tests (in any order) synced before."""
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(azurite.connection_string, SYNC_CONTAINER)
    if container.exists():
        for blob in container.list_blobs():
            if blob.name != "sync.lock":  # the worker's store created the lock once and keeps using it
                container.delete_blob(blob.name)


def test_timer_runs_the_sync_and_status_reports_it(host: RuntimeHost, tenant: Emulator, azurite: Azurite) -> None:
    """The timer function syncs every user through the runtime; GET /api/sync/status shows the summary."""
    empty_sync_container(azurite)
    before = tenant.count("graph")
    response = host.timer("user_sync_timer", past_due=True)
    assert response.result.status == host.protos.StatusResult.Success
    users = len(tenant.directory.users)  # 1234, or one more when the queue test ran first
    # A listing round (the default): the deltaLink ($deltatoken=latest), then 1234 or 1235 users at 999 a page.
    assert tenant.count("graph") - before == 1 + -(-users // 999)
    status = host.http("GET", "/api/sync/status", key=host.function_key)
    assert status.status == 200
    last = status.json()["lastSuccess"]
    assert (last["mode"], last["reason"], last["users"], last["status"]) == ("full", "initial", users, "succeeded")
    assert status.json()["lastRun"] == last


def test_post_sync_queues_and_the_queue_trigger_completes_it(host: RuntimeHost, tenant: Emulator) -> None:
    """POST /api/sync answers 202 at once; the queue-triggered function then runs the sync."""
    host.timer("user_sync_timer")  # a baseline, so the queued run is incremental
    tenant.directory.add(displayName="Queued Newcomer")
    accepted = host.http("POST", "/api/sync", key=host.function_key)
    assert accepted.status == 202
    request_id = accepted.json()["requestId"]
    assert accepted.json() == {"status": "queued", "statusUrl": "/api/sync/status", "requestId": request_id}
    assert host.run_queue("user_sync_queue") == 1
    status = host.http("GET", "/api/sync/status", key=host.function_key).json()
    last = status["lastRun"]
    assert (last["mode"], last["added"], last["status"]) == ("incremental", 1, "succeeded")
    served = next(r for r in status["requests"] if r["requestId"] == request_id)
    assert (served["state"], served["runId"], served["status"]) == ("finished", last["runId"], "succeeded")
    assert host.run_queue("user_sync_queue") == 0  # the message was consumed


def test_many_invocations_share_one_token(host: RuntimeHost, tenant: Emulator) -> None:
    """Sequential and concurrent invocations in one worker process reuse one token and one secret read."""
    tokens_before = tenant.count("token")
    statuses: list[int] = []

    def call() -> None:
        statuses.append(host.http("GET", "/api/users", query={"top": "7"}, key=host.function_key).status)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(10):
        call()
    assert statuses == [200] * 26
    # One token for the worker's life: fetched here if this test runs first in the module, else earlier.
    assert tokens_before <= 1 and tenant.count("token") == 1
    assert tenant.count("keyvault") == 1


def test_broken_import_fails_with_the_runtimes_own_error(tmp_path: Path) -> None:
    """A syntax error in a module function_app imports fails the harness exactly as it would fail the host."""
    app = tmp_path / "app"
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(".venv", ".git", "node_modules", "tests", ".run"))
    api = app / "graphusers" / "api.py"
    api.write_text(api.read_text() + "\ndef broken(:\n")
    with pytest.raises(HarnessError) as info:
        RuntimeHost(app, {}).start().stop()
    message = str(info.value)
    assert "worker_init_request failed" in message
    assert re.search(r"SyntaxError|invalid syntax", message)
    assert "api.py" in message
