"""Async OCI Distribution API client for one registry.

:class:`RegistryClient` speaks ``/v2/`` over one ``httpx.AsyncClient`` (its transport is the
test seam): manifests byte-exact, blobs streamed and verified, uploads monolithic or chunked,
cross-repository mounts, tag listing. Authentication lives in :mod:`ecrcopy._auth`, retries in
:mod:`ecrcopy._retry`, per-host limits in :mod:`ecrcopy._limits`.

Boundaries it keeps:

* ``Authorization`` goes only to the registry's own origin (scheme, host, port): never to an
  upload ``Location``, a ``Link`` or a redirect on another origin, and a 401 from another origin
  teaches nothing about authentication.
* Every body is read with a byte limit while it streams (manifests 4 MiB, token replies, error
  bodies and tag pages their own); a body that never ends is cut at the limit.
* Everything a registry sends is validated before use: digests, sizes, ``Location`` and ``Link``
  URLs, header values; text is cleaned of control characters before it reaches a message.
* Every failure leaves as an :class:`~ecrcopy.EcrcopyError`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

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
from ._limits import HostLimits, host_of_url
from ._models import MAX_BLOB_SIZE, MAX_MANIFEST_SIZE, Descriptor, Manifest
from ._options import CopyOptions
from ._protocol import (
    Scope,
    append_query,
    clean_text,
    next_link,
    parse_error_body,
    parse_range_end,
    parse_retry_after,
    parse_www_authenticate,
    redact_url,
    same_origin,
    same_path,
    simple_absolute_url,
)
from ._reference import is_loopback_host, is_valid_digest, split_host_port
from ._referrers import parse_referrers_index
from ._retry import RetryPolicy
from ._streams import (
    StreamReader,
    counting,
    describe_transport_error,
    raw_chunks,
    read_error_body,
    read_limited,
    skip,
    verified,
)
from ._transport import default_transport

__all__ = ["ManifestInfo", "RegistryClient", "Reply", "chunk_length"]

log = logging.getLogger("ecrcopy")

_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_SUCCESS = tuple(range(200, 300))
_READ_CHUNK = 1024 * 1024
#: Limit of a body ecrcopy does not expect to be large (upload and mount answers, HEADs).
_SMALL_BODY = 64 * 1024
_DIGITS = re.compile(r"[0-9]+")
#: 401s after re-authentication in a row, with no success between them, that mean the credentials
#: died (a fixed password that expired) rather than that one image is refused
_REFUSALS_ENDING_THE_RUN = 3
#: Limits of a tag listing: bytes of one page, pages, tags.
MAX_TAG_PAGE = 8 * 1024 * 1024
MAX_TAG_PAGES = 5000
MAX_TAGS = 500_000
#: Pages of one referrers listing.
MAX_REFERRER_PAGES = 1000


@dataclass(frozen=True)
class ManifestInfo:
    """What a manifest HEAD tells: digest, media type and size."""

    digest: str
    media_type: str | None
    size: int | None


@dataclass(frozen=True)
class Reply:
    """A response whose body was read within its limit."""

    status_code: int
    headers: httpx.Headers
    url: httpx.URL
    content: bytes


def pull_scope(repo: str) -> Scope:
    return Scope("repository", repo, frozenset({"pull"}))


def push_scope(repo: str) -> Scope:
    return Scope("repository", repo, frozenset({"pull", "push"}))


def resolve_location(base: str | httpx.URL, location: str) -> str:
    """``location`` (a redirect's or an upload's) resolved against ``base``, as httpx resolves it;
    a simple absolute URL (:func:`~ecrcopy._protocol.simple_absolute_url`) is taken as it is.
    ``ValueError`` says what it is instead: "an unusable URL" or "a non-HTTP URL"."""
    if simple_absolute_url(location):
        return location
    try:
        target = (base if isinstance(base, httpx.URL) else httpx.URL(base)).join(location)
        usable = target.scheme in ("http", "https") and bool(target.host)
    except (httpx.InvalidURL, ValueError, UnicodeError):
        raise ValueError("an unusable URL") from None
    if not usable:
        raise ValueError("a non-HTTP URL")
    return str(target)


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


class RegistryClient:
    """Client for one registry host (``host[:port]``).

    ``retry`` and ``limits`` are shared by every client of a run (a :class:`~ecrcopy.Copier`
    passes its own); left out, the client has private ones.
    """

    def __init__(
        self,
        host: str,
        credentials: CredentialProvider,
        options: CopyOptions | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        scheme: str | None = None,
        retry: RetryPolicy | None = None,
        limits: HostLimits | None = None,
    ) -> None:
        self.host = host
        self.options = options or CopyOptions()
        insecure = set(self.options.insecure_registries)

        def allow_http(h: str) -> bool:
            return is_loopback_host(h) or h in insecure or split_host_port(h)[0] in insecure

        self.scheme = scheme or ("http" if allow_http(host) else "https")
        self.base_url = f"{self.scheme}://{host}"
        self.limits = limits or HostLimits(self.options)
        #: a request with credentials got an answer other than 401 (a later 401 is then per image) ...
        self._credentials_worked = False
        #: ... unless 401s after re-authentication keep coming with no success between them
        self._refusals_in_row = 0
        self.retry = retry or RetryPolicy(self.options)
        http_limits = httpx.Limits(
            max_connections=self.options.connections_per_host,
            max_keepalive_connections=self.options.connections_per_host,
        )
        timeout = httpx.Timeout(
            connect=self.options.connect_timeout,
            read=self.options.read_timeout,
            write=self.options.read_timeout,
            pool=None,
        )
        tls = tls_context()
        if transport is None:
            transport = default_transport(verify=tls, limits=http_limits, backend=self.options.http_backend)
        self.http = httpx.AsyncClient(
            transport=transport,
            verify=tls,
            limits=http_limits,
            timeout=timeout,
            follow_redirects=False,
            # ``identity``: bodies arrive as the registry stores them, so digests are of the real bytes
            headers={"User-Agent": "ecrcopy", "Accept-Encoding": "identity"},
        )
        # no cookie jar: registries need none, and a jar carries one answer's state into later requests
        # (httpx would also parse every response for cookies, a visible share of a run's CPU)
        self.http.cookies.extract_cookies = _keep_no_cookies  # type: ignore[method-assign]
        self.auth = Authenticator(
            host,
            self.base_url,
            self.http,
            credentials,
            refresh_margin=self.options.token_refresh_margin,
            allow_http=allow_http,
            retry=self.retry,
            limits=self.limits,
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
        ok: Iterable[int] = (200,),
        retry: bool = True,
        what: str,
        limit: int = _SMALL_BODY,
        too_large: type[EcrcopyError] = RegistryError,
    ) -> Reply:
        """Send a request and read its body within ``limit``; retried per the run's policy.

        Only requests with a replayable body are retried here (``retry=False`` leaves it to the
        caller, as for uploads that resume). Raises an :class:`EcrcopyError` unless the status is
        in ``ok``.
        """
        scope_set = frozenset(scopes)
        ok_set = frozenset(ok)

        async def attempt() -> Reply:
            response = await self._exchange(method, url, scope_set, headers, content, ok_set, what)
            try:
                if method == "HEAD":  # no body: its Content-Length describes the resource
                    body = b""
                elif method == "GET":  # the body is the answer: all of it, within the limit
                    body = await read_limited(response, limit, what, too_large)
                else:  # the answer to a write succeeded; a few bytes of its body are enough
                    body = await read_error_body(response)
            finally:
                await response.aclose()
            return Reply(response.status_code, response.headers, response.url, body)

        if retry and not isinstance(content, AsyncIterator):
            return await self.retry.run(attempt, what=what, host=self.host)
        return await attempt()

    async def _exchange(
        self,
        method: str,
        url: str,
        scopes: frozenset[Scope],
        headers: dict[str, str] | None,
        content: bytes | AsyncIterator[bytes] | None,
        ok: frozenset[int],
        what: str,
    ) -> httpx.Response:
        """One attempt (with at most one re-authentication); the response is open, status in ``ok``.

        Credentials are added only when ``url`` is on the registry's own origin.
        """
        replayable = not isinstance(content, AsyncIterator)
        own_origin = same_origin(url, self.base_url)
        for round_ in (1, 2):
            req_headers = dict(headers or {})
            if own_origin:
                if replayable:
                    req_headers.update(await self.auth.headers(scopes))
                else:  # the body streams once: get the token (with retries) before it starts
                    req_headers.update(
                        await self.retry.run(lambda: self.auth.headers(scopes), what=what, host=self.host)
                    )
            try:
                request = self.http.build_request(method, url, headers=req_headers, content=content)
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
                raise RegistryError(
                    f"{what}: the registry gave an unusable URL {clean_text(redact_url(url))}"
                ) from None
            host_limit = self.limits(host_of_url(request.url))
            async with host_limit.slot():
                try:
                    response = await self.http.send(request, stream=True)
                except httpx.TransportError as exc:
                    raise TransferError(f"{what}: {describe_transport_error(exc)}") from None
                except (httpx.InvalidURL, ValueError, UnicodeError):  # a redirect whose Location is no URL
                    raise RegistryError(f"{what}: the registry answered with an unusable Location") from None
            status = response.status_code
            if own_origin and status != 401 and "Authorization" in req_headers:
                self._credentials_worked = True
                self._refusals_in_row = 0
            if status in ok:
                host_limit.succeeded()
                return response
            body = await read_error_body(response)
            if status == 429:
                host_limit.throttled()
            if status == 401 and own_origin:
                if _insufficient_scope(response):
                    raise Denied(
                        f"{what}: 401 insufficient_scope: the credentials may not do this{_detail(body)}",
                        status=401,
                        code="insufficient_scope",
                    )
                if round_ == 1 and self.auth.unauthorized(response, scopes):
                    if replayable:
                        continue
                    # the streamed body is gone: the caller resumes or restarts with a fresh token
                    raise TransferError(f"{what}: credentials expired during the request")
            self._raise_for(response, body, what, own_origin=own_origin)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for(self, response: httpx.Response, body: bytes, what: str, *, own_origin: bool = True) -> NoReturn:
        status = response.status_code
        errors = parse_error_body(body)
        code = errors[0].code if errors and errors[0].code else None
        message = f"{what}: {status}{_detail(body)}"
        if status == 401 and own_origin:
            self._refusals_in_row += 1
            if self._credentials_worked and self._refusals_in_row < _REFUSALS_ENDING_THE_RUN:
                # the same credentials work for other requests: this one image is refused, not the run
                raise Denied(f"{message} (refused after re-authentication)", status=401, code=code)
            raise AuthenticationError(f"{self.host}: credentials rejected ({message})")
        if status in (401, 403) and not own_origin:
            origin = clean_text(redact_url(str(response.url)), 120)
            raise RegistryError(
                f"{message} (from {origin}, another origin: ecrcopy never sends it the registry's credentials)",
                status=status,
                code=code,
            )
        if status == 403:
            raise Denied(message, status=status, code=code)
        if status == 404:
            raise NotFound(message, status=status, code=code)
        if status == 429:
            raise RateLimited(message, code=code, retry_after=parse_retry_after(response.headers.get("retry-after")))
        if status in (500, 502, 503, 504):
            raise RegistryServerError(message, status=status, code=code)
        if code == "DIGEST_INVALID":
            raise DigestMismatch(message)
        if status == 413:
            raise UnsupportedManifest(message)
        raise RegistryError(message, status=status, code=code)

    # ------------------------------------------------------------------ manifests

    async def get_manifest(self, repo: str, reference: str) -> Manifest:
        """GET a manifest by tag or digest; bytes kept exactly; digest verified when fetched by digest."""
        reply = await self._send(
            "GET",
            self._url(repo, f"manifests/{reference}"),
            [pull_scope(repo)],
            headers={"Accept": mt.ACCEPT_MANIFESTS},
            what=f"GET manifest {repo}:{reference}",
            limit=MAX_MANIFEST_SIZE,
            too_large=UnsupportedManifest,
        )
        expected = reference if is_valid_digest(reference) else None
        return Manifest.from_bytes(reply.content, reply.headers.get("content-type"), expected_digest=expected)

    async def head_manifest(self, repo: str, reference: str) -> ManifestInfo | None:
        """HEAD a manifest: its digest (None when absent). Falls back to GET without a usable digest header."""
        try:
            reply = await self._send(
                "HEAD",
                self._url(repo, f"manifests/{reference}"),
                [pull_scope(repo)],
                headers={"Accept": mt.ACCEPT_MANIFESTS},
                what=f"HEAD manifest {repo}:{reference}",
            )
        except NotFound:
            return None
        digest = reply.headers.get("docker-content-digest")
        length = reply.headers.get("content-length")
        media_type = (reply.headers.get("content-type") or "").split(";")[0].strip() or None
        if not digest or not is_valid_digest(digest):
            try:
                manifest = await self.get_manifest(repo, reference)
            except NotFound:
                return None
            return ManifestInfo(manifest.digest, manifest.media_type, manifest.size)
        size = int(length) if length and _DIGITS.fullmatch(length) and len(length) < 12 else None
        return ManifestInfo(digest, media_type if media_type in mt.MANIFEST_TYPES else None, size)

    async def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> str | None:
        """PUT exact bytes with ``Content-Type`` = the manifest's media type; verify the echoed digest.

        Returns the ``OCI-Subject`` header of the answer: a registry that serves the referrers API
        names the subject of a referrer it stored there.
        """
        if manifest.is_schema1:
            raise UnsupportedManifest("Docker schema 1 manifests cannot be pushed (GitLab refuses them)")
        reply = await self._send(
            "PUT",
            self._url(repo, f"manifests/{reference}"),
            [push_scope(repo)],
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
            ok=_SUCCESS,
            what=f"PUT manifest {repo}:{reference}",
        )
        echoed = reply.headers.get("docker-content-digest")
        if echoed and echoed != manifest.digest:
            raise DigestMismatch(
                f"registry stored {repo}:{reference} as {clean_text(echoed, 140)}, expected {manifest.digest}"
            )
        subject = reply.headers.get("oci-subject")
        return subject if subject and is_valid_digest(subject) else None

    async def get_referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        """The referrers API: every manifest whose ``subject`` is ``digest``, following ``Link`` pages.

        ``None`` when the registry does not serve the API (404, 405, 501, or a 400 that is not about
        the digest): the caller falls back to the referrers tag schema.
        """
        first = self._url(repo, f"referrers/{digest}")
        url: str | None = first
        what = f"list referrers of {repo}@{digest}"
        found: dict[str, Descriptor] = {}
        visited: set[str] = set()
        while url is not None:
            if len(visited) >= MAX_REFERRER_PAGES:
                raise RegistryError(f"{what}: more than {MAX_REFERRER_PAGES} pages; giving up on an endless listing")
            visited.add(url)
            reply = await self._send(
                "GET",
                url,
                [pull_scope(repo)],
                headers={"Accept": mt.OCI_INDEX},
                ok=(200, 400, 404, 405, 501),
                what=what,
                limit=MAX_MANIFEST_SIZE,
                too_large=UnsupportedManifest,
            )
            if reply.status_code != 200:
                if not found and not (reply.status_code == 400 and b"DIGEST_INVALID" in reply.content):
                    return None
                raise RegistryError(f"{what}: {reply.status_code}{_detail(reply.content)}", status=reply.status_code)
            for descriptor in parse_referrers_index(reply.content):
                found.setdefault(descriptor.digest, descriptor)
            link = self._next_page(reply, what, first)
            url = link if link not in visited else None
        return list(found.values())

    async def list_tags(self, repo: str, page_size: int = 1000) -> list[str]:
        """Every tag of ``repo``, following ``Link: <…>; rel="next"`` pages on the registry's own origin.

        Bounded: a page may hold :data:`MAX_TAG_PAGE` bytes, a listing :data:`MAX_TAG_PAGES` pages and
        :data:`MAX_TAGS` tags. Entries that are not strings are dropped; tags are not validated here.
        """
        first = self._url(repo, f"tags/list?n={page_size}")
        url: str | None = first
        what = f"list tags of {repo}"
        tags: list[str] = []
        seen: set[str] = set()
        visited: set[str] = set()
        pages = 0
        while url is not None:
            pages += 1
            if pages > MAX_TAG_PAGES:
                raise RegistryError(f"{what}: more than {MAX_TAG_PAGES} pages; giving up on an endless listing")
            reply = await self._send("GET", url, [pull_scope(repo)], what=what, limit=MAX_TAG_PAGE)
            try:
                page = json.loads(reply.content)
            except (ValueError, RecursionError):
                raise RegistryError(f"{what}: response is not JSON") from None
            listed = page.get("tags") if isinstance(page, dict) else None
            for tag in listed if isinstance(listed, list) else []:
                if isinstance(tag, str) and tag not in seen:
                    seen.add(tag)
                    tags.append(tag)
            if len(tags) > MAX_TAGS:
                raise RegistryError(f"{what}: more than {MAX_TAGS} tags; giving up on an endless listing")
            link = self._next_page(reply, what, first)
            if link is not None and link in visited:
                break
            if link is not None:
                visited.add(link)
            url = link
        return tags

    def _next_page(self, reply: Reply, what: str, first: str) -> str | None:
        """The absolute URL of the ``Link: <…>; rel="next"`` page: this registry's origin, ``first``'s path.

        A next page of a listing is the same endpoint with another query (``?n=…&last=…``); a link to
        any other path (a relative ``https:x/`` grows the path page after page) is refused.
        """
        try:
            link = next_link(reply.headers.get("link"), str(reply.url))
        except ValueError:
            raise RegistryError(f"{what}: unreadable Link header") from None
        if link is not None and not same_origin(link, self.base_url):
            raise RegistryError(f"{what}: refusing to follow pagination to another host")
        if link is not None and not same_path(link, first):
            raise RegistryError(f"{what}: refusing to follow pagination away from the listing's path")
        return link

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
    async def open_blob(
        self, repo: str, digest: str, size: int | None, *, offset: int = 0, verify: bool | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a blob from byte ``offset``.

        With ``verify`` (the default from byte 0) its digest and length are checked and the last
        piece is held back until they are; without it (a resumed upload) the caller verifies.
        Redirects (ECR answers 307 to S3) are followed by hand: ``Authorization`` is sent only to
        the registry's own origin. A 401/403 from object storage (an expired presigned URL, a CDN)
        is a :class:`TransferError`: fetching the blob again gets a fresh URL.
        """
        if verify is None:
            verify = offset == 0
        response = await self._open_blob_response(repo, digest, offset)
        try:
            pieces = raw_chunks(response, _READ_CHUNK, f"GET blob {digest}")
            if offset and response.status_code == 200:
                pieces = skip(pieces, offset)  # the server ignored Range
            yield verified(pieces, digest, size) if verify and offset == 0 else pieces
        finally:
            await response.aclose()

    async def _open_blob_response(self, repo: str, digest: str, offset: int) -> httpx.Response:
        url = self._url(repo, f"blobs/{digest}")
        what = f"GET blob {digest}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        ok = frozenset({200, 206, *_REDIRECTS})
        for _ in range(_MAX_REDIRECTS + 1):
            if same_origin(url, self.base_url):
                response = await self._exchange("GET", url, frozenset({pull_scope(repo)}), headers, None, ok, what)
            else:
                response = await self._send_to_storage(url, headers, ok, what)
            if response.status_code in (200, 206):
                if response.status_code == 206 and not _range_starts_at(response, offset):
                    await response.aclose()
                    raise TransferError(f"{what}: the registry answered a range that does not start at {offset}")
                return response
            location = response.headers.get("location")
            await response.aclose()
            if not location:
                raise RegistryError(f"{what}: redirect without Location")
            try:
                url = resolve_location(url, location)
            except ValueError as exc:
                raise RegistryError(f"{what}: redirect to {exc}") from None
        raise RegistryError(f"{what}: too many redirects")

    async def _send_to_storage(
        self, url: str, headers: dict[str, str], ok: frozenset[int], what: str
    ) -> httpx.Response:
        """A blob read from another origin (object storage): no credentials, nothing learned from a 401."""
        what = f"{what} from {clean_text(redact_url(url), 160)}"
        try:
            request = self.http.build_request("GET", url, headers=headers)
        except (httpx.InvalidURL, ValueError):
            raise RegistryError(f"{what}: unusable URL") from None
        async with self.limits(host_of_url(request.url)).slot():
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise TransferError(f"{what}: {describe_transport_error(exc)}") from None
            except (httpx.InvalidURL, ValueError, UnicodeError):
                raise RegistryError(f"{what}: object storage answered with an unusable Location") from None
        if response.status_code in ok:
            return response
        body = await read_error_body(response)
        if response.status_code in (401, 403):
            # an expired or refused presigned URL: not the registry's credentials; ask the registry again
            raise TransferError(f"{what}: object storage refused the download ({response.status_code}{_detail(body)})")
        self._raise_for(response, body, what, own_origin=False)

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> str | None:
        """Cross-repository mount. None when mounted (201); else the upload Location opened (202)."""
        url = append_query(self._url(repo, "blobs/uploads/"), mount=digest, **{"from": from_repo})
        reply = await self._send(
            "POST",
            url,
            [push_scope(repo), pull_scope(from_repo)],
            headers={"Content-Length": "0"},
            content=b"",
            ok=(201, 202),
            retry=False,
            what=f"mount {digest} into {repo} from {from_repo}",
        )
        if reply.status_code == 201:
            return None
        return self._location(reply, "mount")

    async def start_upload(self, repo: str) -> str:
        """Open an upload session; its ``Location``."""
        return (await self.open_upload(repo))[0]

    async def open_upload(self, repo: str) -> tuple[str, int | None]:
        """Open an upload session: its ``Location`` and the ``OCI-Chunk-Min-Length`` it announced."""
        reply = await self._send(
            "POST",
            self._url(repo, "blobs/uploads/"),
            [push_scope(repo)],
            headers={"Content-Length": "0"},
            content=b"",
            ok=(202,),
            what=f"start upload to {repo}",
        )
        return self._location(reply, "upload"), _chunk_min_length(reply)

    def _location(self, reply: Reply, what: str) -> str:
        location = reply.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: registry sent {reply.status_code} without Location")
        try:
            return resolve_location(reply.url, location)
        except ValueError as exc:
            raise RegistryError(f"{what}: registry sent a Location that is {exc}") from None

    async def upload_status(self, repo: str, location: str) -> tuple[str, int]:
        """``GET`` an upload session: its current ``Location`` and how many bytes it holds.

        Raises :class:`NotFound` (404 ``BLOB_UPLOAD_UNKNOWN``) when the session is gone.
        """
        reply = await self._send("GET", location, [push_scope(repo)], ok=(200, 204), what=f"status of upload to {repo}")
        committed = parse_range_end(reply.headers.get("range"))
        if committed is None:
            raise RegistryError(f"status of upload to {repo}: no usable Range header")
        new_location = self._location(reply, "upload status") if reply.headers.get("location") else location
        return new_location, committed

    async def put_blob(
        self,
        repo: str,
        location: str,
        digest: str,
        size: int,
        body: AsyncIterator[bytes],
    ) -> None:
        """Monolithic upload: ``size`` bytes in one ``PUT <location>&digest=…``."""
        reply = await self._send(
            "PUT",
            append_query(location, digest=digest),
            [push_scope(repo)],
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
            ok=_SUCCESS,
            retry=False,
            what=f"upload {digest} to {repo}",
        )
        self._check_digest_header(reply, digest)

    async def patch_chunk(
        self, repo: str, location: str, digest: str, start: int, length: int, body: AsyncIterator[bytes]
    ) -> tuple[str, int | None]:
        """``PATCH`` bytes ``start``..``start+length-1``; the next ``Location`` and ``OCI-Chunk-Min-Length``."""
        reply = await self._send(
            "PATCH",
            location,
            [push_scope(repo)],
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{start}-{start + length - 1}",
            },
            content=body,
            ok=_SUCCESS,
            retry=False,
            what=f"upload chunk {start}-{start + length - 1} of {digest} to {repo}",
        )
        return self._location(reply, "chunk upload"), _chunk_min_length(reply)

    async def finish_upload(self, repo: str, location: str, digest: str) -> None:
        """Close a chunked upload with ``PUT <location>&digest=…``; any 2xx with the right digest is success."""
        reply = await self._send(
            "PUT",
            append_query(location, digest=digest),
            [push_scope(repo)],
            headers={"Content-Length": "0"},
            content=b"",
            ok=_SUCCESS,
            retry=False,
            what=f"finish upload of {digest} to {repo}",
        )
        self._check_digest_header(reply, digest)

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
        """Upload ``size`` bytes from ``stream`` as ``digest``: one PUT up to the threshold, else chunks.

        One pass over ``stream``, no resumption (:mod:`ecrcopy._upload` resumes chunked uploads).
        """
        minimum: int | None = None
        if location is None:
            location, minimum = await self.open_upload(repo)
        reader = StreamReader(stream)
        if size <= self.options.monolithic_threshold:
            await self.put_blob(repo, location, digest, size, counting(reader.take(size), on_progress))
            await reader.expect_end()
            return
        offset = 0
        while offset < size:
            n = min(chunk_length(self.options.chunk_size, minimum), size - offset)
            location, announced = await self.patch_chunk(
                repo, location, digest, offset, n, counting(reader.take(n), on_progress)
            )
            minimum = announced or minimum
            offset += n
        await reader.expect_end()
        await self.finish_upload(repo, location, digest)

    @staticmethod
    def _check_digest_header(reply: Reply, digest: str) -> None:
        echoed = reply.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise DigestMismatch(f"registry stored the blob as {clean_text(echoed, 140)}, expected {digest}")


