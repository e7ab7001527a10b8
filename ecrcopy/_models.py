"""Manifest, index and descriptor models.

A :class:`Manifest` keeps the exact bytes a registry served next to the parsed model: ecrcopy
never re-serializes a manifest, so digests never change.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import _mediatypes as mt
from ._exceptions import DigestMismatch, UnsupportedManifest

__all__ = [
    "Descriptor",
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "Platform",
    "new_hasher",
    "sha256_digest",
]

#: Registries may refuse bigger manifests; ecrcopy refuses to read or write them.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
#: The largest blob a descriptor may announce (ECR's own limit is 52,000 MiB per layer).
MAX_BLOB_SIZE = 1024**4
#: Registered digest algorithms (OCI image spec, descriptor.md) and their hex lengths.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def new_hasher(digest: str) -> Any:
    """A fresh hash object for ``digest``'s algorithm; :class:`DigestMismatch` for any other algorithm.

    Only registered algorithms are accepted: an unknown or mislabelled one is never silently
    checked as sha256.
    """
    algorithm, _, hex_part = digest.partition(":")
    if algorithm not in DIGEST_ALGORITHMS or len(hex_part) != DIGEST_ALGORITHMS[algorithm]:
        raise DigestMismatch(f"digest {_shown(digest)} does not use a supported algorithm (sha256, sha512)")
    return hashlib.new(algorithm)


def check_digest(value: str) -> str:
    """``value`` when it is a digest ecrcopy can verify; else a ``ValueError`` naming the problem."""
    if _DIGEST_RE.fullmatch(value):
        return value
    if _ANY_DIGEST_RE.fullmatch(value) and value.partition(":")[0] not in DIGEST_ALGORITHMS:
        raise ValueError(f"digest {_shown(value)} uses an unsupported algorithm (sha256 and sha512 are)")
    raise ValueError(f"{_shown(value)} is not a valid digest")


def _shown(value: str) -> str:
    """A short, printable rendering of untrusted text for a message."""
    text = "".join(ch if ch.isprintable() else "?" for ch in value[:80])
    return repr(text + ("…" if len(value) > 80 else ""))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class Platform(_Model):
    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = Field(default=None, alias="os.version")

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out


class Descriptor(_Model):
    media_type: str = Field(alias="mediaType", max_length=255)
    digest: str
    size: int = Field(ge=0, le=MAX_BLOB_SIZE)
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")

    @field_validator("digest")
    @classmethod
    def _valid_digest(cls, value: str) -> str:
        return check_digest(value)


class ImageManifest(_Model):
    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    config: Descriptor
    layers: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")
    annotations: dict[str, str] | None = None

    @property
    def blobs(self) -> list[Descriptor]:
        """Config first, then layers, in manifest order."""
        return [self.config, *self.layers]


class ImageIndex(_Model):
    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    manifests: list[Descriptor] = Field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")
    annotations: dict[str, str] | None = None


def _detect_media_type(body: dict[str, Any], content_type: str | None) -> str:
    declared = body.get("mediaType")
    if isinstance(declared, str) and declared in mt.MANIFEST_TYPES:
        return declared
    if content_type in mt.MANIFEST_TYPES:
        return content_type
    if body.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1_SIGNED if "signatures" in body else mt.DOCKER_SCHEMA1
    if "manifests" in body:
        return mt.OCI_INDEX
    if "config" in body:
        return mt.OCI_MANIFEST
    shown = _shown(declared) if isinstance(declared, str) else _shown(content_type or "")
    raise UnsupportedManifest(f"unknown manifest media type {shown}")


@dataclass(frozen=True)
class Manifest:
    """A manifest as served: exact ``raw`` bytes, their ``digest`` and the ``media_type``."""

    raw: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, raw: bytes, content_type: str | None = None, *, expected_digest: str | None = None) -> Manifest:
        """Build from bytes; verify ``expected_digest`` when given (a manifest fetched by digest)."""
        if len(raw) > MAX_MANIFEST_SIZE:
            raise UnsupportedManifest(f"manifest of {len(raw)} bytes exceeds the 4 MiB limit")
        digest = sha256_digest(raw)
        if expected_digest is not None:
            hasher = new_hasher(expected_digest)
            hasher.update(raw)
            actual = f"{expected_digest.partition(':')[0]}:{hasher.hexdigest()}"
            if actual != expected_digest:
                raise DigestMismatch(f"manifest hashes to {actual}, expected {_shown(expected_digest)[1:-1]}")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else f"not JSON ({exc.__class__.__name__})"
            raise UnsupportedManifest(f"manifest is {reason}") from None
        if not isinstance(body, dict):
            raise UnsupportedManifest("manifest is not a JSON object")
        ctype = content_type.split(";")[0].strip() if content_type else None
        return cls(raw=raw, media_type=_detect_media_type(body, ctype), digest=digest)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    @property
    def is_schema1(self) -> bool:
        return self.media_type in mt.SCHEMA1_TYPES

    @cached_property
    def parsed(self) -> ImageManifest | ImageIndex:
        """The parsed model (only for OCI/Docker schema 2 manifests and indexes)."""
        if self.is_schema1:
            raise UnsupportedManifest("Docker schema 1 manifests are not supported (GitLab refuses them)")
        try:
            if self.is_index:
                return ImageIndex.model_validate_json(self.raw)
            return ImageManifest.model_validate_json(self.raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = _shown(".".join(str(p) for p in first["loc"]))[1:-1]
            message = _shown(str(first["msg"]))[1:-1]
            raise UnsupportedManifest(f"malformed {self.media_type} manifest: {where}: {message}") from None
        except (ValueError, RecursionError):
            raise UnsupportedManifest(f"malformed {self.media_type} manifest") from None

    @property
    def index(self) -> ImageIndex:
        parsed = self.parsed
        assert isinstance(parsed, ImageIndex)
        return parsed

    @property
    def image(self) -> ImageManifest:
        parsed = self.parsed
        assert isinstance(parsed, ImageManifest)
        return parsed

    def descriptor(self) -> Descriptor:
        return Descriptor.model_validate({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
