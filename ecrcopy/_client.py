"""Async OCI Distribution API client for one registry.

:class:`RegistryClient` speaks ``/v2/`` over one ``httpx.AsyncClient`` (its transport is the
test seam): manifests byte-exact, blobs streamed and verified, uploads monolithic or chunked,
cross-repository mounts, tag listing. Authentication lives in :mod:`ecrcopy._auth`; transient
failures of idempotent requests (429, 502/503/504, broken connections) are retried with backoff.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

import anyio
import certifi
import httpx

from . import _mediatypes as mt
from ._auth import Authenticator
from ._credentials import CredentialProvider
from ._exceptions import (
    AuthenticationError,
    Denied,
    DigestMismatch,
    EcrcopyError,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryServerError,
    TransferError,
    UnsupportedManifest,
)
from ._models import MAX_MANIFEST_SIZE, Manifest
from ._options import CopyOptions
from ._protocol import (
    Scope,
    append_query,
    next_link,
    parse_error_body,
    parse_retry_after,
    parse_www_authenticate,
    redact_url,
    same_origin,
)
from ._reference import is_loopback_host, split_host_port

__all__ = ["ManifestInfo", "RegistryClient"]

log = logging.getLogger("ecrcopy")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ManifestInfo:
    """What a manifest HEAD tells: digest, media type and size."""

    digest: str
    media_type: str | None
    size: int | None


def pull_scope(repo: str) -> Scope:
    return Scope("repository", repo, frozenset({"pull"}))


def push_scope(repo: str) -> Scope:
    return Scope("repository", repo, frozenset({"pull", "push"}))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client (loading CA certificates costs ~50 ms each time).

    Trusts ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set (as httpx does), else certifi's bundle.
    """
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    return ssl.create_default_context(cafile=certifi.where())


class _StreamReader:
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
                    raise DigestMismatch(f"source blob ended {remaining} bytes early") from None
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


