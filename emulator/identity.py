"""Managed identity: App Service's token endpoint (``IDENTITY_ENDPOINT`` with ``X-IDENTITY-HEADER``).

https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
The request: ``resource`` and ``api-version`` ("2019-08-01" or later) in the query,
``X-IDENTITY-HEADER``, and at most one of ``client_id``, ``principal_id`` (alias
``object_id``) and ``mi_res_id`` ("Cannot be used on a request that includes ...");
none of them means the system-assigned identity. The answer: ``access_token``,
``client_id``, ``expires_on`` and ``not_before`` (epoch seconds of the token's
``exp`` and ``nbf``), ``resource`` and ``token_type``. The page gives no error texts;
the ones here name the problem as App Service's do (``statusCode`` and ``message``).
"""

from __future__ import annotations

import uuid

from .state import Tenant
from .wire import FEDERATION_AUDIENCE, Answer, Reply, Request

API_VERSION = "2019-08-01"
ID_PARAMETERS = ("client_id", "principal_id", "object_id", "mi_res_id")


def _bad(message: str) -> Reply:
    return Reply(400, {"statusCode": 400, "message": message, "correlationId": str(uuid.uuid4())})


def handle(tenant: Tenant, req: Request) -> Answer:
    """``GET /msi/token?resource=...&api-version=...``: a token for the app's user-assigned identity."""
    if req.header("X-IDENTITY-HEADER") != tenant.identity_header:
        raise Reply(401, {"statusCode": 401, "message": "Missing or wrong X-IDENTITY-HEADER."})
    version = req.query.get("api-version", "")
    if not version:
        raise _bad("The api-version query parameter is required; use 2019-08-01 or later.")
    if version < API_VERSION:  # ISO dates compare as text
        # 2017-09-01 is the older protocol (a "secret" header, clientid): not this endpoint's.
        raise _bad(f"api-version {version[:20]} is not supported here; use 2019-08-01 or later.")
    resource = req.query.get("resource", "")
    if not resource:
        raise Reply(400, {"statusCode": 400, "message": "Missing 'resource' query parameter."})
    given = [name for name in ID_PARAMETERS if req.query.get(name)]
    if len(given) > 1:
        raise _bad(f"Only one of client_id, principal_id, object_id and mi_res_id may be given; got {', '.join(given)}.")
    if not given and not tenant.system_identity:
        # Without client_id (or principal_id, mi_res_id) App Service uses the
        # system-assigned identity, and this app has none: Azure answers 400.
        # (the answer as observed: github.com/Azure/azure-sdk-for-net/issues/43691)
        raise _bad("Unable to load the proper Managed Identity.")
    if given:
        name, value = given[0], req.query[given[0]]
        known = {
            "client_id": tenant.identity_client_id,
            "principal_id": tenant.identity_principal_id,
            "object_id": tenant.identity_principal_id,
            "mi_res_id": tenant.identity_resource_id,
        }[name]
        # GUIDs and ARM resource ids are case-insensitive.
        if value.lower() != known.lower():
            raise Reply(400, {"statusCode": 400, "message": f"No identity with {name} {value[:200]}."})
    issuer = tenant.federation_issuer if resource.rstrip("/") == FEDERATION_AUDIENCE else None
    lifetime = 86399
    token, expires_on = tenant.issue_token(
        resource.rstrip("/"), tenant.identity_client_id, None, lifetime, object_id=tenant.identity_principal_id, issuer=issuer
    )
    return (
        200,
        {
            "access_token": token,
            "expires_on": str(expires_on),
            # issue_token sets nbf five seconds before iat (clock skew), and exp = iat + lifetime.
            "not_before": str(expires_on - lifetime - 5),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": tenant.identity_client_id,
        },
        {},
    )
