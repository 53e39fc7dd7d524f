"""Where the Graph token comes from: the app's credential and one shared MSAL app.

``GRAPH_CREDENTIAL`` picks the credential:

- ``secret``: a client secret in Key Vault;
- ``certificate``: a Key Vault certificate, read through the secret that backs it
  (private key and chain, PEM or PKCS#12), sent as a signed client assertion
  with the x5c chain so that Subject Name + Issuer rotation works;
- ``managed-identity-federation``: no secret anywhere; the client assertion is
  a managed identity token for ``api://AzureADTokenExchange``, trusted by a
  federated identity credential on the app registration.

The credential is read once per process with the app's managed identity and
read again only when Entra says it is no longer valid (rotation). A credential
Entra keeps rejecting is tried again after a cool-down that doubles up to five
minutes, reading it first: the app registration may be fixed at any time, and
the worker heals without a restart. Every HTTP call here goes through
``transport.bounded_session`` and its retry policy, within the invocation's
deadline. The MSAL
``ConfidentialClientApplication`` is built on first use, because its
constructor does OIDC discovery over the network, and then reused by every
invocation so that ``acquire_token_for_client`` serves tokens from its cache.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from . import deadline, expiry
from .config import Settings
from .errors import DeadlineError, KeyVaultError, TokenError, UnavailableError

if TYPE_CHECKING:
    import msal

logger = logging.getLogger(__name__)

# What an operator should do for the AADSTS codes this app meets in practice.
# https://learn.microsoft.com/entra/identity-platform/reference-error-codes
AADSTS_HINTS: dict[int, str] = {
    7000215: "invalid client secret: the Key Vault secret is not a current secret of the app registration "
    "(store the secret's Value, not its Secret ID)",
    7000222: "the client secret has expired: add a new secret to the app registration and store it in Key Vault",
    700016: "application GRAPH_CLIENT_ID was not found in tenant GRAPH_TENANT_ID",
    90002: "tenant GRAPH_TENANT_ID was not found",
    900023: "GRAPH_TENANT_ID is not a valid tenant identifier",
    1002012: "the requested scope is invalid: check GRAPH_ENDPOINT",
    70011: "the requested scope is invalid: check GRAPH_ENDPOINT",
    7000112: "the application is disabled in the tenant",
    700027: "the client assertion's signature matches no certificate on the app registration: upload the public "
    "part of the Key Vault certificate GRAPH_CLIENT_CERTIFICATE_NAME to the app registration",
    700024: "the client assertion is outside its validity period: check the host's clock",
    70021: "no federated identity credential on the app registration matches the managed identity's token",
    700211: "no federated identity credential on the app registration has the managed identity token's issuer",
    700212: "no federated identity credential on the app registration has the audience GRAPH_FEDERATION_AUDIENCE",
    700213: "no federated identity credential on the app registration trusts this managed identity (subject): add one "
    "for the function app's identity",
    # https://learn.microsoft.com/entra/identity-platform/reference-breaking-changes (subjects match case-sensitively)
    7002138: "a federated identity credential's Subject matches the managed identity only if case is ignored, and Entra "
    "compares it case-sensitively: set the Subject to the identity's object (principal) id exactly as Entra shows it",
    500011: "the token's resource is not in the tenant (invalid_resource): GRAPH_ENDPOINT names a Graph this tenant does "
    "not have (another cloud's, or a typo; the scope is GRAPH_ENDPOINT/.default), or GRAPH_TENANT_ID is the wrong tenant",
    7000216: "the token request carried no credential: check GRAPH_CREDENTIAL",
}
_AADSTS = re.compile(r"AADSTS(\d+)")


# A client credential in one of MSAL's forms: a secret, or a dict with
# "private_key"/"public_certificate" or "client_assertion".
Credential = str | dict[str, Any]


class CredentialSource(Protocol):
    """Something that returns the app's current client credential; ``mode`` names it in errors."""

    mode: str

    def read(self) -> Credential: ...


class TokenSource(Protocol):
    """What the Graph client needs: a token, and a way to say a token was rejected."""

    def get_token(self) -> str: ...

    def invalidate(self, token: str) -> None: ...