def _keep_no_cookies(response: httpx.Response) -> None:
    """Stands in for ``httpx.Cookies.extract_cookies``: ``Set-Cookie`` is ignored."""


def chunk_length(configured: int, minimum: int | None) -> int:
    """The PATCH size: the configured chunk size, raised to the registry's ``OCI-Chunk-Min-Length``."""
    return max(configured, minimum or 0)


def _chunk_min_length(reply: Reply) -> int | None:
    value = reply.headers.get("oci-chunk-min-length")
    if value and _DIGITS.fullmatch(value) and len(value) <= 12:
        return min(int(value), MAX_BLOB_SIZE)
    return None


def _insufficient_scope(response: httpx.Response) -> bool:
    challenges = parse_www_authenticate(response.headers.get("www-authenticate", ""))
    return any(c.error == "insufficient_scope" for c in challenges)


def _detail(body: bytes) -> str:
    """`` CODE: message`` of an error body, cleaned (empty when the body says nothing)."""
    errors = parse_error_body(body)
    if not errors:
        return ""
    detail = f" {errors[0].code}" if errors[0].code else ""
    if errors[0].message:
        detail += f": {errors[0].message}"
    return detail


def _range_starts_at(response: httpx.Response, offset: int) -> bool:
    content_range = response.headers.get("content-range", "")
    unit, _, spec = content_range.partition(" ")
    start = spec.partition("-")[0]
    return unit.strip().lower() == "bytes" and bool(_DIGITS.fullmatch(start)) and int(start) == offset
