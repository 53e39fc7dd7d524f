"""Managed identity alone: App Service's token endpoint, its header, resource and client_id rules."""

from __future__ import annotations

import jwt
from testkit.service_calls import reply_of

from emulator import identity
from emulator.state import Tenant
from emulator.wire import FEDERATION_AUDIENCE, Request


def _get(tenant: Tenant, query: str, *, header: str | None = None) -> Request:
    return Request("GET", f"/msi/token?api-version=2019-08-01&{query}", {"X-IDENTITY-HEADER": header or tenant.identity_header})


def test_token_for_the_user_assigned_identity(tenant: Tenant) -> None:
    """With the identity's client_id the endpoint issues a token for the resource, as App Service shapes it."""
    status, body, _ = identity.handle(
        tenant, _get(tenant, f"resource=https://vault.example/&client_id={tenant.identity_client_id}")
    )
    assert status == 200
    assert body["client_id"] == tenant.identity_client_id
    assert body["resource"] == "https://vault.example/"
    assert int(body["expires_on"]) > 0
    claims = jwt.decode(body["access_token"], tenant.public_key, algorithms=["RS256"], audience="https://vault.example")
    assert claims["oid"] == tenant.identity_principal_id


def test_without_client_id_there_is_no_system_identity(tenant: Tenant) -> None:
    """No client_id asks for the system-assigned identity, which this app lacks: 400."""
    reply = reply_of(identity.handle, tenant, _get(tenant, "resource=https://vault.example"))
    assert reply.status == 400
    assert reply.body["message"] == "Unable to load the proper Managed Identity."


def test_without_client_id_with_a_system_identity(tenant: Tenant) -> None:
    """Given a system-assigned identity, no client_id is fine."""
    tenant.system_identity = True
    assert identity.handle(tenant, _get(tenant, "resource=https://vault.example"))[0] == 200


def test_wrong_header_missing_resource_unknown_client(tenant: Tenant) -> None:
    """A wrong X-IDENTITY-HEADER is 401; no resource or another client_id is 400."""
    client = f"client_id={tenant.identity_client_id}"
    assert reply_of(identity.handle, tenant, _get(tenant, f"resource=r&{client}", header="wrong")).status == 401
    assert reply_of(identity.handle, tenant, _get(tenant, client)).status == 400
    reply = reply_of(identity.handle, tenant, _get(tenant, "resource=r&client_id=someone"))
    assert (reply.status, reply.body["message"]) == (400, "No identity with client_id someone.")


def test_exchange_audience_gets_the_federation_issuer(tenant: Tenant) -> None:
    """A token for the token-exchange audience is issued by the tenant's v2.0 issuer, as Entra expects to trust."""
    query = f"resource={FEDERATION_AUDIENCE}&client_id={tenant.identity_client_id}"
    token = identity.handle(tenant, _get(tenant, query))[1]["access_token"]
    claims = jwt.decode(token, tenant.public_key, algorithms=["RS256"], audience=FEDERATION_AUDIENCE)
    assert claims["iss"] == tenant.federation_issuer


def test_api_version_is_required(tenant: Tenant) -> None:
    """Without api-version, or with the older 2017-09-01 protocol's, the endpoint answers 400."""
    query = f"resource=r&client_id={tenant.identity_client_id}"
    headers = {"X-IDENTITY-HEADER": tenant.identity_header}
    missing = reply_of(identity.handle, tenant, Request("GET", f"/msi/token?{query}", headers))
    assert missing.status == 400 and "api-version" in missing.body["message"]
    old = reply_of(identity.handle, tenant, Request("GET", f"/msi/token?api-version=2017-09-01&{query}", headers))
    assert old.status == 400


def test_other_identity_parameters(tenant: Tenant) -> None:
    """principal_id, its alias object_id, and mi_res_id each name the identity; an unknown value is 400."""
    for name, value in [
        ("principal_id", tenant.identity_principal_id),
        ("object_id", tenant.identity_principal_id.upper()),
        ("mi_res_id", tenant.identity_resource_id),
    ]:
        status, body, _ = identity.handle(tenant, _get(tenant, f"resource=r&{name}={value}"))
        assert status == 200 and body["client_id"] == tenant.identity_client_id
        assert reply_of(identity.handle, tenant, _get(tenant, f"resource=r&{name}=nobody")).status == 400


def test_identity_parameters_cannot_be_combined(tenant: Tenant) -> None:
    """Two of client_id, principal_id/object_id and mi_res_id in one request is 400, even when both are right."""
    ids = {
        "client_id": tenant.identity_client_id,
        "principal_id": tenant.identity_principal_id,
        "object_id": tenant.identity_principal_id,
        "mi_res_id": tenant.identity_resource_id,
    }
    names = list(ids)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            reply = reply_of(identity.handle, tenant, _get(tenant, f"resource=r&{first}={ids[first]}&{second}={ids[second]}"))
            assert reply.status == 400 and first in reply.body["message"] and second in reply.body["message"]


def test_answer_has_not_before(tenant: Tenant) -> None:
    """The answer carries not_before and expires_on: the token's nbf and exp claims."""
    body = identity.handle(tenant, _get(tenant, f"resource=https://vault.example&client_id={tenant.identity_client_id}"))[1]
    claims = jwt.decode(body["access_token"], tenant.public_key, algorithms=["RS256"], audience="https://vault.example")
    assert (int(body["not_before"]), int(body["expires_on"])) == (claims["nbf"], claims["exp"])
