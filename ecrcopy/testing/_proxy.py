"""A streaming reverse HTTP proxy (counting, token-expiry gating, faults) and a stub origin server."""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, Self, cast
from urllib.parse import urlsplit

from ._faults import Fault, ProxyHook
from ._httpserver import CHUNK, BackgroundHTTPServer, LoggedRequest, QuietHandler, logger, read_pieces
from ._messages import ProxyRequest, ProxyResponse
from ._service import RequestLog

__all__ = ["NO_RESPONSE", "Proxy", "ProxyHook", "ProxyRequest", "ProxyResponse", "StubServer", "jwt_claims_unverified"]

# Headers that describe one hop and are never forwarded as-is.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
#: Status recorded for a request that got no response at all (``Fault.close_without_response``).
NO_RESPONSE = 0


def jwt_claims_unverified(token: str) -> dict[str, Any] | None:
    """Decode a JWT's claims without checking anything; ``None`` when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _challenge_params(header: str) -> dict[str, str]:
    return {m[1].lower(): m[2] for m in re.finditer(r'([A-Za-z_]+)="([^"]*)"', header)}


def _header(headers: dict[str, str], name: str) -> str | None:
    lower = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lower), None)


class _HookServer(BackgroundHTTPServer):
    """What :class:`Proxy` and :class:`StubServer` share: request records, header capture, stop signal."""

    def __init__(self, *, record_headers: bool) -> None:
        super().__init__()
        self.record_headers = record_headers
        self._requests: RequestLog[LoggedRequest] = RequestLog()
        self._captured: RequestLog[ProxyRequest] = RequestLog()
        self._stopping = threading.Event()

    @property
    def requests(self) -> list[LoggedRequest]:
        """Snapshot of every request handled so far (method, path, query, status sent; 0: no response)."""
        return self._requests.snapshot()

    @property
    def captured(self) -> list[ProxyRequest]:
        """Every request seen so far with its headers, oldest first (needs ``record_headers=True``)."""
        if not self.record_headers:
            raise RuntimeError(f"{type(self).__name__} was created without record_headers=True")
        return self._captured.snapshot()

    def reset(self) -> None:
        """Forget recorded requests (and captured headers)."""
        self._requests.clear()
        self._captured.clear()

    @property
    def stopping(self) -> threading.Event:
        """Set while :meth:`stop` runs: stalls and streamed bodies end when it is set."""
        return self._stopping

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a background thread."""
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        """Stop stalls and streams, stop accepting, interrupt connections, join every thread."""
        self._stopping.set()
        super().stop()

    def _record(self, req: ProxyRequest, status: int) -> None:
        self._requests.append(LoggedRequest(req.method, req.path, req.query, status))

    def _capture(self, req: ProxyRequest) -> None:
        if self.record_headers:
            self._captured.append(req)

    def _dispatch(self, req: ProxyRequest) -> ProxyResponse | Fault | None:
        raise NotImplementedError

    def _challenge_params(self) -> dict[str, str]:
        """``realm``/``service`` for an ``insufficient_scope`` fault that does not name them."""
        return {}

    def _complete(self, fault: Fault) -> Fault:
        """``fault`` with the realm/service an ``insufficient_scope`` fault left out filled in."""
        if fault.kind != "insufficient_scope" or (fault.realm is not None and fault.service is not None):
            return fault
        params = self._challenge_params()
        return fault.with_challenge(params.get("realm", ""), params.get("service", ""))


