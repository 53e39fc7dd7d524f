"""Key Vault alone: the challenge, the token check, RBAC, versions, disabled and expiring secrets."""

from __future__ import annotations

from testkit.service_calls import reply_of

from emulator import keyvault
from emulator.state import Tenant
from emulator.wire import SECRET_NAME, Request


def _get(tenant: Tenant, path: str, *, token: str | None = None, api: bool = True) -> Request:
    target = path + ("?api-version=7.5" if api else "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Request("GET", target, headers)


def _vault_token(tenant: Tenant) -> str:
    return tenant.issue_token(tenant.vault_resource, tenant.identity_client_id, None, 600)[0]


def test_no_token_gets_the_challenge_naming_authority_and_resource(tenant: Tenant) -> None:
    """Without a token the vault answers 401 with a Bearer challenge naming the tenant's authority and resource."""
    reply = reply_of(keyvault.handle, tenant, _get(tenant, f"/secrets/{SECRET_NAME}/"))
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://127.0.0.1:8443/{tenant.tenant_id}", resource="https://0.0.1:8443"'
    )
    assert reply.body["error"]["code"] == "Unauthorized"


def test_missing_api_version_is_400(tenant: Tenant) -> None:
    """Key Vault refuses a request without api-version before anything else."""
    reply = reply_of(keyvault.handle, tenant, _get(tenant, f"/secrets/{SECRET_NAME}", api=False))
    assert (reply.status, reply.body["error"]["code"]) == (400, "BadParameter")


def test_token_for_another_audience_is_401(tenant: Tenant) -> None:
    """A Graph token is not a vault token: 401 AKV10032."""
    graph_token = tenant.issue_token(tenant.url, tenant.client_id, None, 600)[0]
    reply = reply_of(keyvault.handle, tenant, _get(tenant, f"/secrets/{SECRET_NAME}", token=graph_token))
    assert reply.status == 401
    assert reply.body["error"]["message"].startswith("AKV10032")


def test_current_version_with_attributes(tenant: Tenant) -> None:
    """The newest version comes back with its id, attributes and, when set, the exp attribute."""
    version = tenant.set_vault_secret(SECRET_NAME, "newest")
    tenant.secret_expiry[SECRET_NAME] = 1_900_000_000
    status, body, _ = keyvault.handle(tenant, _get(tenant, f"/secrets/{SECRET_NAME}/", token=_vault_token(tenant)))
    assert status == 200
    assert body["value"] == "newest"
    assert body["id"] == f"https://127.0.0.1:8443/secrets/{SECRET_NAME}/{version}"
    assert body["attributes"]["exp"] == 1_900_000_000
    assert body["attributes"]["enabled"] is True


def test_named_version_and_unknown_version(tenant: Tenant) -> None:
    """A version in the path selects it; an unknown one is 404 SecretNotFound."""
    first = tenant.set_vault_secret("other", "one")
    tenant.set_vault_secret("other", "two")
    token = _vault_token(tenant)
    assert keyvault.handle(tenant, _get(tenant, f"/secrets/other/{first}", token=token))[1]["value"] == "one"
    reply = reply_of(keyvault.handle, tenant, _get(tenant, "/secrets/other/0000", token=token))
    assert (reply.status, reply.body["error"]["code"]) == (404, "SecretNotFound")


def test_unknown_secret_is_404(tenant: Tenant) -> None:
    """A name the vault does not hold is 404 SecretNotFound, naming it."""
    reply = reply_of(keyvault.handle, tenant, _get(tenant, "/secrets/missing", token=_vault_token(tenant)))
    assert reply.status == 404
    assert reply.body["error"] == {
        "code": "SecretNotFound",
        "message": "A secret with (name/id) missing was not found in this key vault.",
    }


def test_disabled_secret_is_403_secret_disabled(tenant: Tenant) -> None:
    """A disabled current version is 403 Forbidden with inner code SecretDisabled, and readable again once enabled."""
    token = _vault_token(tenant)
    tenant.disable_secret(SECRET_NAME)
    reply = reply_of(keyvault.handle, tenant, _get(tenant, f"/secrets/{SECRET_NAME}", token=token))
    assert reply.status == 403
    assert reply.body["error"]["innererror"] == {"code": "SecretDisabled"}
    tenant.disable_secret(SECRET_NAME, disabled=False)
    assert keyvault.handle(tenant, _get(tenant, f"/secrets/{SECRET_NAME}", token=token))[0] == 200


def test_missing_role_is_403_forbidden_by_rbac(tenant: Tenant) -> None:
    """Without the secrets role the vault answers 403 ForbiddenByRbac naming the action."""
    tenant.vault_role = False
    reply = reply_of(keyvault.handle, tenant, _get(tenant, f"/secrets/{SECRET_NAME}", token=_vault_token(tenant)))
    assert reply.status == 403
    assert reply.body["error"]["innererror"] == {"code": "ForbiddenByRbac"}
    assert "secrets/getSecret/action" in reply.body["error"]["message"]


def test_certificate_secret_is_managed_with_kid(tenant: Tenant) -> None:
    """A certificate's backing secret carries its content type, managed=true and the key's id."""
    tenant.add_certificate(name="cert")
    _, body, _ = keyvault.handle(tenant, _get(tenant, "/secrets/cert", token=_vault_token(tenant)))
    assert body["managed"] is True
    assert body["contentType"] == "application/x-pem-file"
    assert body["kid"].startswith("https://127.0.0.1:8443/keys/cert/")


def test_post_is_405(tenant: Tenant) -> None:
    """Only GET of a secret is emulated."""
    req = Request("POST", f"/secrets/{SECRET_NAME}?api-version=7.5", {"Authorization": f"Bearer {_vault_token(tenant)}"})
    assert reply_of(keyvault.handle, tenant, req).status == 405
