"""Streams of bytes between registries, and response bodies read within limits. No requests are made here.

* :class:`StreamReader` slices one source stream into exact-size pieces (one per upload chunk).
* :func:`raw_chunks` yields a body as sent (no content decoding); transport failures become
  :class:`~ecrcopy.TransferError`.
* :func:`read_limited` / :func:`read_error_body` read a body while it streams and stop at a byte
  limit, so a body that never ends cannot exhaust memory.
* :func:`verified` passes a blob through while checking its length and digest, holding the last
  piece back until both are right.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

from ._exceptions import DigestMismatch, EcrcopyError, RegistryError, TransferError
from ._models import new_hasher
from ._protocol import LARGE_PIECES, clean_text

__all__ = [
    "StreamReader",
    "counting",
    "describe_transport_error",
    "raw_chunks",
    "read_error_body",
    "read_limited",
    "skip",
    "verified",
]

#: At most this much of an error body is read.
ERROR_BODY_LIMIT = 64 * 1024


class StreamReader:
    """Hands out exact-size slices of an async byte stream without copying it whole."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._leftover = b""

    async def take(self, n: int) -> AsyncIterator[bytes]:
        remaining = n
        while remaining > 0:
            if self._leftover:
                piece, self._leftover = self._leftover, b""
            else:
                try:
                    piece = await self._stream.__anext__()
                except StopAsyncIteration:
                    raise TransferError(f"source blob ended {remaining} bytes early") from None
            if len(piece) > remaining:
                piece, self._leftover = piece[:remaining], piece[remaining:]
            remaining -= len(piece)
            yield piece

    async def expect_end(self) -> None:
        if self._leftover:
            raise DigestMismatch("source blob is longer than its descriptor says")
        async for piece in self._stream:
            if piece:
                raise DigestMismatch("source blob is longer than its descriptor says")


async def read_limited(
    response: httpx.Response, limit: int, what: str, too_large: type[EcrcopyError] = RegistryError
) -> bytes:
    """The raw body, at most ``limit`` bytes, read as it streams (a longer body is cut off and refused)."""
    length = response.headers.get("content-length")
    if length and length.isascii() and length.isdigit() and int(length) > limit:
        raise too_large(f"{what}: the registry announced {int(length)} bytes, more than the {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in raw_chunks(response, 65536, what):
        size += len(chunk)
        if size > limit:
            raise too_large(f"{what}: response is longer than the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_error_body(response: httpx.Response) -> bytes:
    """Up to 64 KiB of a body whose details hardly matter (an error, or the answer to a write); the
    rest is never read. Nothing when the connection breaks."""
    if response.is_stream_consumed:  # a mock transport's body, already read
        return response.content[:ERROR_BODY_LIMIT]
    try:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw(ERROR_BODY_LIMIT):
            chunks.append(chunk)
            size += len(chunk)
            if size >= ERROR_BODY_LIMIT:
                break
        return b"".join(chunks)[:ERROR_BODY_LIMIT]
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


async def raw_chunks(response: httpx.Response, size: int, what: str) -> AsyncIterator[bytes]:
    """The body as sent (no content decoding); transport failures become :class:`TransferError`."""
    if response.is_stream_consumed:  # a mock transport's body, already read
        yield response.content
        return
    # a transport that already hands over large pieces needs no re-chunking (which copies each piece)
    chunk_size = None if response.extensions.get(LARGE_PIECES) else size
    try:
        async for chunk in response.aiter_raw(chunk_size):
            yield chunk
    except httpx.TransportError as exc:
        raise TransferError(f"{what}: {describe_transport_error(exc)}") from None


async def skip(stream: AsyncIterator[bytes], n: int) -> AsyncIterator[bytes]:
    """``stream`` without its first ``n`` bytes."""
    async for piece in stream:
        if n >= len(piece):
            n -= len(piece)
            continue
        yield piece[n:] if n else piece
        n = 0


async def counting(stream: AsyncIterator[bytes], on_progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    """``stream`` unchanged, reporting each piece's length to ``on_progress``."""
    async for piece in stream:
        if on_progress is not None:
            on_progress(len(piece))
        yield piece


async def verified(stream: AsyncIterator[bytes], digest: str, size: int | None) -> AsyncIterator[bytes]:
    """Pass ``stream`` through, checking length and digest; the last piece waits for the verdict."""
    hasher = new_hasher(digest)
    expected_hex = digest.partition(":")[2]
    total = 0
    pending: bytes | None = None
    async for piece in stream:
        if not piece:
            continue
        hasher.update(piece)
        total += len(piece)
        if size is not None and total > size:
            raise DigestMismatch(f"blob {digest} is longer than its {size} bytes")
        if pending is not None:
            yield pending
        pending = piece
    if size is not None and total < size:  # a cut body: another attempt may get all of it
        raise TransferError(f"blob {digest} ended after {total} of {size} bytes")
    if hasher.hexdigest() != expected_hex:
        raise DigestMismatch(
            f"blob content hashes to {digest.partition(':')[0]}:{hasher.hexdigest()}, expected {digest}"
        )
    if pending is not None:
        yield pending


def describe_transport_error(exc: BaseException) -> str:
    """A transport failure in words, without anything from the request's headers.

    Protocol errors raised while *sending* (h11's ``LocalProtocolError``) can quote a header
    value, so only their class is named; other messages are cleaned and shortened.
    """
    name = exc.__class__.__name__
    if isinstance(exc, httpx.LocalProtocolError):
        return f"{name} (the request could not be sent)"
    text = clean_text(str(exc), 160)
    return f"{name}: {text}" if text else name
