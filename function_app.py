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

from graphusers import api, deadline, notifications, subscriptions
from graphusers.config import (
    SYNC_QUEUE,
    schedule_interval,
    sync_deadline_seconds,
    sync_full_every,
    sync_full_round,
    sync_schedule,
)
from graphusers.errors import InvalidRequestError
from graphusers.notifications import SUBSCRIPTION_QUEUE, subscription_schedule
from graphusers.service import get_services, get_store
from graphusers.sync import SyncRequest, UserSync, read_status
from graphusers.sync.requests import request_from_message

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
        params = api.query_parameters(req.url, req.params)
        services = get_services()
        return api.list_users(services.graph, params, services.settings.user_select)

    return _http(api.respond(run))


@app.route(route="users/{id}", methods=["GET"])
def get_user(req: func.HttpRequest) -> func.HttpResponse:
    """One user by object id or userPrincipalName."""

    def run() -> api.ApiResponse:
        params = api.query_parameters(req.url, req.params)
        services = get_services()
        return api.get_user(services.graph, req.route_params.get("id", ""), params, services.settings.user_select)

    return _http(api.respond(run))


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: answers without touching any dependency."""
    return _http(api.ApiResponse(200, {"status": "ok"}))


@app.route(route="openapi.yaml", methods=["GET"])
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    """This API's OpenAPI document (openapi.yaml, shipped with the app), for clients to generate code from."""
    try:
        api.check_no_parameters(api.query_parameters(req.url, req.params))
        document = api.openapi_document()
    except InvalidRequestError as exc:
        return _http(api.error_response(exc))
    except OSError:
        logger.error("openapi.yaml is missing from the deployment package (check .funcignore)")
        return _http(api.ApiResponse(500, api.error_body("internal_error", "The API document is missing; see the logs.")))
    # application/yaml: RFC 9512. https://www.rfc-editor.org/rfc/rfc9512
    return func.HttpResponse(document, status_code=200, mimetype="application/yaml", charset="utf-8")


