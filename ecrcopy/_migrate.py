"""ECR → GitLab migration: enumerate, plan, check, copy, report.

The migration drives a :class:`~ecrcopy.Copier` (its clients, blob transfers and retries); the
copier knows nothing of ECR, GitLab or plans.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ._client import RegistryClient, pull_scope, push_scope
from ._concurrency import run_all
from ._copier import Copier
from ._credentials import CredentialProvider, as_provider
from ._ecr import EcrApi, EcrCredentials, EcrSource, host_of, inventory
from ._exceptions import ConfigurationError, EcrcopyError, InvalidReference, RegistryUnavailable
from ._fleet import plan_fleet
from ._gitlab import GitLabDestination
from ._mediatypes import INDEX_TYPES
from ._migration_report import MigrationReport
from ._plan import (
    EcrRepository,
    MigrationOptions,
    Plan,
    SkippedTag,
    build_plan,
    recount_untagged,
    referrer_hints,
    select_repositories,
)
from ._protocol import Scope
from ._reference import Reference, is_loopback_host
from ._referrers import ReferrerHints
from ._report import ImageResult, ProgressEvent
from ._retry import RetryStats

__all__ = ["MigrationReport", "PreparedMigration", "migrate_with", "prepare_migration", "run_migration"]

log = logging.getLogger("ecrcopy")


async def migrate_with(
    copier: Copier,
    source: EcrSource | None = None,
    destination: GitLabDestination | None = None,
    options: MigrationOptions | None = None,
) -> MigrationReport:
    """Copy every selected ECR repository and tag to ``<destination prefix>/<mapped name>`` with ``copier``.

    ``source``, ``destination`` and ``options`` default to :meth:`EcrSource.from_env`,
    :meth:`GitLabDestination.from_env` and :meth:`MigrationOptions.from_env` (the shard of a
    GitLab ``parallel:`` job). Invalid plans (name collisions, invalid names) and rejected
    credentials raise before anything is written::

        async with ecrcopy.Copier(ecrcopy.CopyOptions(on_conflict="skip")) as copier:
            report = await ecrcopy.migrate_with(copier)
    """
    return await run_migration(
        copier,
        source or EcrSource.from_env(),
        destination or GitLabDestination.from_env(),
        options or MigrationOptions.from_env(),
    )


@dataclass
class PreparedMigration:
    """A checked, enumerated and planned migration: what copying and verifying both start from."""

    api: EcrApi
    source_client: RegistryClient
    destination_client: RegistryClient
    source_host: str
    prefix: Reference
    plan: Plan
    pairs: list[tuple[Reference, Reference]]
    unusable: list[ImageResult]
    hints: dict[str, ReferrerHints]
    #: the plan's repositories as ECR listed them, and the options the plan was made with
    repositories: list[EcrRepository] = dataclasses.field(default_factory=list)
    options: MigrationOptions = dataclasses.field(default_factory=MigrationOptions)
    #: with ``untagged: skip``, whether the indexes are still to be read (only the plan's untagged
    #: counts depend on them): :func:`read_deferred_indexes`, while copying
    indexes_unread: bool = False


async def prepare_migration(
    copier: Copier,
    source: EcrSource,
    destination: GitLabDestination,
    options: MigrationOptions,
    *,
    write: bool,
    defer_indexes: bool = False,
) -> PreparedMigration:
    """Prove both sets of credentials (``write``: the destination's push scope, else pull), list ECR,
    read what the plan needs of its indexes, and plan. Raises before anything is written.
    The caller closes the ``api`` of what it returns.

    ``defer_indexes`` (only with ``untagged: skip``, where nothing but the plan's untagged counts
    depends on them): the indexes are not read here; :func:`read_deferred_indexes` reads them."""
    prefix = destination.prefix()  # a bad destination fails before AWS is asked anything
    api = await anyio.to_thread.run_sync(EcrApi, source)
    try:
        return await _prepare(
            copier,
            api,
            destination,
            prefix,
            options,
            write=write,
            defer_indexes=defer_indexes and options.untagged == "skip",
        )
    except BaseException:
        api.close()
        raise


async def _prepare(
    copier: Copier,
    api: EcrApi,
    destination: GitLabDestination,
    prefix: Reference,
    options: MigrationOptions,
    *,
    write: bool,
    defer_indexes: bool,
) -> PreparedMigration:
    ecr_credentials = EcrCredentials(api)
    await ecr_credentials.get("")  # proves the AWS credentials before anything else
    scheme, src_host = host_of(api.data_plane_url(ecr_credentials.proxy_endpoint))
    if scheme == "http" and src_host not in copier.options.insecure_registries and not is_loopback_host(src_host):
        raise ConfigurationError(f"refusing plain http to {src_host}: list it as an insecure registry")
    src_client = copier.client(src_host, role="source", credentials=ecr_credentials, scheme=scheme)
    dst_client = copier.client(prefix.api_host, role="destination", credentials=_provider(destination), scheme=None)
    scope = push_scope(prefix.repository) if write else pull_scope(prefix.repository)

    async def prove() -> None:
        await dst_client.auth.check(frozenset({scope}))
        await src_client.auth.ping()

    reader = None if defer_indexes else _index_reader(copier, api, options)
    repositories = await _list_while_proving(prove, lambda: inventory(api, then=reader))
    extra = destination.levels_below_project()
    if extra:
        if options.max_depth - extra < 1:
            raise ConfigurationError(
                f"destination {prefix} is already {extra} levels below the project: GitLab allows "
                f"{options.max_depth}, so nothing fits below it"
            )
        options = options.model_copy(update={"max_depth": options.max_depth - extra})
    options = options.model_copy(update={"referrers": copier.options.referrers})
    plan = build_plan(repositories, options)
    hints = {r.name: referrer_hints(r) for r in repositories if r.name in plan.destinations}
    pairs, unusable = _pairs(plan, src_host, prefix)
    log.info(
        "plan: %d repositories, %d tags, %d bytes estimated (shard %s)",
        plan.summary.repositories,
        plan.summary.tags,
        plan.summary.estimated_bytes,
        plan.summary.shard,
    )
    mine = [r for r in repositories if r.name in plan.destinations]
    return PreparedMigration(
        api, src_client, dst_client, src_host, prefix, plan, pairs, unusable, hints, mine, options, defer_indexes
    )


async def read_deferred_indexes(copier: Copier, prepared: PreparedMigration) -> list[EcrRepository]:
    """The plan's repositories with what their indexes list, read now (one ``BatchGetImage`` per
    repository with untagged images and an index, as :func:`prepare_migration` would have);
    :func:`~ecrcopy._plan.recount_untagged` turns them into the plan's untagged counts."""
    read = _index_reader(copier, prepared.api, prepared.options)
    completed: dict[str, EcrRepository] = {}

    async def one(repository: EcrRepository) -> None:
        completed[repository.name] = await read(repository)

    # run_all raises the first (fatal first) error itself, not an exception group
    await run_all([functools.partial(one, r) for r in prepared.repositories], len(prepared.repositories) or 1)
    return [completed[r.name] for r in prepared.repositories]


