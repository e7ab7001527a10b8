"""Exceptions raised by ecrcopy.

Every exception the library raises on purpose derives from :class:`EcrcopyError`; every parse
and I/O boundary (manifests, tag lists, token replies, ``Link``/``Location``/``WWW-Authenticate``
headers, blob streams, the blob-location cache) turns foreign exceptions into this tree::

    EcrcopyError
    ├── ConfigurationError            fatal: bad options, unusable input, an invalid plan
    │   ├── InvalidReference          a reference or repository name that breaks the OCI grammar
    │   └── WrongContextError         a blocking API called from inside a running event loop
    ├── AuthenticationError           fatal: credentials missing or rejected by a registry or token realm
    ├── RegistryUnavailable           fatal: a registry or token service could not be reached at the start
    ├── RegistryError                 the registry answered with an error status (400, 405, 416, ...)
    │   ├── NotFound                  404: repository, manifest, blob or upload unknown
    │   ├── Denied                    403, or 401 insufficient_scope: valid credentials that may not do this
    │   ├── RateLimited               transient: 429 (``retry_after`` in seconds when the registry said)
    │   └── RegistryServerError       transient: 500, 502, 503, 504
    ├── TransferError                 transient: connection refused mid-run, reset, timed out, a stalled
    │                                 or cut body, object storage refusing a download link
    ├── DigestMismatch                content does not hash to its digest, or uses an unknown algorithm
    ├── UnsupportedManifest           unknown media types, malformed or too deeply nested manifests,
    │   │                             manifests over 4 MiB, index cycles
    │   └── SkippedByPolicy           schema 1 or foreign layers: the image is reported ``skipped``
    └── TagConflict                   the destination tag holds another digest and the policy forbids overwriting

Fatal errors (``exc.fatal is True``) stop a whole run: retrying other images cannot help. The
*transient* ones are retried by the run's retry policy (:mod:`ecrcopy._retry`) and, when retries
run out, fail the one image they happened to, like every other non-fatal error. An unexpected
exception while copying one image (a bug) also fails only that image, with reason
``internal_error``.

Messages never contain secrets: credentials are held as ``pydantic.SecretStr``, URLs are
reported without their query strings, transport errors never quote header values, and text a
registry sent is stripped of control characters and terminal escapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "Denied",
    "DigestMismatch",
    "EcrcopyError",
    "InvalidReference",
    "NotFound",
    "RateLimited",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnavailable",
    "SkippedByPolicy",
    "TagConflict",
    "TransferError",
    "UnsupportedManifest",
    "WrongContextError",
]


class EcrcopyError(Exception):
    """Base class of every error ecrcopy raises on purpose."""

    #: A fatal error stops the whole run instead of failing one image.
    fatal: ClassVar[bool] = False
    #: Short machine-readable reason used in reports (``conflict``, ``digest_mismatch``, ...).
    reason: ClassVar[str] = "error"
    #: The image is reported ``skipped`` (a policy decision), not ``failed``.
    skips: ClassVar[bool] = False


class ConfigurationError(EcrcopyError):
    """The options, arguments or environment cannot work."""

    fatal = True
    reason = "configuration"


class InvalidReference(ConfigurationError):
    """A reference, repository name or tag that does not follow the OCI grammar."""

    reason = "invalid_reference"


class WrongContextError(ConfigurationError, RuntimeError):
    """A blocking entry point was called from inside a running event loop."""


class AuthenticationError(EcrcopyError):
    """Credentials are missing or were rejected."""

    fatal = True
    reason = "authentication"


class RegistryUnavailable(EcrcopyError):
    """A registry could not be reached at all."""

    fatal = True
    reason = "unreachable"


class RegistryError(EcrcopyError):
    """A registry answered with an error status.

    ``status`` is the HTTP status, ``code`` the first OCI error code of the body (if any).
    """

    reason = "registry_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(RegistryError):
    """404: the repository, manifest, blob or upload session is unknown."""

    reason = "not_found"


class Denied(RegistryError):
    """The credentials are valid but do not allow this operation (protected tags, missing scope)."""

    reason = "denied"


class RateLimited(RegistryError):
    """429 Too Many Requests. ``retry_after`` is the delay the registry asked for, in seconds."""

    reason = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class RegistryServerError(RegistryError):
    """5xx from the registry."""

    reason = "server_error"


class TransferError(EcrcopyError):
    """The connection failed or timed out during a request."""

    reason = "transfer"


class DigestMismatch(EcrcopyError):
    """Content does not match the digest or size it was requested by."""

    reason = "digest_mismatch"


class UnsupportedManifest(EcrcopyError):
    """A manifest ecrcopy cannot copy: unknown media type, malformed, or too large."""

    reason = "unsupported"


class SkippedByPolicy(UnsupportedManifest):
    """An image left out on purpose (Docker schema 1, foreign layers): reported ``skipped``."""

    skips = True


class TagConflict(EcrcopyError):
    """The destination tag already points at a different digest."""

    reason = "conflict"


def validation_summary(exc: ValidationError) -> str:
    """``field.path: message`` of the first error pydantic found: one line for a ConfigurationError."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"
