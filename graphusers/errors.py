"""The app's exceptions: one root, a few subclasses the HTTP layer maps to status codes.

    AppError
    ├── ConfigError            a required app setting is missing or malformed  -> 503
    ├── InvalidRequestError    the caller sent bad input                       -> 400
    │   └── CursorExpiredError Graph no longer continues the cursor's listing   -> 410
    ├── NotFoundError          Graph has no such object                        -> 404
    ├── UnavailableError       a dependency is down or throttling past the bound -> 503
    │   ├── KeyVaultError      the Graph credential could not be read from Key Vault
    │   ├── TokenError         Entra refused or could not issue a token
    │   ├── DeadlineError      the invocation's deadline ran out before an answer
    │   └── StorageError       Blob Storage failed or changed under the sync
    └── GraphError             Graph answered something unexpected             -> 502
        ├── PermissionDeniedError  Graph says the app lacks a permission
        └── ResyncRequiredError    a delta token expired (410 Gone): the sync starts over

Messages of these exceptions are safe to show to an HTTP caller: they never
contain a secret, a token or a traceback. Details that only an operator should
see (vault names, AADSTS descriptions) go to the log.
"""

from __future__ import annotations


class AppError(Exception):
    """Root of every error this package raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AppError):
    """An app setting is missing or malformed; the message names the setting."""

    code = "configuration_error"

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"App setting {setting} {problem}")
        self.setting = setting


class InvalidRequestError(AppError):
    """The caller's input is invalid; the message says which parameter and why."""

    code = "invalid_request"

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class CursorExpiredError(InvalidRequestError):
    """Graph refused a cursor's page token (Directory_ExpiredPageToken); the listing must start again."""

    code = "cursor_expired"


class NotFoundError(AppError):
    """The requested object does not exist."""

    code = "not_found"


# The longest Retry-After the app passes on: a dependency's absurd value (a 429 asking for
# years) must not park a caller; the credential back-off tops out at this too.
MAX_RETRY_AFTER = 300


class UnavailableError(AppError):
    """A dependency cannot serve us now; callers may retry after ``retry_after`` seconds (1 to 300)."""

    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float = 30) -> None:
        super().__init__(message)
        self.retry_after = min(MAX_RETRY_AFTER, max(1, int(retry_after)))


class KeyVaultError(UnavailableError):
    """The Graph credential (secret or certificate) could not be read from Key Vault; the log says why."""

    code = "key_vault_unavailable"

    def __init__(
        self, message: str = "The app could not read its Graph credential from Key Vault.", *, retry_after: int = 30
    ) -> None:
        super().__init__(message, retry_after=retry_after)


class TokenError(UnavailableError):
    """Entra did not issue an access token.

    Carries the fields of MSAL's error result (never the secret): ``error``,
    ``error_description``, ``error_codes`` and ``correlation_id``.
    """

    code = "token_unavailable"

    def __init__(
        self,
        message: str,
        *,
        error: str = "",
        error_description: str = "",
        error_codes: tuple[int, ...] = (),
        correlation_id: str = "",
        retry_after: int = 30,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.error = error
        self.error_description = error_description
        self.error_codes = error_codes
        self.correlation_id = correlation_id

    @property
    def is_invalid_client(self) -> bool:
        """True when Entra rejected the client credential (a rotated or expired secret)."""
        return self.error == "invalid_client"


class DeadlineError(UnavailableError):
    """The invocation ran out of time (``HTTP_DEADLINE_SECONDS``, or the sync's own deadline)."""

    code = "deadline_exceeded"


class GraphError(AppError):
    """Graph answered with an error this app does not expect."""

    code = "graph_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        graph_code: str = "",
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.graph_code = graph_code
        self.request_id = request_id


class PermissionDeniedError(GraphError):
    """Graph refused the call: the app lacks an application permission or its admin consent."""

    code = "permission_denied"


class ResyncRequiredError(GraphError):
    """Graph no longer accepts the delta token (410 Gone); a full round is needed."""

    code = "resync_required"


class StorageError(UnavailableError):
    """Blob Storage could not be read or written, or changed under the sync (ETag)."""

    code = "storage_unavailable"
