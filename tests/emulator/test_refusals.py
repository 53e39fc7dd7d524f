"""The refusals the app's advice depends on, each with the status and body the real service sends.

Key Vault: firewall (ForbiddenByFirewall), access policy (ForbiddenByPolicy), a rejected token (401 with the
challenge). Entra: a wrong resource (AADSTS500011), a federated subject in another case (AADSTS7002138), an
outage that is not AADSTS50001. Graph: 429 headers as the throttling-limits page documents them.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from testkit.service_calls import reply_of

from emulator import entra, faults, keyvault
from emulator.faults import Fault
from emulator.state import Tenant
from emulator.wire import FEDERATION_AUDIENCE, JWT_BEARER, SECRET_NAME, Reply, Request


def _instead(fault: Fault, service: str, tenant: Tenant, req: Request | None = None) -> Reply:
    scope = faults.throttle_scope(tenant.client_id, tenant.tenant_id)
    with pytest.raises(Reply) as caught:
        faults.answer_instead(fault, service, req or Request("GET", f"/secrets/{SECRET_NAME}/?api-version=7.5"), scope, tenant)
    return caught.value


def test_firewall_refusal_is_403_forbidden_by_firewall(tenant: Tenant) -> None:
    """The vault's firewall: 403 Forbidden, innererror ForbiddenByFirewall, the text naming the client address."""
    reply = _instead(Fault("keyvault", kind="firewall"), "keyvault", tenant)
    error = reply.body["error"]
    assert reply.status == 403 and error["code"] == "Forbidden" and error["innererror"] == {"code": "ForbiddenByFirewall"}
    assert error["message"].startswith("Client address is not authorized and caller is not a trusted service.")
    assert "Client address: 127.0.0.1" in error["message"] and f"appid={tenant.identity_client_id}" in error["message"]


def test_access_policy_refusal_is_403_forbidden_by_policy(tenant: Tenant) -> None:
    """A vault in access-policy mode without Get: 403, ForbiddenByPolicy, "does not have secrets get permission"."""
    reply = _instead(Fault("keyvault", kind="access-policy"), "keyvault", tenant)
    error = reply.body["error"]
    assert reply.status == 403 and error["innererror"] == {"code": "ForbiddenByPolicy"}
    assert "does not have secrets get permission on key vault" in error["message"]
    assert f"oid={tenant.identity_principal_id}" in error["message"]


def test_a_rejected_token_gets_401_with_the_challenge(tenant: Tenant) -> None:
    """reject-token, and a token the vault cannot verify: 401 with the same WWW-Authenticate as a missing token."""
    expected = keyvault.challenge(tenant)
    assert _instead(Fault("keyvault", kind="reject-token"), "keyvault", tenant).headers == expected
    other = tenant.issue_token(tenant.url, tenant.client_id, None, 600)[0]  # a Graph token, not the vault's
    req = Request("GET", f"/secrets/{SECRET_NAME}?api-version=7.5", {"Authorization": f"Bearer {other}"})
    reply = reply_of(keyvault.handle, tenant, req)
    assert reply.status == 401 and reply.headers == expected


def test_vault_faults_apply_to_the_vault_only(tenant: Tenant) -> None:
    """A Key Vault fault kind queued for another service answers nothing in its place."""
    faults.answer_instead(Fault("graph", kind="firewall"), "graph", Request("GET", "/v1.0/users"), "s", tenant)


def _post(tenant: Tenant, **form: str) -> Request:
    fields = {"grant_type": "client_credentials", "client_id": tenant.client_id, "scope": f"{tenant.url}/.default", **form}
    return Request("POST", f"/{tenant.tenant_id}/oauth2/v2.0/token", {}, urlencode(fields).encode())


def test_a_scope_for_a_resource_the_tenant_lacks_is_aadsts500011(tenant: Tenant) -> None:
    """A well-formed /.default scope for another resource: 400 invalid_resource AADSTS500011 naming it; not 1002012."""
    reply = reply_of(entra.token, tenant, _post(tenant, client_secret=tenant.secret, scope="https://graph.example.us/.default"))
    assert (reply.status, reply.body["error"], reply.body["error_codes"]) == (400, "invalid_resource", [500011])
    assert reply.body["error_description"].startswith(
        "AADSTS500011: The resource principal named https://graph.example.us was not found in the tenant named"
    )
    bad = reply_of(entra.token, tenant, _post(tenant, client_secret=tenant.secret, scope=f"{tenant.url}/User.Read"))
    assert bad.body["error_codes"] == [1002012]


def test_a_federated_subject_in_another_case_is_aadsts7002138(tenant: Tenant) -> None:
    """Entra matches the subject case-sensitively; a subject equal but for case is 7002138, another one 700213."""
    assertion = tenant.issue_token(
        FEDERATION_AUDIENCE,
        tenant.identity_client_id,
        None,
        600,
        object_id=tenant.identity_principal_id,
        issuer=tenant.federation_issuer,
    )[0]
    form = {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    tenant.trust_identity(subject=tenant.identity_principal_id.upper())
    reply = reply_of(entra.token, tenant, _post(tenant, **form))
    assert (reply.status, reply.body["error"], reply.body["error_codes"]) == (401, "invalid_client", [7002138])
    assert "case-insensitive comparison, but not with case-sensitive comparison" in reply.body["error_description"]


def test_the_token_outage_is_not_aadsts50001(tenant: Tenant) -> None:
    """The outage fault says the service is unavailable (AADSTS90006), not that the resource does not exist (50001)."""
    reply = _instead(Fault("token", status=503), "token", tenant, Request("POST", "/t/oauth2/v2.0/token"))
    assert reply.status == 503 and reply.body["error"] == "temporarily_unavailable"
    assert reply.body["error_codes"] == [90006] and "50001" not in reply.body["error_description"]


def test_throttling_headers_follow_the_documented_shape(tenant: Tenant) -> None:
    """429: x-ms-throttle-scope is <Scope>/<Limit>/<AppId>/<TenantId>, the reason is in x-ms-throttle-information."""
    reply = _instead(Fault("graph", status=429, headers={"Retry-After": "2.128"}), "graph", tenant, Request("GET", "/v1.0/users"))
    assert reply.headers["x-ms-throttle-scope"] == f"Tenant_Application/Read/{tenant.client_id}/{tenant.tenant_id}"
    assert reply.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert "x-ms-throttle-reason" not in reply.headers and reply.headers["Retry-After"] == "2.128"


def test_chaos_throttles_with_a_fractional_retry_after_too() -> None:
    """Among chaos's kinds is a 429 with a fractional Retry-After, as Graph's own sample sends."""
    from emulator.faults import Chaos

    chaos = Chaos(11, rate=1.0)
    seen = {f.headers.get("Retry-After") for f in (chaos.draw() for _ in range(400)) if f is not None and f.status == 429}
    assert "0.128" in seen and "0" in seen
