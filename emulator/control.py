"""The loopback control API, ``/_emulator/...``: what tools and benchmarks change or read over HTTP.

It drives the facade through ``Controlled``, so it needs no import of the server.
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

from .faults import Fault, Injector
from .state import Tenant
from .wire import GRAPH_ROLE, Answer, Reply, Request


class Controlled(Protocol):
    """What the control API needs of the emulator."""

    tenant: Tenant
    injector: Injector

    def counts(self) -> dict[str, int]: ...
    def app_settings(self, mode: str = "secret") -> dict[str, str]: ...
    def clear_log(self) -> None: ...
    def inject(self, *faults: Fault) -> None: ...
    def reset(self) -> None: ...


def handle(emu: Controlled, req: Request) -> Answer:
    """One control action: ``/_emulator/{action}``."""
    method = req.method
    tenant = emu.tenant
    action = req.path[len("/_emulator/") :]
    payload = json.loads(req.body or b"{}")
    if action == "requests" and method == "GET":
        return 200, emu.counts(), {}
    if action == "settings" and method == "GET":
        return 200, emu.app_settings(), {}
    if action == "clear-log" and method == "POST":
        emu.clear_log()
        return 200, {"cleared": True}, {}
    # Benchmark helpers: clients that measure paging only, and the SDK peer
    # (which takes a client secret as its documentation shows), need these.
    if action == "token" and method == "GET":
        token, _ = tenant.issue_token(tenant.url, tenant.client_id, [GRAPH_ROLE], tenant.token_lifetime)
        return 200, {"access_token": token}, {}
    if action == "client-secret" and method == "GET":
        return 200, {"client_secret": tenant.secret}, {}
    if action == "rotate-secret" and method == "POST":
        tenant.rotate_secret(expire_old=bool(payload.get("expireOld")))
        return 200, {"rotated": True}, {}
    if action == "faults" and method == "POST":
        emu.inject(Fault(**payload))
        return 200, {"queued": True}, {}
    if action == "latency" and method == "POST":
        with tenant.lock:
            emu.injector.latency.update({str(k): float(v) for k, v in payload.items()})
        return 200, emu.injector.latency, {}
    if action == "users" and method == "POST":
        # Change the tenant: {"update": n, "remove": n, "softRemove": n, "restore": n, "add": n}
        # (updates on the first users, removals on the last ones).
        with tenant.lock:
            directory = tenant.directory
            ids = list(directory.users)
            for uid in ids[: int(payload.get("update", 0))]:
                directory.update(uid, jobTitle="Changed " + uid[:8])
            for uid in ids[len(ids) - int(payload.get("remove", 0)) :]:
                directory.remove(uid)
            for uid in list(directory.users)[::-1][: int(payload.get("softRemove", 0))]:
                directory.remove(uid, soft=True)
            for uid in list(directory.deleted)[: int(payload.get("restore", 0))]:
                directory.restore(uid)
            for _ in range(int(payload.get("add", 0))):
                directory.add()
        return 200, {"users": len(tenant.directory.users)}, {}
    if action == "users" and method == "GET":
        # The tenant's ids as a count and a digest, to check a snapshot without moving them all.
        with tenant.lock:
            ids = sorted(tenant.directory.users)
        return 200, {"count": len(ids), "idsSha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}, {}
    if action == "delta" and method == "POST":
        # Delta behaviour: {"expiryStatus": 410|400, "expire": true, "minimal": bool, "unify": bool,
        # "removedThenLive": share, "replay": bool, "replayOld": share, "outageFrom": offset|null,
        # "stateError": key of DELTA_STATE_ERRORS, "loseEdits": n, "pageCap": n (Graph: 200),
        # "shortPages": share of pages served short or empty, "latestRefused": bool ($deltatoken=latest a 400)}
        with tenant.lock:
            if "expiryStatus" in payload:
                tenant.delta_expiry_status = int(payload["expiryStatus"])
            if payload.get("expire"):
                tenant.directory.delta_epoch += 1
            tenant.delta_minimal = bool(payload.get("minimal", tenant.delta_minimal))
            tenant.delta_unify = bool(payload.get("unify", tenant.delta_unify))
            tenant.delta_replay = bool(payload.get("replay", tenant.delta_replay))
            tenant.delta_replay_old = float(payload.get("replayOld", tenant.delta_replay_old))
            tenant.delta_removed_then_live = float(payload.get("removedThenLive", tenant.delta_removed_then_live))
            if "outageFrom" in payload:
                tenant.delta_outage_from = None if payload["outageFrom"] is None else int(payload["outageFrom"])
            if "stateError" in payload:
                tenant.delta_state_error = payload["stateError"]
            tenant.delta_lose_edits = int(payload.get("loseEdits", tenant.delta_lose_edits))
            tenant.delta_page_cap = max(1, int(payload.get("pageCap", tenant.delta_page_cap)))
            tenant.delta_short_pages = min(1.0, max(0.0, float(payload.get("shortPages", tenant.delta_short_pages))))
            tenant.delta_latest_refused = bool(payload.get("latestRefused", tenant.delta_latest_refused))
        return 200, {"updated": True}, {}
    if action == "paging" and method == "POST":
        # /users page tokens: {"tokenLifetime": seconds} (Directory_ExpiredPageToken after it).
        with tenant.lock:
            tenant.page_token_lifetime = float(payload.get("tokenLifetime", tenant.page_token_lifetime))
        return 200, {"tokenLifetime": tenant.page_token_lifetime}, {}
    if action == "shape" and method == "POST":
        # How Graph's answers are sent: {"chunked": bool, "gzip": bool} (both on by default, as Graph).
        with tenant.lock:
            tenant.graph_chunked = bool(payload.get("chunked", tenant.graph_chunked))
            tenant.graph_gzip = bool(payload.get("gzip", tenant.graph_gzip))
        return 200, {"chunked": tenant.graph_chunked, "gzip": tenant.graph_gzip}, {}
    if action == "notifications" and method == "POST":
        # Change notifications (emulator/notify.py): {"quota": n, "batch": n, "duplicates": bool,
        # "retryDelays": [seconds], "validationTimeout": seconds, "expire": true (silent expiry now),
        # "lifecycle": "reauthorizationRequired" | "subscriptionRemoved" | "missed"}
        notifier = tenant.notifier
        with notifier.lock:
            notifier.quota = int(payload.get("quota", notifier.quota))
            notifier.batch = max(1, int(payload.get("batch", notifier.batch)))
            notifier.duplicates = bool(payload.get("duplicates", notifier.duplicates))
            if "retryDelays" in payload:
                notifier.retry_delays = tuple(float(d) for d in payload["retryDelays"])
            notifier.validation_timeout = float(payload.get("validationTimeout", notifier.validation_timeout))
        if payload.get("expire"):
            notifier.expire_all()
        if payload.get("lifecycle"):
            notifier.lifecycle(str(payload["lifecycle"]))
        return 200, {"subscriptions": len(notifier.subscriptions), "deliveries": len(notifier.deliveries)}, {}
    if action == "reset" and method == "POST":
        emu.reset()
        return 200, {"reset": True}, {}
    raise Reply(404, {"error": "unknown control action"})
