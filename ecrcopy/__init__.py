"""ecrcopy: daemonless, byte-exact registry-to-registry image copies (Amazon ECR → GitLab).

Blocking helpers for scripts::

    import ecrcopy
    report = ecrcopy.copy_repository("123.dkr.ecr.eu-west-1.amazonaws.com/app", "registry.gitlab.com/g/p/app")

and :class:`Copier` for async code that copies many things with shared connections and caches.

Names are imported on first use (PEP 562), so ``import ecrcopy`` and ``ecrcopy --version`` load
neither httpx, pydantic nor boto3; the exceptions are plain classes and load at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _httpx_light
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    Denied,
    DigestMismatch,
    EcrcopyError,
    InvalidReference,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryServerError,
    RegistryUnavailable,
    SkippedByPolicy,
    TagConflict,
    TransferError,
    UnsupportedManifest,
    WrongContextError,
)

_httpx_light.install()  # before any module of the package imports httpx (none of the above does)

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    # What type checkers see; keep it in step with _LAZY (tests/test_startup.py checks both).
    from ._api import copy_image, copy_repository, migrate, verify
    from ._copier import Copier
    from ._credentials import CredentialProvider, Credentials, DockerConfigCredentials, StaticCredentials
    from ._ecr import ALLOWED_ACTIONS, EcrSource
    from ._gitlab import GitLabDestination
    from ._migrate import MigrationReport, migrate_with
    from ._models import Descriptor, ImageIndex, ImageManifest, Manifest, Platform
    from ._options import CopyOptions
    from ._plan import MigrationOptions, PlanSummary, Shard
    from ._reference import Reference, parse_reference
    from ._referrers import untagged_tag
    from ._report import CopyReport, ImageResult, ProgressEvent, ReferrerResult, Totals
    from ._verify import verify_migration, verify_repository
    from ._verify_report import VerifiedImage, VerifyReport, VerifyTotals

#: Public name -> the private module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    name: module
    for module, names in {
        "_api": ("copy_image", "copy_repository", "migrate", "verify"),
        "_copier": ("Copier",),
        "_credentials": ("CredentialProvider", "Credentials", "DockerConfigCredentials", "StaticCredentials"),
        "_ecr": ("ALLOWED_ACTIONS", "EcrSource"),
        "_gitlab": ("GitLabDestination",),
        "_migrate": ("MigrationReport", "migrate_with"),
        "_models": ("Descriptor", "ImageIndex", "ImageManifest", "Manifest", "Platform"),
        "_options": ("CopyOptions",),
        "_plan": ("MigrationOptions", "PlanSummary", "Shard"),
        "_reference": ("Reference", "parse_reference"),
        "_referrers": ("untagged_tag",),
        "_report": ("CopyReport", "ImageResult", "ProgressEvent", "ReferrerResult", "Totals"),
        "_verify": ("verify_migration", "verify_repository"),
        "_verify_report": ("VerifiedImage", "VerifyReport", "VerifyTotals"),
    }.items()
    for name in names
}

if not TYPE_CHECKING:
    # Hidden from type checkers, so that a misspelt ``ecrcopy.Name`` stays an error for them.

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ALLOWED_ACTIONS",
    "AuthenticationError",
    "ConfigurationError",
    "Copier",
    "CopyOptions",
    "CopyReport",
    "CredentialProvider",
    "Credentials",
    "Denied",
    "Descriptor",
    "DigestMismatch",
    "DockerConfigCredentials",
    "EcrSource",
    "EcrcopyError",
    "GitLabDestination",
    "ImageIndex",
    "ImageManifest",
    "ImageResult",
    "InvalidReference",
    "Manifest",
    "MigrationOptions",
    "MigrationReport",
    "NotFound",
    "PlanSummary",
    "Platform",
    "ProgressEvent",
    "RateLimited",
    "Reference",
    "ReferrerResult",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnavailable",
    "Shard",
    "SkippedByPolicy",
    "StaticCredentials",
    "TagConflict",
    "Totals",
    "TransferError",
    "UnsupportedManifest",
    "VerifiedImage",
    "VerifyReport",
    "VerifyTotals",
    "WrongContextError",
    "__version__",
    "copy_image",
    "copy_repository",
    "migrate",
    "migrate_with",
    "parse_reference",
    "untagged_tag",
    "verify",
    "verify_migration",
    "verify_repository",
]
