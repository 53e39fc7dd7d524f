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
