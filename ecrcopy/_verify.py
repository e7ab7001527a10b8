"""``verify``: prove that the destination holds what the source holds. Read-only.

Every selected source image is compared by digest with its destination tag (HEAD requests at the
destination). ``deep`` also walks each image from the source (GET of its manifests) and HEADs every
child manifest, blob and referrer (signatures, SBOMs, recursively, and cosign's tags) at the
destination; at a destination without the referrers API, the fallback tag ``sha256-<hex>`` must list
every referrer, since that tag is what keeps them through GitLab's garbage collection.

Nothing is written anywhere; from ECR only the read-only actions are used (DescribeRepositories,
DescribeImages, GetAuthorizationToken, and BatchGetImage for the manifests a deep check reads).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import _mediatypes as mt
from ._client import RegistryClient
from ._concurrency import run_all
from ._copier import Copier
from ._ecr import EcrSource
from ._exceptions import ConfigurationError, EcrcopyError, NotFound
from ._gitlab import GitLabDestination
from ._migrate import PreparedMigration, prepare_migration, restore_command, skip_message
from ._models import Manifest
from ._plan import MigrationOptions
from ._protocol import clean_text
from ._reference import Reference, is_valid_tag, parse_reference
from ._referrer_sync import MAX_REFERRER_DEPTH, discover_referrers, manifest_tree, present_cosign_tags
from ._referrers import ReferrerHints, fallback_tag, parse_referrers_index, subject_of_tag
from ._report import ProgressEvent
from ._verify_report import VerifiedImage, VerifyReport, compare_digests

__all__ = ["verify_migration", "verify_repository"]

log = logging.getLogger("ecrcopy")


@dataclass(frozen=True)
class _Pair:
    source: Reference
    destination: Reference
    #: the source digest when the caller knows it (ECR's listing), else read with a HEAD
    digest: str | None
    hints: ReferrerHints


def announce(copier: Copier, item: VerifiedImage) -> None:
    """Tell the copier's event callback that ``item`` is settled (``image_verified``)."""
    copier.emit(ProgressEvent("image_verified", item.source, item.destination, digest=item.digest, outcome=item.status))


def _planned(copier: Copier, total: int) -> None:
    if total:
        copier.emit(ProgressEvent("verify_planned", "", "", total=total))


