"""The copy engine: :class:`Copier` copies images and repositories between registries.

Order of writes, so a destination tag never points at incomplete content:

1. every blob of an image manifest (config, layers) — HEAD, else mount, else upload;
2. the image manifest, by digest when it is a child of an index;
3. for an index: every child as above, then the index;
4. the tag, last: the top manifest PUT by tag;
5. then its referrers (signatures, attestations, SBOMs) by digest, after their subject
   (:mod:`ecrcopy._referrer_sync`), also for an image already up to date.

Failure isolation: anything that goes wrong while copying one image — an error status, a
malformed manifest, a bug — becomes that image's ``failed`` result with a one-line reason; the
other images go on. Only fatal errors (``exc.fatal``: credentials rejected, a registry
unreachable at the start, an invalid plan) end a run.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import anyio
import httpx

from . import _mediatypes as mt
from ._cache import BlobHints
from ._client import ManifestInfo, RegistryClient
from ._concurrency import KeyedLock, run_all
from ._credentials import CredentialProvider, CredentialsLike, as_provider
from ._exceptions import ConfigurationError, EcrcopyError, NotFound, SkippedByPolicy, TagConflict, UnsupportedManifest
from ._limits import HostLimits
from ._models import Manifest
from ._options import CopyOptions
from ._protocol import clean_text
from ._reference import Reference, is_valid_tag, parse_reference
from ._referrer_sync import ReferrerHints, ReferrerJob, ReferrerSync
from ._referrers import subject_of_tag
from ._report import CopyReport, EventCallback, ImageResult, ProgressEvent, emit
from ._retry import RetryPolicy, RetryStats
from ._transfer import BlobOutcome, BlobTransferer

if TYPE_CHECKING:
    from ._fleet import FleetBlobs

__all__ = ["Copier"]

log = logging.getLogger("ecrcopy")

#: How deep indexes may nest (an index of indexes of ...); real images use one or two levels.
MAX_INDEX_DEPTH = 8


class _ImageWork:
    """Counters of one image copy."""

    def __init__(self, source: str, destination: str) -> None:
        self.result = ImageResult(source=source, destination=destination, status="planned")
        self.started = time.monotonic()
        #: the destination tag was HEADed already (``existing`` is its answer)
        self.checked = False
        self.existing: ManifestInfo | None = None


class Copier:
    """Copies images between registries; an async context manager for tooling to embed.

    One ``Copier`` shares connection pools, tokens and the blob-location cache across all calls,
    so a second repository mounts the layers a first one uploaded::

        async with ecrcopy.Copier(ecrcopy.CopyOptions(on_conflict="skip")) as copier:
            await copier.copy_repository("src.example/team/app", "registry.gitlab.example/team/app")

    Credentials: ``source_credentials`` and ``destination_credentials`` are each a
    :class:`Credentials`, a ``(user, password)`` tuple or a :class:`CredentialProvider`; left out,
    they come from Docker's ``config.json``.
    """

    def __init__(
        self,
        options: CopyOptions | None = None,
        *,
        source_credentials: CredentialsLike = None,
        destination_credentials: CredentialsLike = None,
        on_event: EventCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options or CopyOptions()
        self._source_credentials = as_provider(source_credentials)
        self._destination_credentials = as_provider(destination_credentials)
        self._on_event = on_event
        self._transport = transport
        self._clients: dict[tuple[str, str], RegistryClient] = {}
        self._hints = BlobHints(self.options.blob_cache) if self.options.blob_cache else None
        self._limits = HostLimits(self.options)
        #: retries, rate-limit waits and their time across every request of this copier
        self.retry_stats = RetryStats()
        self._retry = RetryPolicy(self.options, self.retry_stats)
        self._transferer = BlobTransferer(self.options, self._hints, self._retry)
        self._child_locks = KeyedLock()
        self._children_pushed: set[tuple[str, str, str]] = set()
        self._referrers = ReferrerSync(self.options)
        self._image_slots = anyio.CapacityLimiter(self.options.image_concurrency)
        self._open = False

    async def __aenter__(self) -> Self:
        if self._hints is not None:
            await anyio.to_thread.run_sync(self._hints.load)
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
        if self._hints is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._hints.save)
        self._open = False

    def share_blobs(self, fleet: FleetBlobs) -> None:
        """In one shard of a sharded migration: blobs another shard owns are waited for and mounted
        from its repository instead of uploaded again (:mod:`ecrcopy._fleet`)."""
        self._transferer.fleet = fleet

    def emit(self, event: ProgressEvent) -> None:
        """Send ``event`` to this copier's ``on_event`` callback (failures of the callback are logged)."""
        emit(self._on_event, event)

    # ------------------------------------------------------------------ clients

    def client(
        self, host: str, *, role: str, credentials: CredentialProvider | None = None, scheme: str | None = None
    ) -> RegistryClient:
        """The shared client of ``host`` in ``role`` (``source`` or ``destination``).

        ``role`` picks the default credentials; one client per (host, role) shares its connection
        pool and tokens across every call of this copier.
        """
        if not self._open:
            raise ConfigurationError("use the Copier inside 'async with Copier(...) as copier:'")
        # explicit credentials get a client of their own, so they are never mixed with the defaults
        key = (host, role if credentials is None else f"{role}#{id(credentials)}")
        client = self._clients.get(key)
        if client is None:
            if credentials is None:
                credentials = self._destination_credentials if role == "destination" else self._source_credentials
            client = self._clients[key] = RegistryClient(
                host,
                credentials,
                self.options,
                transport=self._transport,
                scheme=scheme,
                retry=self._retry,
                limits=self._limits,
            )
        return client

    # ------------------------------------------------------------------ public operations

    async def copy_image(self, source: str, destination: str, *, dry_run: bool = False) -> CopyReport:
        """Copy one image (``host/repo:tag`` or ``host/repo@digest``) with every platform it has.

        ``destination`` may be a repository: the source's tag (or digest) is kept.
        """
        src = parse_reference(source)
        if src.is_repository:
            raise ConfigurationError(f"{source!r} names a repository; give a tag or digest, or use copy_repository")
        dst = _destination_for(src, parse_reference(destination))
        src_client = self.client(src.api_host, role="source")
        dst_client = self.client(dst.api_host, role="destination")
        await _ping_both(src_client, dst_client)
        report = CopyReport()
        before = self.retry_stats.snapshot()
        report.images.append(await self._copy_one(src, dst, src_client, dst_client, dry_run=dry_run))
        return self.finish_report(report, before)

    async def copy_repository(
        self,
        source: str,
        destination: str,
        *,
        tags: Sequence[str] | None = None,
        tag_pattern: str | re.Pattern[str] | None = None,
        dry_run: bool = False,
    ) -> CopyReport:
        """Copy every tag of ``source`` (or ``tags``, or those matching ``tag_pattern`` in full).

        One failing image is recorded and the others go on; a fatal error (rejected credentials,
        unreachable registry) stops the run by raising.
        """
        src = parse_reference(source)
        dst = parse_reference(destination)
        if not src.is_repository:
            if tags is not None or tag_pattern is not None:
                raise ConfigurationError(f"{source!r} names one image: tag selection needs a repository source")
            return await self.copy_image(source, destination, dry_run=dry_run)
        if not dst.is_repository:
            raise ConfigurationError(f"{destination!r}: the destination of a repository copy must be a repository")
        pattern = _compile(tag_pattern)
        src_client = self.client(src.api_host, role="source")
        dst_client = self.client(dst.api_host, role="destination")
        await _ping_both(src_client, dst_client)
        report = CopyReport()
        before = self.retry_stats.snapshot()
        if tags is not None:
            selected = list(dict.fromkeys(tags))
            for tag in selected:
                src.with_tag(tag)  # validates: a tag the caller named must be a valid one
        else:
            try:
                selected = await src_client.list_tags(src.repository)
            except NotFound:
                raise ConfigurationError(f"source repository {src} not found") from None
        invalid = sorted(t for t in selected if not is_valid_tag(t))
        selected = [t for t in selected if is_valid_tag(t)]
        hints: dict[str, ReferrerHints] = {}
        if self.options.referrers:
            # cosign's tags and fallback indexes follow their subject, whatever the tag filter says
            hints[src.repository] = ReferrerHints(tags=frozenset(selected) if tags is None else None)
            selected = [t for t in selected if subject_of_tag(t) is None]
        if pattern is not None:
            selected = [t for t in selected if pattern.fullmatch(t)]
        pairs = [(src.with_tag(t), dst.with_tag(t)) for t in sorted(selected)]
        report.images.extend(await self.copy_pairs(pairs, dry_run=dry_run, referrer_hints=hints))
        for tag in invalid:  # a source may list tags no registry should accept: report, don't abort
            shown = clean_text(tag, 140)
            result = ImageResult(
                source=f"{src}:{shown}",
                destination=f"{dst}:{shown}",
                status="skipped",
                reason="invalid_tag",
                error="the source lists a tag that is not a valid OCI tag "
                "(at most 128 of [A-Za-z0-9_.-], not starting with . or -)",
            )
            self.emit(ProgressEvent("image_finished", result.source, result.destination, result=result))
            report.images.append(result)
        return self.finish_report(report, before)

    def finish_report(self, report: CopyReport, before: RetryStats) -> CopyReport:
        """Stamp ``report`` finished, with what retrying cost since ``before``."""
        spent = self.retry_stats.since(before)
        report.retries += spent.retries
        report.rate_limited += spent.rate_limited
        report.retry_wait_seconds = round(report.retry_wait_seconds + spent.retry_wait_seconds, 3)
        return report.finish()

    async def copy_pairs(
        self,
        pairs: Sequence[tuple[Reference, Reference]],
        *,
        dry_run: bool = False,
        source_client: RegistryClient | None = None,
        destination_client: RegistryClient | None = None,
        referrer_hints: Mapping[str, ReferrerHints] | None = None,
    ) -> list[ImageResult]:
        """Copy many (source, destination) image references concurrently; results in input order.

        ``source_client`` / ``destination_client`` (from :meth:`client`) serve every pair when given;
        otherwise each pair's hosts get this copier's shared clients. ``referrer_hints`` (by source
        repository) tell what is already known of the sources' referrers and tags.
        """
        results: list[ImageResult | None] = [None] * len(pairs)
        emit(self._on_event, ProgressEvent("images_planned", "", "", total=len(pairs)))
        left = Counter(f"{dst.registry}/{dst.repository}" for _, dst in pairs)  # images per destination repository

        async def one(index: int, src: Reference, dst: Reference) -> None:
            src_client = source_client or self.client(src.api_host, role="source")
            dst_client = destination_client or self.client(dst.api_host, role="destination")
            hints = (referrer_hints or {}).get(src.repository) or ReferrerHints()
            results[index] = await self._copy_one(src, dst, src_client, dst_client, dry_run=dry_run, hints=hints)
            repository = f"{dst.registry}/{dst.repository}"
            left[repository] -= 1
            if left[repository] == 0:
                emit(
                    self._on_event, ProgressEvent("repository_finished", f"{src.registry}/{src.repository}", repository)
                )

        # more pairs in progress than image slots: those whose tag is up to date finish with one
        # HEAD while others copy; the slots bound the copies themselves
        await run_all(
            [lambda i=i, s=s, d=d: one(i, s, d) for i, (s, d) in enumerate(pairs)],  # type: ignore[misc]
            max(self.options.image_concurrency, self.options.connections_per_host),
        )
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ the engine

    async def _copy_one(
        self,
        src: Reference,
        dst: Reference,
        src_client: RegistryClient,
        dst_client: RegistryClient,
        *,
        dry_run: bool,
        hints: ReferrerHints | None = None,
    ) -> ImageResult:
        work = _ImageWork(str(src), str(dst))
        result = work.result
        emit(self._on_event, ProgressEvent("image_started", result.source, result.destination))
        try:
            hints = hints or ReferrerHints()
            # an unchanged tag is settled by one HEAD, outside the image slots (which bound copies)
            if not await self._known_up_to_date(src, dst, dst_client, work, dry_run=dry_run, hints=hints):
                async with self._image_slots:
                    await self._copy_image_tree(src, dst, src_client, dst_client, work, dry_run=dry_run, hints=hints)
        except EcrcopyError as exc:
            if exc.fatal:
                raise
            result.status = "skipped" if exc.skips else "failed"
            result.reason = exc.reason
            result.error = str(exc)
            log.info("%s -> %s %s: %s", result.source, result.destination, result.status, result.error)
        except Exception as exc:  # a bug, or input nothing above foresaw: this image fails, the run goes on
            result.status = "failed"
            result.reason = "internal_error"
            result.error = f"unexpected {exc.__class__.__name__} while copying: {clean_text(str(exc), 200)}"
            log.warning("%s -> %s failed: %s", result.source, result.destination, result.error)
            log.debug("unexpected error while copying %s", result.source, exc_info=True)
        result.duration_seconds = round(time.monotonic() - work.started, 3)
        emit(self._on_event, ProgressEvent("image_finished", result.source, result.destination, result=result))
        return result

    async def _known_up_to_date(
        self,
        src: Reference,
        dst: Reference,
        dst_client: RegistryClient,
        work: _ImageWork,
        *,
        dry_run: bool,
        hints: ReferrerHints,
    ) -> bool:
        """When the source digest is known (a migration plan has it from ECR), one destination HEAD
        settles an unchanged tag, with no request to the source. True when the image is done."""
        if src.digest is None or dst.digest is not None:
            return False
        work.existing = await dst_client.head_manifest(dst.repository, dst.tag or src.digest)
        work.checked = True
        if work.existing is None or work.existing.digest != src.digest:
            return False
        if not (dry_run or not self.options.referrers or hints.none_to_copy()):
            return False  # signatures added since the last run still come: read the manifest
        result = work.result
        result.digest = src.digest
        result.media_type = work.existing.media_type
        result.status = "skipped"
        result.reason = "up-to-date"
        return True

    async def _copy_image_tree(
        self,
        src: Reference,
        dst: Reference,
        src_client: RegistryClient,
        dst_client: RegistryClient,
        work: _ImageWork,
        *,
        dry_run: bool,
        hints: ReferrerHints,
    ) -> None:
        result = work.result
        reference = src.reference
        assert reference is not None
        existing = work.existing
        manifest = await src_client.get_manifest(src.repository, reference)
        result.digest = manifest.digest
        result.media_type = manifest.media_type
        target = dst.tag or manifest.digest
        if dst.digest is not None and dst.digest != manifest.digest:
            raise ConfigurationError(f"{dst}: source {src} is {manifest.digest}, not the destination digest")
        if not work.checked:
            existing = await dst_client.head_manifest(dst.repository, target)
        if existing is not None and existing.digest == manifest.digest:
            result.status = "skipped"
            result.reason = "up-to-date"
            if not dry_run:  # signatures added since the last run still come
                await self._copy_referrers(manifest, src, dst, src_client, dst_client, work, hints)
            return
        if existing is not None and self.options.on_conflict != "overwrite":
            message = f"{dst.with_tag(target)} already holds {existing.digest}, the source is {manifest.digest}"
            if self.options.on_conflict == "fail":
                raise TagConflict(message + " (on_conflict='fail' leaves it untouched)")
            result.status = "skipped"
            result.reason = "conflict"
            result.error = message
            return
        self._check_policy(manifest)
        if dry_run:
            result.status = "planned"
            return
        await self._copy_children(
            manifest, src.repository, dst.repository, src_client, dst_client, work, (manifest.digest,)
        )
        await dst_client.put_manifest(dst.repository, target, manifest)
        result.manifests_pushed += 1
        result.status = "copied"
        await self._copy_referrers(manifest, src, dst, src_client, dst_client, work, hints)

    async def _copy_referrers(
        self,
        manifest: Manifest,
        src: Reference,
        dst: Reference,
        src_client: RegistryClient,
        dst_client: RegistryClient,
        work: _ImageWork,
        hints: ReferrerHints,
    ) -> None:
        """The image's referrers, after it; a referrer that fails fails the image (it is incomplete)."""
        if not self.options.referrers:
            return

        async def push(referrer: Manifest, reference: str) -> str | None:
            self._check_policy(referrer)
            await self._copy_children(
                referrer, src.repository, dst.repository, src_client, dst_client, work, (referrer.digest,)
            )
            subject = await dst_client.put_manifest(dst.repository, reference, referrer)
            work.result.manifests_pushed += 1
            return subject

        job = ReferrerJob(
            src_client, src.repository, dst_client, dst.repository, push, work.result, hints, self.options.on_conflict
        )
        await self._referrers.sync(job, manifest)
        failed = [r for r in work.result.referrers if r.status == "failed"]
        if failed:
            work.result.status = "failed"
            work.result.reason = "referrer_failed"
            work.result.error = (
                f"{len(failed)} of {len(work.result.referrers)} referrer(s) not copied; first: "
                f"{failed[0].tag or failed[0].digest}: {failed[0].error}"
            )

    def _check_policy(self, manifest: Manifest) -> None:
        if manifest.is_schema1:
            raise SkippedByPolicy(
                "Docker schema 1 manifest: not copied (GitLab refuses schema 1; convert the image first)"
            )
        if manifest.is_index:
            manifest.index  # noqa: B018 - validates the index
            return
        image = manifest.image
        foreign = [layer for layer in image.layers if layer.media_type in mt.FOREIGN_LAYER_TYPES]
        if foreign and self.options.foreign_layers == "skip-image":
            raise SkippedByPolicy(
                f"{len(foreign)} non-distributable (foreign) layer(s); set foreign_layers='copy' to copy them"
            )

    async def _copy_children(
        self,
        manifest: Manifest,
        src_repo: str,
        dst_repo: str,
        src_client: RegistryClient,
        dst_client: RegistryClient,
        work: _ImageWork,
        ancestors: tuple[str, ...],
    ) -> None:
        """Everything ``manifest`` refers to, so that it may be pushed next (its policy is checked).

        ``ancestors`` are the digests from the top manifest down to ``manifest``: nesting deeper
        than :data:`MAX_INDEX_DEPTH`, and an index that lists one of its ancestors, fail the image.
        """
        if manifest.is_index:
            children = list({d.digest: d for d in manifest.index.manifests}.values())
            if children and len(ancestors) >= MAX_INDEX_DEPTH:
                raise UnsupportedManifest(f"indexes nested more than {MAX_INDEX_DEPTH} levels deep")
            for descriptor in children:
                if descriptor.digest in ancestors:
                    raise UnsupportedManifest(f"index {manifest.digest} lists its own ancestor {descriptor.digest}")

            async def child(digest: str, media_type: str) -> None:
                if media_type not in mt.MANIFEST_TYPES:
                    shown = clean_text(media_type, 100)
                    raise UnsupportedManifest(f"index child {digest} has unsupported media type {shown!r}")

                async def push_child() -> None:
                    if await dst_client.head_manifest(dst_repo, digest) is not None:
                        return
                    child_manifest = await src_client.get_manifest(src_repo, digest)
                    self._check_policy(child_manifest)
                    await self._copy_children(
                        child_manifest, src_repo, dst_repo, src_client, dst_client, work, (*ancestors, digest)
                    )
                    await dst_client.put_manifest(dst_repo, digest, child_manifest)
                    work.result.manifests_pushed += 1

                # two tags of one index copied at once push each child once
                key = (dst_client.host, dst_repo, digest)
                async with self._child_locks.hold(key):
                    if key not in self._children_pushed:
                        await push_child()
                        self._children_pushed.add(key)

            await run_all(
                [lambda d=d: child(d.digest, d.media_type) for d in children],  # type: ignore[misc]
                self.options.blob_concurrency,
            )
            return
        blobs = list({d.digest: d for d in manifest.image.blobs}.values())
        result = work.result

        def on_bytes(n: int) -> None:
            emit(self._on_event, ProgressEvent("bytes_uploaded", result.source, result.destination, bytes=n))

        async def blob(index: int) -> None:
            descriptor = blobs[index]
            outcome = await self._transferer.ensure(
                src_client, src_repo, dst_client, dst_repo, descriptor, on_bytes if self._on_event else None
            )
            if outcome.outcome is BlobOutcome.UPLOADED:
                result.blobs_uploaded += 1
                result.bytes_uploaded += outcome.bytes_uploaded
            elif outcome.outcome is BlobOutcome.MOUNTED:
                result.blobs_mounted += 1
            else:
                result.blobs_existing += 1
            emit(
                self._on_event,
                ProgressEvent(
                    "blob_finished",
                    result.source,
                    result.destination,
                    digest=descriptor.digest,
                    bytes=descriptor.size,
                    outcome=outcome.outcome.value,
                ),
            )

        await run_all([lambda i=i: blob(i) for i in range(len(blobs))], self.options.blob_concurrency)  # type: ignore[misc]


def _destination_for(src: Reference, dst: Reference) -> Reference:
    if dst.is_repository:
        return dst.with_tag(src.tag) if src.tag else dst.with_digest(src.digest)
    return dst


def _compile(pattern: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(f"invalid tag pattern {pattern!r}: {exc}") from None


async def _ping_both(src: RegistryClient, dst: RegistryClient) -> None:
    await src.auth.ping()
    await dst.auth.ping()