class _HookHandler(QuietHandler):
    """Request handling shared by the proxy and the stub: hook dispatch, canned answers, faults."""

    @property
    def owner(self) -> _HookServer:
        return cast(_HookServer, self.tracking_server.owner)

    # -- request body --------------------------------------------------------------------------------

    def _is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _body_pieces(self) -> Iterator[bytes]:
        """The request body, decoded, in pieces of at most 64 KiB."""
        if self._is_chunked():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield from read_pieces(self.rfile, size, eof_error="client closed during chunked body")
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        yield from read_pieces(self.rfile, length, eof_error="client closed during body")

    def _has_body(self) -> bool:
        return self._is_chunked() or int(self.headers.get("Content-Length") or 0) > 0

    def _drain(self) -> None:
        for _ in self._body_pieces():
            pass

    # -- dispatch ------------------------------------------------------------------------------------

    def _handle(self) -> None:
        owner = self.owner
        path, query = self.split_path()
        req = ProxyRequest(self.command, path, query, {k.lower(): v for k, v in self.headers.items()})
        owner._capture(req)
        answer: ProxyResponse | Fault | None
        try:
            answer = owner._dispatch(req)
            if isinstance(answer, Fault) and answer.answers:
                answer = owner._complete(answer).as_response(req)
        except Exception:
            logger.exception("%s hook failed for %s %s", type(owner).__name__, req.method, self.path)
            answer = ProxyResponse(500, {"Content-Type": "text/plain"}, b"proxy hook failed\n")
        try:
            if isinstance(answer, ProxyResponse):
                self._drain()
                owner._record(req, answer.status)
                self._send_canned(answer)
            elif isinstance(answer, Fault) and answer.kind == "no_response":
                self._drain()
                owner._record(req, NO_RESPONSE)
                self.close_connection = True
            else:
                self._forward(req, answer)
        except (ConnectionError, TimeoutError, OSError):
            logger.debug("%s: connection failure for %s %s", type(owner).__name__, req.method, self.path, exc_info=True)
            self._on_connection_failure()
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _forward(self, req: ProxyRequest, fault: Fault | None) -> None:
        raise NotImplementedError

    def _on_connection_failure(self) -> None:
        """Called when the client (or upstream) connection failed mid-request."""

    # -- canned responses ----------------------------------------------------------------------------

    def _send_canned(self, canned: ProxyResponse) -> None:
        if canned.stream is None:
            headers = {k: v for k, v in canned.headers.items() if k.lower() != "content-length"}
            self.send_bytes(canned.status, canned.body, headers)
            return
        declared = _header(canned.headers, "Content-Length")
        closing = (_header(canned.headers, "Connection") or "").lower() == "close"
        no_body = self.command == "HEAD" or canned.status in (204, 304) or 100 <= canned.status < 200
        self.send_response(canned.status)
        for name, value in canned.headers.items():
            if name.lower() != "transfer-encoding":
                self.send_header(name, value)
        chunked = False
        if declared is None and not no_body:
            if self.request_version == "HTTP/1.1" and not closing:
                chunked = True
                self.send_header("Transfer-Encoding", "chunked")
            elif not closing:
                self.send_header("Connection", "close")
        self.end_headers()
        exact = declared is not None and declared.strip().isdigit()
        if declared is not None and not exact:
            self.close_connection = True  # an invalid length: this connection cannot be reused
        if no_body:
            return
        if declared is None and not chunked:
            self.close_connection = True
        sent = 0
        finished = False
        pieces = canned.stream()
        try:
            for piece in _prefixed(canned.body, pieces):
                if self.owner.stopping.is_set():
                    break
                if not piece:
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            else:
                finished = True
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        if not finished:
            self.close_connection = True
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")
        if declared is not None and (not exact or int(declared) != sent):
            self.close_connection = True  # the body did not match the declared length

    # -- wire faults ---------------------------------------------------------------------------------

    def _break(self, fault: Fault) -> None:
        """End the connection as ``fault`` says, after the partial response was written."""
        self.close_connection = True
        if fault.kind == "stall":
            self._stall(fault.seconds)
        elif fault.kind == "reset":
            self._abort_with_rst()
        # truncate (and stall after its pause): the server closes the socket with a FIN.

    def _stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``; return early when the server stops or the client closes."""
        deadline = time.monotonic() + seconds
        stopping = self.owner.stopping
        sock = self.connection
        while not stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                readable, _, _ = select.select([sock], [], [], min(remaining, 0.05))
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return  # the client closed its side
            except (OSError, ValueError):
                return
            if readable:
                stopping.wait(min(remaining, 0.05))  # a pipelined request: keep stalling

    def _abort_with_rst(self) -> None:
        """Close the client connection with RST instead of FIN (``SO_LINGER`` on, timeout 0)."""
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference so close() really closes the descriptor
        self.tracking_server.untrack(sock)
        sock.close()


def _prefixed(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class Proxy(_HookServer):
    """A threaded reverse proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``).

    * Streams request bodies (``Content-Length`` or chunked; forwarded chunked when chunked) and
      response bodies (``Content-Length`` passed through; chunked or close-delimited bodies re-sent
      chunked to HTTP/1.1 clients) in 64 KiB pieces -- nothing is buffered whole.
    * Forwards the client's ``Host`` header unchanged, so the upstream registry's absolute ``Location``
      URLs point back at the proxy. Hop-by-hop headers (``Connection``, ``Transfer-Encoding``,
      ``Expect``, ...) are not forwarded; ``Expect: 100-continue`` is answered by the proxy itself.
    * One persistent upstream connection per client connection (keep-alive on both sides).
    * ``hook(ProxyRequest)``: called first for every request. ``None`` forwards; a
      :class:`ProxyResponse` is sent instead of forwarding (the request body, if any, is read and
      dropped first; a streamed body may be endless); a :class:`~ecrcopy.testing.Fault` is applied
      (answering faults are sent like a canned response, wire faults damage the forwarded request's
      response, ``close_without_response`` closes the connection -- see :mod:`ecrcopy.testing._faults`).
      ``hook`` is a public attribute and may be swapped while running.
    * ``token_gate=True``: a request whose ``Authorization: Bearer <jwt>`` has ``exp <= now`` gets 401
      ``UNAUTHORIZED`` with ``WWW-Authenticate: Bearer realm=..,service=..,error="invalid_token"`` (realm
      and service copied from the upstream's challenge, read once at start) -- GitLab's hard expiry,
      which distribution (60 s leeway) does not have. Tokens are decoded without verification. The
      hook is consulted before the gate; when it returns a wire fault (which would forward the
      request) the gate still refuses an expired token.
    * :attr:`requests`: every request with the status the client got (recorded before the response is
      sent, so it is visible as soon as the client sees the status; 0 when no response was sent).
      Upstream failures answer 502; a hook raising an exception answers 500 (and is logged).
    * ``record_headers=True``: :attr:`captured` lists every :class:`ProxyRequest` (headers included).
    """

    def __init__(
        self,
        upstream: str,
        *,
        token_gate: bool = False,
        hook: ProxyHook | None = None,
        record_headers: bool = False,
    ) -> None:
        super().__init__(record_headers=record_headers)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.token_gate = token_gate
        self.hook = hook
        self.challenge: str | None = None
        self._upstream_challenge: dict[str, str] | None = None
        self._challenge_lock = threading.Lock()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _ProxyHandler

    def _read_upstream_challenge(self) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=10)
        try:
            conn.request("GET", "/v2/")
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("WWW-Authenticate") or ""
        finally:
            conn.close()

    def _before_start(self) -> None:
        self._upstream_challenge = None
        if not self.token_gate:
            return
        status, header = self._read_upstream_challenge()
        if status != 401 or not header.lower().startswith("bearer "):
            raise RuntimeError(f"token_gate needs a Bearer challenge from {self.upstream}/v2/, got {header!r}")
        params = _challenge_params(header)
        self._upstream_challenge = params
        self.challenge = (
            f'Bearer realm="{params.get("realm", "")}",service="{params.get("service", "")}",error="invalid_token"'
        )

    def _challenge_params(self) -> dict[str, str]:
        """The upstream's Bearer challenge parameters (``GET /v2/`` once, when first needed)."""
        with self._challenge_lock:
            if self._upstream_challenge is None:
                try:
                    _, header = self._read_upstream_challenge()
                except OSError:
                    header = ""
                bearer = header.lower().startswith("bearer ")
                self._upstream_challenge = _challenge_params(header) if bearer else {}
            return dict(self._upstream_challenge)

    def _dispatch(self, req: ProxyRequest) -> ProxyResponse | Fault | None:
        answer = self.hook(req) if self.hook is not None else None
        if self.token_gate and (answer is None or (isinstance(answer, Fault) and answer.forwards)):
            refused = self._gate(req)
            if refused is not None:
                return refused  # an expired token is refused even when a wire fault was drawn
        return answer

    def _gate(self, req: ProxyRequest) -> ProxyResponse | None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        claims = jwt_claims_unverified(token.strip())
        exp = claims.get("exp") if claims else None
        if not isinstance(exp, int | float) or time.time() < exp:
            return None
        assert self.challenge is not None
        logger.debug("proxy token gate: token expired %.3f s ago", time.time() - exp)
        return ProxyResponse.error(
            401,
            "UNAUTHORIZED",
            "authentication required",
            {"WWW-Authenticate": self.challenge},
        )


class _ProxyHandler(_HookHandler):
    _upstream: http.client.HTTPConnection | None = None

    @property
    def proxy(self) -> Proxy:
        return cast(Proxy, self.tracking_server.owner)

    # -- upstream connection -------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            proxy = self.proxy
            conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=300)
            self._upstream = conn
        if self._upstream.sock is None:
            self._upstream.connect()
            assert self._upstream.sock is not None
            self.tracking_server.track(self._upstream.sock)
        return self._upstream

    def _drop_connection(self) -> None:
        conn = self._upstream
        if conn is not None:
            if conn.sock is not None:
                self.tracking_server.untrack(conn.sock)
            conn.close()
        self._upstream = None

    def _on_connection_failure(self) -> None:
        self._drop_connection()

    def finish(self) -> None:
        self._drop_connection()
        super().finish()

    # -- forwarding ----------------------------------------------------------------------------------

    def _forward(self, req: ProxyRequest, fault: Fault | None) -> None:
        chunked = self._is_chunked()
        has_body = self._has_body()
        attempts = 1 if has_body else 2
        resp: http.client.HTTPResponse | None = None
        for attempt in range(attempts):
            reused = self._upstream is not None and self._upstream.sock is not None
            try:
                conn = self._connection()
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    lower = name.lower()
                    if lower not in _HOP_BY_HOP and not (chunked and lower == "content-length"):
                        conn.putheader(name, value)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                if has_body:
                    for piece in self._body_pieces():
                        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    if chunked:
                        conn.send(b"0\r\n\r\n")
                resp = conn.getresponse()
                break
            except _RETRYABLE:
                self._drop_connection()
                if attempt + 1 < attempts and reused:
                    continue
                self._bad_gateway(req)
                return
            except OSError:
                self._drop_connection()
                self._bad_gateway(req)
                return
        assert resp is not None
        self._relay(req, resp, fault)

    def _bad_gateway(self, req: ProxyRequest) -> None:
        self.proxy._record(req, 502)
        self.send_bytes(502, b"bad gateway\n", {"Content-Type": "text/plain", "Connection": "close"})
        self.close_connection = True

    def _relay(self, req: ProxyRequest, resp: http.client.HTTPResponse, fault: Fault | None) -> None:
        status = resp.status
        self.proxy._record(req, status)
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        length = resp.getheader("Content-Length")
        self.send_response_only(status, resp.reason)
        for name, value in resp.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        relay_chunked = False
        if not no_body and length is None:
            if self.request_version == "HTTP/1.1":
                relay_chunked = True
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
        self.end_headers()
        limit: int | None = None
        if fault is not None:
            size = 0 if no_body else (int(length) if length is not None and length.isdigit() else None)
            limit = fault.cut_offset(size)
        if no_body:
            if fault is None:
                resp.read()
        else:
            sent = 0
            while limit is None or sent < limit:
                piece = resp.read(CHUNK if limit is None else min(CHUNK, limit - sent))
                if not piece:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if relay_chunked else piece)
                sent += len(piece)
            if relay_chunked and fault is None:
                self.wfile.write(b"0\r\n\r\n")
        if fault is not None:
            self._drop_connection()  # the upstream response was not read to its end
            self._break(fault)
        elif resp.will_close:
            self._drop_connection()


