"""The emulated tenant's state: ids, the directory, app credentials, the vault, switches, and token signing.

Every service gets a ``Tenant`` and reads or changes only that; the ``Emulator``
facade owns one, and gives it its address once it serves.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .directory import Directory
from .notify import Notifier
from .tls import make_client_certificate, thumbprints
from .wire import CERTIFICATE_NAME, FEDERATION_AUDIENCE, ISSUED_SECRETS, SECRET_NAME, TOKEN_LIFETIME

PAGE_TOKEN_LIFETIME = 3600.0


# Graph's defaults for /users/delta pages (see delta.delta for the sources).
DELTA_PAGE_CAP = 200
DELTA_SHORT_PAGES = 0.05


class Tenant:
    """One emulated tenant; ``lock`` guards every change."""

    # The CA file deliveries of change notifications trust besides the system's (the emulator sets it).
    delivery_ca: str | None = None
    notifier: Notifier

    def __init__(self, users: int = 200, seed: int = 1) -> None:
        self.seed = seed
        self._user_count = users
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = secrets.token_hex(8)
        self.lock = threading.RLock()
        # The loopback port the services answer on; set once the server listens.
        self.port: int | None = None
        self.reset()

    def reset(self) -> None:
        """Restore the initial tenant: same ids, users, secret, switches."""
        rnd = random.Random(self.seed)
        with self.lock:
            self.tenant_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.client_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.identity_client_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.identity_principal_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            self.identity_header = f"{rnd.getrandbits(96):024x}"
            subscription = uuid.UUID(int=rnd.getrandbits(128), version=4)
            # The user-assigned identity's ARM resource id (mi_res_id in App Service's protocol).
            self.identity_resource_id = (
                f"/subscriptions/{subscription}/resourceGroups/rg-graphusers/providers/"
                "Microsoft.ManagedIdentity/userAssignedIdentities/id-graphusers"
            )
            self.directory = Directory(self._user_count, self.seed, "emulated.onmicrosoft.example")
            # Subscriptions and their deliveries: every directory change from here on notifies.
            previous = self.__dict__.get("notifier")
            if previous is not None:
                previous.stop()
            self.notifier = Notifier(self.tenant_id, self.delivery_ca)
            self.directory.on_change = self.notifier.changed
            # Entra's view of the app's secrets: value -> expired?
            self.client_secrets: dict[str, bool] = {}
            # Key Vault: name -> versions (oldest first) of (version id, value, created epoch, content type).
            self.vault: dict[str, list[tuple[str, str, int, str | None]]] = {}
            # The app registration's certificates (public parts), by base64url SHA-256 and SHA-1 thumbprint.
            self.app_certificates: dict[str, Any] = {}
            # Federated identity credentials on the app registration: (issuer, subject, audience).
            self.federated_credentials: list[tuple[str, str, str]] = []
            self.seen_assertion_ids: set[str] = set()
            self.secret = self.add_client_secret()
            # The clientState of change notifications, under the app's default secret name (docs/sync.md).
            self.client_state = secrets.token_urlsafe(32)
            ISSUED_SECRETS.append(self.client_state)
            self.set_vault_secret("notifications-client-state", self.client_state)
            self.consented = True
            self.token_lifetime = TOKEN_LIFETIME
            self.token_generation = 0
            self.vault_role = True
            # Names whose current version is disabled in the vault (see disable_secret).
            self.disabled_secrets: set[str] = set()
            # The function app of this template has only a user-assigned identity.
            self.system_identity = False
            self.delta_replay = False
            # Graph's answers: chunked, and gzip-compressed for a client that accepts it (see server._send_chunked).
            self.graph_chunked = True
            self.graph_gzip = True
            # Share of changes from earlier rounds a round of changes serves again (0: none).
            self.delta_replay_old = 0.0
            # Delta switches (see delta.delta) and the id order of each full round in progress.
            self.delta_expiry_status = 410
            self.delta_minimal = False
            self.delta_unify = False
            self.delta_removed_then_live = 0.0
            # A full round left open: its pages from this offset on answer 503 (None: never).
            self.delta_outage_from: int | None = None
            # Stored tokens answered 400 with one of Graph's texts (DELTA_STATE_ERRORS), or None.
            self.delta_state_error: str | None = None
            # While the next full round runs, edit this many users it already served, and start its
            # deltaLink after those edits: delta never shows them (reconciliation must find them).
            self.delta_lose_edits = 0
            self.lossy_rounds: set[str] = set()
            # /users/delta pages hold at most this many entries, whatever odata.maxpagesize asks, and as
            # many without the preference (Microsoft Q&A 2276060 and 5875141; see delta.delta).
            self.delta_page_cap = DELTA_PAGE_CAP
            # Share of a round's pages (before its last) served short or empty with a nextLink, picked by a
            # generator seeded with the tenant's seed, the round and the offset: reproducible.
            self.delta_short_pages = DELTA_SHORT_PAGES
            # GET /users/delta?$deltatoken=latest refused (400), as a service that does not offer "sync from now".
            self.delta_latest_refused = False
            # Key Vault: secret name -> "exp" attribute (epoch seconds) of its current version.
            self.secret_expiry: dict[str, int] = {}
            self._verified: dict[tuple[str, str], dict[str, Any]] = {}
            # Serialised /users pages by query and directory version (see graph.list_users).
            self.page_cache: dict[tuple[Any, ...], tuple[float, bytes]] = {}
            # /users page tokens: the key that signs them, and how long they stay valid (seconds).
            # Graph documents no lifetime (users report expiry on large tenants); an hour is
            # far longer than any listing or benchmark here takes, and tests set it short.
            self.page_token_key = secrets.token_bytes(32)
            self.page_token_lifetime = PAGE_TOKEN_LIFETIME
            # Every token issued (Graph and managed identity), for leak checks.
            self.issued: list[str] = []

    def add_client_secret(self, *, store_in_vault: bool = True) -> str:
        """Create a new client secret for the app (and by default store it as the vault's current version)."""
        value = "emu~" + secrets.token_urlsafe(30)
        ISSUED_SECRETS.append(value)
        with self.lock:
            self.client_secrets[value] = False
            if store_in_vault:
                self.set_vault_secret(SECRET_NAME, value)
        return value

    def set_vault_secret(self, name: str, value: str, content_type: str | None = None) -> str:
        """Store a new version of a vault secret; returns the version id."""
        version = uuid.uuid4().hex
        with self.lock:
            self.vault.setdefault(name, []).append((version, value, int(time.time()), content_type))
        return version

    def disable_secret(self, name: str = SECRET_NAME, disabled: bool = True) -> None:
        """Disable (or enable again) the current version of a vault secret."""
        with self.lock:
            (self.disabled_secrets.add if disabled else self.disabled_secrets.discard)(name)

    def untrust_identity(self) -> None:
        """Remove every federated identity credential from the app registration."""
        with self.lock:
            self.federated_credentials.clear()

    def add_certificate(self, *, name: str = CERTIFICATE_NAME, register: bool = True, pkcs12: bool = False) -> Any:
        """Create a certificate as Key Vault does (its secret holds key and certificate) and register it on the app.

        ``register=False`` stores it in the vault only: an assertion signed with it is rejected (AADSTS700027).
        """
        cert, secret_value, content_type = make_client_certificate(pkcs12=pkcs12)
        # A line of the key's base64 body (or of the PKCS#12 blob) is enough to recognise a leak.
        ISSUED_SECRETS.append(secret_value.splitlines()[1] if not pkcs12 else secret_value[40:120])
        with self.lock:
            self.set_vault_secret(name, secret_value, content_type)
            if register:
                self.register_certificate(cert)
        return cert

    def register_certificate(self, cert: Any) -> None:
        """Add a certificate's public part to the app registration."""
        with self.lock:
            for key in thumbprints(cert):
                self.app_certificates[key] = cert

    def unregister_certificate(self, cert: Any) -> None:
        """Remove a certificate from the app registration."""
        with self.lock:
            for key in thumbprints(cert):
                self.app_certificates.pop(key, None)

    def rotate_certificate(self, old: Any, *, pkcs12: bool = False) -> Any:
        """A new certificate in the vault and on the app; the old one removed from the app."""
        new = self.add_certificate(pkcs12=pkcs12)
        self.unregister_certificate(old)
        return new

    def trust_identity(self, subject: str | None = None) -> None:
        """Add a federated identity credential trusting the managed identity (or ``subject``) on the app."""
        with self.lock:
            self.federated_credentials.append(
                (self.federation_issuer, subject or self.identity_principal_id, FEDERATION_AUDIENCE)
            )

    @property
    def federation_issuer(self) -> str:
        """Issuer of managed identity tokens for the exchange audience (Entra's v2.0 issuer for the tenant)."""
        return f"{self.url}/{self.tenant_id}/v2.0"

    def rotate_secret(self, *, expire_old: bool = False) -> str:
        """Rotate the client secret: a new one in Entra and the vault; the old one removed (or expired)."""
        with self.lock:
            old = self.secret
            self.secret = self.add_client_secret()
            # The clientState of change notifications, under the app's default secret name (docs/sync.md).
            self.client_state = secrets.token_urlsafe(32)
            ISSUED_SECRETS.append(self.client_state)
            self.set_vault_secret("notifications-client-state", self.client_state)
            if expire_old:
                self.client_secrets[old] = True
            else:
                del self.client_secrets[old]
            return self.secret

    def revoke_tokens(self) -> None:
        """Make every Graph access token issued so far invalid (as if it expired)."""
        with self.lock:
            self.token_generation += 1

    @property
    def url(self) -> str:
        """Base URL of every service."""
        assert self.port is not None, "emulator not started"
        return f"https://127.0.0.1:{self.port}"

    @property
    def vault_resource(self) -> str:
        """The resource Key Vault's challenge names.

        The SDK accepts a challenge only when the vault's host ends with "." + the
        resource's host (as ``myvault.vault.azure.net`` does with ``vault.azure.net``),
        and ``127.0.0.1:PORT`` ends with ``.0.0.1:PORT``.
        """
        return f"https://0.0.1:{self.port}"

    def app_settings(self, ca_path: Path, mode: str = "secret") -> dict[str, str]:
        """App settings and environment that point the function app at this tenant, trusting ``ca_path``.

        ``mode`` is GRAPH_CREDENTIAL; for ``managed-identity-federation`` there is no vault setting at all.
        """
        settings = {
            "GRAPH_TENANT_ID": self.tenant_id,
            "GRAPH_CLIENT_ID": self.client_id,
            "GRAPH_CREDENTIAL": mode,
            "KEY_VAULT_URL": self.url,
            "GRAPH_CLIENT_SECRET_NAME": SECRET_NAME,
            "GRAPH_CLIENT_CERTIFICATE_NAME": CERTIFICATE_NAME,
            "AUTHORITY_HOST": self.url,
            "GRAPH_ENDPOINT": self.url,
            "AZURE_CLIENT_ID": self.identity_client_id,
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
            "REQUESTS_CA_BUNDLE": str(ca_path),
        }
        if mode == "managed-identity-federation":
            for name in ("KEY_VAULT_URL", "GRAPH_CLIENT_SECRET_NAME", "GRAPH_CLIENT_CERTIFICATE_NAME"):
                del settings[name]
        return settings

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The key that checks the tokens this tenant signs."""
        return self._signing_key.public_key()

    # -- tokens -------------------------------------------------------------

    def issue_token(
        self,
        audience: str,
        subject: str,
        roles: list[str] | None,
        lifetime: int,
        *,
        object_id: str | None = None,
        issuer: str | None = None,
    ) -> tuple[str, int]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": issuer or f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            "appid": subject,
            "azp": subject,
            "oid": object_id or subject,
            "sub": object_id or subject,
            "tid": self.tenant_id,
            "idtyp": "app",
            "ver": "1.0",
            "uti": secrets.token_urlsafe(16),
            # Which revocation generation issued it; see revoke_tokens().
            "xms_gen": self.token_generation,
        }
        if roles:
            claims["roles"] = roles
        token = jwt.encode(claims, self._signing_key, algorithm="RS256", headers={"kid": self._kid})
        with self.lock:
            self.issued.append(token)
        ISSUED_SECRETS.append(token)
        return token, now + lifetime

    def verify_token(self, token: str, audience: str) -> dict[str, Any]:
        # An RSA signature check per request would make the emulator the
        # bottleneck of throughput benchmarks; a token verified once is cached
        # until it expires (revocation is still checked on every request).
        cached = self._verified.get((token, audience))
        if cached is not None and cached["exp"] > time.time():
            claims = cached
        else:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], audience=audience, leeway=0)
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified[(token, audience)] = claims
        if audience == self.url and claims.get("xms_gen") != self.token_generation:
            raise jwt.ExpiredSignatureError("revoked")
        return claims

    def jwks(self) -> dict[str, Any]:
        key = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.public_key))
        key.update({"kid": self._kid, "use": "sig", "alg": "RS256"})
        return {"keys": [key]}
