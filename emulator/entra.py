"""Entra ID: OIDC discovery, the signing keys, and the token endpoint's client credentials grant.

The grant takes a client secret, a certificate-signed client assertion, or a
managed identity token as a federated assertion, and answers errors the way
Entra does: the AADSTS code in ``error_description`` and ``error_codes``.
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any
from urllib.parse import parse_qs

import jwt

from .state import Tenant
from .wire import GRAPH_ROLE, JWT_BEARER, Answer, Reply, Request


def aad_error(tenant: Tenant, status: int, error: str, code: int, text: str) -> Reply:
    """Entra's error body: the AADSTS code in the text and in ``error_codes``."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Reply(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"{tenant.url}/error?code={code}",
        },
    )


def _tenant(tenant: Tenant, path: str) -> str:
    name = path.split("/")[1]
    if name != tenant.tenant_id:
        raise aad_error(tenant, 400, "invalid_tenant", 90002, f"Tenant '{name[:64]}' not found.")
    return name


def discovery(tenant: Tenant, req: Request) -> Answer:
    """OIDC discovery and the signing keys."""
    path = req.path
    if path.endswith("/discovery/v2.0/keys"):
        _tenant(tenant, req.path)
        return 200, tenant.jwks(), {}
    if not path.endswith("/v2.0/.well-known/openid-configuration"):
        raise Reply(404, {"error": "not_found", "error_description": "No such endpoint."})
    base = f"{tenant.url}/{_tenant(tenant, path)}"
    return (
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "emulator",
        },
        {},
    )


def token(tenant: Tenant, req: Request) -> Answer:
    """The client credentials grant: a secret, a certificate assertion or a federated assertion."""
    if req.method != "POST":
        raise aad_error(tenant, 400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
    _tenant(tenant, req.path)
    form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
    if form.get("grant_type") != "client_credentials":
        raise aad_error(tenant, 400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    client_id = form.get("client_id", "")
    if client_id != tenant.client_id:
        text = f"Application with identifier '{client_id[:64]}' was not found in the directory '{tenant.tenant_id}'."
        raise aad_error(tenant, 400, "unauthorized_client", 700016, text)
    if form.get("client_assertion_type") == JWT_BEARER and form.get("client_assertion"):
        _check_assertion(tenant, form["client_assertion"], req.path)
        return _issue_graph_token(tenant, form)
    secret = form.get("client_secret")
    with tenant.lock:
        expired = tenant.client_secrets.get(secret) if secret else None
    if not secret:
        raise invalid_client(tenant, 7000216, "'client_assertion', 'client_secret' or 'request' is required.")
    if expired is None:
        raise invalid_client(
            tenant,
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{tenant.client_id}'.",
        )
    if expired:
        raise invalid_client(tenant, 7000222, f"The provided client secret keys for app '{tenant.client_id}' are expired.")
    return _issue_graph_token(tenant, form)


def invalid_client(tenant: Tenant, code: int, text: str) -> Reply:
    """401 ``invalid_client``: the client could not authenticate (secret or assertion)."""
    return aad_error(tenant, 401, "invalid_client", code, text)


def _issue_graph_token(tenant: Tenant, form: dict[str, str]) -> Answer:
    scope = form.get("scope", "")
    scopes = scope.split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default"):
        raise aad_error(
            tenant,
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope[:100]} is not valid. Client credential flows must have a "
            "scope value with /.default suffixed to the resource identifier (application ID URI).",
        )
    resource = scopes[0].removesuffix("/.default")
    if resource != tenant.url:
        # A well-formed scope for a resource the tenant has no service principal for (a wrong
        # GRAPH_ENDPOINT, another cloud's Graph): 400 invalid_resource, AADSTS500011.
        # https://learn.microsoft.com/entra/identity-platform/reference-error-codes#aadsts-error-codes
        # (the answer as observed: github.com/SharePoint/sp-dev-provisioning-templates/issues/72)
        raise aad_error(
            tenant,
            400,
            "invalid_resource",
            500011,
            f"The resource principal named {resource[:100]} was not found in the tenant named {tenant.tenant_id}. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
        )
    roles = [GRAPH_ROLE] if tenant.consented else None
    access, _ = tenant.issue_token(tenant.url, tenant.client_id, roles, tenant.token_lifetime)
    lifetime = tenant.token_lifetime
    return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access}, {}


# Which part of a federated assertion failed to match, its AADSTS code, and the
# claims a credential must match for that part to pass (credentials are (iss, sub, aud)).
_FEDERATION_CHECKS = (
    ("issuer", 700211, "iss", ("iss",)),
    ("audience", 700212, "aud", ("iss", "aud")),
    ("subject", 700213, "sub", ("iss", "sub", "aud")),
)