class _Checker:
    """Checks pairs with shared clients; remembers what it found present so nothing is asked twice."""

    def __init__(self, copier: Copier, src: RegistryClient, dst: RegistryClient, *, deep: bool) -> None:
        self.copier = copier
        self.src = src
        self.dst = dst
        self.deep = deep
        self.referrers = copier.options.referrers
        self._present: dict[tuple[str, str], bool] = {}
        self._serves_api: bool | None = None
        self._without_api: set[str] = set()

    async def run(self, pairs: Sequence[_Pair]) -> list[VerifiedImage]:
        results: list[VerifiedImage | None] = [None] * len(pairs)

        _planned(self.copier, len(pairs))

        async def one(index: int) -> None:
            item = await self.check(pairs[index])
            results[index] = item
            announce(self.copier, item)

        await run_all(
            [lambda i=i: one(i) for i in range(len(pairs))],  # type: ignore[misc]
            max(1, min(self.copier.options.connections_per_host, 16)),
        )
        return [r for r in results if r is not None]

    async def check(self, pair: _Pair) -> VerifiedImage:
        src, dst = pair.source, pair.destination
        item = VerifiedImage(source=str(src), destination=str(dst), digest=pair.digest, status="error")
        try:
            if item.digest is None:
                reference = src.reference
                assert reference is not None
                info = await self.src.head_manifest(src.repository, reference)
                if info is None:
                    item.reason, item.error = "not_found", f"{src} is not at the source"
                    return item
                item.digest = info.digest
            target = dst.tag or item.digest
            existing = await self.dst.head_manifest(dst.repository, target)
            item.destination_digest = existing.digest if existing is not None else None
            item.status = compare_digests(item.digest, item.destination_digest)
            if item.status == "identical" and self.deep:
                await self._deep(pair, item)
                if item.missing:
                    item.status = "incomplete"
        except EcrcopyError as exc:
            if exc.fatal:
                raise
            item.status, item.reason, item.error = "error", exc.reason, str(exc)
        return item

    # ------------------------------------------------------------------ deep

    async def _present_at_destination(self, repo: str, digest: str, *, manifest: bool) -> bool:
        key = (repo, digest)
        if key not in self._present:
            if manifest:
                self._present[key] = await self.dst.head_manifest(repo, digest) is not None
            else:
                self._present[key] = await self.dst.blob_exists(repo, digest)
        return self._present[key]

    async def _deep(self, pair: _Pair, item: VerifiedImage) -> None:
        assert item.digest is not None
        manifest = await self.src.get_manifest(pair.source.repository, item.digest)
        await self._walk(pair, manifest, item, top=True)
        if self.referrers:
            subjects = await manifest_tree(self.src, pair.source.repository, manifest)
            await self._referrers(pair, subjects, item, set(subjects), 0)

    async def _walk(self, pair: _Pair, manifest: Manifest, item: VerifiedImage, *, top: bool = False) -> None:
        """Every child manifest and blob of ``manifest`` at the destination (``manifest`` itself when not ``top``)."""
        src_repo, dst_repo = pair.source.repository, pair.destination.repository
        if not top:
            item.checked += 1
            if not await self._present_at_destination(dst_repo, manifest.digest, manifest=True):
                item.missing.append(f"manifest {manifest.digest}")
                return
        if manifest.is_schema1:
            return
        if manifest.is_index:
            for child in {d.digest: d for d in manifest.index.manifests}.values():
                if child.media_type not in mt.MANIFEST_TYPES:
                    continue
                await self._walk(pair, await self.src.get_manifest(src_repo, child.digest), item)
            return
        for blob in {d.digest: d for d in manifest.image.blobs}.values():
            item.checked += 1
            if not await self._present_at_destination(dst_repo, blob.digest, manifest=False):
                item.missing.append(f"blob {blob.digest}")

    async def _referrers(
        self, pair: _Pair, subjects: list[str], item: VerifiedImage, seen: set[str], depth: int
    ) -> None:
        src_repo, dst_repo = pair.source.repository, pair.destination.repository
        deeper: list[str] = []
        for subject in subjects:
            present: list[str] = []
            for digest, _ in await discover_referrers(self.src, src_repo, subject, pair.hints, self._without_api):
                if digest in seen or digest in (pair.hints.unavailable or {}):
                    continue
                seen.add(digest)
                item.checked += 1
                if not await self._present_at_destination(dst_repo, digest, manifest=True):
                    item.missing.append(f"referrer {digest} (of {subject})")
                    continue
                await self._walk(pair, await self.src.get_manifest(src_repo, digest), item, top=True)
                present.append(digest)
                deeper.append(digest)
            for tag in await present_cosign_tags(self.src, src_repo, subject, pair.hints):
                item.checked += 1
                source = await self.src.head_manifest(src_repo, tag)
                there = await self.dst.head_manifest(dst_repo, tag)
                if source is not None and (there is None or there.digest != source.digest):
                    item.missing.append(f"cosign tag {tag}")
            if present and not await self._destination_serves_api(dst_repo, subject, present):
                item.checked += 1
                tag = fallback_tag(subject)
                try:
                    listed = {d.digest for d in parse_referrers_index((await self.dst.get_manifest(dst_repo, tag)).raw)}
                except NotFound:
                    listed = set()
                for digest in present:
                    if digest not in listed:
                        item.missing.append(f"referrers tag {tag} does not list {digest}")
        if deeper and depth + 1 < MAX_REFERRER_DEPTH:
            await self._referrers(pair, deeper, item, seen, depth + 1)

    async def _destination_serves_api(self, repo: str, subject: str, present: list[str]) -> bool:
        if self._serves_api is None:
            answer = await self.dst.get_referrers(repo, subject)
            self._serves_api = answer is not None and set(present) <= {d.digest for d in answer}
        return self._serves_api


