"""An S3-presigned-URL-like origin serving a registry's blob files (for redirected blob GETs)."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import cast

from ._httpserver import BackgroundHTTPServer, LoggedRequest, QuietHandler, read_pieces
from ._registry import Registry

__all__ = ["S3_AUTH_CONFLICT", "BlobServer"]

#: Body of the 400 S3 answers when a presigned request also carries ``Authorization``.
S3_AUTH_CONFLICT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the "
    b"X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header "
    b"should be specified</Message></Error>"
)

_BLOB_PATH = re.compile(r"^/docker/registry/v2/blobs/[a-z0-9]+/[0-9a-f]{2}/[0-9a-f]{32,}/data$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class BlobServer(BackgroundHTTPServer):
    """Serve ``GET``/``HEAD /docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data`` from ``data_dir``.

    This is the target of a :class:`~ecrcopy.testing.Registry` started with
    ``redirect_blobs_to=blob_server.url``: distribution 2.8's ``redirect`` middleware answers blob GETs
    *and HEADs* with ``307 Location: <baseurl scheme+host>/docker/registry/v2/blobs/...`` (the path of
    ``baseurl`` is replaced, not prefixed). Start the blob server first::

        with BlobServer(Registry.data_dir_for(workdir)) as blobs, Registry(
            workdir, redirect_blobs_to=blobs.url
        ) as registry: ...

    Behaviour modelled on S3 presigned URLs (what ECR redirects to):

    * any request with an ``Authorization`` header -> 400 ``InvalidArgument`` XML
      (:data:`S3_AUTH_CONFLICT`), counted in :attr:`rejected_auth`;
    * ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> 206 with ``Content-Range``; unsatisfiable
      -> 416; otherwise 200 with ``Content-Length``, streamed in 64 KiB pieces;
    * unknown paths -> 404 ``NoSuchKey`` XML; other methods -> 405.

    :attr:`requests` records every request (method, path, query, status). ``data_dir`` may also be a
    (not yet started) :class:`~ecrcopy.testing.Registry`, whose :attr:`~Registry.data_dir` is used.
    """

    def __init__(self, data_dir: Path | Registry) -> None:
        super().__init__()
        self.data_dir = data_dir.data_dir if isinstance(data_dir, Registry) else Path(data_dir)
        self._lock = threading.Lock()
        self._requests: list[LoggedRequest] = []
        self._rejected_auth = 0

    @property
    def requests(self) -> list[LoggedRequest]:
        """Snapshot of every request handled so far."""
        with self._lock:
            return list(self._requests)

    @property
    def rejected_auth(self) -> int:
        """How many requests were refused because they carried ``Authorization``."""
        with self._lock:
            return self._rejected_auth

    def reset(self) -> None:
        """Forget recorded requests and the rejection counter."""
        with self._lock:
            self._requests.clear()
            self._rejected_auth = 0

    def _record(self, method: str, path: str, query: str, status: int, *, auth_rejected: bool = False) -> None:
        with self._lock:
            self._requests.append(LoggedRequest(method, path, query, status))
            if auth_rejected:
                self._rejected_auth += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _BlobHandler


def _xml_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    ).encode()


class _BlobHandler(QuietHandler):
    def _serve(self) -> None:
        owner = cast(BlobServer, self.tracking_server.owner)
        path, query = self.split_path()
        method = self.command
        self.discard_body()
        xml = {"Content-Type": "application/xml"}
        if self.headers.get("Authorization") is not None:
            owner._record(method, path, query, 400, auth_rejected=True)
            self.send_bytes(400, S3_AUTH_CONFLICT, xml)
            return
        if method not in ("GET", "HEAD"):
            owner._record(method, path, query, 405)
            self.send_bytes(405, _xml_error("MethodNotAllowed", "The specified method is not allowed"), xml)
            return
        file = owner.data_dir / path.lstrip("/") if _BLOB_PATH.match(path) else None
        if file is None or not file.is_file():
            owner._record(method, path, query, 404)
            self.send_bytes(404, _xml_error("NoSuchKey", "The specified key does not exist."), xml)
            return
        size = file.stat().st_size
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header is not None:
            match = _RANGE.match(header.strip())
            if match is not None and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), size - 1) if match[2] else size - 1
                else:
                    start = max(size - int(match[2]), 0)
                if start >= size or start > end:
                    owner._record(method, path, query, 416)
                    self.send_bytes(
                        416,
                        _xml_error("InvalidRange", "The requested range is not satisfiable"),
                        {**xml, "Content-Range": f"bytes */{size}"},
                    )
                    return
                status = 206
        length = end - start + 1 if size else 0
        owner._record(method, path, query, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if method == "HEAD":
            return
        with open(file, "rb") as fh:
            fh.seek(start)
            for piece in read_pieces(fh, length):
                self.wfile.write(piece)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _serve
