"""Shared plumbing for the in-process HTTP test servers.

Every server in :mod:`ecrcopy.testing` that runs inside the test process (the token service, the
proxy and the blob server) is a :class:`http.server.ThreadingHTTPServer` served from one background
thread.  The stdlib server does not close idle keep-alive connections on ``shutdown()``, and its
handler threads are daemonic, so a naive ``stop()`` leaks threads and sockets.  The helpers here track
every accepted connection (and any extra socket a handler opens, such as the proxy's upstream
connection) and shut them down on stop, then join every handler thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self, cast

from ._service import LoopbackAddress, Service

__all__ = ["BackgroundHTTPServer", "LoggedRequest", "QuietHandler", "TrackingHTTPServer", "free_port"]

logger = logging.getLogger("ecrcopy.testing")

#: Size of the pieces in which servers and the proxy stream bodies.
CHUNK = 64 * 1024


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The port is found by binding port 0 and closing the socket again, so another process may grab it
    before the caller binds it; :class:`~ecrcopy.testing.Registry` retries on ``address already in use``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def read_pieces(stream: _Readable, length: int, *, eof_error: str | None = None) -> Iterator[bytes]:
    """Read ``length`` bytes from ``stream`` in pieces of at most :data:`CHUNK`.

    An early end of the stream ends the pieces, or raises :class:`ConnectionError` with ``eof_error``
    when that is given.
    """
    while length > 0:
        piece = stream.read(min(length, CHUNK))
        if not piece:
            if eof_error is None:
                return
            raise ConnectionError(eof_error)
        length -= len(piece)
        yield piece


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One HTTP request as seen by a test server.

    ``path`` is the raw (still percent-encoded) path, ``query`` the raw query string without ``?``
    (``""`` when absent), ``status`` the status code of the response sent.
    """

    method: str
    path: str
    query: str
    status: int


class TrackingHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server whose ``close_connections()`` interrupts every open connection.

    Handler threads are non-daemonic and joined by ``server_close()``; sockets registered with
    :meth:`track` are shut down by :meth:`close_connections` so blocked handler threads wake up.
    """

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = False
        super().__init__(address, handler)

    def track(self, sock: socket.socket) -> None:
        """Register a socket to be shut down when the server stops."""
        with self._lock:
            closing = self._closing
            if not closing:
                self._sockets.add(sock)
        if closing:
            _shutdown_socket(sock)

    def untrack(self, sock: socket.socket) -> None:
        """Forget a socket registered with :meth:`track`."""
        with self._lock:
            self._sockets.discard(sock)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.track(cast(socket.socket, request))
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.untrack(cast(socket.socket, request))
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every tracked socket (client connections and handler-owned upstream sockets)."""
        with self._lock:
            self._closing = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown_socket(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log handler exceptions instead of printing them to stderr."""
        logger.debug("error while handling a request from %s", client_address, exc_info=True)


def _shutdown_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class QuietHandler(BaseHTTPRequestHandler):
    """Base request handler: HTTP/1.1 keep-alive, logging through :mod:`logging`, idle timeout."""

    protocol_version = "HTTP/1.1"
    #: Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
    #: peer's delayed ACK stall every small response by ~40 ms (no real service does that).
    disable_nagle_algorithm = True
    #: Socket timeout for client connections (seconds of inactivity).
    timeout = 120

    def log_message(self, format: str, *args: Any) -> None:
        """Route the stdlib's access log to the ``ecrcopy.testing`` logger at DEBUG level."""
        logger.debug("%s %s", type(self).__name__, format % args)

    @property
    def tracking_server(self) -> TrackingHTTPServer:
        """The server this handler belongs to."""
        return cast(TrackingHTTPServer, self.server)

    def split_path(self) -> tuple[str, str]:
        """Split the request target into ``(path, query)``."""
        path, _, query = self.path.partition("?")
        return path, query

    def send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Send a complete response with a ``Content-Length`` body (omitted for HEAD)."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def discard_body(self) -> None:
        """Read and drop a request body announced with ``Content-Length`` (keeps keep-alive in sync)."""
        for _ in read_pieces(self.rfile, int(self.headers.get("Content-Length") or 0)):
            pass


class BackgroundHTTPServer(LoopbackAddress, Service):
    """Lifecycle shared by the in-process servers: ``start()``/``stop()`` and context management."""

    def __init__(self) -> None:
        self._server: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _before_start(self) -> None:
        """Hook run by :meth:`start` before the server accepts connections."""

    def _after_stop(self) -> None:
        """Hook run by :meth:`stop` after every connection and thread is gone."""

    @property
    def port(self) -> int:
        """The TCP port (only while running)."""
        return int(self._require(self._server).server_address[1])

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a background thread."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        server = TrackingHTTPServer(("127.0.0.1", 0), self._handler_class(), self)
        self._server = server
        try:
            self._before_start()
        except BaseException:
            self._server = None
            server.server_close()
            raise
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ecrcopy-testing-{type(self).__name__}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("%s listening on %s", type(self).__name__, self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, interrupt open connections, join every thread, close every socket."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None
        self._after_stop()
        logger.debug("%s stopped", type(self).__name__)