async def verify_repository(
    copier: Copier,
    source: str,
    destination: str,
    *,
    tags: Sequence[str] | None = None,
    tag_pattern: str | re.Pattern[str] | None = None,
    deep: bool = False,
) -> VerifyReport:
    """Verify a ``copy``: every selected tag of ``source`` (or one image) against ``destination``."""
    src = parse_reference(source)
    dst = parse_reference(destination)
    src_client = copier.client(src.api_host, role="source")
    dst_client = copier.client(dst.api_host, role="destination")
    await src_client.auth.ping()
    await dst_client.auth.ping()
    report = VerifyReport(deep=deep)
    if not src.is_repository:
        if tags is not None or tag_pattern is not None:
            raise ConfigurationError(f"{source!r} names one image: tag selection needs a repository source")
        target = dst if not dst.is_repository else (dst.with_tag(src.tag) if src.tag else dst.with_digest(src.digest))
        pairs = [_Pair(src, target, src.digest, ReferrerHints())]
    else:
        if not dst.is_repository:
            raise ConfigurationError(f"{destination!r}: the destination of a repository must be a repository")
        pattern = re.compile(tag_pattern) if isinstance(tag_pattern, str) else tag_pattern
        if tags is not None:
            selected = list(dict.fromkeys(tags))
            known: frozenset[str] | None = None
        else:
            try:
                selected = await src_client.list_tags(src.repository)
            except NotFound:
                raise ConfigurationError(f"source repository {src} not found") from None
            known = frozenset(selected)
        invalid = sorted(t for t in selected if not is_valid_tag(t))
        selected = [t for t in selected if is_valid_tag(t)]
        if copier.options.referrers:
            selected = [t for t in selected if subject_of_tag(t) is None]
        if pattern is not None:
            selected = [t for t in selected if pattern.fullmatch(t)]
        hints = ReferrerHints(tags=known)
        pairs = [_Pair(src.with_tag(t), dst.with_tag(t), None, hints) for t in sorted(selected)]
        report.images.extend(
            VerifiedImage(
                source=f"{src}:{clean_text(t, 140)}",
                destination=f"{dst}:{clean_text(t, 140)}",
                status="skipped",
                reason="invalid_tag",
                error="not a valid OCI tag: never copied",
            )
            for t in invalid
        )
        _planned(copier, len(report.images))
        for item in report.images:
            announce(copier, item)
    report.images[:0] = await _Checker(copier, src_client, dst_client, deep=deep).run(pairs)
    return report.finish()


async def verify_migration(
    copier: Copier,
    source: EcrSource | None = None,
    destination: GitLabDestination | None = None,
    options: MigrationOptions | None = None,
    *,
    deep: bool = False,
) -> VerifyReport:
    """Verify a migration: the same plan (selection, names, shard, ``untagged``) as ``migrate`` computes."""
    source = source or EcrSource.from_env()
    destination = destination or GitLabDestination.from_env()
    options = options or MigrationOptions.from_env()
    prepared = await prepare_migration(copier, source, destination, options, write=False)
    try:
        return await _verify_prepared(copier, prepared, source, deep=deep)
    finally:
        prepared.api.close()


async def _verify_prepared(
    copier: Copier, prepared: PreparedMigration, source: EcrSource, *, deep: bool
) -> VerifyReport:
    pairs = [
        _Pair(src, dst, src.digest, prepared.hints.get(src.repository, ReferrerHints())) for src, dst in prepared.pairs
    ]
    checker = _Checker(copier, prepared.source_client, prepared.destination_client, deep=deep)
    report = VerifyReport(deep=deep, plan=prepared.plan.summary)
    report.images.extend(await checker.run(pairs))
    plan = prepared.plan
    _planned(copier, len(prepared.unusable) + len(plan.skipped))  # settled without a check of their own
    for result in prepared.unusable:
        item = VerifiedImage(
            source=result.source,
            destination=result.destination,
            status="error",
            reason=result.reason,
            error=result.error,
        )
        report.images.append(item)
        announce(copier, item)
    for skipped in plan.skipped:
        dst_repo = f"{prepared.prefix.repository}/{plan.destinations[skipped.repository]}"
        item = VerifiedImage(
            source=f"{prepared.source_host}/{skipped.repository}:{skipped.tag}",
            destination=f"{prepared.prefix}/{plan.destinations[skipped.repository]}:{skipped.tag}",
            digest=skipped.digest,
            status="skipped",
            reason=skipped.reason,
        )
        if skipped.reason != "invalid_tag":  # archived or activating: identical if it was moved before
            try:
                there = await prepared.destination_client.head_manifest(dst_repo, skipped.tag)
            except EcrcopyError as exc:
                if exc.fatal:
                    raise
                there = None
            item.destination_digest = there.digest if there is not None else None
            if item.destination_digest == skipped.digest:
                item.status = "identical"
            else:
                item.status = "archived"
                item.error = skip_message(
                    skipped.reason, restore_command(prepared.api.region, source.registry_id, skipped)
                )
        report.images.append(item)
        announce(copier, item)
    return report.finish()