def _check_assertion(tenant: Tenant, assertion: str, path: str) -> None:
    """Validate a client assertion: a certificate-signed JWT, or a managed identity token (federation)."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise aad_error(tenant, 400, "invalid_request", 50027, "JWT token is invalid or malformed.") from exc
    if "x5t#S256" in header or "x5t" in header:
        _check_certificate_assertion(tenant, assertion, header, path)
        return
    claims = _decode_assertion(tenant, assertion, tenant.public_key, ["RS256"], options={"verify_aud": False})
    with tenant.lock:
        trusted = [dict(zip(("iss", "sub", "aud"), c, strict=True)) for c in tenant.federated_credentials]
    # Entra rejects a federated assertion it cannot match as a client
    # authentication failure: 401 invalid_client, as for a bad secret.
    # https://learn.microsoft.com/entra/workload-id/workload-identity-federation-create-trust
    # (observed answers: github.com/external-secrets/external-secrets/issues/2783,
    # github.com/microsoft/Agents/issues/202, github.com/Azure/azure-workload-identity/issues/1200)
    for part, code, claim, needed in _FEDERATION_CHECKS:
        if not any(all(c[f] == claims.get(f) for f in needed) for c in trusted):
            presented = str(claims.get(claim))[:100]
            text = f"No matching federated identity record found for presented assertion {part} '{presented}'."
            if part == "subject" and _matches_ignoring_case(trusted, claims):
                # Entra compares the subject case-sensitively; a subject that matches only when case
                # is ignored has its own code, AADSTS7002138.
                # https://learn.microsoft.com/entra/identity-platform/reference-breaking-changes
                # (the answer as observed: github.com/Azure/login/issues/515 and issues/517)
                text += (
                    " The subject matches with case-insensitive comparison, but not with case-sensitive comparison. "
                    "Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
                )
                raise invalid_client(tenant, 7002138, text)
            if part == "subject":
                text += " Check your federated identity credential Subject, Audience and Issuer against the presented assertion."
            raise invalid_client(tenant, code, text)


def _matches_ignoring_case(trusted: list[dict[str, Any]], claims: dict[str, Any]) -> bool:
    """True when a credential with the assertion's issuer and audience has its subject in another case."""
    subject = str(claims.get("sub", ""))
    return any(
        c["iss"] == claims.get("iss") and c["aud"] == claims.get("aud") and str(c["sub"]).lower() == subject.lower()
        for c in trusted
    )


def _decode_assertion(tenant: Tenant, assertion: str, key: Any, algorithms: list[str], **options: Any) -> dict[str, Any]:
    """The assertion's claims, or Entra's answer to an expired, misaddressed or badly signed one."""
    try:
        claims: dict[str, Any] = jwt.decode(assertion, key, algorithms=algorithms, **options)
    except jwt.ExpiredSignatureError as exc:
        raise invalid_client(tenant, 700024, "Client assertion is not within its valid time range.") from exc
    except jwt.InvalidAudienceError as exc:
        text = "Client assertion contains an invalid audience; it must be the token endpoint."
        raise invalid_client(tenant, 700027, text) from exc
    except jwt.PyJWTError as exc:
        raise invalid_client(tenant, 700027, "Client assertion failed signature validation.") from exc
    return claims


def _check_certificate_assertion(tenant: Tenant, assertion: str, header: dict[str, Any], path: str) -> None:
    key = str(header.get("x5t#S256") or header.get("x5t")).rstrip("=")  # with or without padding
    with tenant.lock:
        cert = tenant.app_certificates.get(key)
    if cert is None:
        raise invalid_client(
            tenant,
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application. "
            f"[Reason - The key was not found., Thumbprint of key used by client: '{key[:64]}']",
        )
    required = {"require": ["exp", "aud", "iss", "sub", "jti"]}
    claims = _decode_assertion(
        tenant, assertion, cert.public_key(), ["PS256", "RS256"], audience=f"{tenant.url}{path}", options=required
    )
    if claims["iss"] != tenant.client_id or claims["sub"] != tenant.client_id:
        raise invalid_client(tenant, 700027, "Client assertion issuer and subject must be the application's client id.")
    with tenant.lock:
        if claims["jti"] in tenant.seen_assertion_ids:
            raise invalid_client(tenant, 700027, "Client assertion was already used (jti replay).")
        tenant.seen_assertion_ids.add(claims["jti"])