class KeyVault:
    """Reads secrets from one vault with azure-identity (managed identity in Azure); built lazily."""

    def __init__(self, vault_url: str, *, managed_identity_client_id: str | None = None) -> None:
        self._vault_url = vault_url
        self._mi_client_id = managed_identity_client_id
        self._client: Any = None
        self.expires_on: dict[str, Any] = {}  # secret name -> its "expires" attribute (datetime or None)

    def _secret_client(self) -> Any:
        if self._client is None:
            # Imported here: these packages cost import time the host pays on
            # every cold start, and only the first token needs them.
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient

            credential = DefaultAzureCredential(managed_identity_client_id=self._mi_client_id, **sdk_transport())
            self._client = SecretClient(self._vault_url, credential, **sdk_transport())
        return self._client

    def get(self, name: str, setting: str) -> tuple[str, str | None]:
        """The secret's value and content type; ``KeyVaultError`` (cause logged, naming ``setting``) otherwise."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        where = f"secret {name!r} in Key Vault {self._vault_url}"
        try:
            secret = self._secret_client().get_secret(name)
        except DeadlineError:
            raise
        except ResourceNotFoundError as exc:
            logger.error("%s does not exist: create it, or set %s to its name", where, setting)
            raise KeyVaultError() from exc
        except ClientAuthenticationError as exc:
            # DefaultAzureCredential's message is its chain explanation: which
            # credential tried what and why it failed (no token or secret in it).
            logger.error(
                "Could not authenticate to Key Vault to read %s: no credential could get a token. In Azure: the "
                "managed identity (AZURE_CLIENT_ID selects a user-assigned one). Locally: run az login --tenant "
                "<the vault's tenant>. %s: %s",
                where,
                type(exc).__name__,
                exc.message,
            )
            raise KeyVaultError() from exc
        except HttpResponseError as exc:
            # A 403 has several causes, each with its own fix; the inner error code (and the
            # message, for vaults that send an older code) tells them apart.
            # https://learn.microsoft.com/azure/key-vault/general/rest-error-codes#http-403-insufficient-permissions
            inner = _inner_code(exc) if exc.status_code == 403 else ""
            text = str(getattr(exc, "message", "") or "")
            if inner == "SecretDisabled":
                logger.error(
                    "Key Vault refused %s (403 SecretDisabled): the secret or its current version is disabled; "
                    "enable it, or add a new enabled version",
                    where,
                )
            elif inner == "ForbiddenByFirewall" or "Client address is not authorized" in text:
                logger.error(
                    "Key Vault's firewall refused reading %s (403 ForbiddenByFirewall): the vault does not allow the "
                    "function app's network. In the vault's Networking settings allow the function app's virtual "
                    "network or outbound addresses (locally: your public IP), or use a private endpoint; a role "
                    "assignment does not help here",
                    where,
                )
            elif inner in ("ForbiddenByPolicy", "AccessDenied") or "does not have secrets get permission" in text:
                logger.error(
                    "Key Vault denied reading %s (403 %s): the vault uses access policies, not Azure RBAC, and no "
                    "policy gives the function app's identity (locally: your az login account) the Get secret "
                    "permission. Add an access policy with Secret permissions: Get, or switch the vault to Azure "
                    "RBAC and grant the 'Key Vault Secrets User' role",
                    where,
                    inner or "ForbiddenByPolicy",
                )
            elif exc.status_code == 403:
                logger.error(
                    "Key Vault denied reading %s (403%s): grant the function app's identity (locally: the account "
                    "you signed in with az login) the 'Key Vault Secrets User' role on the vault",
                    where,
                    f" {inner}" if inner else "",
                )
            else:
                logger.error("Key Vault answered HTTP %s reading %s", exc.status_code, where)
            raise KeyVaultError() from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            _deadline_check(f"reading {where}")
            logger.error("Key Vault is unreachable reading %s: %s (check KEY_VAULT_URL)", where, type(exc).__name__)
            raise KeyVaultError() from exc
        except ValueError as exc:
            # The SDK cannot parse an answer that is not Key Vault's JSON (a proxy's HTML page).
            logger.error("Key Vault answered something that is not a secret reading %s: %s", where, type(exc).__name__)
            raise KeyVaultError() from exc
        if not secret.value:
            logger.error("%s is empty", where)
            raise KeyVaultError()
        logger.info("Read %s (version %s)", where, secret.properties.version)
        # The "expires" attribute, if the secret has one: the expiry warning reads it.
        self.expires_on[name] = secret.properties.expires_on
        return str(secret.value), secret.properties.content_type


def _inner_code(exc: Any) -> str:
    """Key Vault's ``error.innererror.code`` (such as ``SecretDisabled``), or ""."""
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    code = inner.get("code") if isinstance(inner, dict) else getattr(inner, "code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else {}
        return str(((body.get("error") or {}).get("innererror") or {}).get("code") or "")
    except (ValueError, AttributeError):
        return ""


def _deadline_check(what: str) -> None:
    """``DeadlineError`` if the invocation's deadline is what ended a failed call."""
    current = deadline.current()
    if current is not None and current.remaining() <= 0:
        raise current.exceeded(what)


def sdk_transport() -> dict[str, Any]:
    """Keyword arguments that give an Azure SDK client the app's bounded session and retry policy.

    The SDK's own retries are off (``retry_total=0``), so one policy decides:
    the urllib3 retry mounted on the session, which also respects the deadline.
    """
    from azure.core.pipeline.transport import RequestsTransport

    from .transport import RetryPolicy, bounded_session

    session = bounded_session(RetryPolicy(total=2, max_wait=10))
    return {
        "transport": RequestsTransport(session=session, session_owner=False, connection_timeout=5, read_timeout=10),
        "retry_total": 0,
    }


class KeyVaultSecretSource:
    """``GRAPH_CREDENTIAL=secret``: the client secret stored in Key Vault."""

    mode = "secret"

    def __init__(self, vault: KeyVault, name: str) -> None:
        self._vault, self._name = vault, name

    def read(self) -> Credential:
        value = self._vault.get(self._name, "GRAPH_CLIENT_SECRET_NAME")[0]
        expiry.note(self.mode, self._vault.expires_on.get(self._name))
        return value


_PEM_KEY = re.compile(r"-----BEGIN (?:RSA |ENCRYPTED )?PRIVATE KEY-----.+?-----END (?:RSA |ENCRYPTED )?PRIVATE KEY-----", re.S)
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class KeyVaultCertificateSource:
    """``GRAPH_CREDENTIAL=certificate``: a Key Vault certificate, through the secret that backs it.

    Key Vault keeps a certificate's private key and chain in a secret of the
    same name, as PEM or base64 PKCS#12 by the certificate's content type.
    https://learn.microsoft.com/azure/key-vault/certificates/about-certificates#composition-of-a-certificate
    """

    mode = "certificate"

    def __init__(self, vault: KeyVault, name: str) -> None:
        self._vault, self._name = vault, name

    def read(self) -> Credential:
        value, content_type = self._vault.get(self._name, "GRAPH_CLIENT_CERTIFICATE_NAME")
        try:
            credential = parse_certificate(value, content_type)
        except ValueError as exc:
            logger.error("Key Vault certificate %r cannot be used: %s", self._name, exc)
            raise KeyVaultError() from exc
        expiry.note(
            self.mode,
            expiry.earliest(
                expiry.certificate_not_after(credential["public_certificate"]), self._vault.expires_on.get(self._name)
            ),
        )
        return credential


def parse_certificate(value: str, content_type: str | None) -> dict[str, Any]:
    """MSAL's certificate credential from a certificate's backing secret (PEM or base64 PKCS#12)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    if content_type == "application/x-pkcs12" or not value.lstrip().startswith("-----"):
        try:
            key, cert, chain = pkcs12.load_key_and_certificates(base64.b64decode(value), None)
        except ValueError as exc:
            raise ValueError(f"not a PKCS#12 bundle without a password ({exc})") from None
        certs = [c for c in (cert, *chain) if c is not None]
        if key is None or not certs:
            raise ValueError("the PKCS#12 bundle lacks the private key or the certificate")
        pem_certs = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
    else:
        key_match = _PEM_KEY.search(value)
        pem_certs = "".join(m.group(0) + "\n" for m in _PEM_CERT.finditer(value))
        if key_match is None or not pem_certs:
            raise ValueError("the PEM lacks the private key or the certificate")
        key = serialization.load_pem_private_key(key_match.group(0).encode(), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        # Entra signs-in clients with RS256/PS256 assertions only.
        raise ValueError("the certificate's key must be RSA")
    private_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    # public_certificate makes MSAL send the x5c chain (Subject Name + Issuer
    # authentication) and derive the SHA-256 thumbprint itself.
    return {"private_key": private_key, "public_certificate": pem_certs}


class ManagedIdentityAssertion:
    """``GRAPH_CREDENTIAL=managed-identity-federation``: a managed identity token as the client assertion.

    No secret exists anywhere: the app registration trusts the identity through a
    federated identity credential (issuer, subject, audience). azure-identity
    caches the identity's token and refreshes it before it expires.
    """

    mode = "managed-identity-federation"

    def __init__(self, audience: str, *, client_id: str | None = None) -> None:
        self._scope = f"{audience}/.default"
        self._client_id = client_id
        self._credential: Any = None
        # One dict for the process: read() returning an equal value tells the
        # token provider that reading again cannot fix a rejected assertion.
        self._value: dict[str, Any] = {"client_assertion": self._assertion}

    def read(self) -> Credential:
        expiry.note(self.mode, None)  # nothing that expires: the identity's tokens are refreshed
        return self._value

    def _assertion(self) -> str:
        from azure.core.exceptions import AzureError

        if self._credential is None:
            from azure.identity import ManagedIdentityCredential

            self._credential = ManagedIdentityCredential(client_id=self._client_id, **sdk_transport())
        try:
            return str(self._credential.get_token(self._scope).token)
        except DeadlineError:
            raise
        except AzureError as exc:
            _deadline_check(f"the managed identity token for {self._scope}")
            logger.error(
                "The managed identity could not issue the client assertion for %s (%s): check that the function "
                "app has the identity and AZURE_CLIENT_ID names it",
                self._scope,
                type(exc).__name__,
            )
            raise TokenError(
                "The app's managed identity could not issue its client assertion (mode managed-identity-federation).",
                retry_after=10,
            ) from exc


def credential_source(settings: Settings) -> CredentialSource:
    """The credential source ``GRAPH_CREDENTIAL`` selects."""
    if settings.credential_mode == "managed-identity-federation":
        return ManagedIdentityAssertion(settings.federation_audience, client_id=settings.managed_identity_client_id)
    assert settings.key_vault_url is not None  # load_settings requires it for these modes
    vault = KeyVault(settings.key_vault_url, managed_identity_client_id=settings.managed_identity_client_id)
    if settings.credential_mode == "certificate":
        return KeyVaultCertificateSource(vault, settings.client_certificate_name)
    return KeyVaultSecretSource(vault, settings.client_secret_name)


def is_microsoft_authority(authority_host: str) -> bool:
    """True for Entra's own authority hosts, where MSAL's instance discovery applies."""
    import msal.authority

    return (urlsplit(authority_host).hostname or "") in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS


def build_msal_app(settings: Settings, credential: Credential) -> msal.ConfidentialClientApplication:
    """Build the confidential client; this performs OIDC discovery over the network."""
    import msal

    return msal.ConfidentialClientApplication(
        settings.client_id,
        client_credential=credential,
        authority=settings.authority,
        # Instance discovery asks login.microsoftonline.com about the host; it
        # cannot answer for a host that is not Microsoft's.
        instance_discovery=None if is_microsoft_authority(settings.authority_host) else False,
        timeout=10,
        token_cache=msal.TokenCache(),
        http_client=msal_http_client(),
    )


def msal_http_client() -> Any:
    """MSAL's ``http_client``: the bounded session, retrying discovery GETs and connection failures.

    A token POST is retried only when it never reached Entra (connect errors);
    the app's cool-down, not a retry loop, handles Entra's own failures.
    """
    from .transport import RetryPolicy, bounded_session

    return bounded_session(RetryPolicy(total=2, max_wait=10, allowed_methods=frozenset({"GET"})), default_timeout=(3.05, 10.0))


AppFactory = Callable[[Settings, Credential], Any]


# After Entra rejects an unchanged credential (invalid_client), the next try
# waits this long, doubling per rejection up to the maximum: someone may fix
# the app registration (add the secret, the certificate or the federated
# credential) at any time, and the worker must heal without a restart.
REJECTION_COOLDOWN = 10.0
MAX_REJECTION_COOLDOWN = 300.0


# A token acquisition that ran out of time tells callers with about as little time not to try
# (the dependency did not answer within it); one with more than this beyond it tries itself.
SLOW_MARGIN = 1.0


@dataclass(frozen=True)
class SharedFailure:
    """What failed and until when: a value every caller during the cool-down gets its own exception from.

    Raising one exception object again and again would append each caller's frames
    to its traceback (and keep their locals alive) for the whole cool-down; so the
    cache keeps plain fields, and ``error()`` builds a fresh exception each time.
    """

    kind: type[UnavailableError]
    message: str
    until: float
    token_fields: tuple[str, str, tuple[int, ...], str] | None = None  # a TokenError's error, description, codes, correlation
    # For "no answer within N s": only callers with no more time than that (and a margin) fail fast.
    within: float | None = None

    def applies(self, now: float, left: float) -> bool:
        """Whether a caller with ``left`` seconds gets this failure now, instead of trying itself."""
        return now < self.until and (self.within is None or left <= self.within + SLOW_MARGIN)

    @classmethod
    def of(cls, exc: UnavailableError, until: float) -> SharedFailure:
        """The value of ``exc``; never its traceback, cause or context."""
        fields = (exc.error, exc.error_description, exc.error_codes, exc.correlation_id) if isinstance(exc, TokenError) else None
        return cls(type(exc), exc.message, until, fields)

    def error(self, now: float) -> UnavailableError:
        """A new exception for one caller, with the time left of the cool-down as its Retry-After."""
        retry_after = max(1, math.ceil(self.until - now))
        if self.token_fields is not None:
            error, description, codes, correlation = self.token_fields
            return TokenError(
                self.message,
                error=error,
                error_description=description,
                error_codes=codes,
                correlation_id=correlation,
                retry_after=retry_after,
            )
        return self.kind(self.message, retry_after=retry_after)


class TokenProvider:
    """The process's one MSAL app and its token acquisition, safe under concurrency.

    MSAL does not lock a cold cache, and the Python worker runs sync functions
    on a thread pool, so every acquisition goes through one lock: concurrent
    cold invocations send one Key Vault read and one token request, and the
    rest are served from MSAL's cache. Waiting for the lock counts against the
    invocation's deadline. After a failure, calls fail fast for
    ``failure_cooldown`` seconds so that a dead dependency does not turn into a
    request storm. A rejected credential (``invalid_client``) is tried again
    after ``rejection_cooldown`` seconds, doubling per rejection up to
    ``max_rejection_cooldown``; each try reads the credential again first.
    """

    def __init__(
        self,
        settings: Settings,
        credentials: CredentialSource,
        *,
        app_factory: AppFactory = build_msal_app,
        failure_cooldown: float = 10.0,
        rejection_cooldown: float = REJECTION_COOLDOWN,
        max_rejection_cooldown: float = MAX_REJECTION_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._source = credentials
        self._app_factory = app_factory
        self._cooldown = failure_cooldown
        self._rejection_cooldown = rejection_cooldown
        self._max_rejection_cooldown = max_rejection_cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._credential: Credential | None = None
        self._app: Any = None
        self._rejections = 0
        self._reread = False
        self._last_token: str | None = None
        self._failure: SharedFailure | None = None

    def get_token(self) -> str:
        """An access token for Graph, from MSAL's cache when it has a valid one."""
        current = deadline.current()
        if not self._lock.acquire(timeout=-1 if current is None else max(0.0, current.remaining())):
            assert current is not None
            raise current.exceeded("waiting for the token lock while another invocation acquires a token")
        try:
            now = self._clock()
            left = math.inf if current is None else current.remaining()
            if self._failure is not None and self._failure.applies(now, left):
                raise self._failure.error(now) from None
            try:
                token = self._acquire()
            except DeadlineError:
                # The deadline is this invocation's, never handed on. What others may learn from it is
                # a value: Entra or Key Vault gave no answer within ``left`` seconds, so a caller with
                # no more time fails fast for the cool-down; one with more (a sync) tries itself.
                self._failure = SharedFailure(
                    TokenError,
                    f"Entra ID, Key Vault or the managed identity did not answer the app's token request within "
                    f"{left:.0f} s; retry shortly.",
                    self._clock() + self._cooldown,
                    within=left,
                )
                raise
            except UnavailableError as exc:
                if current is not None and current.remaining() <= 0:
                    # Cut short by this invocation's deadline (a retry it could not fit):
                    # another invocation may well have the time this one lacked.
                    raise
                cooldown = self._cooldown_after(exc)
                self._failure = SharedFailure.of(exc, self._clock() + cooldown)
                if cooldown > 0:
                    exc.retry_after = max(1, math.ceil(cooldown))
                raise
            self._failure = None
            self._last_token = token
            return token
        finally:
            self._lock.release()

    def invalidate(self, token: str) -> None:
        """Drop ``token`` from the cache because Graph rejected it (expired or revoked)."""
        with self._lock:
            # Only the first of several concurrent 401s for the same token
            # clears the cache; the others then get the fresh token.
            if self._app is not None and token == self._last_token:
                logger.info("Graph rejected the cached access token; the next call acquires a new one")
                self._app.remove_tokens_for_client()
                self._last_token = None

    def _cooldown_after(self, exc: UnavailableError) -> float:
        if isinstance(exc, TokenError) and exc.is_invalid_client and self._rejections:
            return float(min(self._max_rejection_cooldown, self._rejection_cooldown * 2 ** (self._rejections - 1)))
        return self._cooldown

    def _acquire(self) -> str:
        if self._credential is None or self._reread:
            fresh = self._source.read()
            if self._reread or fresh != self._credential:
                # A new MSAL app as well: MSAL answers an identical request
                # that got a 400 from its own cache for 60 s.
                self._use(fresh)
            self._reread = False
        assert self._credential is not None
        if self._app is None:
            self._app = self._build(self._credential)
        try:
            token = self._request_token(self._app)
        except TokenError as exc:
            if not exc.is_invalid_client:
                raise
            if self._rejections == 0:
                # The credential may have been rotated since it was read: read it again, once.
                fresh = self._source.read()
                if fresh != self._credential:
                    logger.warning(
                        "Entra rejected the %s credential (%s); the stored credential changed, using the new one",
                        self._source.mode,
                        self._hint(exc),
                    )
                    self._use(fresh)
                    self._app = self._build(fresh)
                    try:
                        token = self._request_token(self._app)
                    except TokenError as again:
                        if not again.is_invalid_client:
                            raise
                        raise self._rejected(again) from None
                    self._rejections = 0
                    return token
            raise self._rejected(exc) from None
        self._rejections = 0
        return token

    def _rejected(self, exc: TokenError) -> TokenError:
        """Count a rejection of the current credential and log it once, with the fix and the next try."""
        self._rejections += 1
        self._reread = True
        wait = min(self._max_rejection_cooldown, self._rejection_cooldown * 2 ** (self._rejections - 1))
        logger.error(
            "Entra rejected the %s credential (rejection %d, correlation_id=%s): %s; reading the credential and "
            "trying again in %.0f s",
            self._source.mode,
            self._rejections,
            exc.correlation_id,
            self._hint(exc),
            wait,
        )
        return exc

    def _use(self, credential: Credential) -> None:
        self._credential, self._app = credential, None

    def _build(self, credential: Credential) -> Any:
        import json

        import requests
        from msal.exceptions import MsalServiceError

        discovery = f"{self._settings.authority}/v2.0/.well-known/openid-configuration"
        try:
            return self._app_factory(self._settings, credential)
        except DeadlineError:
            raise
        except (requests.RequestException, MsalServiceError, RuntimeError) as exc:
            # MSAL's constructor fetches the tenant's OpenID configuration: a
            # 5xx there raises, as does a network failure.
            status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", "")
            logger.error(
                "Entra's tenant discovery %s failed: %s %s (Entra or the network is failing; the app "
                "tries again after its cool-down)",
                discovery,
                type(exc).__name__,
                status,
            )
            raise TokenError("The app could not reach Entra ID to get a token.", retry_after=10) from exc
        except KeyError as exc:
            logger.error(
                "Entra's tenant discovery %s answered JSON without the %s endpoint; a proxy or an outage "
                "may be answering for Entra",
                discovery,
                exc,
            )
            raise TokenError("Entra ID answered the app's discovery request with something unexpected.", retry_after=10) from exc
        except ValueError as exc:
            if isinstance(exc.__context__, json.JSONDecodeError) or isinstance(exc, json.JSONDecodeError):
                logger.error(
                    "Entra's tenant discovery %s answered something that is not JSON (an HTML page from a "
                    "proxy?); check AUTHORITY_HOST and any proxy in between",
                    discovery,
                )
                raise TokenError(
                    "Entra ID answered the app's discovery request with something unexpected.", retry_after=10
                ) from exc
            # MSAL raises ValueError when discovery answers 4xx: an unknown tenant.
            logger.error(
                "OIDC discovery failed for %s: check GRAPH_TENANT_ID and AUTHORITY_HOST (%s)",
                self._settings.authority,
                exc,
            )
            raise TokenError("The app could not load Entra ID's configuration for its tenant.", retry_after=30) from exc

    def _request_token(self, app: Any) -> str:
        import requests
        from msal.exceptions import MsalServiceError

        endpoint = f"{self._settings.authority}/oauth2/v2.0/token"
        started = time.perf_counter()
        try:
            result = app.acquire_token_for_client(scopes=[self._settings.graph_scope])
        except (MsalServiceError, requests.RequestException) as exc:
            # MSAL raises for 5xx and remembers the failure for a few seconds
            # (or Retry-After) without sending requests.
            logger.error("Entra's token endpoint %s is unavailable: %s", endpoint, type(exc).__name__)
            raise TokenError("Entra ID's token endpoint is unavailable.", retry_after=5) from exc
        except (ValueError, KeyError, TypeError) as exc:
            # MSAL parses the answer as it goes: an HTML page with status 200
            # (a proxy), or a non-numeric expires_in, fail inside it.
            logger.error(
                "Entra's token endpoint %s answered something that is not a token response (%s: %s)",
                endpoint,
                type(exc).__name__,
                str(exc).splitlines()[0][:120] if str(exc) else "",
            )
            raise TokenError("Entra ID's token endpoint answered with something unexpected.", retry_after=5) from exc
        if not isinstance(result, dict):
            logger.error("Entra's token endpoint %s answered something that is not a token response", endpoint)
            raise TokenError("Entra ID's token endpoint answered with something unexpected.", retry_after=5)
        if "access_token" in result:
            if result.get("token_source") != "cache":
                logger.info(
                    "Acquired a Graph token in %.0f ms (expires in %s s)",
                    (time.perf_counter() - started) * 1000,
                    result.get("expires_in"),
                )
            return str(result["access_token"])
        raise self._token_error(result, endpoint)

    def _token_error(self, result: dict[str, Any], endpoint: str) -> TokenError:
        description = str(result.get("error_description", ""))
        raw_codes = result.get("error_codes") or _AADSTS.findall(description)[:1]
        try:
            codes = tuple(int(c) for c in (raw_codes if isinstance(raw_codes, list | tuple) else [raw_codes]))
        except (TypeError, ValueError):
            logger.warning(
                "Entra's token endpoint %s answered error_codes that are not integers; using the description's AADSTS code",
                endpoint,
            )
            codes = tuple(int(c) for c in _AADSTS.findall(description)[:1])
        if codes:
            reason = f"AADSTS{codes[0]}" + (f": {AADSTS_HINTS[codes[0]]}" if codes[0] in AADSTS_HINTS else "")
        else:
            reason = str(result.get("error", "unknown error"))
        err = TokenError(
            f"Entra ID refused the app's token request (credential {self._source.mode}, {reason}). See the function app's logs.",
            error=str(result.get("error", "")),
            error_description=description,
            error_codes=codes,
            correlation_id=str(result.get("correlation_id", "")),
            retry_after=30,
        )
        if err.is_invalid_client:
            return err  # _acquire logs one line per rejection, with what happens next
        # The first line of Entra's description is safe to log: it never
        # contains the secret. The trace and correlation ids help support.
        logger.error(
            "Token request to %s failed (credential %s): error=%s codes=%s correlation_id=%s: %s",
            endpoint,
            self._source.mode,
            err.error,
            list(codes),
            err.correlation_id,
            description.splitlines()[0] if description else "",
        )
        return err

    @staticmethod
    def _hint(exc: TokenError) -> str:
        for code in exc.error_codes:
            if code in AADSTS_HINTS:
                return f"AADSTS{code}: {AADSTS_HINTS[code]}"
        if exc.error_codes:
            return f"AADSTS{exc.error_codes[0]}: " + (
                exc.error_description.splitlines()[0][:200] if exc.error_description else exc.error
            )
        return exc.error_description.splitlines()[0] if exc.error_description else exc.error