async def _list_while_proving(
    prove: Callable[[], Awaitable[None]], listing: Callable[[], Awaitable[list[EcrRepository]]]
) -> list[EcrRepository]:
    """List ECR while the destination's credentials and both registries are proved (both wait on the
    network). Nothing is written either way; a failed proof wins over the listing, which it cancels."""
    proof_error: list[EcrcopyError] = []
    listing_error: list[EcrcopyError] = []
    listed: list[EcrRepository] = []

    async with anyio.create_task_group() as tg:

        async def run_proof() -> None:
            try:
                await prove()
            except EcrcopyError as exc:
                proof_error.append(exc)
                tg.cancel_scope.cancel()

        async def run_listing() -> None:
            try:
                listed.extend(await listing())
            except EcrcopyError as exc:
                listing_error.append(exc)

        tg.start_soon(run_listing)  # first: its threads wait on ECR while the proof runs here
        tg.start_soon(run_proof)
    if proof_error:
        raise proof_error[0]
    if listing_error:
        exc = listing_error[0]
        if exc.fatal:
            raise exc
        raise RegistryUnavailable(f"cannot list the ECR registry: {exc}") from None
    return listed


async def run_migration(
    copier: Copier, source: EcrSource, destination: GitLabDestination, options: MigrationOptions
) -> MigrationReport:
    before = copier.retry_stats.snapshot()
    prepared = await prepare_migration(copier, source, destination, options, write=True, defer_indexes=True)
    try:
        return await _run_prepared(copier, prepared, source, options, before)
    finally:
        prepared.api.close()


