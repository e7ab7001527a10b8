"""Copying referrers: signatures, attestations and SBOMs follow the images they refer to.

For every manifest of a copied image (the image, or an index and each of its children) the source
is asked for its referrers:

1. what the caller already knows (:class:`ReferrerHints`: ECR's ``DescribeImages`` names each
   referrer's ``subjectManifestDigest``, so a migration from ECR needs no request to find them);
2. else the referrers API, ``GET /v2/<name>/referrers/<digest>``;
3. else (a registry without the API) the referrers tag schema, the index tagged ``sha256-<hex>``;
4. and in every case cosign's tags ``sha256-<hex>.sig``, ``.att`` and ``.sbom``.

Each referrer is copied byte-identical, by digest, after its subject, with its blobs through the
same HEAD/mount/upload engine as images; its own referrers follow (a signature of an SBOM).

At the destination, a registry that serves the referrers API (it answers the push of a referrer
with ``OCI-Subject``, or its API lists what was pushed) needs nothing more. Otherwise — GitLab
stores ``subject`` but serves no referrers API — ecrcopy maintains the fallback tag
``sha256-<hex of the subject>``: an OCI index listing every referrer of that subject, merged with
what the tag already lists and written only when that changes. Registries offer no conditional
write, so a writer re-reads the tag after a short, jittered pause and merges again until every
referrer it added is listed: two shards adding referrers to the same subject both survive.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from . import _mediatypes as mt
from ._client import RegistryClient
from ._concurrency import KeyedLock, run_all
from ._exceptions import EcrcopyError, NotFound, RegistryError
from ._models import Manifest
from ._options import CopyOptions
from ._protocol import clean_text
from ._referrers import ReferrerHints, cosign_tags, fallback_tag, merge_referrers_index, referrer_descriptor, subject_of
from ._report import ImageResult, ReferrerResult

__all__ = [
    "ReferrerHints",
    "ReferrerJob",
    "ReferrerSync",
    "discover_referrers",
    "manifest_tree",
    "present_cosign_tags",
]

log = logging.getLogger("ecrcopy")

#: How deep referrers of referrers are followed.
MAX_REFERRER_DEPTH = 8
#: Rounds of re-reading and merging a fallback tag that concurrent writers keep changing.
MAX_MERGE_ROUNDS = 6
#: Pause (seconds, plus as much jitter) before re-reading a fallback tag just written.
SETTLE_SECONDS = 0.2

#: Pushes ``manifest`` (its blobs and children first) as ``reference`` at the destination and
#: returns the destination's ``OCI-Subject`` answer.
PushTree = Callable[[Manifest, str], Awaitable[str | None]]


@dataclass
class ReferrerJob:
    """The referrers of one image: where they come from and go, and the result they count into."""

    source: RegistryClient
    source_repo: str
    destination: RegistryClient
    destination_repo: str
    push: PushTree
    result: ImageResult
    hints: ReferrerHints
    on_conflict: str = "fail"


async def manifest_tree(client: RegistryClient, repo: str, manifest: Manifest, depth: int = 0) -> list[str]:
    """Digests of ``manifest`` and, for an index, of every child (nested indexes fetched), top first."""
    digests = [manifest.digest]
    if not manifest.is_index or depth >= MAX_REFERRER_DEPTH:
        return digests
    for child in manifest.index.manifests:
        if child.digest in digests:
            continue
        if child.media_type in mt.INDEX_TYPES:
            nested = await client.get_manifest(repo, child.digest)
            digests.extend(d for d in await manifest_tree(client, repo, nested, depth + 1) if d not in digests)
        else:
            digests.append(child.digest)
    return digests


async def discover_referrers(
    client: RegistryClient,
    repo: str,
    subject: str,
    hints: ReferrerHints,
    without_api: set[str] | None = None,
) -> list[tuple[str, str | None]]:
    """(digest, artifactType or None) of the referrers of ``subject`` in ``repo``.

    From ``hints.subjects`` when the caller knows them; else the referrers API, and the fallback tag
    ``sha256-<hex>`` where there is no API (or where ``hints.tags`` lists that tag). ``without_api``
    collects the hosts found to have no referrers API, which are then not asked again.
    """
    if hints.subjects is not None:
        return [(digest, None) for digest in hints.subjects.get(subject, ())]
    found: dict[str, str | None] = {}
    api = None
    if without_api is None or client.host not in without_api:
        api = await client.get_referrers(repo, subject)
        if api is None and without_api is not None:
            without_api.add(client.host)
    for descriptor in api or []:
        found.setdefault(descriptor.digest, descriptor.artifact_type)
    tag = fallback_tag(subject)
    if api is None if hints.tags is None else tag in hints.tags:
        try:
            index = await client.get_manifest(repo, tag)
        except NotFound:
            index = None
        if index is not None and index.is_index:
            for descriptor in index.index.manifests:
                if descriptor.media_type in mt.MANIFEST_TYPES:
                    found.setdefault(descriptor.digest, descriptor.artifact_type)
    return list(found.items())


async def present_cosign_tags(client: RegistryClient, repo: str, subject: str, hints: ReferrerHints) -> list[str]:
    """cosign's tags of ``subject`` that ``repo`` has (looked up in ``hints.tags``, else with HEADs)."""
    present = []
    for tag in cosign_tags(subject):
        if hints.tags is not None:
            if tag in hints.tags:
                present.append(tag)
        elif await client.head_manifest(repo, tag) is not None:
            present.append(tag)
    return present


