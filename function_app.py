"""The Functions app: thin triggers over the ``graphusers`` package.

Importing this module reads no secret, opens no connection and raises nothing
when settings are missing: the host indexes the functions from it, and a
failure here would leave it with zero functions.
"""

from __future__ import annotations

import logging

import azure.functions as func

from graphusers import api, jobs
from graphusers.config import sync_schedule
from graphusers.service import get_services

logger = logging.getLogger("function_app")
# azure-core logs every request's headers at INFO; keep Key Vault calls to warnings.
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


@app.timer_trigger(schedule=sync_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def user_sync_timer(timer: func.TimerRequest) -> None:
    """Scheduled job: read every user through the shared client and log a summary."""
    if timer.past_due:
        logger.warning("The user sync timer is past due; running now")
    services = get_services()
    jobs.list_all_users(services.graph, services.settings.user_select)
