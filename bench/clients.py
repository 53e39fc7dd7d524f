"""One listing of every user at $top=999, or one full sync, measured in this (fresh) process; prints a JSON line.

    python -m bench.clients app|plain|floor|sync|plain-sync EMULATOR_SETTINGS_JSON [MAX_USERS]

- ``app``: this app's Graph client with its production wiring (managed identity,
  Key Vault, MSAL), the same ``GraphClient.get`` path the sync pages through.
- ``plain``: a bare ``requests`` loop that only parses each page's JSON and counts users.
- ``floor``: the same loop without parsing: what the emulator and the network allow.
- ``sync``: one full round of this app's sync (``UserSync.run`` on an empty container:
  ``/users/delta`` into the snapshot blob), with its production wiring; the
  settings must name the storage (``AzureWebJobsStorage``, ``USER_SYNC_CONTAINER``).
- ``plain-sync``: a bare ``requests`` loop over the same round as the sync's (``USER_SYNC_FULL_ROUND``:
  by default ``$deltatoken=latest`` then ``/users?$top=999``; with ``delta``, the delta round with
  ``Prefer: odata.maxpagesize=999``), same ``$select``, that parses each page and writes each user as a
  JSON line to a local file: the lean floor for a sync.

Setup (imports, credentials, first token) is not measured; the listing is:
wall time, CPU time of the process, and peak RSS growth (VmHWM reset before).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

SELECT = "id,displayName,userPrincipalName,mail,accountEnabled"


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(run: Any) -> dict[str, Any]:
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
    base = _kb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    users, pages = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"users": users, "pages": pages, "wall_s": wall, "cpu_s": cpu, "rss_growth_mb": (_kb("VmHWM") - base) / 1024}


def main() -> None:
    kind, settings = sys.argv[1], json.loads(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
    os.environ.update(settings)
    base = settings["GRAPH_ENDPOINT"]
    if kind == "app":
        from graphusers.graph import UsersQuery
        from graphusers.service import get_services

        graph = get_services().graph
        graph.users_page(UsersQuery(top=1))  # credentials and the first token: setup, not measured

        def run() -> tuple[int, int]:
            users = pages = 0
            for page in graph.iter_pages(UsersQuery(top=999, select=tuple(SELECT.split(",")))):
                users += len(page.value)
                pages += 1
                if users >= limit:
                    break
            return users, pages
    elif kind == "sync":
        from graphusers.service import get_services, get_store
        from graphusers.sync import UserSync

        services = get_services()
        services.tokens.get_token()  # credentials and the first token: setup, not measured
        store = get_store()
        store.ensure()

        def run() -> tuple[int, int]:
            kind = os.environ.get("USER_SYNC_FULL_ROUND") or "listing"
            summary = UserSync(services.graph, store, services.settings.user_select, full_round=kind).run()
            if summary.status != "succeeded" or summary.mode != "full":
                raise SystemExit(f"the sync did not run a full round: {summary.as_dict()}")
            return summary.users, summary.pages
    elif kind == "plain-sync":
        import tempfile

        import requests

        session = requests.Session()
        token = session.get(f"{base}/_emulator/token", timeout=30).json()["access_token"]
        session.headers.update({"Authorization": f"Bearer {token}", "Prefer": "odata.maxpagesize=999"})

        def run() -> tuple[int, int]:
            users = pages = 0
            url: str | None = f"{base}/v1.0/users/delta?$select={SELECT}"
            if (os.environ.get("USER_SYNC_FULL_ROUND") or "listing") == "listing":
                session.get(f"{url}&$deltatoken=latest", timeout=60).raise_for_status()
                url, pages = f"{base}/v1.0/users?$top=999&$select={SELECT}", 0
            with tempfile.TemporaryFile("w", encoding="utf-8") as out:
                while url:
                    resp = session.get(url, timeout=60)
                    resp.raise_for_status()
                    body = resp.json()
                    for user in body["value"]:
                        out.write(json.dumps(user, separators=(",", ":"), ensure_ascii=False) + "\n")
                    users, pages = users + len(body["value"]), pages + 1
                    url = body.get("@odata.nextLink")
            return users, pages
    else:
        import requests

        session = requests.Session()
        token = session.get(f"{base}/_emulator/token", timeout=30).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        parse = kind == "plain"

        def run() -> tuple[int, int]:
            users = pages = 0
            url: str | None = f"{base}/v1.0/users?$top=999&$select={SELECT}"
            while url:
                resp = session.get(url, timeout=60)
                resp.raise_for_status()
                pages += 1
                if parse:
                    body = resp.json()
                    users += len(body["value"])
                    url = body.get("@odata.nextLink")
                else:
                    # The floor: bytes only; the next link is found without parsing the page.
                    content = resp.content
                    users += content.count(b'"id":')
                    at = content.rfind(b'"@odata.nextLink":"')
                    url = content[at + 19 : content.index(b'"', at + 19)].decode() if at >= 0 else None
                if users >= limit:
                    break
            return users, pages

    print(json.dumps(measure(run)))


if __name__ == "__main__":
    main()
