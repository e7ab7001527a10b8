"""One upload per shared blob across the shards of a migration (GitLab ``parallel:`` jobs).

Shards run on separate machines and share nothing but the destination registry. A base layer used
by repositories of four shards would be uploaded four times if each shard only looked out for
itself. Instead, every shard computes the same owner for each blob that repositories of more than
one shard use (:func:`assign_blob_owners`, pure and deterministic: every shard has the same plan
and the same blob lists, read from ECR with ``BatchGetImage``):

* the owner is the destination repository, among those using the blob, that its shard copies
  first (the shard's repositories are copied in name order); ties go to the lower shard, then the
  lower name;
* the owner's shard uploads the blob as usual;
* any other shard that needs the blob first HEADs it in the owner's repository, waiting with a
  growing pause (0.25 s doubling up to 4 s) until it is there, then mounts it from there (a mount
  inside one registry moves no bytes);
* the wait is bounded (:attr:`FleetBlobs.wait`, ``--shard-wait``): when it runs out, the shard
  uploads the blob itself, and stops waiting for that owner shard altogether (it may have failed
  or not started), so a missing shard costs at most one wait.

Why no deadlock: an image waits only for a blob owned by a repository that comes earlier (in its
own shard's order, ties to the lower shard) than the waiting image's repository, so waits form no
cycle; and the bound ends every wait anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import anyio

from . import _mediatypes as mt
from ._client import RegistryClient
from ._ecr import EcrApi
from ._exceptions import EcrcopyError
from ._models import Manifest
from ._plan import Plan

__all__ = ["BlobOwner", "FleetBlobs", "assign_blob_owners", "blobs_of_manifests", "plan_fleet"]

log = logging.getLogger("ecrcopy")

#: First and longest pause between two looks at the owner's repository.
FIRST_POLL = 0.25
LONGEST_POLL = 4.0


@dataclass(frozen=True, order=True)
class BlobOwner:
    """Where a shared blob is uploaded: the owner shard (1-based) and destination repository."""

    shard: int
    repository: str


def assign_blob_owners(shards: Iterable[Iterable[str]], blobs: Mapping[str, Iterable[str]]) -> dict[str, BlobOwner]:
    """The owner of every blob used by repositories of more than one shard.

    ``shards``: the destination repositories of each shard, in the order that shard copies them.
    ``blobs``: destination repository → digests of the blobs its planned images use. Blobs of a
    single shard get no owner: that shard's own run uploads each of them once already.
    """
    rank: dict[str, tuple[int, int, str]] = {}  # repository -> (position in its shard, shard, name)
    shard_of: dict[str, int] = {}
    for number, repositories in enumerate(shards, start=1):
        for position, repository in enumerate(repositories):
            if repository not in rank:
                rank[repository] = (position, number, repository)
                shard_of[repository] = number
    best: dict[str, tuple[int, int, str]] = {}
    users: dict[str, set[int]] = {}
    for repository, digests in blobs.items():
        key = rank.get(repository)
        if key is None:
            continue  # not in any shard (filtered out)
        for digest in set(digests):
            users.setdefault(digest, set()).add(key[1])
            if digest not in best or key < best[digest]:
                best[digest] = key
    return {
        digest: BlobOwner(shard=key[1], repository=key[2])
        for digest, key in sorted(best.items())
        if len(users[digest]) > 1
    }


@dataclass
class FleetBlobs:
    """The blob owners of a sharded migration, as this shard (``shard``) sees them."""

    owners: Mapping[str, BlobOwner]
    shard: int
    #: longest wait, in seconds, for an owner shard to upload a blob (0: never wait)
    wait: float = 300.0
    #: owner shards whose wait ran out: their blobs are uploaded here without waiting
    given_up: set[int] = field(default_factory=set)

    def owner_elsewhere(self, digest: str, repository: str) -> BlobOwner | None:
        """The owner of ``digest`` when another shard uploads it (and is still waited for)."""
        owner = self.owners.get(digest)
        if owner is None or owner.shard == self.shard or owner.repository == repository:
            return None
        if self.wait <= 0 or owner.shard in self.given_up:
            return None
        return owner

    async def wait_for(self, client: RegistryClient, owner: BlobOwner, digest: str) -> bool:
        """Wait until ``digest`` is in the owner's repository; False when the wait ran out (or failed)."""
        deadline = anyio.current_time() + self.wait
        pause = FIRST_POLL
        first = True
        while True:
            try:
                if await client.blob_exists(owner.repository, digest):
                    return True
            except EcrcopyError as exc:
                if exc.fatal:
                    raise
                log.info("cannot look for %s in %s (shard %d): %s", digest, owner.repository, owner.shard, exc)
                return False
            if first:
                log.info("waiting for shard %d to upload %s to %s", owner.shard, digest, owner.repository)
                first = False
            remaining = deadline - anyio.current_time()
            if owner.shard in self.given_up or remaining <= 0:
                if owner.shard not in self.given_up:
                    self.given_up.add(owner.shard)
                    log.warning(
                        "shard %d did not upload %s within %.0f s: this shard uploads the blobs it owns itself",
                        owner.shard,
                        digest,
                        self.wait,
                    )
                return False
            await anyio.sleep(min(pause, remaining))
            pause = min(pause * 2, LONGEST_POLL)


def blobs_of_manifests(manifests: Mapping[str, Manifest]) -> tuple[set[str], set[str]]:
    """(blob digests, index children not among ``manifests``) of the manifests of one repository."""
    blobs: set[str] = set()
    children: set[str] = set()
    for manifest in manifests.values():
        if manifest.is_index:
            children.update(d.digest for d in manifest.index.manifests if d.media_type in mt.MANIFEST_TYPES)
        elif not manifest.is_schema1:
            blobs.update(d.digest for d in manifest.image.blobs)
    return blobs, children - set(manifests)


async def plan_fleet(
    api: EcrApi, plan: Plan, destination_prefix: str, shard: int, *, wait: float, concurrency: int = 8
) -> FleetBlobs:
    """The blob owners of every shard's repositories, from their manifests (``BatchGetImage``, 100 a call).

    Every shard reads the same manifests and computes the same owners (a manifest that does not
    parse costs at most a second upload of its blobs). Nested indexes are followed to 8 levels.
    """
    limiter = anyio.CapacityLimiter(concurrency)
    usage: dict[str, set[str]] = {}

    def destination(repository: str) -> str:
        return f"{destination_prefix}/{plan.fleet_destinations[repository]}"

    async def one(repository: str) -> None:
        digests = {image.digest for image in plan.fleet_images.get(repository, ())}
        blobs: set[str] = set()
        seen: set[str] = set()
        for _ in range(8):
            wanted = sorted(digests - seen)
            if not wanted:
                break
            seen.update(wanted)
            manifests = await anyio.to_thread.run_sync(api.parsed_manifests, repository, wanted, limiter=limiter)
            found, digests = blobs_of_manifests(manifests)
            blobs |= found
        usage[destination(repository)] = blobs

    async with anyio.create_task_group() as tg:
        for repository in plan.fleet_images:
            tg.start_soon(one, repository)
    order = [[destination(r) for r in repositories if r in plan.fleet_destinations] for repositories in plan.shards]
    owners = assign_blob_owners(order, usage)
    log.info(
        "%d blobs are shared between shards; this shard (%d) owns %d of them",
        len(owners),
        shard,
        sum(1 for o in owners.values() if o.shard == shard),
    )
    return FleetBlobs(owners, shard, wait=wait)
