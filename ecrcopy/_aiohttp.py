"""An alternative HTTP transport: ``httpx.AsyncClient``'s API over aiohttp's HTTP/1.1 stack.

``--http-backend aiohttp`` (``CopyOptions.http_backend = "aiohttp"``; needs ``pip install
'ecrcopy[aiohttp]'``). The default transport is :mod:`ecrcopy._http11`, which needs about a third
of aiohttp's CPU per request; this one stays for comparison and as a fallback. It parses with
aiohttp's C extension and hands on whatever the socket has buffered, joined into large pieces.

:class:`AiohttpTransport` keeps httpx's contract (the same tests as every transport):

* requests go out as httpx built them: the URL byte for byte (no re-quoting), exactly the headers
  httpx set (aiohttp adds none of its own, keeps no cookies, follows no redirects, decodes nothing);
* failures are httpx's exceptions (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
  ``WriteTimeout``, ``RemoteProtocolError``, ``ReadError``...), so retries and messages stay the same;
* timeouts: ``connect`` and ``read`` as aiohttp's ``sock_connect``/``sock_read``; ``write``: a
  streamed request body that the server stops taking for that long is abandoned (``WriteTimeout``);
* connections: at most ``max_connections`` per transport (one transport per registry host), idle
  ones kept for ``keepalive_expiry`` seconds.

On an event loop other than asyncio (trio) requests go to httpx's own transport.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ._protocol import LARGE_PIECES
from ._transport_base import PIECE, AsyncioTransport, sni

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpTransport"]

#: The response headers of one answer may be this long (aiohttp's default is 8 KiB per line).
MAX_HEADER_LINE = 64 * 1024
#: Bytes buffered per response before reading from the socket pauses.
READ_BUFFER = 1024 * 1024


class AiohttpTransport(AsyncioTransport):
    """An httpx transport that sends requests with aiohttp (see the module docstring)."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ sessions

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is loop and not self._session.closed:
            return self._session
        keepalive = self._limits.keepalive_expiry
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=keepalive if keepalive is not None else 15.0,
            ssl=self._ssl,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx's client keeps the cookies
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            auto_decompress=False,
            read_bufsize=READ_BUFFER,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            trust_env=False,
        )
        self._loop = loop
        return self._session

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with anyio.CancelScope(shield=True):
                await session.close()

    # ------------------------------------------------------------------ requests

    async def _handle(self, request: httpx.Request, loop: asyncio.AbstractEventLoop) -> httpx.Response:
        import aiohttp
        import yarl

        session = self._get_session()
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        write_timeout = timeouts.get("write")
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        chunked = False
        data: bytes | AsyncIterator[bytes] | None
        streamed = False
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body
            streamed = True
            if "content-length" not in request.headers:
                headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
                chunked = True
            data = None
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("pool"),
            sock_connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        url = yarl.URL(str(request.url), encoded=True)
        if not (streamed and isinstance(request.stream, httpx.AsyncByteStream)):
            with _mapped(request, during="send"):
                response = await session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=timeout,
                    server_hostname=sni(request),
                )
        else:
            with anyio.CancelScope() as scope:  # the write timeout of a streamed body
                body = _Body(request.stream, scope, write_timeout)
                scope.deadline = _deadline(write_timeout)
                with _mapped(request, during="send", body=body):
                    response = await session.request(
                        request.method,
                        url,
                        headers=headers,
                        data=aiter(body),
                        chunked=chunked or None,
                        allow_redirects=False,
                        timeout=timeout,
                        server_hostname=sni(request),
                    )
            if scope.cancelled_caught:
                raise httpx.WriteTimeout("the server stopped taking the request body", request=request)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1", LARGE_PIECES: True}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response, request),
            request=request,
            extensions=extensions,
        )


def _deadline(timeout: float | None) -> float:
    return math.inf if timeout is None else anyio.current_time() + timeout


class _Body:
    """A streamed request body for aiohttp: each piece the connection takes pushes the write
    deadline further, and an error of the body's own source (a blob that failed verification, a
    source that broke) is kept so that it, not aiohttp's wrapping of it, reaches the caller."""

    def __init__(self, stream: httpx.AsyncByteStream, scope: anyio.CancelScope, seconds: float | None) -> None:
        self._stream = stream
        self._scope = scope
        self._seconds = seconds
        self.error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._stream:
                self._scope.deadline = _deadline(self._seconds)
                yield piece
        except Exception as exc:
            self.error = exc
            raise
        self._scope.deadline = math.inf  # all sent: waiting for the answer is ``read``'s business


class _ResponseStream(httpx.AsyncByteStream):
    """The body in pieces of at least :data:`PIECE` bytes (the last may be shorter), each joined
    once from what the socket delivered (the response says so with :data:`LARGE_PIECES`)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parts: list[bytes] = []
        size = 0
        with _mapped(self._request, during="read"):
            async for piece in self._response.content.iter_any():
                parts.append(piece)
                size += len(piece)
                if size >= PIECE:
                    yield parts[0] if len(parts) == 1 else b"".join(parts)
                    parts, size = [], 0
        if parts:
            yield parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        # back to the pool when the body was read to its end; otherwise aiohttp closes the connection
        self._response.release()


@contextmanager
def _mapped(request: httpx.Request, *, during: str, body: _Body | None = None) -> Iterator[None]:
    """aiohttp's and the socket's exceptions as the httpx exceptions the engine expects; an
    error of the request body's own source as itself."""

    try:
        yield
    except Exception as exc:
        if body is not None and body.error is not None and exc is not body.error:
            raise body.error from None
        if isinstance(exc, httpx.HTTPError) or exc is (body.error if body else None):
            raise
        _raise_mapped(exc, request, during)


def _raise_mapped(exc: Exception, request: httpx.Request, during: str) -> None:
    import aiohttp

    try:
        raise exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(_text(exc, "connect timed out"), request=request) from exc
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise httpx.ReadTimeout(_text(exc, "read timed out"), request=request) from exc
    except TimeoutError as exc:  # aiohttp's ``connect`` (waiting for a pooled connection)
        raise httpx.PoolTimeout(_text(exc, "no connection became free in time"), request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(_text(exc, "cannot connect"), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError("the server closed the connection", request=request) from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(_text(exc, "incomplete body"), request=request) from exc
    except aiohttp.ClientResponseError as exc:  # an unparsable answer (status line, headers)
        raise httpx.RemoteProtocolError(f"malformed response: {exc.message}", request=request) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(_text(exc, "unusable URL"), request=request) from exc
    except (aiohttp.ClientOSError, OSError) as exc:
        error = httpx.WriteError if during == "send" else httpx.ReadError
        raise error(_text(exc, "connection failed"), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.RemoteProtocolError(_text(exc, "HTTP failure"), request=request) from exc
    # anything else is not a transport failure: as it is


def _text(exc: BaseException, default: str) -> str:
    return str(exc) or default
