"""The Functions app: thin triggers over the ``graphusers`` package.

Importing this module reads no secret, opens no connection and raises nothing
when settings are missing: the host indexes the functions from it, and a
failure here would leave it with zero functions.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

import azure.functions as func

from graphusers import api, deadline
from graphusers.config import (
    SYNC_QUEUE,
    schedule_interval,
    sync_deadline_seconds,
    sync_full_every,
    sync_full_round,
    sync_schedule,
)
from graphusers.service import get_services, get_store
from graphusers.sync import SyncRequest, UserSync, read_status
from graphusers.sync.requests import parse_message, request_from_message

logger = logging.getLogger("function_app")
# azure-core logs every request's headers at INFO; keep storage and Key Vault calls to warnings.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _http(response: api.ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(
        response.json(),
        status_code=response.status,
        headers=response.headers,
        mimetype="application/json",
        charset="utf-8",
    )


def _sync(trigger: str, mode: str = "incremental", request: SyncRequest | None = None) -> None:
    services = get_services()
    logger.info("Sync from %s (%s requested)", trigger, mode)
    # The sync stops cleanly (snapshot untouched, lease released) before the host's functionTimeout.
    with deadline.within(sync_deadline_seconds(), "sync"):
        UserSync(
            services.graph,
            get_store(),
            services.settings.user_select,
            tenant=services.settings.tenant_id,
            full_every=sync_full_every(),
            full_round=sync_full_round(),
        ).run(full=mode == "full", request=request)


@app.route(route="users", methods=["GET"])
def list_users(req: func.HttpRequest) -> func.HttpResponse:
    """List users, one page per call; `nextCursor` fetches the next."""

    def run() -> api.ApiResponse:
        services = get_services()
        return api.list_users(services.graph, req.params, services.settings.user_select)

    return _http(api.respond(run))


@app.route(route="users/{id}", methods=["GET"])
def get_user(req: func.HttpRequest) -> func.HttpResponse:
    """One user by object id or userPrincipalName."""

    def run() -> api.ApiResponse:
        services = get_services()
        return api.get_user(services.graph, req.route_params.get("id", ""), req.params, services.settings.user_select)

    return _http(api.respond(run))


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: answers without touching any dependency."""
    return _http(api.ApiResponse(200, {"status": "ok"}))


@app.route(route="sync", methods=["POST"])
@app.queue_output(arg_name="request", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def request_sync(req: func.HttpRequest, request: func.Out[str]) -> func.HttpResponse:
    """Queue an on-demand sync (body ``{"mode": "full"}`` for a full resync) and answer at once."""

    def run() -> api.ApiResponse:
        api.check_no_parameters(req.params)
        mode = api.parse_sync_request(req.get_body())
        request_id = uuid.uuid4().hex
        request.set(json.dumps({"requestId": request_id, "requestedAt": datetime.now(UTC).isoformat(), "mode": mode}))
        # GET /api/sync/status lists the request by this id: pending, running (with the run's id), finished.
        return api.ApiResponse(202, {"status": "queued", "statusUrl": "/api/sync/status", "requestId": request_id})

    return _http(api.respond(run))


@app.route(route="sync/status", methods=["GET"])
def sync_status(req: func.HttpRequest) -> func.HttpResponse:
    """The last run of any outcome and the last success; 404 before any run."""

    def run() -> api.ApiResponse:
        api.check_no_parameters(req.params)
        return api.sync_status(read_status(get_store(), interval=schedule_interval(sync_schedule())))

    return _http(api.respond(run))


def _queued_mode(msg: func.QueueMessage) -> str:
    # Messages queued before the body carried a mode, or by hand, mean a normal run.
    return parse_message(msg.get_body())[1]


@app.queue_trigger(arg_name="msg", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def user_sync_queue(msg: func.QueueMessage) -> None:
    """Run a sync requested through POST /api/sync; if one is running, the request stays pending for it."""
    logger.info("Sync requested by queue message %s (dequeue count %s)", msg.id, msg.dequeue_count)
    request = request_from_message(msg.get_body(), msg.id)
    _sync("queue", request.mode, request)


@app.timer_trigger(schedule=sync_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def user_sync_timer(timer: func.TimerRequest) -> None:
    """Scheduled delta sync of the tenant's users into Blob Storage."""
    if timer.past_due:
        logger.warning("The user sync timer is past due; running now")
    _sync("timer")