@app.route(route="sync", methods=["POST"])
@app.queue_output(arg_name="request", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def request_sync(req: func.HttpRequest, request: func.Out[str]) -> func.HttpResponse:
    """Queue an on-demand sync (body ``{"mode": "full"}`` for a full resync) and answer at once."""

    def run() -> api.ApiResponse:
        api.check_no_parameters(api.query_parameters(req.url, req.params))
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
        api.check_no_parameters(api.query_parameters(req.url, req.params))
        return api.sync_status(read_status(get_store(), interval=schedule_interval(sync_schedule())))

    return _http(api.respond(run))


def _queued_mode(msg: func.QueueMessage) -> str:
    # An unreadable message fails here, before any sync: after the host's retries it is in the poison queue.
    try:
        return api.parse_queued_sync(msg.get_body())
    except InvalidRequestError as exc:
        logger.warning("Queue message %s is not a sync request (%s); it goes to the poison queue", msg.id, exc.message)
        raise


@app.queue_trigger(arg_name="msg", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def user_sync_queue(msg: func.QueueMessage) -> None:
    """Run a sync requested through POST /api/sync; if one is running, the request stays pending for it."""
    logger.info("Sync requested by queue message %s (dequeue count %s)", msg.id, msg.dequeue_count)
    _queued_mode(msg)  # an unusable message raises here, before any sync
    if notifications.is_wake_message(msg.get_body()):
        # A change notification's wake-up: the pending flag is the request; the lock holder claims it.
        _sync("notification")
        return
    request = request_from_message(msg.get_body(), msg.id)
    _sync("queue", request.mode, request)


@app.timer_trigger(schedule=sync_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def user_sync_timer(timer: func.TimerRequest) -> None:
    """Scheduled delta sync of the tenant's users into Blob Storage."""
    if timer.past_due:
        logger.warning("The user sync timer is past due; running now")
    _sync("timer")


# -- change notifications (graphusers/notifications.py; off unless NOTIFICATIONS_ENABLED) --------------------
# On a blueprint the app registers only when the feature is on (read at import, as the schedules are):
# off, the host indexes exactly the functions it did before the feature existed.
notification_functions = func.Blueprint(http_auth_level=func.AuthLevel.FUNCTION)  # type: ignore[no-untyped-call]


def _notified(
    req: func.HttpRequest, wake: func.Out[str], *, lifecycle: bool
) -> tuple[func.HttpResponse, tuple[tuple[str, str], ...]]:
    try:
        # A name given twice is refused, as on every route (Graph sends each once).
        params = api.query_parameters(req.url, req.params)
    except InvalidRequestError as exc:
        return _http(api.error_response(exc)), ()
    token = notifications.validation_token(params)
    settings = notifications.load_notification_settings()
    if token is not None:
        # The handshake: no I/O, nothing built. Off: refused, so no subscription can be made.
        if not settings.enabled:
            off = api.error_body("not_found", "Change notifications are off (NOTIFICATIONS_ENABLED).")
            return _http(api.ApiResponse(404, off)), ()
        return func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8"), ()
    if not settings.enabled:
        return func.HttpResponse(status_code=202), ()  # off: accepted and ignored, so Graph does not retry

    def store() -> object:
        sync_store = get_store()
        sync_store.ensure()  # once per process: a notification may come before the first sync made the container
        return sync_store

    runtime = notifications.get_runtime
    answer = notifications.receive(
        req.get_body(),
        secrets=lambda: runtime().secrets.values(),
        subscription_ids=lambda: subscriptions.subscription_ids(get_store()),
        store=store,
        lifecycle=lifecycle,
    )
    if answer.wake:
        wake.set(notifications.wake_message())
    return func.HttpResponse(status_code=answer.status), answer.lifecycle_events


@notification_functions.route(route=notifications.NOTIFICATION_ROUTE, methods=["POST"])
@notification_functions.queue_output(arg_name="wake", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
def change_notifications(req: func.HttpRequest, wake: func.Out[str]) -> func.HttpResponse:
    """Graph's change notifications on users: checked, then at most one pending incremental sync."""
    return _notified(req, wake, lifecycle=False)[0]


@notification_functions.route(route=notifications.LIFECYCLE_ROUTE, methods=["POST"])
@notification_functions.queue_output(arg_name="wake", queue_name=SYNC_QUEUE, connection="AzureWebJobsStorage")
@notification_functions.queue_output(arg_name="manage", queue_name=SUBSCRIPTION_QUEUE, connection="AzureWebJobsStorage")
def lifecycle_notifications(req: func.HttpRequest, wake: func.Out[str], manage: func.Out[str]) -> func.HttpResponse:
    """Graph's lifecycle events: ``missed`` asks for a sync; the others wake the subscription manager."""
    response, events = _notified(req, wake, lifecycle=True)
    others = [(event, sub) for event, sub in events if event != "missed"]
    for event, sub in others:
        try:
            subscriptions.mark_reauthorize(get_store(), sub, event)
        except Exception as exc:  # noqa: BLE001 - the manager's timer renews anyway
            logger.warning("Could not record lifecycle event %s (%s)", event, type(exc).__name__)
    if others:
        manage.set(json.dumps({"events": [event for event, _ in others]}))
    return response


def _manage(trigger: str) -> None:
    if not notifications.load_notification_settings().enabled:
        return  # off: no Graph call, no storage
    logger.info("Subscription manager from %s", trigger)
    store = get_store()
    store.ensure()
    outcome = notifications.manage(store)
    if outcome.resync:
        # A new subscription: changes made without one sent nothing. One pending run, the sync's own path.
        notifications.request_run(store, source="subscription")
        _sync("subscription")


@notification_functions.timer_trigger(schedule=subscription_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def subscription_manager_timer(timer: func.TimerRequest) -> None:
    """Keep the app's Graph subscription on users: adopt, clean up duplicates, create, renew."""
    _manage("timer")


@notification_functions.queue_trigger(arg_name="msg", queue_name=SUBSCRIPTION_QUEUE, connection="AzureWebJobsStorage")
def subscription_manager_queue(msg: func.QueueMessage) -> None:
    """The subscription manager, woken by a lifecycle event (reauthorizationRequired, subscriptionRemoved)."""
    _manage("lifecycle event")


if notifications.enabled():
    app.register_functions(notification_functions)
elif notifications.misconfigured():
    logger.error("NOTIFICATIONS_ENABLED must be true or false; change notifications stay off until it is fixed")