class RegistryClient:
    """Client for one registry host (``host[:port]``)."""

    def __init__(
        self,
        host: str,
        credentials: CredentialProvider,
        options: CopyOptions | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        scheme: str | None = None,
    ) -> None:
        self.host = host
        self.options = options or CopyOptions()
        insecure = set(self.options.insecure_registries)

        def allow_http(h: str) -> bool:
            return is_loopback_host(h) or h in insecure or split_host_port(h)[0] in insecure

        self.scheme = scheme or ("http" if allow_http(host) else "https")
        self.base_url = f"{self.scheme}://{host}"
        limits = httpx.Limits(
            max_connections=self.options.connections_per_host,
            max_keepalive_connections=self.options.connections_per_host,
        )
        timeout = httpx.Timeout(
            connect=self.options.connect_timeout,
            read=self.options.read_timeout,
            write=self.options.read_timeout,
            pool=None,
        )
        self.http = httpx.AsyncClient(
            transport=transport,
            verify=tls_context(),
            limits=limits,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "ecrcopy"},
        )
        self.auth = Authenticator(
            host,
            self.base_url,
            self.http,
            credentials,
            refresh_margin=self.options.token_refresh_margin,
            allow_http=allow_http,
            retries=self.options.retries,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    # ------------------------------------------------------------------ requests

    def _url(self, repo: str, tail: str) -> str:
        return f"{self.base_url}/v2/{repo}/{tail}"

    async def _send(
        self,
        method: str,
        url: str,
        scopes: Iterable[Scope],
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
        ok: Iterable[int] = (200,),
        retry: bool = True,
        what: str,
    ) -> httpx.Response:
        """Send with auth; retry transient failures (replayable bodies only); map errors.

        Returns a response whose status is in ``ok`` (or a redirect when ``stream`` is used for
        blobs); raises an :class:`EcrcopyError` otherwise.
        """
        scope_set = frozenset(scopes)
        replayable = not isinstance(content, AsyncIterator)
        ok_set = frozenset(ok)
        attempt = 0
        reauthed = False
        while True:
            attempt += 1
            req_headers = dict(headers or {})
            try:
                req_headers.update(await self.auth.headers(scope_set))
            except (RateLimited, RegistryServerError) as exc:  # a flaky token service
                if attempt < self.options.retries:
                    await self._backoff(attempt, getattr(exc, "retry_after", None), exc)
                    continue
                raise
            request = self.http.build_request(method, url, headers=req_headers, content=content)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                error: EcrcopyError = TransferError(f"{what}: {exc.__class__.__name__} {exc}".strip())
                if retry and replayable and attempt < self.options.retries:
                    await self._backoff(attempt, None, error)
                    continue
                raise error from None
            status = response.status_code
            if status in ok_set:
                if not stream:
                    try:
                        await response.aread()
                    except httpx.TransportError as exc:
                        await response.aclose()
                        if retry and replayable and attempt < self.options.retries:
                            await self._backoff(attempt, None, TransferError(str(exc)))
                            continue
                        raise TransferError(f"{what}: {exc.__class__.__name__}") from None
                return response
            body = await self._read_error_body(response)
            if status == 401 and not reauthed and replayable and self.auth.unauthorized(response, scope_set):
                reauthed = True
                attempt -= 1
                continue
            if status == 401 and not replayable:
                # a streamed body is gone; let the caller restart the transfer with fresh auth
                self.auth.unauthorized(response, scope_set)
                raise TransferError(f"{what}: credentials expired during the request")
            try:
                self._raise_for(response, body, what)
            except (RateLimited, RegistryServerError) as exc:
                if retry and replayable and status in _RETRY_STATUSES and attempt < self.options.retries:
                    await self._backoff(attempt, getattr(exc, "retry_after", None), exc)
                    continue
                raise

    async def _read_error_body(self, response: httpx.Response) -> bytes:
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in _raw_chunks(response, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > 65536:
                    break
            return b"".join(chunks)
        except httpx.HTTPError:
            return b""
        finally:
            await response.aclose()

    async def _backoff(self, attempt: int, retry_after: float | None, error: EcrcopyError) -> None:
        delay = self.options.backoff_delay(attempt, retry_after)
        log.info("%s: %s; retry %d in %.1fs", self.host, error, attempt, delay)
        await anyio.sleep(delay)

    def _raise_for(self, response: httpx.Response, body: bytes, what: str) -> NoReturn:
        status = response.status_code
        errors = parse_error_body(body)
        code = errors[0].code if errors else None
        detail = f" {code}" if code else ""
        if errors and errors[0].message:
            detail += f": {errors[0].message}"
        message = f"{what}: {status}{detail}"
        if status == 401:
            challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
            if any(c.error == "insufficient_scope" for c in challenges):
                raise Denied(f"{message} (insufficient_scope: the credentials may not do this)", status=401, code=code)
            raise AuthenticationError(f"{self.host}: credentials rejected ({message})")
        if status == 403:
            raise Denied(message, status=status, code=code)
        if status == 404:
            raise NotFound(message, status=status, code=code)
        if status == 429:
            raise RateLimited(message, code=code, retry_after=parse_retry_after(response.headers.get("retry-after")))
        if status >= 500:
            raise RegistryServerError(message, status=status, code=code)
        if code == "DIGEST_INVALID":
            raise DigestMismatch(message)
        if status == 413:
            raise UnsupportedManifest(message)
        raise RegistryError(message, status=status, code=code)

    # ------------------------------------------------------------------ manifests

    async def get_manifest(self, repo: str, reference: str) -> Manifest:
        """GET a manifest by tag or digest; bytes kept exactly; digest verified when fetched by digest."""
        response = await self._send(
            "GET",
            self._url(repo, f"manifests/{reference}"),
            [pull_scope(repo)],
            headers={"Accept": mt.ACCEPT_MANIFESTS},
            what=f"GET manifest {repo}:{reference}",
        )
        raw = response.content
        if len(raw) > MAX_MANIFEST_SIZE:
            raise UnsupportedManifest(f"manifest {repo}:{reference} is larger than 4 MiB")
        expected = reference if reference.startswith(("sha256:", "sha512:")) else None
        return Manifest.from_bytes(raw, response.headers.get("content-type"), expected_digest=expected)

    async def head_manifest(self, repo: str, reference: str) -> ManifestInfo | None:
        """HEAD a manifest: its digest (None when absent). Falls back to GET without a digest header."""
        try:
            response = await self._send(
                "HEAD",
                self._url(repo, f"manifests/{reference}"),
                [pull_scope(repo)],
                headers={"Accept": mt.ACCEPT_MANIFESTS},
                what=f"HEAD manifest {repo}:{reference}",
            )
        except NotFound:
            return None
        digest = response.headers.get("docker-content-digest")
        length = response.headers.get("content-length")
        media_type = (response.headers.get("content-type") or "").split(";")[0] or None
        if not digest:
            try:
                manifest = await self.get_manifest(repo, reference)
            except NotFound:
                return None
            return ManifestInfo(manifest.digest, manifest.media_type, manifest.size)
        return ManifestInfo(digest, media_type, int(length) if length and length.isdigit() else None)

    async def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> None:
        """PUT exact bytes with ``Content-Type`` = the manifest's media type; verify the echoed digest."""
        if manifest.is_schema1:
            raise UnsupportedManifest("Docker schema 1 manifests cannot be pushed (GitLab refuses them)")
        response = await self._send(
            "PUT",
            self._url(repo, f"manifests/{reference}"),
            [push_scope(repo)],
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
            ok=(200, 201, 202),
            what=f"PUT manifest {repo}:{reference}",
        )
        echoed = response.headers.get("docker-content-digest")
        if echoed and echoed != manifest.digest:
            raise DigestMismatch(f"registry stored {repo}:{reference} as {echoed}, expected {manifest.digest}")

    async def list_tags(self, repo: str, page_size: int = 1000) -> list[str]:
        """Every tag of ``repo``, following ``Link: <…>; rel="next"`` pages."""
        url: str | None = self._url(repo, f"tags/list?n={page_size}")
        tags: list[str] = []
        seen: set[str] = set()
        while url is not None:
            response = await self._send("GET", url, [pull_scope(repo)], what=f"list tags of {repo}")
            try:
                page = response.json()
            except ValueError:
                raise RegistryError(f"list tags of {repo}: response is not JSON") from None
            for tag in page.get("tags") or []:
                if isinstance(tag, str) and tag not in seen:
                    seen.add(tag)
                    tags.append(tag)
            link = next_link(response.headers.get("link"), str(response.url))
            if link is not None and not same_origin(link, self.base_url):
                raise RegistryError(f"list tags of {repo}: refusing to follow pagination to another host")
            if link is not None and link in seen:
                break
            if link is not None:
                seen.add(link)
            url = link
        return tags

    # ------------------------------------------------------------------ blobs

    async def blob_exists(self, repo: str, digest: str) -> bool:
        # a registry that redirects blob reads to object storage redirects HEAD too: that means present
        try:
            await self._send(
                "HEAD",
                self._url(repo, f"blobs/{digest}"),
                [pull_scope(repo)],
                ok=(200, *_REDIRECTS),
                what=f"HEAD blob {digest} in {repo}",
            )
        except NotFound:
            return False
        return True

    @asynccontextmanager
    async def open_blob(self, repo: str, digest: str, size: int | None) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob, verifying its sha256 and length; the last piece is held back until verified.

        Redirects (ECR answers 307 to S3) are followed by hand: ``Authorization`` is sent only to
        the registry's own origin, never to another host.
        """
        url = self._url(repo, f"blobs/{digest}")
        for _ in range(_MAX_REDIRECTS + 1):
            if same_origin(url, self.base_url):
                response = await self._send(
                    "GET", url, [pull_scope(repo)], stream=True, ok=(200, *_REDIRECTS), what=f"GET blob {digest}"
                )
            else:
                response = await self._send_unauthenticated(url, digest)
            if response.status_code == 200:
                break
            location = response.headers.get("location")
            await response.aclose()
            if not location:
                raise RegistryError(f"GET blob {digest}: redirect without Location")
            url = str(httpx.URL(url).join(location))
        else:
            raise RegistryError(f"GET blob {digest}: too many redirects")
        try:
            yield _verified(_raw_chunks(response, _READ_CHUNK), digest, size)
        except httpx.TransportError as exc:
            raise TransferError(f"GET blob {digest}: connection broke: {exc.__class__.__name__}") from None
        finally:
            await response.aclose()

    async def _send_unauthenticated(self, url: str, digest: str) -> httpx.Response:
        what = f"GET blob {digest} from {redact_url(url)}"
        try:
            response = await self.http.send(self.http.build_request("GET", url), stream=True)
        except httpx.TransportError as exc:
            raise TransferError(f"{what}: {exc.__class__.__name__}") from None
        if response.status_code in (200, *_REDIRECTS):
            return response
        body = await self._read_error_body(response)
        self._raise_for(response, body, what)

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> str | None:
        """Cross-repository mount. None when mounted (201); else the upload Location opened (202)."""
        url = append_query(self._url(repo, "blobs/uploads/"), mount=digest, **{"from": from_repo})
        response = await self._send(
            "POST",
            url,
            [push_scope(repo), pull_scope(from_repo)],
            headers={"Content-Length": "0"},
            content=b"",
            ok=(201, 202),
            retry=False,
            what=f"mount {digest} into {repo} from {from_repo}",
        )
        if response.status_code == 201:
            return None
        return self._location(response, "mount")

    async def start_upload(self, repo: str) -> str:
        response = await self._send(
            "POST",
            self._url(repo, "blobs/uploads/"),
            [push_scope(repo)],
            headers={"Content-Length": "0"},
            content=b"",
            ok=(202,),
            retry=False,
            what=f"start upload to {repo}",
        )
        return self._location(response, "upload")

    def _location(self, response: httpx.Response, what: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: registry sent {response.status_code} without Location")
        return str(response.url.join(location))

    async def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        stream: AsyncIterator[bytes],
        *,
        location: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload ``size`` bytes from ``stream`` as ``digest``: one PUT up to the threshold, else chunks."""
        if location is None:
            location = await self.start_upload(repo)
        reader = _StreamReader(stream)
        if size <= self.options.monolithic_threshold:
            body = _counting(reader.take(size), on_progress)
            response = await self._send(
                "PUT",
                append_query(location, digest=digest),
                [push_scope(repo)],
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=body,
                ok=(201, 204),
                retry=False,
                what=f"upload {digest} to {repo}",
            )
            await reader.expect_end()
            self._check_digest_header(response, digest)
            return
        offset = 0
        chunk = self.options.chunk_size
        while offset < size:
            n = min(chunk, size - offset)
            response = await self._send(
                "PATCH",
                location,
                [push_scope(repo)],
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(n),
                    "Content-Range": f"{offset}-{offset + n - 1}",
                },
                content=_counting(reader.take(n), on_progress),
                ok=(202, 204),
                retry=False,
                what=f"upload chunk {offset}-{offset + n - 1} of {digest} to {repo}",
            )
            location = self._location(response, "chunk upload")
            minimum = response.headers.get("oci-chunk-min-length")
            if minimum and minimum.isdigit():
                chunk = max(chunk, int(minimum))
            offset += n
        await reader.expect_end()
        response = await self._send(
            "PUT",
            append_query(location, digest=digest),
            [push_scope(repo)],
            headers={"Content-Length": "0"},
            content=b"",
            ok=(201, 204),
            retry=False,
            what=f"finish upload of {digest} to {repo}",
        )
        self._check_digest_header(response, digest)

    @staticmethod
    def _check_digest_header(response: httpx.Response, digest: str) -> None:
        echoed = response.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise DigestMismatch(f"registry stored the blob as {echoed}, expected {digest}")


async def _raw_chunks(response: httpx.Response, size: int) -> AsyncIterator[bytes]:
    """The body as sent (no content decoding); a body already read (a mock transport) in one piece."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw(size):
        yield chunk


async def _counting(stream: AsyncIterator[bytes], on_progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    async for piece in stream:
        if on_progress is not None:
            on_progress(len(piece))
        yield piece


async def _verified(stream: AsyncIterator[bytes], digest: str, size: int | None) -> AsyncIterator[bytes]:
    """Pass ``stream`` through, checking length and digest; the last piece waits for the verdict."""
    algorithm, _, expected_hex = digest.partition(":")
    hasher = hashlib.sha512() if algorithm == "sha512" else hashlib.sha256()
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
    if size is not None and total != size:
        raise DigestMismatch(f"blob {digest} has {total} bytes, expected {size}")
    if hasher.hexdigest() != expected_hex:
        raise DigestMismatch(f"blob content hashes to {algorithm}:{hasher.hexdigest()}, expected {digest}")
    if pending is not None:
        yield pending
