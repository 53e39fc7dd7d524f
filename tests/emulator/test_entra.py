"""Entra alone: discovery, keys, and the token endpoint's errors with their exact AADSTS codes."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from testkit.service_calls import reply_of

from emulator import entra
from emulator.state import Tenant
from emulator.tls import thumbprints
from emulator.wire import FEDERATION_AUDIENCE, GRAPH_ROLE, JWT_BEARER, Request


def _token_path(tenant: Tenant) -> str:
    return f"/{tenant.tenant_id}/oauth2/v2.0/token"


def _post(tenant: Tenant, **form: str) -> Request:
    fields = {"grant_type": "client_credentials", "client_id": tenant.client_id, "scope": f"{tenant.url}/.default", **form}
    return Request("POST", _token_path(tenant), {}, urlencode(fields).encode())


def _code(tenant: Tenant, req: Request) -> tuple[int, str, int]:
    reply = reply_of(entra.token, tenant, req)
    assert reply.body["error_description"].startswith(f"AADSTS{reply.body['error_codes'][0]}: ")
    return reply.status, reply.body["error"], reply.body["error_codes"][0]


def test_discovery_names_the_tenant_endpoints(tenant: Tenant) -> None:
    """The OIDC document points at this tenant's token endpoint and keys."""
    status, body, _ = entra.discovery(tenant, Request("GET", f"/{tenant.tenant_id}/v2.0/.well-known/openid-configuration"))
    assert status == 200
    assert body["token_endpoint"] == f"https://127.0.0.1:8443/{tenant.tenant_id}/oauth2/v2.0/token"
    assert body["issuer"] == f"https://127.0.0.1:8443/{tenant.tenant_id}/v2.0"


def test_keys_verify_issued_tokens(tenant: Tenant) -> None:
    """The published key checks a token the tenant signed."""
    _, jwks, _ = entra.discovery(tenant, Request("GET", f"/{tenant.tenant_id}/discovery/v2.0/keys"))
    token = tenant.issue_token("aud", "sub", None, 60)[0]
    key = jwt.PyJWK(jwks["keys"][0]).key
    assert jwt.decode(token, key, algorithms=["RS256"], audience="aud")["sub"] == "sub"


def test_unknown_tenant_and_path(tenant: Tenant) -> None:
    """Another tenant is 400 AADSTS90002; a path Entra does not serve is 404."""
    reply = reply_of(entra.discovery, tenant, Request("GET", f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration"))
    assert (reply.status, reply.body["error_codes"]) == (400, [90002])
    assert reply_of(entra.discovery, tenant, Request("GET", f"/{tenant.tenant_id}/nothing")).status == 404


def test_secret_grant_issues_a_graph_token(tenant: Tenant) -> None:
    """The current secret gets a Graph token carrying the application role."""
    status, body, _ = entra.token(tenant, _post(tenant, client_secret=tenant.secret))
    assert status == 200
    assert body["expires_in"] == tenant.token_lifetime
    assert GRAPH_ROLE in tenant.verify_token(body["access_token"], tenant.url)["roles"]


def test_no_consent_means_no_role(tenant: Tenant) -> None:
    """Without admin consent the token has no roles."""
    tenant.consented = False
    body = entra.token(tenant, _post(tenant, client_secret=tenant.secret))[1]
    assert "roles" not in tenant.verify_token(body["access_token"], tenant.url)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"grant_type": "password"}, (400, "unsupported_grant_type", 70003)),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, (400, "unauthorized_client", 700016)),
        ({}, (401, "invalid_client", 7000216)),
        ({"client_secret": "not-the-secret"}, (401, "invalid_client", 7000215)),
        ({"scope": "https://graph.microsoft.com/User.Read"}, (400, "invalid_scope", 1002012)),
        ({"client_assertion_type": JWT_BEARER, "client_assertion": "not.a.jwt"}, (400, "invalid_request", 50027)),
    ],
)
def test_token_errors_carry_entra_codes(tenant: Tenant, form: dict[str, str], expected: tuple[int, str, int]) -> None:
    """Each malformed or unauthorised token request gets Entra's status, error and AADSTS code."""
    if "scope" in form:
        form = {**form, "client_secret": tenant.secret}
    assert _code(tenant, _post(tenant, **form)) == expected


def test_get_and_expired_secret(tenant: Tenant) -> None:
    """GET is AADSTS900561; a secret rotated with its old one expired is AADSTS7000222."""
    assert _code(tenant, Request("GET", _token_path(tenant))) == (400, "invalid_request", 900561)
    old = tenant.secret
    tenant.rotate_secret(expire_old=True)
    assert _code(tenant, _post(tenant, client_secret=old)) == (401, "invalid_client", 7000222)


def _certificate_assertion(tenant: Tenant, *, audience: str | None = None, jti: str | None = None) -> str:
    cert = tenant.add_certificate(name="cert")
    pem = tenant.vault["cert"][-1][1]
    key = load_pem_private_key(pem.encode(), password=None)
    claims = {
        "aud": audience or f"{tenant.url}{_token_path(tenant)}",
        "iss": tenant.client_id,
        "sub": tenant.client_id,
        "jti": jti or str(uuid.uuid4()),
        "exp": int(time.time()) + 300,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"x5t#S256": thumbprints(cert)[0]})  # type: ignore[arg-type]


def test_certificate_assertion_once_only(tenant: Tenant) -> None:
    """A registered certificate's assertion gets a token; the same jti again is AADSTS700027."""
    assertion = _certificate_assertion(tenant)
    form = {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    assert entra.token(tenant, _post(tenant, **form))[0] == 200
    assert _code(tenant, _post(tenant, **form)) == (401, "invalid_client", 700027)


def test_certificate_assertion_for_another_audience(tenant: Tenant) -> None:
    """An assertion addressed elsewhere than the token endpoint is AADSTS700027."""
    form = {"client_assertion_type": JWT_BEARER, "client_assertion": _certificate_assertion(tenant, audience="https://x")}
    reply = reply_of(entra.token, tenant, _post(tenant, **form))
    assert reply.body["error_codes"] == [700027]
    assert "invalid audience" in reply.body["error_description"]


@pytest.mark.parametrize(
    ("trust", "code"),
    [(None, 700211), ("audience", 700212), ("subject", 700213)],
)
def test_federated_assertion_mismatch(tenant: Tenant, trust: str | None, code: int) -> None:
    """An identity token the app does not trust fails on issuer, audience or subject, each with its own code."""
    if trust == "subject":
        tenant.trust_identity(subject="someone-else")
    if trust == "audience":
        tenant.federated_credentials.append((tenant.federation_issuer, tenant.identity_principal_id, "api://other"))
    assertion = tenant.issue_token(
        FEDERATION_AUDIENCE,
        tenant.identity_client_id,
        None,
        600,
        object_id=tenant.identity_principal_id,
        issuer=tenant.federation_issuer,
    )[0]
    form = {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    assert _code(tenant, _post(tenant, **form)) == (401, "invalid_client", code)
    tenant.trust_identity()
    assert entra.token(tenant, _post(tenant, **form))[0] == 200