class ReferrerSync:
    """Copies referrers and keeps fallback tags for one run (shared by every image of a copier)."""

    def __init__(self, options: CopyOptions) -> None:
        self._options = options
        #: destination host -> whether it serves the referrers API (learned once)
        self._serves_api: dict[str, bool] = {}
        self._tag_locks = KeyedLock()
        self._flights = KeyedLock()
        #: (destination host, repository, digest) of referrers this run pushed or found there
        self._pushed: set[tuple[str, str, str]] = set()
        self._api_lock = anyio.Lock()
        #: source hosts that answered that they have no referrers API
        self._without_api: set[str] = set()

    async def sync(self, job: ReferrerJob, manifest: Manifest) -> None:
        """Copy the referrers of ``manifest`` (and of its index children), recursively."""
        subjects = await manifest_tree(job.source, job.source_repo, manifest)
        seen = set(subjects)
        await self._level(job, subjects, seen, 0)

    async def _level(self, job: ReferrerJob, subjects: list[str], seen: set[str], depth: int) -> None:
        found: list[list[str]] = [[] for _ in subjects]

        async def one(index: int) -> None:
            found[index] = await self._subject(job, subjects[index], seen)

        await run_all([lambda i=i: one(i) for i in range(len(subjects))], 4)  # type: ignore[misc]
        deeper = [digest for digests in found for digest in digests]
        if deeper and depth + 1 < MAX_REFERRER_DEPTH:
            await self._level(job, deeper, seen, depth + 1)

    async def _subject(self, job: ReferrerJob, subject: str, seen: set[str]) -> list[str]:
        """Copy the referrers of ``subject``; the digests copied (whose own referrers come next)."""
        listed: list[dict[str, object]] = []
        copied: list[str] = []
        for digest, artifact_type in await self._discover(job, subject):
            if digest in seen:
                continue
            seen.add(digest)
            entry = ReferrerResult(digest=digest, subject=subject, artifact_type=artifact_type, status="failed")
            job.result.referrers.append(entry)
            try:
                unavailable = (job.hints.unavailable or {}).get(digest)
                if unavailable is not None:
                    entry.status = "skipped"
                    entry.error = f"{unavailable} in the source registry: cannot be pulled until it is restored"
                    continue
                manifest = await job.source.get_manifest(job.source_repo, digest)
                if subject_of(manifest) != subject:
                    entry.status = "skipped"
                    entry.error = f"listed as a referrer of {subject}, but its subject is another manifest"
                    continue
                descriptor = referrer_descriptor(manifest)
                entry.artifact_type = descriptor.get("artifactType")
                # two tags of one image (or two images sharing a platform image) push each referrer once
                key = (job.destination.host, job.destination_repo, digest)
                async with self._flights.hold(key):
                    if key in self._pushed or await job.destination.head_manifest(job.destination_repo, digest):
                        entry.status = "existing"
                    else:
                        if await job.push(manifest, digest) is not None:
                            self._serves_api[job.destination.host] = True
                        entry.status = "copied"
                    self._pushed.add(key)
            except EcrcopyError as exc:
                if exc.fatal:
                    raise
                entry.error = str(exc)
                log.info("referrer %s of %s failed: %s", digest, subject, entry.error)
                continue
            listed.append(descriptor)
            copied.append(digest)
        await self._cosign_tags(job, subject)
        if listed and not await self._destination_serves_api(job, subject, listed):
            try:
                await self._update_fallback(job, subject, listed)
            except EcrcopyError as exc:
                if exc.fatal:
                    raise
                message = f"fallback tag {fallback_tag(subject)} not updated: {exc}"
                job.result.referrers.append(
                    ReferrerResult(
                        digest=subject, subject=subject, tag=fallback_tag(subject), status="failed", error=message
                    )
                )
        return copied

    async def _discover(self, job: ReferrerJob, subject: str) -> list[tuple[str, str | None]]:
        return await discover_referrers(job.source, job.source_repo, subject, job.hints, self._without_api)

    async def _cosign_tags(self, job: ReferrerJob, subject: str) -> None:
        """cosign's ``sha256-<hex>.sig``/``.att``/``.sbom`` of ``subject``: copied as the tags they are."""
        for tag in await present_cosign_tags(job.source, job.source_repo, subject, job.hints):
            entry = ReferrerResult(digest=subject, subject=subject, tag=tag, status="failed")
            job.result.referrers.append(entry)
            try:
                manifest = await job.source.get_manifest(job.source_repo, tag)
                entry.digest = manifest.digest
                entry.artifact_type = referrer_descriptor(manifest).get("artifactType")
                key = (job.destination.host, job.destination_repo, f"{tag}@{manifest.digest}")
                async with self._flights.hold(key):
                    existing = await job.destination.head_manifest(job.destination_repo, tag)
                    if key in self._pushed or (existing is not None and existing.digest == manifest.digest):
                        entry.status = "existing"
                    elif existing is not None and job.on_conflict != "overwrite":
                        entry.status = "skipped" if job.on_conflict == "skip" else "failed"
                        entry.error = f"{tag} at the destination holds {existing.digest}, the source {manifest.digest}"
                    else:
                        await job.push(manifest, tag)
                        entry.status = "copied"
                        self._pushed.add(key)
            except EcrcopyError as exc:
                if exc.fatal:
                    raise
                entry.error = str(exc)

    async def _destination_serves_api(self, job: ReferrerJob, subject: str, listed: list[dict[str, object]]) -> bool:
        """Whether the destination lists referrers itself (learned once per host, by asking its API)."""
        host = job.destination.host
        async with self._api_lock:
            known = self._serves_api.get(host)
            if known is None:
                answer = await job.destination.get_referrers(job.destination_repo, subject)
                wanted = {str(d["digest"]) for d in listed}
                known = answer is not None and wanted <= {d.digest for d in answer}
                self._serves_api[host] = known
                log.info("%s %s the referrers API", host, "serves" if known else "does not serve")
        return known

    async def _update_fallback(self, job: ReferrerJob, subject: str, listed: list[dict[str, object]]) -> None:
        """Merge ``listed`` into the destination's ``sha256-<hex>`` index; re-read until it holds them."""
        tag = fallback_tag(subject)
        client, repo = job.destination, job.destination_repo
        async with self._tag_locks.hold((client.host, repo, tag)):
            for _ in range(MAX_MERGE_ROUNDS):
                try:
                    existing: Manifest | None = await client.get_manifest(repo, tag)
                except NotFound:
                    existing = None
                body = merge_referrers_index(existing, listed)
                if body is None:
                    return  # every referrer is listed (already, or after our write)
                await client.put_manifest(repo, tag, Manifest.from_bytes(body, mt.OCI_INDEX))
                job.result.referrer_tags_written += 1
                # another writer may have read the tag before our write and write after it: look again
                await anyio.sleep(SETTLE_SECONDS * (1 + random.random()))  # noqa: S311 - jitter
        shown = clean_text(tag, 80)
        raise RegistryError(f"{repo}:{shown} kept changing under concurrent writers; rerun to complete it")
