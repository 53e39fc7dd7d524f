"""The peer function app: the same job written with the Microsoft Graph SDK, for the cold-import figure.

It imports what such an app imports at module level, as the SDK's samples do,
and defines the same kind of triggers over a GraphServiceClient.
"""

from __future__ import annotations

import os

import azure.functions as func
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from msgraph import GraphServiceClient
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
_client: GraphServiceClient | None = None


def client() -> GraphServiceClient:
    global _client
    if _client is None:
        vault = SecretClient(os.environ["KEY_VAULT_URL"], DefaultAzureCredential())
        secret = vault.get_secret(os.environ.get("GRAPH_CLIENT_SECRET_NAME", "graph-client-secret")).value or ""
        credential = ClientSecretCredential(os.environ["GRAPH_TENANT_ID"], os.environ["GRAPH_CLIENT_ID"], secret)
        _client = GraphServiceClient(credentials=credential, scopes=["https://graph.microsoft.com/.default"])
    return _client


@app.route(route="users", methods=["GET"])
async def list_users(req: func.HttpRequest) -> func.HttpResponse:
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=["id", "displayName", "userPrincipalName", "mail", "accountEnabled"], top=100
    )
    from kiota_abstractions.base_request_configuration import RequestConfiguration

    page = await client().users.get(request_configuration=RequestConfiguration(query_parameters=query))
    names = [u.display_name for u in (page.value if page else []) or []]
    return func.HttpResponse(str(names), mimetype="application/json")


@app.route(route="users/{id}", methods=["GET"])
async def get_user(req: func.HttpRequest) -> func.HttpResponse:
    user = await client().users.by_user_id(req.route_params["id"]).get()
    return func.HttpResponse(str(user.display_name if user else ""), mimetype="application/json")
