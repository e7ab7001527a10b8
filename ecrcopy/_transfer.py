"""Blob transfer: present already, cross-repository mount, or streamed upload — each unique blob once.

:class:`BlobTransferer` is shared by a whole run (a :class:`~ecrcopy.Copier`). It remembers in
which destination repositories each blob is known to live, and allows at most one transfer per
(destination registry, digest) at a time: whoever comes second waits, then mounts from the
repository the first one filled. A blob with nowhere to mount it from is asked for with a mount
from its own destination repository: one request that answers "there already" (201) or opens
the upload session (202), where a HEAD and a POST would take two. Bytes flow from the source
response straight into the upload request, a piece at a time, so memory stays flat whatever the
blob size. A blob up to ``monolithic_threshold`` is retried whole; a bigger one goes up in chunks
that resume (:mod:`ecrcopy._upload`).
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
from ._exceptions import Denied, RegistryError, TransferError
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
        #: registries that refused a mount of a blob from the repository itself (see :meth:`_probe`)
        self._no_self_mount: set[str] = set()

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
        fleet = self.fleet
        owner = fleet.owner_elsewhere(blob.digest, dst_repo) if fleet is not None and not in_run else None
        hinted = self._hints.candidates(dst.host, blob.digest) if self._hints is not None else []
        hinted = [r for r in hinted if r not in (dst_repo, *in_run)]
        same_host = src.host == dst.host and src_repo != dst_repo
        if not in_run and owner is None and not hinted and not same_host:
            # nowhere to mount from: one request asks whether the repository has it and opens the upload
            present, session = await self._probe(dst, dst_repo, blob.digest)
            if present:
                return BlobResult(BlobOutcome.EXISTING)
            return await self._upload(src, src_repo, dst, dst_repo, blob, session, on_bytes)
        if not in_run and await dst.blob_exists(dst_repo, blob.digest):
            return BlobResult(BlobOutcome.EXISTING)
        candidates = list(in_run)
        if fleet is not None and owner is not None and await fleet.wait_for(dst, owner, blob.digest):
            candidates.insert(0, owner.repository)  # another shard uploaded it: mount it from there
        candidates += [r for r in hinted if r not in candidates]  # where earlier runs put it
        if same_host and src_repo not in candidates:
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
        return await self._upload(src, src_repo, dst, dst_repo, blob, location, on_bytes)

    async def _probe(self, dst: RegistryClient, repo: str, digest: str) -> tuple[bool, str | None]:
        """(whether ``repo`` has the blob, an upload session when it has not), in one request.

        A mount of the blob from ``repo`` into itself answers 201 when the repository has it and
        202 with an open upload session when it has not (the registry found nothing to mount):
        a HEAD and the upload's POST in one. A registry that refuses such a mount is asked with a
        HEAD instead, for the rest of the run.
        """
        if dst.host not in self._no_self_mount:
            try:
                location = await dst.mount_blob(repo, digest, repo)
            except Denied as exc:  # this repository's permissions, not the registry's support: ask again elsewhere
                log.debug("mount of %s into %s from itself denied: %s", digest, repo, exc)
            except RegistryError as exc:
                if exc.fatal:
                    raise
                log.info("%s refuses to mount a blob from the repository itself (%s): HEAD first", dst.host, exc)
                self._no_self_mount.add(dst.host)
            except TransferError as exc:
                log.debug("mount of %s into %s from itself failed: %s", digest, repo, exc)
            else:
                return location is None, location
        return await dst.blob_exists(repo, digest), None

    async def _upload(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        blob: Descriptor,
        location: str | None,
        on_bytes: Callable[[int], None] | None,
    ) -> BlobResult:
        """Stream ``blob`` up, through the open session ``location`` when there is one."""
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
