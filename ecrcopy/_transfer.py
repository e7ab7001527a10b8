"""Blob transfer: HEAD, cross-repository mount, or streamed upload — each unique blob once.

:class:`BlobTransferer` is shared by a whole run (a :class:`~ecrcopy.Copier`). It remembers in
which destination repositories each blob is known to live, and allows at most one transfer per
(destination registry, digest) at a time: whoever comes second waits, then mounts from the
repository the first one filled. Bytes flow from the source response straight into the upload
request, a piece at a time, so memory stays flat whatever the blob size. A blob up to
``monolithic_threshold`` is retried whole; a bigger one goes up in chunks that resume
(:mod:`ecrcopy._upload`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ._cache import BlobHints
from ._client import RegistryClient
from ._concurrency import KeyedLock
from ._exceptions import RegistryError, TransferError
from ._models import Descriptor
from ._options import CopyOptions
from ._retry import RetryPolicy
from ._upload import upload_resumable

if TYPE_CHECKING:
    from ._fleet import FleetBlobs

__all__ = ["BlobOutcome", "BlobTransferer"]

log = logging.getLogger("ecrcopy")


class BlobOutcome(enum.Enum):
    EXISTING = "existing"
    MOUNTED = "mounted"
    UPLOADED = "uploaded"


@dataclass(frozen=True)
class BlobResult:
    outcome: BlobOutcome
    bytes_uploaded: int = 0


class BlobTransferer:
    """Moves blobs into destination repositories; one instance per run."""

    def __init__(self, options: CopyOptions, hints: BlobHints | None = None, retry: RetryPolicy | None = None) -> None:
        self._options = options
        self._retry = retry or RetryPolicy(options)
        self._hints = hints
        self._known: dict[tuple[str, str], list[str]] = {}
        self._flights = KeyedLock()
        self._upload_slots = anyio.CapacityLimiter(options.blob_concurrency)
        #: the blob owners of a sharded migration (:mod:`ecrcopy._fleet`)
        self.fleet: FleetBlobs | None = None

    def remember(self, host: str, repo: str, digest: str) -> None:
        """Record that ``digest`` lives in ``host/repo`` (so later copies may mount it from there)."""
        repos = self._known.setdefault((host, digest), [])
        if repo not in repos:
            repos.append(repo)
        if self._hints is not None:
            self._hints.add(host, digest, repo)

    def known_in(self, host: str, repo: str, digest: str) -> bool:
        return repo in self._known.get((host, digest), ())

    async def ensure(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        blob: Descriptor,
        on_bytes: Callable[[int], None] | None = None,
    ) -> BlobResult:
        """Make ``blob`` present in ``dst/dst_repo``, doing as little as possible."""
        if self.known_in(dst.host, dst_repo, blob.digest):
            return BlobResult(BlobOutcome.EXISTING)
        # one transfer per (destination registry, digest): whoever waits then finds it known, or mounts it
        async with self._flights.hold((dst.host, blob.digest)):
            if self.known_in(dst.host, dst_repo, blob.digest):
                return BlobResult(BlobOutcome.EXISTING)
            result = await self._transfer(src, src_repo, dst, dst_repo, blob, on_bytes)
            self.remember(dst.host, dst_repo, blob.digest)
            return result

    async def _transfer(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        blob: Descriptor,
        on_bytes: Callable[[int], None] | None,
    ) -> BlobResult:
        # a repository this run filled has it: a mount answers 201 whether or not ``dst_repo`` has
        # it already, so the HEAD would tell nothing new
        in_run = [r for r in self._known.get((dst.host, blob.digest), []) if r != dst_repo]
        if not in_run and await dst.blob_exists(dst_repo, blob.digest):
            return BlobResult(BlobOutcome.EXISTING)
        candidates = list(in_run)
        fleet = self.fleet
        if not in_run and fleet is not None:  # another shard uploads it: wait for it, then mount
            owner = fleet.owner_elsewhere(blob.digest, dst_repo)
            if owner is not None and await fleet.wait_for(dst, owner, blob.digest):
                candidates.insert(0, owner.repository)
        if self._hints is not None:  # where earlier runs put it: worth a mount attempt
            candidates += [r for r in self._hints.candidates(dst.host, blob.digest) if r not in (dst_repo, *candidates)]
        if src.host == dst.host and src_repo != dst_repo and src_repo not in candidates:
            candidates.append(src_repo)
        location: str | None = None
        for from_repo in candidates[:3]:
            try:
                location = await dst.mount_blob(dst_repo, blob.digest, from_repo)
            except (RegistryError, TransferError) as exc:
                # a refused or failed mount is only a missed shortcut: the upload below has retries
                log.debug("mount of %s from %s failed: %s", blob.digest, from_repo, exc)
                continue
            if location is None:
                return BlobResult(BlobOutcome.MOUNTED)
            break  # 202: the registry opened an upload session instead; upload through it
        if in_run and location is None and await dst.blob_exists(dst_repo, blob.digest):
            return BlobResult(BlobOutcome.EXISTING)  # every mount failed: the HEAD skipped above
        async with self._upload_slots:
            if blob.size > dst.options.monolithic_threshold:
                await upload_resumable(
                    src, src_repo, dst, dst_repo, blob, location=location, on_progress=on_bytes, policy=self._retry
                )
                return BlobResult(BlobOutcome.UPLOADED, blob.size)
            session = location

            async def monolithic() -> None:
                nonlocal session
                opened, session = session, None  # a session whose upload failed may be gone: open anew
                async with src.open_blob(src_repo, blob.digest, blob.size) as stream:
                    await dst.upload_blob(
                        dst_repo, blob.digest, blob.size, stream, location=opened, on_progress=on_bytes
                    )

            await self._retry.run(monolithic, what=f"blob {blob.digest}", host=dst.host)
            return BlobResult(BlobOutcome.UPLOADED, blob.size)
