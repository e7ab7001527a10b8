"""Chunked uploads that resume where the registry says they stand.

A blob above ``CopyOptions.monolithic_threshold`` goes up in ``PATCH`` chunks. When a chunk
fails transiently (a broken connection, a 5xx, a token that expired mid-chunk), the upload is not
restarted: ``GET <location>`` asks the registry how many bytes it holds (``Range: 0-<last>``),
the source is read again from the nearest chunk boundary at or below that point (with an HTTP
``Range`` request), the bytes the registry already has are hashed without being sent, and the
upload goes on. A session the registry no longer knows (404 ``BLOB_UPLOAD_UNKNOWN``) or a
range it rejects (416) restarts the upload cleanly from byte 0. ``401 insufficient_scope`` and
other permanent errors end it at once: a large blob is never streamed again into a denial.

The digest is computed across resumptions from saved hash states, one per acknowledged chunk,
and checked before the final ``PUT``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._client import RegistryClient, chunk_length
from ._exceptions import DigestMismatch, EcrcopyError, RegistryError
from ._models import Descriptor, new_hasher
from ._retry import RetryPolicy, is_transient
from ._streams import StreamReader, counting

__all__ = ["upload_resumable"]

log = logging.getLogger("ecrcopy")


async def upload_resumable(
    src: RegistryClient,
    src_repo: str,
    dst: RegistryClient,
    dst_repo: str,
    blob: Descriptor,
    *,
    location: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    policy: RetryPolicy | None = None,
) -> None:
    """Copy ``blob`` from ``src/src_repo`` into ``dst/dst_repo`` in chunks, resuming on failure."""
    policy = policy or dst.retry
    digest, size = blob.digest, blob.size
    expected_hex = digest.partition(":")[2]
    minimum: int | None = None
    if location is None:
        location, minimum = await dst.open_upload(dst_repo)
    checkpoints: dict[int, Any] = {0: new_hasher(digest)}  # bytes acknowledged -> hash state at that point
    offset = 0
    attempt = 0
    what = f"upload of {digest} to {dst_repo}"
    while True:
        base = max(c for c in checkpoints if c <= offset)
        hasher = checkpoints[base].copy()
        try:
            async with src.open_blob(src_repo, digest, size, offset=base, verify=False) as pieces:
                reader = StreamReader(pieces)
                async for piece in reader.take(offset - base):  # the registry has these: hash, don't send
                    hasher.update(piece)
                while offset < size:
                    n = min(chunk_length(dst.options.chunk_size, minimum), size - offset)
                    body = _hashing(counting(reader.take(n), on_progress), hasher)
                    location, announced = await dst.patch_chunk(dst_repo, location, digest, offset, n, body)
                    minimum = announced or minimum
                    offset += n
                    checkpoints[offset] = hasher.copy()
                await reader.expect_end()
            if hasher.hexdigest() != expected_hex:
                raise DigestMismatch(
                    f"blob content hashes to {digest.partition(':')[0]}:{hasher.hexdigest()}, expected {digest}"
                )
            await dst.finish_upload(dst_repo, location, digest)
            return
        except EcrcopyError as exc:
            attempt += 1
            # 416: the registry disagrees about the offset; 404 BLOB_UPLOAD_UNKNOWN: the session is gone
            restart = isinstance(exc, RegistryError) and (exc.status == 416 or exc.code == "BLOB_UPLOAD_UNKNOWN")
            if attempt >= dst.options.retries or not (restart or is_transient(exc)):
                raise
            await policy.pause(attempt, exc, what=what, host=dst.host)
            if restart:
                log.info("%s: %s; starting again", what, exc)
                location, minimum = await dst.open_upload(dst_repo)
                offset = 0
                continue
        try:
            location, committed = await dst.upload_status(dst_repo, location)  # retried by itself
        except RegistryError as exc:
            if is_transient(exc):
                raise
            log.info("%s: the session is gone (%s); starting again", what, exc)
            location, minimum = await dst.open_upload(dst_repo)
            offset = 0
            continue
        if committed > size:
            log.info("%s: the registry holds %d bytes of %d; starting again", what, committed, size)
            location, minimum = await dst.open_upload(dst_repo)
            offset = 0
            continue
        log.info("%s: resuming at byte %d of %d", what, committed, size)
        offset = committed


async def _hashing(stream: AsyncIterator[bytes], hasher: Any) -> AsyncIterator[bytes]:
    async for piece in stream:
        hasher.update(piece)
        yield piece
