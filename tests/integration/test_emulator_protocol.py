"""The emulator speaks the real protocols: checked with the real msal, azure-identity, Key Vault and requests."""

from __future__ import annotations

import msal
import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from emulator import Emulator


def _msal(emu: Emulator, secret: str) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        emu.client_id, client_credential=secret, authority=f"{emu.url}/{emu.tenant_id}", instance_discovery=False
    )


def test_msal_client_credentials_and_cache(emu: Emulator) -> None:
    """MSAL discovers the tenant, gets a token, then serves it from its cache."""
    app = _msal(emu, emu.secret)
    first = app.acquire_token_for_client([f"{emu.url}/.default"])
    second = app.acquire_token_for_client([f"{emu.url}/.default"])
    assert first["token_type"] == "Bearer" and first["access_token"] == second["access_token"]
    assert second["token_source"] == "cache"
    assert emu.count("discovery") == 1 and emu.count("token") == 1


@pytest.mark.parametrize(("expire", "code"), [(False, 7000215), (True, 7000222)])
def test_old_secret_is_rejected_with_the_real_aadsts_code(emu: Emulator, expire: bool, code: int) -> None:
    """After rotation the old secret is invalid_client with AADSTS7000215 (removed) or 7000222 (expired)."""
    old = emu.secret
    emu.rotate_secret(expire_old=expire)
    result = _msal(emu, old).acquire_token_for_client([f"{emu.url}/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [code] and f"AADSTS{code}" in result["error_description"]
    assert result["correlation_id"]


def test_unknown_client_and_bad_scope(emu: Emulator) -> None:
    """An unknown client id and a scope without /.default get Entra's errors."""
    app = msal.ConfidentialClientApplication(
        "00000000-0000-0000-0000-000000000001",
        client_credential=emu.secret,
        authority=f"{emu.url}/{emu.tenant_id}",
        instance_discovery=False,
    )
    assert app.acquire_token_for_client([f"{emu.url}/.default"])["error_codes"] == [700016]
    assert _msal(emu, emu.secret).acquire_token_for_client([f"{emu.url}/User.Read"])["error"] == "invalid_scope"


def test_managed_identity_and_key_vault_challenge(emu: Emulator) -> None:
    """azure-identity's App Service managed identity and the Key Vault SDK's challenge flow work unchanged."""
    credential = ManagedIdentityCredential(client_id=emu.identity_client_id)
    token = credential.get_token(f"{emu.vault_resource}/.default")
    assert token.token and token.expires_on > 0
    client = SecretClient(emu.url, credential)
    secret = client.get_secret("graph-client-secret")
    assert secret.value == emu.secret
    assert emu.count("keyvault-challenge") == 1 and emu.count("keyvault") == 1
    first_version = secret.properties.version
    emu.rotate_secret()
    rotated = client.get_secret("graph-client-secret")
    assert rotated.value == emu.secret and rotated.properties.version != first_version
    assert client.get_secret("graph-client-secret", first_version).value != emu.secret
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("no-such-secret")


def _graph(emu: Emulator) -> requests.Session:
    token = _msal(emu, emu.secret).acquire_token_for_client([f"{emu.url}/.default"])["access_token"]
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def test_graph_paging_select_and_page_size_limits(emu: Emulator) -> None:
    """$top pages with @odata.nextLink to the end; $top outside 1..999 is Graph's 400."""
    s = _graph(emu)
    url: str | None = f"{emu.url}/v1.0/users?$top=999&$select=id,displayName"
    seen: list[str] = []
    while url:
        body = s.get(url).json()
        seen += [u["id"] for u in body["value"]]
        assert all(set(u) == {"id", "displayName"} for u in body["value"])
        url = body.get("@odata.nextLink")
    assert len(seen) == len(set(seen)) == 250
    for bad in ("0", "1000"):
        r = s.get(f"{emu.url}/v1.0/users", params={"$top": bad})
        assert r.status_code == 400 and "Invalid page size" in r.json()["error"]["message"]
    r = s.get(f"{emu.url}/v1.0/users", params={"$select": "nope"})
    assert r.status_code == 400


def test_graph_advanced_queries_need_consistency_level(emu: Emulator) -> None:
    """$search and $count need ConsistencyLevel: eventual; with it, @odata.count is on the first page."""
    s = _graph(emu)
    params = {"$search": '"displayName:ada"', "$count": "true", "$top": "3"}
    assert s.get(f"{emu.url}/v1.0/users", params=params).status_code == 400
    body = s.get(f"{emu.url}/v1.0/users", params=params, headers={"ConsistencyLevel": "eventual"}).json()
    ada = [u for u in emu.directory.users.values() if u["displayName"].lower().startswith("ada")]
    assert body["@odata.count"] == len(ada) > 3
    nxt = s.get(body["@odata.nextLink"], headers={"ConsistencyLevel": "eventual"}).json()
    assert "@odata.count" not in nxt and all(u["displayName"].startswith("Ada") for u in nxt["value"])


def test_graph_filter_subset_and_lookup(emu: Emulator) -> None:
    """The documented $filter subset works; unknown forms are 400; /users/{id|upn} and 404."""
    s = _graph(emu)
    enabled = s.get(f"{emu.url}/v1.0/users", params={"$filter": "accountEnabled eq false", "$top": "999"}).json()
    assert {u["id"] for u in enabled["value"]} == {u["id"] for u in emu.directory.users.values() if not u["accountEnabled"]}
    assert s.get(f"{emu.url}/v1.0/users", params={"$filter": "displayName gt 'a'"}).status_code == 400
    user = next(iter(emu.directory.users.values()))
    assert s.get(f"{emu.url}/v1.0/users/{user['id']}").json()["id"] == user["id"]
    assert s.get(f"{emu.url}/v1.0/users/{user['userPrincipalName']}").json()["id"] == user["id"]
    missing = s.get(f"{emu.url}/v1.0/users/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Request_ResourceNotFound"
    assert missing.headers["request-id"]


def test_graph_bearer_validation(emu: Emulator) -> None:
    """No token, a revoked token: 401 InvalidAuthenticationToken; no consent: 403 Authorization_RequestDenied."""
    assert requests.get(f"{emu.url}/v1.0/users").json()["error"]["code"] == "InvalidAuthenticationToken"
    s = _graph(emu)
    emu.revoke_tokens()
    r = s.get(f"{emu.url}/v1.0/users")
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    emu.consented = False
    r = _graph(emu).get(f"{emu.url}/v1.0/users")
    assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied"
