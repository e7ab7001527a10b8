"""A streaming reverse HTTP proxy for counting, token-expiry gating and fault injection."""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, cast
from urllib.parse import urlsplit

from ._httpserver import CHUNK, BackgroundHTTPServer, LoggedRequest, QuietHandler, logger, read_pieces
from ._service import RequestLog

__all__ = ["Proxy", "ProxyHook", "ProxyRequest", "ProxyResponse", "jwt_claims_unverified"]

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


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """A request as seen by a :class:`Proxy` hook (before its body is read).

    ``path`` is raw (percent-encoded), ``query`` the raw query without ``?``, ``headers`` maps
    lower-cased names to values (the last one wins for repeated headers).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class ProxyResponse:
    """A canned response a hook returns instead of forwarding the request."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ProxyResponse:
        """A registry-style JSON error ``{"errors":[{"code","message","detail"}]}``."""
        body = json.dumps(
            {"errors": [{"code": code, "message": message, "detail": None}]}, separators=(",", ":")
        ).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)


#: ``hook(request) -> response to send instead of forwarding, or None to forward``.
ProxyHook = Callable[[ProxyRequest], ProxyResponse | None]


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


class Proxy(BackgroundHTTPServer):
    """A threaded reverse proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``).

    * Streams request bodies (``Content-Length`` or chunked; forwarded chunked when chunked) and
      response bodies (``Content-Length`` passed through; chunked or close-delimited bodies re-sent
      chunked to HTTP/1.1 clients) in 64 KiB pieces -- nothing is buffered whole.
    * Forwards the client's ``Host`` header unchanged, so the upstream registry's absolute ``Location``
      URLs point back at the proxy. Hop-by-hop headers (``Connection``, ``Transfer-Encoding``,
      ``Expect``, ...) are not forwarded; ``Expect: 100-continue`` is answered by the proxy itself.
    * One persistent upstream connection per client connection (keep-alive on both sides).
    * ``hook(ProxyRequest)``: called first for every request; a returned :class:`ProxyResponse` is sent
      instead of forwarding (the request body, if any, is read and dropped first). ``hook`` is a public
      attribute and may be swapped while running.
    * ``token_gate=True``: a request whose ``Authorization: Bearer <jwt>`` has ``exp <= now`` gets 401
      ``UNAUTHORIZED`` with ``WWW-Authenticate: Bearer realm=..,service=..,error="invalid_token"`` (realm
      and service copied from the upstream's challenge, read once at start) -- GitLab's hard expiry,
      which distribution (60 s leeway) does not have. Tokens are decoded without verification.
    * :attr:`requests`: every request with the status the client got (recorded before the response is
      sent, so it is visible as soon as the client sees the status). Upstream failures answer 502; a
      hook raising an exception answers 500 (and is logged).
    """

    def __init__(self, upstream: str, *, token_gate: bool = False, hook: ProxyHook | None = None) -> None:
        super().__init__()
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.token_gate = token_gate
        self.hook = hook
        self.challenge: str | None = None
        self._requests: RequestLog[LoggedRequest] = RequestLog()

    @property
    def requests(self) -> list[LoggedRequest]:
        """Snapshot of every request handled so far (method, path, query, status sent)."""
        return self._requests.snapshot()

    def reset(self) -> None:
        """Forget recorded requests."""
        self._requests.clear()

    def _record(self, req: ProxyRequest, status: int) -> None:
        self._requests.append(LoggedRequest(req.method, req.path, req.query, status))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _ProxyHandler

    def _before_start(self) -> None:
        if not self.token_gate:
            return
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=10)
        try:
            conn.request("GET", "/v2/")
            resp = conn.getresponse()
            resp.read()
            header = resp.getheader("WWW-Authenticate") or ""
        finally:
            conn.close()
        if resp.status != 401 or not header.lower().startswith("bearer "):
            raise RuntimeError(f"token_gate needs a Bearer challenge from {self.upstream}/v2/, got {header!r}")
        params = _challenge_params(header)
        self.challenge = (
            f'Bearer realm="{params.get("realm", "")}",service="{params.get("service", "")}",error="invalid_token"'
        )

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


class _ProxyHandler(QuietHandler):
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

    def finish(self) -> None:
        self._drop_connection()
        super().finish()

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

    # -- dispatch ------------------------------------------------------------------------------------

    def _handle(self) -> None:
        proxy = self.proxy
        path, query = self.split_path()
        req = ProxyRequest(self.command, path, query, {k.lower(): v for k, v in self.headers.items()})
        try:
            canned = proxy.hook(req) if proxy.hook is not None else None
        except Exception:
            logger.exception("proxy hook failed for %s %s", req.method, self.path)
            canned = ProxyResponse(500, {"Content-Type": "text/plain"}, b"proxy hook failed\n")
        if canned is None and proxy.token_gate:
            canned = proxy._gate(req)
        if canned is not None:
            for _ in self._body_pieces():
                pass
            proxy._record(req, canned.status)
            headers = {k: v for k, v in canned.headers.items() if k.lower() != "content-length"}
            self.send_bytes(canned.status, canned.body, headers)
            return
        try:
            self._forward(req)
        except (ConnectionError, TimeoutError, OSError):
            logger.debug("proxy: connection failure for %s %s", req.method, self.path, exc_info=True)
            self._drop_connection()
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _forward(self, req: ProxyRequest) -> None:
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
        self._relay(req, resp)

    def _bad_gateway(self, req: ProxyRequest) -> None:
        self.proxy._record(req, 502)
        self.send_bytes(502, b"bad gateway\n", {"Content-Type": "text/plain", "Connection": "close"})
        self.close_connection = True

    def _relay(self, req: ProxyRequest, resp: http.client.HTTPResponse) -> None:
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
        if no_body:
            resp.read()
        else:
            while True:
                piece = resp.read(CHUNK)
                if not piece:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if relay_chunked else piece)
            if relay_chunked:
                self.wfile.write(b"0\r\n\r\n")
        if resp.will_close:
            self._drop_connection()
