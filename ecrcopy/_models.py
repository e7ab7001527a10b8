"""Manifest, index and descriptor models.

A :class:`Manifest` keeps the exact bytes a registry served next to the parsed model: ecrcopy
never re-serializes a manifest, so digests never change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import _mediatypes as mt
from ._exceptions import DigestMismatch, UnsupportedManifest

__all__ = [
    "Descriptor",
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "Platform",
    "sha256_digest",
]

#: Registries may refuse bigger manifests; ecrcopy refuses to read or write them.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024


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
    media_type: str = Field(alias="mediaType")
    digest: str
    size: int = Field(ge=0)
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")


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
    raise UnsupportedManifest(f"unknown manifest media type {declared or content_type!r}")


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
            if expected_digest.startswith("sha512:"):
                actual512 = "sha512:" + hashlib.sha512(raw).hexdigest()
                if actual512 != expected_digest:
                    raise DigestMismatch(f"manifest is {actual512}, expected {expected_digest}")
            elif digest != expected_digest:
                raise DigestMismatch(f"manifest hashes to {digest}, expected {expected_digest}")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise UnsupportedManifest(f"manifest is not JSON: {exc}") from None
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
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UnsupportedManifest(f"malformed {self.media_type} manifest: {where}: {first['msg']}") from None

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
