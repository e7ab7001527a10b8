"""What the compiled transports (:mod:`ecrcopy._http11`, :mod:`ecrcopy._aiohttp`) share.

Both need asyncio. :class:`AsyncioTransport` hands requests made on another event loop (trio) to
httpx's own transport, refuses requests once closed, and closes that fallback with itself; a
subclass answers requests on asyncio in :meth:`~AsyncioTransport._handle` and closes its own
connections in :meth:`~AsyncioTransport._close`.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

__all__ = ["PIECE", "AsyncioTransport", "sni"]

#: Response bodies are handed on in pieces of at least this size (the last may be shorter): fewer,
#: larger writes and hash updates. Responses say so with the ``LARGE_PIECES`` extension.
PIECE = 1024 * 1024


class AsyncioTransport(httpx.AsyncBaseTransport):
    """An httpx transport that runs on asyncio, with httpx's own transport for other event loops."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._ssl = verify
        self._limits = limits
        self._fallback: httpx.AsyncHTTPTransport | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_connections={self._limits.max_connections})"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio)
            if self._fallback is None:
                self._fallback = httpx.AsyncHTTPTransport(verify=self._ssl, limits=self._limits)
            return await self._fallback.handle_async_request(request)
        if self._closed:
            raise RuntimeError("the transport has been closed")
        return await self._handle(request, loop)

    async def aclose(self) -> None:
        self._closed = True
        await self._close()
        if self._fallback is not None:
            await self._fallback.aclose()

    async def _handle(self, request: httpx.Request, loop: asyncio.AbstractEventLoop) -> httpx.Response:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


def sni(request: httpx.Request) -> str | None:
    """The TLS server name httpx asks for (its ``sni_hostname`` extension), if any."""
    value = request.extensions.get("sni_hostname")
    return value.decode("ascii") if isinstance(value, bytes) else value