class StubServer(_HookServer):
    """An in-process HTTP origin with no upstream: every request is answered by ``hook``.

    ``hook(ProxyRequest)`` returns the :class:`ProxyResponse` to send (streamed bodies allowed) or an
    answering / ``close_without_response`` :class:`~ecrcopy.testing.Fault`; ``None`` (or no hook)
    answers 404 ``{"errors":[{"code":"NOT_FOUND",...}]}``. Wire faults (reset, truncate, stall) need an
    upstream response to damage and answer 500. Request bodies are read and dropped.

    Every request is recorded in :attr:`requests` (with the status sent) and, with its headers, in
    :attr:`captured` -- use it as a foreign origin (a redirect target, a fake storage host) that must
    never receive credentials. ``hook`` may be swapped while running.
    """

    def __init__(self, hook: ProxyHook | None = None) -> None:
        super().__init__(record_headers=True)
        self.hook = hook

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _StubHandler

    def _dispatch(self, req: ProxyRequest) -> ProxyResponse | Fault | None:
        answer = self.hook(req) if self.hook is not None else None
        if answer is None:
            return ProxyResponse.error(404, "NOT_FOUND", "not found")
        if isinstance(answer, Fault) and answer.forwards:
            logger.error("StubServer: fault %s needs an upstream", answer.kind)
            text = f"fault {answer.kind} needs an upstream\n".encode()
            return ProxyResponse(500, {"Content-Type": "text/plain"}, text)
        return answer


class _StubHandler(_HookHandler):
    def _forward(self, req: ProxyRequest, fault: Fault | None) -> None:  # pragma: no cover - never reached
        raise AssertionError("StubServer answers every request")
