"""The default HTTP transport: HTTP/1.1 on asyncio protocols, parsed by llhttp (``httptools``).

Why: a copy is thousands of small requests (HEADs, manifests, tokens, mounts) plus streamed blob
bodies, and on a 2-core runner the client's CPU per request is what the run waits for. httpx's own
stack (httpcore + h11) parses in pure Python and moves bodies in 64 KiB pieces; aiohttp parses in C
but builds a great deal per request (timers, tracing, its own URL and header objects, a request and
a response class hierarchy): about 0.2 ms of CPU for a HEAD on 127.0.0.1. This transport does only
what a registry client needs: one request at a time per connection, the request head written in
one piece, the answer parsed by llhttp (Node.js's parser, through httptools, uvicorn's parser) as
the socket delivers it, and bodies handed on in pieces of at least 1 MiB. A HEAD costs about a
third of aiohttp's CPU. Everything above it is unchanged: requests are built and answered as
``httpx.Request``/``httpx.Response`` under ``httpx.AsyncClient``, and tests swap the transport.

:class:`Http11Transport` keeps httpx's transport contract (``tests/test_transport.py`` runs every
transport through the same tests):

* requests go out as httpx built them: the request target is the URL's raw path and query, byte for
  byte (no re-quoting), then exactly httpx's headers in httpx's order (none added; a header with a
  line break is refused, so nothing can be smuggled into the head). A streamed body without
  ``Content-Length`` is sent chunked (httpx announced ``Transfer-Encoding: chunked``); a streamed
  body longer or shorter than its ``Content-Length`` is refused (``LocalProtocolError``).
* nothing is followed, kept or decoded: no redirects, no cookies, no content decoding.
* answers: ``Content-Length``, chunked and close-delimited bodies; interim ``1xx`` answers are
  skipped; a HEAD answer has no body whatever its ``Content-Length`` says. An answer that arrives
  while the request body is still being sent (a refusal) ends the sending and is returned.
* failures are httpx's exceptions: ``ConnectError``/``ConnectTimeout``, ``PoolTimeout``,
  ``WriteTimeout``/``WriteError``, ``ReadTimeout``/``ReadError``, ``RemoteProtocolError`` (a
  malformed answer, a cut body, a server that closed the connection), ``UnsupportedProtocol``.
  An error of the request body's own source (a blob that failed verification) reaches the caller
  as itself.
* timeouts: ``pool`` (waiting for a free connection), ``connect`` (TCP and TLS), ``read`` (the
  longest silence while an answer is awaited or read), ``write`` (the longest time the server takes
  no request body bytes).
* connections: at most ``max_connections`` per transport (one transport per registry host; its
  redirects to object storage share it), at most ``max_keepalive_connections`` idle ones, each
  closed after ``keepalive_expiry`` seconds idle. A connection is reused only when its answer was
  read to the end and neither side asked to close it; one that timed out or broke never is.

A transport serves the event loop it is used on: when requests come from a new loop (a second
``asyncio.run``), the connections of the old one are dropped (shut down at once if that loop has
ended; Python then warns of their transports when it collects them). Close the client before its
loop ends to avoid that.

Not here: HTTP/2, proxies (:func:`~ecrcopy._transport.default_transport` gives httpx's own
transport when a proxy variable is set) and event loops other than asyncio (on trio, requests go
to httpx's transport).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools  # type: ignore[import-untyped]
import httpx

from ._protocol import LARGE_PIECES
from ._transport_base import PIECE, AsyncioTransport, sni

__all__ = ["Http11Transport"]

#: Bytes buffered per answer before reading from the socket pauses.
READ_BUFFER = 2 * PIECE
#: Bytes before the end of an answer's headers (status line and headers), and headers per answer.
MAX_HEADER_BYTES = 1024 * 1024
MAX_HEADERS = 1000
#: Request bodies wait once this much is buffered for the socket, and go on below ``WRITE_LOW``.
WRITE_HIGH = 1024 * 1024
WRITE_LOW = 256 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}

_Key = tuple[str, str, int, str | None]


class _Failure(Exception):
    """How a connection failed, to be raised as the httpx exception ``kind`` for the request at hand."""

    def __init__(self, kind: type[httpx.TransportError], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as the bytes arrive."""

    def __init__(self, key: _Key, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.failure: _Failure | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._active = False
        self._last_data = 0.0
        self._head_bytes = 0
        self._begin(head=False)

    def _begin(self, *, head: bool) -> None:
        self.head = head
        self.status = 0
        self.version = b"HTTP/1.1"
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self.headers_done = False
        self.message_done = False
        self.keep_alive = False
        self._until_close = False
        self._interim = False
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def data_received(self, data: bytes) -> None:
        if not self._active:  # nothing asked: a server that talks out of turn is not reused
            self._fail(httpx.RemoteProtocolError, "the server sent data nobody asked for")
            return
        self._last_data = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Failure):
                self._fail(cause.kind, cause.message)
            else:
                self._fail(httpx.RemoteProtocolError, f"malformed response: {_reason(exc)}")
            return
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError, "malformed response: a protocol upgrade nobody asked for")
            return
        if not self.headers_done:  # an endless status line or header: llhttp would keep collecting it
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._fail(
                    httpx.RemoteProtocolError, f"malformed response: headers longer than {MAX_HEADER_BYTES} bytes"
                )

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and self.headers_done and not self.message_done and self._until_close and exc is None:
            self.message_done = True  # a close-delimited body ends with the connection
        elif self.failure is None:
            if exc is not None:
                self.failure = _Failure(httpx.ReadError, f"connection failed: {_os_text(exc)}")
            elif self.headers_done and not self.message_done:
                self.failure = _Failure(httpx.RemoteProtocolError, "incomplete body: the server closed the connection")
            else:
                self.failure = _Failure(httpx.RemoteProtocolError, "the server closed the connection")
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # ------------------------------------------------------------------ llhttp's callbacks

    def on_message_begin(self) -> None:
        if self.message_done:  # a second answer to one request: the connection is out of step
            raise _Failure(httpx.RemoteProtocolError, "the server sent data nobody asked for")

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADERS:
            raise _Failure(httpx.RemoteProtocolError, f"malformed response: more than {MAX_HEADERS} headers")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim answer: the real one follows
            self._interim = True
            self.headers, self.reason = [], b""
            return
        self.status = status
        http10 = self._parser.get_http_version() == "1.0"
        self.version = b"HTTP/1.0" if http10 else b"HTTP/1.1"
        self.headers_done = True
        connection = b",".join(v for n, v in self.headers if n.lower() == b"connection").lower()
        if self.head:  # whatever Content-Length says, a HEAD answer has no body (llhttp cannot know)
            self.message_done = True
            self.keep_alive = b"close" not in connection and (not http10 or b"keep-alive" in connection)
        else:
            self.keep_alive = bool(self._parser.should_keep_alive())
            if status not in (204, 304):
                coding = b",".join(v for n, v in self.headers if n.lower() == b"transfer-encoding")
                chunked = coding.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
                length = any(n.lower() == b"content-length" for n, _ in self.headers)
                self._until_close = not chunked and not length
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.message_done:  # a body after a HEAD answer: the connection is out of step
            raise _Failure(httpx.RemoteProtocolError, "malformed response: a body where none belongs")
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered >= PIECE:
            if self.buffered > READ_BUFFER and not self._read_paused and self.transport is not None:
                self._read_paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.head:
            return
        self.message_done = True
        self._wake()

    # ------------------------------------------------------------------ waiting

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, kind: type[httpx.TransportError], message: str) -> None:
        if self.failure is None:
            self.failure = _Failure(kind, message)
        self.close()
        self._wake()

    async def wait(self, read_timeout: float | None, until: Callable[[], bool]) -> None:
        """Until ``until()`` holds; a failure of the connection, or silence for ``read_timeout``
        seconds, is raised as an :class:`_Failure`."""
        while not until():
            if self.failure is not None:
                raise self.failure
            if self.closed:
                raise _Failure(httpx.RemoteProtocolError, "the server closed the connection")
            waiter = self._waiter = self.loop.create_future()
            timer = None
            if read_timeout is not None:
                self._last_data = self.loop.time()
                timer = self.loop.call_at(self._last_data + read_timeout, self._check_silence, waiter, read_timeout)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()

    def _check_silence(self, waiter: asyncio.Future[None], seconds: float) -> None:
        if waiter.done():
            return
        quiet_since = self._last_data
        if self.loop.time() - quiet_since >= seconds * 0.999:
            self._fail(httpx.ReadTimeout, f"no data for {seconds:g} s")
        else:
            handle = self.loop.call_at(quiet_since + seconds, self._check_silence, waiter, seconds)
            waiter.add_done_callback(lambda _: handle.cancel())

    # ------------------------------------------------------------------ one exchange

    def start(self, *, head: bool) -> None:
        """Get ready for the next answer (a new parser once a HEAD answer left the last one mid-body)."""
        if self.head:
            self._parser = httptools.HttpResponseParser(self)
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        self._begin(head=head)
        self._active = True

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drained(self, write_timeout: float | None) -> bool:
        """Until the socket takes more; False once it took nothing for ``write_timeout`` seconds.
        Returns early when the answer arrives or the connection ends."""
        while self._write_paused and not self.closed and not self.headers_done:
            waiter = self._waiter = self.loop.create_future()
            stalled: list[bool] = []
            timer = None
            if write_timeout is not None:
                timer = self._watch_writes(waiter, write_timeout, self.unsent(), stalled)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
            if stalled:
                return False
        return True

    def unsent(self) -> int:
        """Request bytes still waiting for the socket."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _watch_writes(
        self, waiter: asyncio.Future[None], seconds: float, size: int, stalled: list[bool]
    ) -> asyncio.TimerHandle:
        def check() -> None:
            if waiter.done():
                return
            now_size = self.unsent()
            if now_size < size:  # the socket took some: the clock starts again
                handle = self._watch_writes(waiter, seconds, now_size, stalled)
                waiter.add_done_callback(lambda _: handle.cancel())
                return
            stalled.append(True)
            waiter.set_result(None)

        return self.loop.call_later(seconds, check)

    def take(self) -> bytes:
        """Everything buffered of the body, as one piece."""
        body = self.body
        piece = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
        return piece

    def reusable(self) -> bool:
        return self.message_done and self.keep_alive and not self.closed and self.failure is None

    def finish(self) -> None:
        self._active = False

    def close(self) -> None:
        """Close at once, dropping anything not yet sent (an abandoned exchange needs none of it)."""
        self.closed = True
        self._active = False
        if self.transport is not None and not self.transport.is_closing():
            if self.loop.is_closed():  # left behind by an event loop that ended: end the TCP connection
                with contextlib.suppress(OSError):
                    self.transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            else:
                self.transport.abort()


class _Pool:
    """At most ``max_connections`` connections, idle ones kept per origin (newest first)."""

    def __init__(self, limits: httpx.Limits) -> None:
        self.max = limits.max_connections
        self.max_idle = limits.max_keepalive_connections
        self.expiry = limits.keepalive_expiry
        self.idle: dict[_Key, list[_Connection]] = {}
        self.idle_count = 0
        self.total = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.closed = False

    def _usable(self, conn: _Connection, now: float) -> bool:
        return not conn.closed and (self.expiry is None or now - conn.idle_since < self.expiry)

    def checkout(self, key: _Key, now: float) -> _Connection | None:
        """An idle connection to ``key``, or None; dead and expired ones are dropped on the way."""
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            self.idle_count -= 1
            if self._usable(conn, now):
                return conn
            conn.close()
            self.total -= 1
        return None

    def room(self, now: float) -> bool:
        """Whether a new connection may open (an idle one elsewhere is closed to make room)."""
        if self.max is None or self.total < self.max:
            return True
        oldest: _Connection | None = None
        for conns in self.idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest.idle_since):
                oldest = conns[0]
        if oldest is None:
            return False
        self.idle[oldest.key].remove(oldest)
        self.idle_count -= 1
        oldest.close()
        self.total -= 1
        return True

    def release(self, conn: _Connection, now: float) -> None:
        conn.finish()
        if not self.closed and conn.reusable() and (self.max_idle is None or self.idle_count < self.max_idle):
            conn.idle_since = now
            self.idle.setdefault(conn.key, []).append(conn)
            self.idle_count += 1
        else:
            conn.close()
            self.total -= 1
        self.wake_one()

    def queued(self) -> bool:
        """Whether requests wait for a connection (cancelled ones are dropped from the line)."""
        waiters = self.waiters
        while waiters and waiters[0].done():
            waiters.popleft()
        return bool(waiters)

    def pass_on(self, woken: bool) -> None:
        """A woken request got its connection: the next in line may try too (there may be more room)."""
        if woken and self.queued() and (self.max is None or self.total < self.max or self.idle_count):
            self.wake_one()

    def forget(self) -> None:
        """A connection that never opened gives its place back."""
        self.total -= 1
        self.wake_one()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections; the others close when their answers are done with."""
        self.closed = True
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
                self.total -= 1
        self.idle.clear()
        self.idle_count = 0


