"""Key Vault secrets: ``GET /secrets/{name}[/{version}]`` behind the unauthenticated bearer challenge.

A client first calls without a token; the vault answers 401 with a
``WWW-Authenticate`` challenge naming the authority and the resource, and the
client asks that authority for a token for that resource.
https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import jwt

from .state import Tenant
from .wire import Answer, Request, vault_error


def challenge(tenant: Tenant) -> dict[str, str]:
    """The challenge header: where to get a token, and for which resource (see ``Tenant.vault_resource``)."""
    return {"WWW-Authenticate": f'Bearer authorization="{tenant.url}/{tenant.tenant_id}", resource="{tenant.vault_resource}"'}


def handle(tenant: Tenant, req: Request) -> Answer:
    """``GET /secrets/{name}[/{version}]``, behind the unauthenticated challenge."""
    if "api-version" not in req.query:
        raise vault_error(400, "BadParameter", "The 'api-version' parameter is missing.")
    auth = req.header("Authorization")
    if not auth.startswith("Bearer "):
        raise vault_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", headers=challenge(tenant))
    try:
        tenant.verify_token(auth[7:], tenant.vault_resource)
    except jwt.PyJWTError as exc:
        # A token the vault does not accept gets the challenge too, so that the SDK fetches a new one and retries.
        # https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses#authentication-requirements
        raise vault_error(401, "Unauthorized", "AKV10032: Invalid issuer or token.", headers=challenge(tenant)) from exc
    if not tenant.vault_role:
        action = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        message = f"Caller is not authorized to perform action on resource. Action: '{action}'"
        raise vault_error(403, "Forbidden", message, inner="ForbiddenByRbac")
    segments = [unquote(s) for s in req.path.split("/")[2:] if s]
    if req.method != "GET" or not segments or len(segments) > 2:
        raise vault_error(405, "BadParameter", "Unsupported operation.")
    name = segments[0]
    with tenant.lock:
        versions = list(tenant.vault.get(name, []))
        disabled = name in tenant.disabled_secrets
        expiry = tenant.secret_expiry.get(name)
    if len(segments) == 2:
        versions = [v for v in versions if v[0] == segments[1]]
    if not versions:
        raise vault_error(404, "SecretNotFound", f"A secret with (name/id) {name[:127]} was not found in this key vault.")
    version, value, created, content_type = versions[-1]
    if disabled:
        # https://learn.microsoft.com/azure/key-vault/general/rest-error-codes#http-403-insufficient-permissions
        # (the answer as observed: github.com/Azure/azure-sdk-for-java/issues/17991)
        raise vault_error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled")
    attributes: dict[str, Any] = {
        "enabled": True,
        "created": created,
        "updated": created,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    }
    if expiry is not None:
        # The secret's expiration date, in seconds since the epoch: the "exp" attribute.
        # https://learn.microsoft.com/rest/api/keyvault/secrets/get-secret/get-secret#secretattributes
        attributes["exp"] = expiry
    body: dict[str, Any] = {"value": value, "id": f"{tenant.url}/secrets/{name}/{version}", "attributes": attributes, "tags": {}}
    if content_type:
        # A certificate's backing secret: Key Vault marks it managed and names the certificate's key.
        body.update(contentType=content_type, managed=True, kid=f"{tenant.url}/keys/{name}/{version}")
    return 200, body, {}
