"""Managed identity: App Service's token endpoint (``IDENTITY_ENDPOINT`` with ``X-IDENTITY-HEADER``).

https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
"""

from __future__ import annotations

import uuid

from .state import Tenant
from .wire import FEDERATION_AUDIENCE, Answer, Reply, Request


def handle(tenant: Tenant, req: Request) -> Answer:
    """``GET /msi/token?resource=...``: a token for the app's user-assigned identity."""
    if req.header("X-IDENTITY-HEADER") != tenant.identity_header:
        raise Reply(401, {"statusCode": 401, "message": "Missing or wrong X-IDENTITY-HEADER."})
    resource = req.query.get("resource", "")
    if not resource:
        raise Reply(400, {"statusCode": 400, "message": "Missing 'resource' query parameter."})
    client_id = req.query.get("client_id")
    if not client_id and not tenant.system_identity:
        # Without client_id (or principal_id, mi_res_id) App Service uses the
        # system-assigned identity, and this app has none: Azure answers 400.
        # https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
        # (the answer as observed: github.com/Azure/azure-sdk-for-net/issues/43691)
        raise Reply(
            400, {"statusCode": 400, "message": "Unable to load the proper Managed Identity.", "correlationId": str(uuid.uuid4())}
        )
    client_id = client_id or tenant.identity_client_id
    if client_id != tenant.identity_client_id:
        raise Reply(400, {"statusCode": 400, "message": f"No identity with client_id {client_id[:64]}."})
    issuer = tenant.federation_issuer if resource.rstrip("/") == FEDERATION_AUDIENCE else None
    token, expires_on = tenant.issue_token(
        resource.rstrip("/"), tenant.identity_client_id, None, 86399, object_id=tenant.identity_principal_id, issuer=issuer
    )
    return (
        200,
        {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": tenant.identity_client_id,
        },
        {},
    )