async def _run_prepared(
    copier: Copier, prepared: PreparedMigration, source: EcrSource, options: MigrationOptions, before: RetryStats
) -> MigrationReport:
    report = MigrationReport()
    plan, pairs, unusable, api = prepared.plan, prepared.pairs, prepared.unusable, prepared.api
    src_client, dst_client, src_host, prefix = (
        prepared.source_client,
        prepared.destination_client,
        prepared.source_host,
        prepared.prefix,
    )
    hints = prepared.hints
    report.plan = plan.summary
    completed = prepared.repositories

    async def transfer() -> None:
        await dst_client.auth.prefetch(token_batches(prefix.repository, plan, write=not options.dry_run))
        if options.dry_run:
            report.images.extend(await _dry_run(copier, dst_client, plan, pairs))
        else:
            if options.shard.total > 1 and options.shard_wait > 0:
                await _share_blobs(copier, prepared, options)
            report.images.extend(
                await copier.copy_pairs(
                    pairs, source_client=src_client, destination_client=dst_client, referrer_hints=hints
                )
            )

    async def read_indexes() -> None:
        """Beside the copy; it only completes the plan's untagged counts, so it never stops the run."""
        nonlocal completed
        try:
            completed = await read_deferred_indexes(copier, prepared)
        except EcrcopyError as exc:
            log.warning(
                "cannot read the indexes to tell index children from untagged images (%s): the untagged "
                "counts of the report take them all as standalone",
                exc,
            )

    if prepared.indexes_unread:
        await run_all([transfer, read_indexes], 2)  # the copy's own errors come out as they are
        report.plan = recount_untagged(plan.summary, completed, prepared.options)
    else:
        await transfer()
    for result in unusable:
        copier.emit(ProgressEvent("image_finished", result.source, result.destination, result=result))
        report.images.append(result)
    for skipped in plan.skipped:
        command = restore_command(api.region, source.registry_id, skipped)
        if skipped.reason == "archived" and command not in report.restore_commands:
            report.restore_commands.append(command)
        result = ImageResult(
            source=f"{src_host}/{skipped.repository}:{skipped.tag}",
            destination=f"{prefix}/{plan.destinations[skipped.repository]}:{skipped.tag}",
            digest=skipped.digest,
            status="skipped",
            reason=skipped.reason,
            error=skip_message(skipped.reason, command),
        )
        copier.emit(ProgressEvent("image_finished", result.source, result.destination, result=result))
        report.images.append(result)
    copier.finish_report(report, before)
    return report


async def _share_blobs(copier: Copier, prepared: PreparedMigration, options: MigrationOptions) -> None:
    """One upload per shared blob for the whole fleet of shards; without the manifests, each shard uploads its own."""
    try:
        fleet = await plan_fleet(
            prepared.api,
            prepared.plan,
            prepared.prefix.repository,
            options.shard.index,
            wait=options.shard_wait,
            concurrency=copier.options.connections_per_host,
        )
    except EcrcopyError as exc:
        log.warning("cannot read the plan's manifests (BatchGetImage) to share blobs between shards: %s", exc)
        return
    copier.share_blobs(fleet)


#: Destination repositories per prefetched token (GitLab grants every scope it may in one token).
TOKEN_BATCH = 10


def token_batches(prefix: str, plan: Plan, *, write: bool) -> list[frozenset[Scope]]:
    """The plan's destination repositories in groups of :data:`TOKEN_BATCH`, as token scopes:
    a few token requests for the whole run instead of one per repository."""
    repositories = sorted({f"{prefix}/{image.destination}" for image in plan.images})
    scope = push_scope if write else pull_scope
    return [
        frozenset(scope(r) for r in repositories[i : i + TOKEN_BATCH]) for i in range(0, len(repositories), TOKEN_BATCH)
    ]


def restore_command(region: str, registry_id: str | None, skipped: SkippedTag) -> str:
    """The AWS CLI command that restores an archived image (an action outside ecrcopy's seven)."""
    registry = f" --registry-id {registry_id}" if registry_id else ""
    return (
        f"aws ecr update-image-storage-class --region {region}{registry} --repository-name {skipped.repository}"
        f" --image-id imageDigest={skipped.digest} --target-storage-class STANDARD"
    )


