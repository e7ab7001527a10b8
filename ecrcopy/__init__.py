"""ecrcopy: daemonless, byte-exact registry-to-registry image copies (Amazon ECR → GitLab).

Blocking helpers for scripts::

    import ecrcopy
    report = ecrcopy.copy_repository("123.dkr.ecr.eu-west-1.amazonaws.com/app", "registry.gitlab.com/g/p/app")

and :class:`Copier` for async code that copies many things with shared connections and caches.
"""

from ._api import copy_image, copy_repository, migrate, verify
from ._copier import Copier
from ._credentials import (
    CredentialProvider,
    Credentials,
    DockerConfigCredentials,
    StaticCredentials,
)
from ._ecr import ALLOWED_ACTIONS, EcrSource
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

__version__ = "0.1.0.dev0"

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