class Http11Transport(AsyncioTransport):
    """An httpx transport speaking HTTP/1.1 itself (see the module docstring)."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        super().__init__(verify=verify, limits=limits)
        self._pool = _Pool(limits)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------------ connections

    async def _connection(self, key: _Key, loop: asyncio.AbstractEventLoop, timeouts: dict[str, Any]) -> _Connection:
        """An idle connection to ``key``, a new one if there is room, else the next one released
        (first come, first served: a request never overtakes one that waits)."""
        pool = self._pool
        pool_timeout = timeouts.get("pool")
        pool_deadline = None if pool_timeout is None else loop.time() + pool_timeout
        woken = False
        while True:
            if pool.closed:
                raise RuntimeError("the transport has been closed")
            now = loop.time()
            if woken or not pool.queued():
                conn = pool.checkout(key, now)
                if conn is not None:
                    pool.pass_on(woken)
                    return conn
                if pool.room(now):
                    pool.total += 1
                    pool.pass_on(woken)
                    try:
                        return await self._connect(key, loop, timeouts.get("connect"))
                    except BaseException:
                        pool.forget()
                        raise
            waiter: asyncio.Future[None] = loop.create_future()
            if woken:
                pool.waiters.appendleft(waiter)  # keeps its place in the line
            else:
                pool.waiters.append(waiter)
            try:
                remaining = None if pool_deadline is None else max(0.0, pool_deadline - loop.time())
                async with asyncio.timeout(remaining):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    pool.wake_one()  # woken, but leaving: the turn goes to the next in line
                else:
                    waiter.cancel()
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout("no connection became free in time") from None
                raise
            woken = True

    async def _connect(self, key: _Key, loop: asyncio.AbstractEventLoop, seconds: float | None) -> _Connection:
        scheme, host, port, sni = key
        tls = scheme == "https"
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    lambda: _Connection(key, loop),
                    host.strip("[]"),
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=(sni or host.strip("[]")) if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS handshake failed: {_os_text(exc)}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {_os_text(exc)}") from None
        return conn

    # ------------------------------------------------------------------ requests

    async def _handle(self, request: httpx.Request, loop: asyncio.AbstractEventLoop) -> httpx.Response:
        if self._loop is not loop:  # connections belong to the loop that opened them
            if self._loop is not None:
                self._pool.close()
                self._pool = _Pool(self._limits)
            self._loop = loop
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS or not url.host:
            raise httpx.UnsupportedProtocol(f"unusable URL scheme {scheme!r}", request=request)
        host = url.raw_host.decode("ascii")  # IDNA-encoded as in the Host header, not re-encoded by asyncio
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        port = url.port or _DEFAULT_PORTS[scheme]
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        head = _head(request)
        key: _Key = (scheme, host, port, sni(request))
        try:
            content: bytes | None = request.content
        except httpx.RequestNotRead:  # a streamed body
            content = None
        try:
            conn = await self._connection(key, loop, timeouts)
        except httpx.TransportError as exc:
            exc.request = request
            raise
        try:
            await self._exchange(conn, request, head, content, timeouts)
        except BaseException as exc:
            conn.close()
            self._pool.release(conn, loop.time())
            if isinstance(exc, _Failure):
                raise exc.kind(exc.message, request=request) from None
            raise
        extensions: dict[str, Any] = {"http_version": conn.version, LARGE_PIECES: True}
        if conn.reason:
            extensions["reason_phrase"] = conn.reason
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_ResponseStream(self._pool, conn, request, timeouts.get("read")),
            request=request,
            extensions=extensions,
        )

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, head: bytes, content: bytes | None, timeouts: dict[str, Any]
    ) -> None:
        """Send the request and wait for the answer's status and headers."""
        conn.start(head=request.method == "HEAD")
        if content is not None:
            conn.write(head + content if len(content) <= 65536 else head)
            if len(content) > 65536:
                conn.write(content)
            await self._drained(conn, timeouts.get("write"))
        else:
            await self._send_stream(conn, request, head, timeouts.get("write"))
        failure = conn.failure
        if failure is not None and failure.kind is httpx.ReadError and not conn.headers_done:
            failure.kind = httpx.WriteError  # the connection broke while the request was going out
        await conn.wait(timeouts.get("read"), lambda: conn.headers_done)

    async def _drained(self, conn: _Connection, write_timeout: float | None) -> None:
        if not await conn.drained(write_timeout):
            conn.close()
            raise _Failure(httpx.WriteTimeout, "the server stopped taking the request body")
        if conn.headers_done and conn.unsent():  # answered before the request was all sent
            conn.keep_alive = False

    async def _send_stream(
        self, conn: _Connection, request: httpx.Request, head: bytes, write_timeout: float | None
    ) -> None:
        stream = request.stream
        if not isinstance(stream, httpx.AsyncByteStream):
            raise TypeError("an async transport needs an async request body")
        length = request.headers.get("content-length")
        coding = request.headers.get("transfer-encoding")
        if length is not None:
            if coding is not None or not (length.isascii() and length.isdigit()):
                raise httpx.LocalProtocolError("the request body's Content-Length is not a length")
            expected: int | None = int(length)
        elif coding is not None and coding.lower() == "chunked":
            expected = None
        else:  # neither framing announced: the server could not tell where the body ends
            raise httpx.LocalProtocolError("a streamed request body needs Content-Length or chunked encoding")
        conn.write(head)
        sent = 0
        try:
            async for piece in stream:
                if conn.headers_done or conn.closed:  # answered (or gone) before the body was all sent
                    conn.keep_alive = False
                    return
                if not piece:
                    continue
                sent += len(piece)
                if expected is not None and sent > expected:
                    conn.close()
                    raise httpx.LocalProtocolError("the request body is longer than its Content-Length")
                if expected is None:
                    conn.write(b"%x\r\n" % len(piece))
                    conn.write(piece)
                    conn.write(b"\r\n")
                else:
                    conn.write(piece)
                await self._drained(conn, write_timeout)
        finally:
            await stream.aclose()
        if conn.headers_done or conn.closed:
            conn.keep_alive = False
            return
        if expected is not None and sent != expected:
            conn.close()
            raise httpx.LocalProtocolError("the request body is shorter than its Content-Length")
        if expected is None:
            conn.write(b"0\r\n\r\n")
        await self._drained(conn, write_timeout)


class _ResponseStream(httpx.AsyncByteStream):
    """The body in pieces of at least :data:`PIECE` bytes (the last may be shorter)."""

    def __init__(self, pool: _Pool, conn: _Connection, request: httpx.Request, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn = conn
        self._request = request
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.buffered >= PIECE or (conn.message_done and conn.buffered):
                yield conn.take()
                continue
            if conn.message_done:
                return
            try:
                await conn.wait(self._read_timeout, lambda: conn.message_done or conn.buffered >= PIECE)
            except _Failure as failure:
                raise failure.kind(failure.message, request=self._request) from None

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            conn = self._conn
            if not conn.message_done:  # not read to its end: the connection cannot carry another request
                conn.close()
            self._pool.release(conn, conn.loop.time())


def _head(request: httpx.Request) -> bytes:
    """The request line and headers, exactly as httpx built them."""
    url = request.url
    parts = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    lines = len(request.headers.raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise httpx.LocalProtocolError("a request header contains a line break", request=request)
    return head


def _reason(exc: Exception) -> str:
    return str(exc).strip() or exc.__class__.__name__


def _os_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "certificate verify failed"
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
