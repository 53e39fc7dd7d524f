"""The peer: the same listing written the way the Microsoft Graph SDK's documentation shows.

Runs in its own environment (.venv-peer: msgraph-sdk, azure-identity). A
GraphServiceClient with a ClientSecretCredential pages through /users with the
same $select and $top, following odata_next_link. Only the emulator's URLs,
its CA (SSL_CERT_FILE, REQUESTS_CA_BUNDLE) and the allowed host differ from
the documented setup. Prints one JSON line like bench/clients.py.

    .venv-peer/bin/python bench/peer/list_users.py EMULATOR_SETTINGS_JSON CLIENT_SECRET [MAX_USERS]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.identity import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

SELECT = ["id", "displayName", "userPrincipalName", "mail", "accountEnabled"]


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def main() -> None:
    settings, secret = json.loads(sys.argv[1]), sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
    endpoint = settings["GRAPH_ENDPOINT"]
    credential = ClientSecretCredential(
        settings["GRAPH_TENANT_ID"],
        settings["GRAPH_CLIENT_ID"],
        secret,
        authority=settings["AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=[f"{endpoint}/.default"], allowed_hosts=[urlsplit(endpoint).hostname or ""]
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = f"{endpoint}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=SELECT, top=999)
    config = RequestConfiguration(query_parameters=query)
    await client.users.get(
        request_configuration=RequestConfiguration(
            query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=SELECT, top=1)
        )
    )  # setup

    Path("/proc/self/clear_refs").write_text("5")
    base = _kb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    users = pages = 0
    page: Any = await client.users.get(request_configuration=config)
    while page is not None:
        users += len(page.value or [])
        pages += 1
        if not page.odata_next_link or users >= limit:
            break
        page = await client.users.with_url(page.odata_next_link).get()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        json.dumps({"users": users, "pages": pages, "wall_s": wall, "cpu_s": cpu, "rss_growth_mb": (_kb("VmHWM") - base) / 1024})
    )


if __name__ == "__main__":
    os.environ.setdefault("SSL_CERT_FILE", os.environ.get("REQUESTS_CA_BUNDLE", ""))
    asyncio.run(main())