def skip_message(reason: str, restore: str) -> str:
    """Why a planned tag was left out, and what to do about it."""
    if reason == "archived":
        return f"archived in ECR (cannot be pulled): restore it with '{restore}', then run the migration again"
    if reason == "activating":
        return (
            "being restored from ECR's archive (ACTIVATING, up to 20 minutes): "
            "run the migration again when it is ACTIVE"
        )
    return "ECR tag is not a valid OCI tag (at most 128 of [A-Za-z0-9_.-], not starting with . or -)"


def _index_reader(
    copier: Copier, api: EcrApi, options: MigrationOptions
) -> Callable[[EcrRepository], Awaitable[EcrRepository]]:
    """Completes a listed repository with untagged images with what its indexes list: those are
    index children, not standalone images (DescribeImages does not tell them apart).
    ``BatchGetImage`` reads up to 100 a call; every shard reads the same."""
    limiter = anyio.CapacityLimiter(copier.options.connections_per_host)

    async def read(repository: EcrRepository) -> EcrRepository:
        if not repository.needs_index_children() or not select_repositories([repository.name], options):
            return repository
        digests = [
            image.digest
            for image in repository.images
            if (image.media_type or "") in INDEX_TYPES and image.status == "ACTIVE"
        ]
        try:
            manifests = await anyio.to_thread.run_sync(api.parsed_manifests, repository.name, digests, limiter=limiter)
        except EcrcopyError as exc:
            if exc.fatal:
                raise
            log.warning("cannot read the indexes of %s to tell children from untagged images: %s", repository.name, exc)
            return repository
        children = {
            digest: tuple(d.digest for d in manifest.index.manifests) if manifest.is_index else ()
            for digest, manifest in manifests.items()
        }
        return dataclasses.replace(repository, index_children=children)

    return read


def _provider(destination: GitLabDestination) -> CredentialProvider:
    return as_provider(destination.credentials())


def _pairs(plan: Plan, src_host: str, prefix: Reference) -> tuple[list[tuple[Reference, Reference]], list[ImageResult]]:
    """The (source, destination) references of the plan; images ECR described unusably fail alone."""
    pairs = []
    unusable = []
    for image in plan.images:
        try:
            # an untagged image is pulled by digest; its destination tag is made from that digest
            src = Reference(src_host, image.repository, None if image.untagged else image.tag, image.digest)
            dst = Reference(prefix.registry, f"{prefix.repository}/{image.destination}", image.tag)
        except InvalidReference as exc:
            unusable.append(
                ImageResult(
                    source=f"{src_host}/{image.repository}{'@' + image.digest if image.untagged else ':' + image.tag}",
                    destination=f"{prefix}/{image.destination}:{image.tag}",
                    status="failed",
                    reason="invalid_reference",
                    error=f"ECR described this image unusably: {exc}",
                )
            )
            continue
        pairs.append((src, dst))
    return pairs, unusable


async def _dry_run(
    copier: Copier, dst_client: RegistryClient, plan: Plan, pairs: list[tuple[Reference, Reference]]
) -> list[ImageResult]:
    """HEAD every destination tag: what is already there, what would be copied, what conflicts."""
    results: list[ImageResult | None] = [None] * len(pairs)
    present: dict[str, int] = {}  # digest -> size of images already at the destination
    sizes = {image.digest: image.size or 0 for image in plan.images}

    async def one(index: int) -> None:
        src, dst = pairs[index]
        assert dst.tag is not None and src.digest is not None
        result = ImageResult(source=str(src), destination=str(dst), digest=src.digest, status="planned")
        try:
            existing = await dst_client.head_manifest(dst.repository, dst.tag)
        except EcrcopyError as exc:
            if exc.fatal:
                raise
            result.reason, result.error = exc.reason, str(exc)
            existing = None
        if existing is not None and existing.digest == src.digest:
            result.status, result.reason = "skipped", "up-to-date"
            present[src.digest] = sizes.get(src.digest, 0)
        elif existing is not None:
            result.reason = "conflict"
            result.error = f"{dst} holds {existing.digest}; the plan would {copier.options.on_conflict} it"
        copier.emit(ProgressEvent("image_finished", result.source, result.destination, result=result))
        results[index] = result

    copier.emit(ProgressEvent("images_planned", "", "", total=len(pairs)))
    await run_all(
        [lambda i=i: one(i) for i in range(len(pairs))],  # type: ignore[misc]
        copier.options.connections_per_host,
    )
    plan.summary.already_present_bytes = sum(present.values())  # each image once, as the estimate counts
    return [r for r in results if r is not None]
