"""The request and response records exchanged between the in-process HTTP servers and their hooks.

:class:`ProxyRequest` is what a hook sees; :class:`ProxyResponse` is a canned answer a hook returns
instead of forwarding. Both are re-exported by :mod:`ecrcopy.testing` (and by ``_proxy``, their
original home).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["ProxyRequest", "ProxyResponse"]


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """A request as seen by a :class:`~ecrcopy.testing.Proxy` hook (before its body is read).

    ``path`` is raw (percent-encoded), ``query`` the raw query without ``?``, ``headers`` maps
    lower-cased names to values (the last one wins for repeated headers).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class ProxyResponse:
    """A canned response a hook returns instead of forwarding the request.

    Without ``stream`` the response is sent with a ``Content-Length`` computed from ``body`` (a
    ``Content-Length`` in ``headers`` is ignored).

    With ``stream`` (a factory called once per request; it may yield forever) the body is ``body``
    followed by every piece the iterator yields, and the framing follows ``headers``:

    * a ``Content-Length`` header is sent verbatim (it may lie: ``-1``, or far more than is sent) and
      the pieces are written raw; the connection is closed afterwards unless exactly that many bytes
      were sent;
    * otherwise, to an HTTP/1.1 client and without ``Connection: close`` in ``headers``: chunked;
    * otherwise (HTTP/1.0 client, or ``Connection: close`` given): close-delimited -- the body ends when
      the connection closes.

    The server stops writing when the client disconnects or the server stops, and closes the
    iterator (``close()`` on a generator), so an endless stream leaks no thread. HEAD requests get the
    headers only.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Callable[[], Iterator[bytes]] | None = None

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ProxyResponse:
        """A registry-style JSON error ``{"errors":[{"code","message","detail"}]}``."""
        body = json.dumps(
            {"errors": [{"code": code, "message": message, "detail": None}]}, separators=(",", ":")
        ).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)
