"""OCI 1.1 referrers without I/O: tag names, descriptors, referrers indexes and their merging.

A *referrer* is a manifest whose ``subject`` names another manifest: a signature (notation, ECR
managed signing, cosign 3), an attestation, an SBOM. Registries that serve the referrers API
(``GET /v2/<name>/referrers/<digest>``) list them themselves; for the others the OCI distribution
spec keeps them in the *referrers tag schema*: the tag ``sha256-<hex of the subject>`` holds an OCI
image index whose ``manifests`` are the referrers' descriptors. cosign's older tag conventions put
a signature, attestation or SBOM under ``sha256-<hex>.sig``, ``.att`` and ``.sbom``.

ecrcopy's own tag for an untagged image it keeps alive (``--untagged tag``) is
``untagged-<hex of its digest>``: a valid OCI tag that never collides with either schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import _mediatypes as mt
from ._exceptions import UnsupportedManifest
from ._models import Descriptor, ImageManifest, Manifest

__all__ = [
    "COSIGN_SUFFIXES",
    "ReferrerHints",
    "cosign_tags",
    "fallback_tag",
    "merge_referrers_index",
    "parse_referrers_index",
    "referrer_descriptor",
    "subject_of",
    "subject_of_tag",
    "untagged_tag",
]

#: cosign's tag conventions: signature, attestation, SBOM of the digest the tag names
COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
_SCHEMA_TAG = re.compile(r"(sha256|sha512)-([a-f0-9]{64}|[a-f0-9]{128})((?:\.sig|\.att|\.sbom)?)")
_UNTAGGED_PREFIX = "untagged-"
_MAX_TAG = 128


@dataclass(frozen=True)
class ReferrerHints:
    """What the caller already knows about a source repository, so that discovery asks less.

    ``tags``: every tag of the repository (cosign's tags and fallback indexes are looked up in it
    instead of with requests). ``subjects``: subject digest → digests of its referrers, complete
    for the repository (from ECR's ``DescribeImages``): the referrers API is then not asked.
    """

    tags: frozenset[str] | None = None
    subjects: Mapping[str, tuple[str, ...]] | None = None
    #: digest -> why it cannot be pulled (``archived``, ``activating``)
    unavailable: Mapping[str, str] | None = None

    def none_to_copy(self) -> bool:
        """Whether these hints prove the repository has no referrers at all: no subject has any,
        and no tag is a fallback index or a cosign tag. Then an image known to be up to date
        needs no request to look for them."""
        if self.subjects is None or self.tags is None:
            return False
        return not any(self.subjects.values()) and not any(subject_of_tag(tag) for tag in self.tags)


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``sha256:<hex>`` → ``sha256-<hex>``."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}"


def cosign_tags(digest: str) -> tuple[str, ...]:
    """cosign's tags for ``digest``'s signature, attestation and SBOM."""
    base = fallback_tag(digest)
    return tuple(base + suffix for suffix in COSIGN_SUFFIXES)


def subject_of_tag(tag: str) -> tuple[str, str] | None:
    """``(subject digest, suffix)`` when ``tag`` follows the referrers tag schema or cosign's
    conventions (``suffix`` is ``""``, ``.sig``, ``.att`` or ``.sbom``); ``None`` for any other tag."""
    match = _SCHEMA_TAG.fullmatch(tag)
    if match is None:
        return None
    algorithm, hex_part, suffix = match.groups()
    if len(hex_part) != (64 if algorithm == "sha256" else 128):
        return None
    return f"{algorithm}:{hex_part}", suffix


def untagged_tag(digest: str) -> str:
    """The tag ecrcopy gives an untagged image at the destination so it is kept: ``untagged-<hex>``.

    Deterministic (a rerun finds it), a valid OCI tag, and never of the referrers tag schema's form
    ``sha256-<hex>``. Other algorithms than sha256 keep their name: ``untagged-sha512-<hex>``, cut
    to the 128 characters a tag may have.
    """
    algorithm, _, hex_part = digest.partition(":")
    tag = _UNTAGGED_PREFIX + (hex_part if algorithm == "sha256" else f"{algorithm}-{hex_part}")
    return tag[:_MAX_TAG]


def subject_of(manifest: Manifest) -> str | None:
    """The digest ``manifest``'s ``subject`` names, if it is a referrer."""
    if manifest.is_schema1:
        return None
    subject = manifest.parsed.subject
    return subject.digest if subject is not None else None


def referrer_descriptor(manifest: Manifest) -> dict[str, Any]:
    """The descriptor a referrers index lists for ``manifest`` (OCI distribution spec, referrers):
    media type, digest, size, ``artifactType`` (the manifest's, else its config's media type) and
    the manifest's annotations."""
    parsed = manifest.parsed
    artifact_type = parsed.artifact_type
    if artifact_type is None and isinstance(parsed, ImageManifest):
        artifact_type = parsed.config.media_type
    descriptor: dict[str, Any] = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size}
    if artifact_type:
        descriptor["artifactType"] = artifact_type
    if parsed.annotations:
        descriptor["annotations"] = dict(parsed.annotations)
    return descriptor


def parse_referrers_index(raw: bytes) -> list[Descriptor]:
    """The manifest descriptors a referrers answer or fallback index lists.

    Entries that are not valid descriptors of a manifest are dropped (a registry's junk never
    fails the image); a body that is no index at all raises :class:`UnsupportedManifest`.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise UnsupportedManifest("referrers list is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("manifests", []), list):
        raise UnsupportedManifest("referrers list is not an image index")
    found: dict[str, Descriptor] = {}
    for entry in body.get("manifests", []):
        try:
            descriptor = Descriptor.model_validate(entry)
        except (ValidationError, ValueError, TypeError):
            continue
        if descriptor.media_type in mt.MANIFEST_TYPES and descriptor.digest not in found:
            found[descriptor.digest] = descriptor
    return list(found.values())


def merge_referrers_index(existing: Manifest | None, additions: Sequence[dict[str, Any]]) -> bytes | None:
    """The fallback index listing what ``existing`` lists plus ``additions``; ``None`` when nothing changes.

    Entries already listed (by digest) are kept as they are, in their order; new ones follow, sorted
    by digest, so every writer computes the same bytes from the same inputs. ``existing`` must be an
    OCI image index (:class:`UnsupportedManifest` otherwise: a tag of that name holding something
    else is never overwritten). Fields of the existing index other than ``manifests`` are kept.
    """
    if existing is not None:
        if existing.media_type != mt.OCI_INDEX:
            raise UnsupportedManifest(
                f"the referrers tag holds a {existing.media_type} manifest, not an OCI image index: left untouched"
            )
        body = json.loads(existing.raw)
        if not isinstance(body.get("manifests", []), list):
            raise UnsupportedManifest("the referrers tag holds a malformed image index: left untouched")
        listed = [entry for entry in body.get("manifests", [])]
    else:
        body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX}
        listed = []
    known = _digests(listed)
    new = {d["digest"]: d for d in additions if d["digest"] not in known}
    if not new and existing is not None:
        return None
    body["manifests"] = [*listed, *(new[digest] for digest in sorted(new))]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _digests(entries: Iterable[Any]) -> set[str]:
    return {entry["digest"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("digest"), str)}
