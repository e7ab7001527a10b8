"""A hostile source registry: a proxy in front of a real registry that lies for chosen repositories.

:class:`HostileRegistry` forwards every request to a real :class:`~ecrcopy.testing.Registry` (good images
pushed there, through the proxy or directly, are served normally), except requests for repositories
installed with :meth:`HostileRegistry.add`, which it answers itself with one of the :class:`Scenario`
catalogue's crafted answers. A client under test points at :attr:`HostileRegistry.url` for both.

Every scenario serves a manifest reference under tag ``latest`` (plus the digests it refers to, and
sometimes extra tags for variants); all content is deterministic (fixed seeds, no clock, no
randomness). What a scenario serves is also returned as a :class:`HostileRepository` record.

================================  ==================================================================
Scenario                          ``latest`` (and other tags)
================================  ==================================================================
``CYCLE``                         index A lists child digest D; ``GET D`` answers an index listing A's
                                  digest -- bytes that do not hash to D (a lying registry)
``SELF_CYCLE``                    an index whose ``Docker-Content-Digest`` claims D and that lists D;
                                  ``GET D`` answers the same bytes (which do not hash to D)
``NON_DIGEST_CHILD``              an index whose children's ``digest`` are ``latest``,
                                  ``../../../etc/passwd``, ``sha256:XYZ``, upper-case hex and ``""``;
                                  tags ``bad-1`` .. ``bad-5``: one such child each
``UNKNOWN_ALGORITHM``             an image whose layers are ``md5:<32 hex>``, ``sha384:<96 hex>`` and
                                  ``sha256+b64:<base64url>`` (the blobs are served, with content that
                                  matches those digests); tags ``md5``, ``sha384``, ``sha256-b64``: one each
``MISLABELLED_ALGORITHM``         an image whose layer digest says ``sha512:`` but whose hex is the
                                  content's sha256 padded with 64 zeros
``DEEP_NESTING``                  40 levels of real, content-addressed indexes (each lists the next by
                                  its true digest); the last lists a real image (blobs served)
``ENDLESS_MANIFEST``              200, OCI manifest type, a JSON prefix then endless spaces,
                                  close-delimited (also for ``GET`` by the advertised digest)
``ENDLESS_MANIFEST_HUGE_LENGTH``  the same with ``Content-Length: 2**50``
``ENDLESS_MANIFEST_CHUNKED``      the same, chunked
``ENDLESS_BLOB``                  a valid image whose layer ``GET`` sends the layer, then endless bytes
                                  (chunked)
``ENDLESS_ERROR``                 ``latest``: 500 with an endless JSON error (chunked); ``not-found``: 404
                                  with an endless text body (close-delimited); ``blob-error``: a valid
                                  image whose layer ``GET`` is a 404 with an endless JSON error
``BAD_COMPRESSION``               a valid image whose layer is served with ``Content-Encoding: gzip``
                                  (the bytes are the true layer, not gzip)
``BAD_COMPRESSION_MANIFEST``      the manifest is served with ``Content-Encoding: gzip`` (true bytes,
                                  not gzip); blobs served normally
``HOSTILE_ERROR_TEXT``            error bodies full of ANSI/OSC escapes, CR/LF, NUL, C0/C1 controls,
                                  ``]]>`` ``<`` ``&``, a fake ``Authorization: Bearer`` and 100 KiB of
                                  text: ``latest`` 404 JSON, ``e400`` text, ``e403`` JSON, ``e500`` JSON,
                                  ``e502`` HTML; ``blob-error``: a valid image whose layer is a 404
``ENDLESS_PAGINATION``            ``tags/list`` answers ``n`` new tags and a ``Link`` to the next page,
                                  forever (no URL repeats); ``latest`` is a valid image
``HUGE_TAG_PAGE``                 ``tags/list`` is one streamed page of a million tags, no ``Link``
``HOSTILE_HEADERS``               ``latest``: a valid image whose ``Docker-Content-Digest`` is garbage;
                                  ``negative-length``: ``Content-Length: -1``; ``auth-garbage``: 401 with
                                  a garbage ``WWW-Authenticate``; ``redirect``: a valid image whose layer
                                  ``GET`` is a 307 whose ``Location`` attempts CR/LF header injection
================================  ==================================================================

Around the scenarios:

* With ``users`` (taken from an htpasswd :class:`~ecrcopy.testing.Registry` by default) hostile
  repositories require the same Basic credentials as the real registry (401 ``Basic
  realm="ecrcopy-test"`` otherwise).
* ``tags/list`` of a hostile repository lists its tags (unless the scenario says otherwise); unknown
  manifests and blobs answer 404 ``MANIFEST_UNKNOWN`` / ``BLOB_UNKNOWN``; writes answer 405
  ``UNSUPPORTED``; ``Range`` is ignored (200 with the whole body). Hostile repositories are not in
  ``/v2/_catalog``.
* The ``HOSTILE_HEADERS`` redirect points at ``redirect_origin`` (default: this proxy), path
  ``/_hostile/<name>/blobs/<digest>`` followed by the injection attempt; this proxy serves the layer
  there and, like S3, refuses a request carrying ``Authorization`` (400, counted in
  :attr:`HostileRegistry.credential_leaks`).
* The proxy's own ``hook`` (e.g. a :class:`~ecrcopy.testing.FaultInjector`) is consulted first, for
  hostile and forwarded requests alike.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from ._blobserver import S3_AUTH_CONFLICT
from ._faults import Fault, ProxyHook
from ._httpserver import CHUNK
from ._images import OCI_INDEX, OCI_MANIFEST, Blob, Image, Index, oci_image, oci_index
from ._messages import ProxyRequest, ProxyResponse
from ._proxy import Proxy
from ._registry import Registry

__all__ = [
    "DEEP_NESTING_LEVELS",
    "FAKE_BEARER",
    "HOSTILE_TEXT",
    "HOSTILE_TEXT_LARGE",
    "HUGE_TAG_COUNT",
    "HostileRegistry",
    "HostileRepository",
    "Scenario",
]

_NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_API = {"Docker-Distribution-API-Version": "registry/2.0"}
_JSON = {"Content-Type": "application/json; charset=utf-8"}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REDIRECT_PATH = re.compile(r"^/_hostile/(?P<name>.+)/blobs/(?P<digest>[A-Za-z0-9+._-]+:[A-Za-z0-9=_-]+)")

#: Number of levels of index in ``DEEP_NESTING`` (the image comes below the last).
DEEP_NESTING_LEVELS = 40
#: Number of tags in the one ``HUGE_TAG_PAGE`` page (``latest`` included).
HUGE_TAG_COUNT = 1_000_000
#: A JWT-looking bearer token planted in hostile error text (tests may check it is not echoed as a header).
FAKE_BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJob3N0aWxlLXJlZ2lzdHJ5In0.ZmFrZS1zaWduYXR1cmUtZm9yLXRlc3Rz"
#: The hostile snippet of every ``HOSTILE_ERROR_TEXT`` answer.
HOSTILE_TEXT = (
    "\x1b[31mred\x1b[0m \x1b]0;pwned-title\x07 \x1b[2J\x1b[H cleared "
    "line1\r\nline2\rover\nFake-Header: injected \x00nul \x08\x08backspace \x7fdel \x9b31m c1-csi \x85nel "
    "]]><![CDATA[ </message><error>&amp; & <script>alert(1)</script> "
    f"Authorization: Bearer {FAKE_BEARER} "
)
#: :data:`HOSTILE_TEXT` repeated to 100 KiB.
HOSTILE_TEXT_LARGE = (HOSTILE_TEXT * (100 * 1024 // len(HOSTILE_TEXT) + 1))[: 100 * 1024]
_HOSTILE_BYTES = HOSTILE_TEXT.encode() + b"\x9b\xff\xfe not utf-8 "


class Scenario(enum.StrEnum):
    """The hostile answers :class:`HostileRegistry` can serve for a repository (see the module docs)."""

    CYCLE = "cycle"
    SELF_CYCLE = "self-cycle"
    NON_DIGEST_CHILD = "non-digest-child"
    UNKNOWN_ALGORITHM = "unknown-algorithm"
    MISLABELLED_ALGORITHM = "mislabelled-algorithm"
    DEEP_NESTING = "deep-nesting"
    ENDLESS_MANIFEST = "endless-manifest"
    ENDLESS_MANIFEST_HUGE_LENGTH = "endless-manifest-huge-length"
    ENDLESS_MANIFEST_CHUNKED = "endless-manifest-chunked"
    ENDLESS_BLOB = "endless-blob"
    ENDLESS_ERROR = "endless-error"
    BAD_COMPRESSION = "bad-compression"
    BAD_COMPRESSION_MANIFEST = "bad-compression-manifest"
    HOSTILE_ERROR_TEXT = "hostile-error-text"
    ENDLESS_PAGINATION = "endless-pagination"
    HUGE_TAG_PAGE = "huge-tag-page"
    HOSTILE_HEADERS = "hostile-headers"


_DESCRIPTIONS: dict[Scenario, str] = {
    Scenario.CYCLE: "index lists child D; GET D answers an index listing the first one (bytes not hashing to D)",
    Scenario.SELF_CYCLE: "index claims digest D and lists D; GET D answers the same bytes (not hashing to D)",
    Scenario.NON_DIGEST_CHILD: "index children with digests 'latest', '../../../etc/passwd', 'sha256:XYZ', "
    "upper-case hex, ''",
    Scenario.UNKNOWN_ALGORITHM: "image layers with md5:, sha384: and sha256+b64: digests",
    Scenario.MISLABELLED_ALGORITHM: "layer digest labelled sha512: whose hex is the content's sha256 padded",
    Scenario.DEEP_NESTING: f"{DEEP_NESTING_LEVELS} levels of real nested indexes above a real image",
    Scenario.ENDLESS_MANIFEST: "manifest GET: JSON prefix then endless whitespace, close-delimited",
    Scenario.ENDLESS_MANIFEST_HUGE_LENGTH: "manifest GET: endless body with Content-Length 2**50",
    Scenario.ENDLESS_MANIFEST_CHUNKED: "manifest GET: endless chunked body",
    Scenario.ENDLESS_BLOB: "valid image whose layer GET never ends (chunked)",
    Scenario.ENDLESS_ERROR: "500/404 answers (manifest, blob) whose error body never ends",
    Scenario.BAD_COMPRESSION: "layer served with Content-Encoding: gzip of non-gzip bytes",
    Scenario.BAD_COMPRESSION_MANIFEST: "manifest served with Content-Encoding: gzip of non-gzip bytes",
    Scenario.HOSTILE_ERROR_TEXT: "4xx/5xx bodies with escapes, controls, XML breakers, a fake bearer, 100 KiB",
    Scenario.ENDLESS_PAGINATION: "tags/list pages with a new Link: rel=next forever",
    Scenario.HUGE_TAG_PAGE: f"tags/list: one streamed page of {HUGE_TAG_COUNT:,} tags",
    Scenario.HOSTILE_HEADERS: "garbage Docker-Content-Digest, Content-Length -1, garbage WWW-Authenticate, "
    "CR/LF in a redirect Location",
}


@dataclass(frozen=True, slots=True)
class HostileRepository:
    """What a :class:`HostileRegistry` serves for one repository.

    ``manifests`` and ``blobs`` map every reference served (tags and digests; blob digests, including
    the non-sha256 ones) to the exact bytes of a 200 answer, or ``None`` when the answer is endless, an
    error or a redirect. ``tags`` is what ``tags/list`` reports, sorted (for the paginating scenarios:
    the first 100 tags).
    """

    name: str
    scenario: Scenario
    tags: tuple[str, ...]
    manifests: Mapping[str, bytes | None]
    blobs: Mapping[str, bytes | None]

    @property
    def description(self) -> str:
        """The scenario's one-line description."""
        return _DESCRIPTIONS[self.scenario]


_Answer = Callable[[ProxyRequest], ProxyResponse]


@dataclass(slots=True)
class _Route:
    name: str
    scenario: Scenario
    tags: list[str] = field(default_factory=list)
    manifests: dict[str, _Answer] = field(default_factory=dict)
    blobs: dict[str, _Answer] = field(default_factory=dict)
    manifest_bytes: dict[str, bytes | None] = field(default_factory=dict)
    blob_bytes: dict[str, bytes | None] = field(default_factory=dict)
    redirect_blobs: dict[str, bytes] = field(default_factory=dict)
    tags_list: _Answer | None = None

    def record(self) -> HostileRepository:
        tags = tuple(sorted(self.tags))
        return HostileRepository(self.name, self.scenario, tags, dict(self.manifest_bytes), dict(self.blob_bytes))

    # -- building ------------------------------------------------------------------------------------

    def manifest(self, refs: list[str], response: ProxyResponse, *, tags: list[str] | None = None) -> None:
        """Serve ``response`` for each ref; refs that are not digests are tags."""
        content = response.body if response.stream is None and response.status == 200 else None
        for ref in refs:
            self.manifests[ref] = _static(response)
            self.manifest_bytes[ref] = content
            if ":" not in ref and ref not in self.tags:
                self.tags.append(ref)
        for tag in tags or []:
            if tag not in self.tags:
                self.tags.append(tag)

    def blob(self, digest: str, response: ProxyResponse | _Answer, content: bytes | None = None) -> None:
        self.blobs[digest] = response if callable(response) else _static(response)
        if content is None and isinstance(response, ProxyResponse) and response.stream is None:
            content = response.body if response.status == 200 else None
        self.blob_bytes[digest] = content

    def image(self, image: Image, refs: list[str], *, layer: Callable[[Blob], ProxyResponse] | None = None) -> None:
        """Serve ``image`` (manifest at ``refs`` and by digest, config and layers) normally."""
        self.manifest([*refs, image.digest], _manifest(image.raw, image.media_type))
        self.blob(image.config.digest, _blob(image.config.read(), image.config.digest))
        for blob in image.layers:
            if layer is not None:
                self.blob(blob.digest, layer(blob))
            else:
                self.blob(blob.digest, _blob(blob.read(), blob.digest))


def _static(response: ProxyResponse) -> _Answer:
    return lambda _req: response


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fake_digest(label: str) -> str:
    return _sha256(b"ecrcopy-hostile:" + label.encode())


def _serialize(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, indent=3).encode()


def _manifest(raw: bytes, media_type: str, digest: str | None = None, **extra: str) -> ProxyResponse:
    headers = {"Content-Type": media_type, "Docker-Content-Digest": digest or _sha256(raw), **_API}
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return ProxyResponse(200, headers, raw)


def _blob(data: bytes, digest: str, **extra: str) -> ProxyResponse:
    headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest, **_API}
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return ProxyResponse(200, headers, data)


def _error(status: int, code: str, message: str, detail: Any = None) -> ProxyResponse:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()
    return ProxyResponse(status, {**_JSON, **_API}, body)


def _endless(piece: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: itertools.repeat(piece)


def _index_raw(children: list[dict[str, Any]]) -> bytes:
    return _serialize({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})


def _child(digest: str, size: int, media_type: str = OCI_INDEX) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _small_image(seed: int, size: int = 2048) -> Image:
    return oci_image([size], seed=seed, labels={"org.ecrcopy.test.hostile": str(seed)})


# -- the scenarios -----------------------------------------------------------------------------------


def _cycle(route: _Route) -> None:
    d = _fake_digest("cycle-child")
    size_a = size_b = 0
    for _ in range(5):  # sizes appear in each other's bytes: iterate to the fixed point
        raw_b = _index_raw([_child("sha256:" + "0" * 64, size_a)])
        raw_a = _index_raw([_child(d, len(raw_b))])
        if (len(raw_a), len(raw_b)) == (size_a, size_b):
            break
        size_a, size_b = len(raw_a), len(raw_b)
    raw_b = _index_raw([_child(_sha256(raw_a), len(raw_a))])
    route.manifest(["latest", _sha256(raw_a)], _manifest(raw_a, OCI_INDEX))
    route.manifest([d], _manifest(raw_b, OCI_INDEX, d))


def _self_cycle(route: _Route) -> None:
    d = _fake_digest("self-cycle")
    size = 0
    for _ in range(5):
        raw = _index_raw([_child(d, size)])
        if len(raw) == size:
            break
        size = len(raw)
    route.manifest(["latest", d], _manifest(raw, OCI_INDEX, d))


_NON_DIGESTS = ["latest", "../../../etc/passwd", "sha256:XYZ", "sha256:" + "ABCDEF0123456789" * 4, ""]


def _non_digest_child(route: _Route) -> None:
    children = [_child(bad, 512, OCI_MANIFEST) for bad in _NON_DIGESTS]
    route.manifest(["latest"], _manifest(_index_raw(children), OCI_INDEX))
    for number, child in enumerate(children, 1):
        route.manifest([f"bad-{number}"], _manifest(_index_raw([child]), OCI_INDEX))


def _unknown_algorithm(route: _Route) -> None:
    md5_data, sha384_data, b64_data = (b"ecrcopy hostile layer: " + kind for kind in (b"md5", b"sha384", b"b64"))
    layers = {
        "md5": Blob(md5_data, "md5:" + hashlib.md5(md5_data, usedforsecurity=False).hexdigest(), len(md5_data)),
        "sha384": Blob(sha384_data, "sha384:" + hashlib.sha384(sha384_data).hexdigest(), len(sha384_data)),
        "sha256-b64": Blob(
            b64_data,
            "sha256+b64:" + base64.urlsafe_b64encode(hashlib.sha256(b64_data).digest()).decode(),
            len(b64_data),
        ),
    }
    route.image(oci_image(list(layers.values()), seed=7101), ["latest"])
    for number, (tag, layer) in enumerate(layers.items()):
        route.image(oci_image([layer], seed=7110 + number), [tag])


def _mislabelled_algorithm(route: _Route) -> None:
    data = b"ecrcopy hostile layer: labelled sha512, hashed sha256"
    layer = Blob(data, "sha512:" + hashlib.sha256(data).hexdigest() + "0" * 64, len(data))
    route.image(oci_image([layer], seed=7201), ["latest"])


def _deep_nesting(route: _Route) -> None:
    image = _small_image(7301)
    route.image(image, [])
    current: Image | Index = image
    for _ in range(DEEP_NESTING_LEVELS):
        current = oci_index([current])
        route.manifest([current.digest], _manifest(current.raw, OCI_INDEX))
    route.manifest(["latest"], _manifest(current.raw, OCI_INDEX))


_MANIFEST_PREFIX = b'{\n   "schemaVersion": 2,\n   "mediaType": "' + OCI_MANIFEST.encode() + b'",\n   "config": '


def _endless_manifest(route: _Route, framing: str) -> None:
    d = _fake_digest("endless-manifest-" + framing)
    headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": d, **_API}
    if framing == "close":
        headers["Connection"] = "close"
    elif framing == "length":
        headers["Content-Length"] = str(1 << 50)
    filler = (b" " * 63 + b"\n") * (CHUNK // 64)
    route.manifest(["latest", d], ProxyResponse(200, headers, _MANIFEST_PREFIX, _endless(filler)))


def _block(label: str) -> bytes:
    return hashlib.shake_128(b"ecrcopy-hostile:" + label.encode()).digest(CHUNK)


def _endless_blob(route: _Route) -> None:
    def endless(blob: Blob) -> ProxyResponse:
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": blob.digest, **_API}
        return ProxyResponse(200, headers, blob.read(), _endless(_block("endless-blob")))

    route.image(_small_image(7401, 4096), ["latest"], layer=endless)


def _endless_error(route: _Route) -> None:
    json_prefix = b'{"errors":[{"code":"UNKNOWN","message":"'
    route.manifest(["latest"], ProxyResponse(500, {**_JSON, **_API}, json_prefix, _endless(b"A" * CHUNK)))
    text = {"Content-Type": "text/plain", "Connection": "close", **_API}
    route.manifest(["not-found"], ProxyResponse(404, text, b"manifest unknown: ", _endless(b"N" * CHUNK)))

    def endless_404(blob: Blob) -> ProxyResponse:
        prefix = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"'
        return ProxyResponse(404, {**_JSON, **_API}, prefix, _endless(b"B" * CHUNK))

    route.image(_small_image(7501), ["blob-error"], layer=endless_404)


def _bad_compression(route: _Route) -> None:
    def gzip_labelled(blob: Blob) -> ProxyResponse:
        return _blob(blob.read(), blob.digest, Content_Encoding="gzip")

    route.image(_small_image(7601), ["latest"], layer=gzip_labelled)


def _bad_compression_manifest(route: _Route) -> None:
    image = _small_image(7701)
    route.image(image, [])
    route.manifest(["latest", image.digest], _manifest(image.raw, image.media_type, Content_Encoding="gzip"))


def _hostile_error_text(route: _Route) -> None:
    route.manifest(["latest"], _error(404, "MANIFEST_UNKNOWN", HOSTILE_TEXT, HOSTILE_TEXT_LARGE))
    route.manifest(["e400"], ProxyResponse(400, {"Content-Type": "text/plain", **_API}, _HOSTILE_BYTES))
    route.manifest(["e403"], _error(403, "DENIED", HOSTILE_TEXT, {"reason": HOSTILE_TEXT}))
    route.manifest(["e500"], _error(500, "UNKNOWN", HOSTILE_TEXT_LARGE, HOSTILE_TEXT))
    large = (_HOSTILE_BYTES * (100 * 1024 // len(_HOSTILE_BYTES) + 1))[: 100 * 1024]
    page = b"<html><body><h1>502 Bad Gateway</h1><pre>" + large + b"</pre></body></html>"
    route.manifest(["e502"], ProxyResponse(502, {"Content-Type": "text/html", **_API}, page))
    route.image(
        _small_image(7801), ["blob-error"], layer=lambda _blob: _error(404, "BLOB_UNKNOWN", HOSTILE_TEXT, HOSTILE_TEXT)
    )


def _endless_pagination(route: _Route) -> None:
    route.image(_small_image(7901), ["latest"])
    name = route.name

    def page(req: ProxyRequest) -> ProxyResponse:
        params = parse_qs(req.query)
        try:
            n = int(params.get("n", ["100"])[-1])
        except ValueError:
            n = 100
        n = n if 1 <= n <= 1000 else 100
        last = params.get("last", [""])[-1]
        match = re.fullmatch(r"t-(\d{12})", last)
        tags: list[str] = []
        start = int(match[1]) + 1 if match else 1
        if match is None and last != "latest":
            tags.append("latest")
        while len(tags) < n:
            tags.append(f"t-{start:012d}")
            start += 1
        body = json.dumps({"name": name, "tags": tags}).encode()
        link = f'</v2/{name}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
        return ProxyResponse(200, {**_JSON, **_API, "Link": link}, body)

    route.tags_list = page
    route.tags = ["latest", *(f"t-{i:012d}" for i in range(1, 100))]


def _huge_tag_page(route: _Route) -> None:
    route.image(_small_image(8001), ["latest"])
    head = b'{"name":' + json.dumps(route.name).encode() + b',"tags":["latest"'

    def pieces() -> Iterator[bytes]:
        yield head
        for start in range(1, HUGE_TAG_COUNT, 10_000):
            stop = min(start + 10_000, HUGE_TAG_COUNT)
            yield b"".join(b',"t-%012d"' % i for i in range(start, stop))
        yield b"]}"

    response = ProxyResponse(200, {**_JSON, **_API}, b"", pieces)
    route.tags_list = _static(response)
    route.tags = ["latest", *(f"t-{i:012d}" for i in range(1, 100))]


#: The garbage ``Docker-Content-Digest`` of ``HOSTILE_HEADERS``.
_GARBAGE_DIGEST = "sha256:../../../etc/passwd;<script>zz</script> , sha256:"
_GARBAGE_CHALLENGE = 'Bearer realm=,,service=="\\"",scope, error="\\" Basic realm Negotiate ==, Bearer realm="'


def _hostile_headers(route: _Route, origin: Callable[[], str]) -> None:
    image = _small_image(8101)
    route.image(image, [])
    garbage = _manifest(image.raw, image.media_type, _GARBAGE_DIGEST)
    route.manifest(["latest", image.digest], garbage)
    negative = {"Content-Type": image.media_type, "Content-Length": "-1", "Docker-Content-Digest": image.digest}
    route.manifest(["negative-length"], ProxyResponse(200, {**negative, **_API}, image.raw, lambda: iter(())))
    challenge = {"WWW-Authenticate": _GARBAGE_CHALLENGE, **_JSON, **_API}
    body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}).encode()
    route.manifest(["auth-garbage"], ProxyResponse(401, challenge, body))
    redirected = _small_image(8102)
    name = route.name

    def redirect(blob: Blob) -> _Answer:
        def answer(_req: ProxyRequest) -> ProxyResponse:
            location = (
                f"{origin()}/_hostile/{name}/blobs/{blob.digest}%0D%0AX-Injected:%20percent-encoded"
                "\r\nX-Injected: raw-crlf"
            )
            return ProxyResponse(307, {"Location": location, "Content-Type": "text/html", **_API}, b"")

        return answer

    route.manifest(["redirect", redirected.digest], _manifest(redirected.raw, redirected.media_type))
    route.blob(redirected.config.digest, _blob(redirected.config.read(), redirected.config.digest))
    for layer in redirected.layers:
        route.blob(layer.digest, redirect(layer))
        route.redirect_blobs[layer.digest] = layer.read()


class HostileRegistry(Proxy):
    """A :class:`~ecrcopy.testing.Proxy` in front of a real registry that lies for chosen repositories.

    ``upstream`` is a started :class:`~ecrcopy.testing.Registry` (its htpasswd users become ``users``
    unless given) or its ``http://host:port``. :meth:`add` installs a :class:`Scenario` for a
    repository name; everything else is forwarded. ``hook``, ``record_headers``, :attr:`requests` and
    :attr:`captured` are the proxy's. See the module documentation for the catalogue.
    """

    def __init__(
        self,
        upstream: str | Registry,
        *,
        users: Mapping[str, str] | None = None,
        redirect_origin: str | None = None,
        hook: ProxyHook | None = None,
        record_headers: bool = False,
    ) -> None:
        if isinstance(upstream, Registry):
            if not upstream.running:
                raise ValueError("HostileRegistry needs a started Registry")
            if users is None and upstream.htpasswd is not None:
                users = upstream.htpasswd
            url = upstream.url
        else:
            url = upstream
        super().__init__(url, hook=hook, record_headers=record_headers)
        self.users = dict(users) if users is not None else None
        self.redirect_origin = redirect_origin.rstrip("/") if redirect_origin is not None else None
        self._routes: dict[str, _Route] = {}
        self._routes_lock = threading.Lock()
        self._credential_leaks = 0

    @staticmethod
    def scenarios() -> dict[Scenario, str]:
        """Every scenario with a one-line description."""
        return dict(_DESCRIPTIONS)

    @property
    def repositories(self) -> dict[str, HostileRepository]:
        """The hostile repositories installed so far."""
        with self._routes_lock:
            return {name: route.record() for name, route in self._routes.items()}

    @property
    def credential_leaks(self) -> int:
        """Requests to the ``HOSTILE_HEADERS`` redirect target that carried ``Authorization``."""
        with self._routes_lock:
            return self._credential_leaks

    def _origin(self) -> str:
        return self.redirect_origin if self.redirect_origin is not None else self.url

    def add(self, name: str, scenario: Scenario) -> HostileRepository:
        """Answer requests for repository ``name`` with ``scenario`` (replacing what was there)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a repository name: {name!r}")
        route = _Route(name, Scenario(scenario))
        builders: dict[Scenario, Callable[[_Route], None]] = {
            Scenario.CYCLE: _cycle,
            Scenario.SELF_CYCLE: _self_cycle,
            Scenario.NON_DIGEST_CHILD: _non_digest_child,
            Scenario.UNKNOWN_ALGORITHM: _unknown_algorithm,
            Scenario.MISLABELLED_ALGORITHM: _mislabelled_algorithm,
            Scenario.DEEP_NESTING: _deep_nesting,
            Scenario.ENDLESS_MANIFEST: lambda r: _endless_manifest(r, "close"),
            Scenario.ENDLESS_MANIFEST_HUGE_LENGTH: lambda r: _endless_manifest(r, "length"),
            Scenario.ENDLESS_MANIFEST_CHUNKED: lambda r: _endless_manifest(r, "chunked"),
            Scenario.ENDLESS_BLOB: _endless_blob,
            Scenario.ENDLESS_ERROR: _endless_error,
            Scenario.BAD_COMPRESSION: _bad_compression,
            Scenario.BAD_COMPRESSION_MANIFEST: _bad_compression_manifest,
            Scenario.HOSTILE_ERROR_TEXT: _hostile_error_text,
            Scenario.ENDLESS_PAGINATION: _endless_pagination,
            Scenario.HUGE_TAG_PAGE: _huge_tag_page,
            Scenario.HOSTILE_HEADERS: lambda r: _hostile_headers(r, self._origin),
        }
        builders[route.scenario](route)
        with self._routes_lock:
            self._routes[name] = route
        return route.record()

    def add_all(self, prefix: str = "hostile/") -> dict[Scenario, HostileRepository]:
        """Install every scenario at ``<prefix><scenario value>`` (e.g. ``hostile/cycle``)."""
        return {scenario: self.add(prefix + scenario.value, scenario) for scenario in Scenario}

    def remove(self, name: str) -> None:
        """Forward requests for ``name`` to the real registry again."""
        with self._routes_lock:
            self._routes.pop(name, None)

    # -- dispatch ------------------------------------------------------------------------------------

    def _dispatch(self, req: ProxyRequest) -> ProxyResponse | Fault | None:
        answer = super()._dispatch(req)
        if answer is not None:
            return answer
        if req.path.startswith("/_hostile/"):
            return self._redirect_target(req)
        if not req.path.startswith("/v2/"):
            return None
        with self._routes_lock:
            routes = sorted(self._routes.values(), key=lambda r: -len(r.name))
        for route in routes:
            prefix = f"/v2/{route.name}/"
            if req.path.startswith(prefix):
                hostile = self._answer(route, req, req.path[len(prefix) :])
                if hostile is not None:
                    return hostile
        return None

    def _authorized(self, req: ProxyRequest) -> bool:
        if self.users is None:
            return True
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and self.users.get(user) == password

    def _answer(self, route: _Route, req: ProxyRequest, rest: str) -> ProxyResponse | None:
        kind, _, ref = rest.partition("/")
        if kind not in ("manifests", "blobs", "tags") or (kind == "tags" and ref != "list") or not ref:
            return None
        if kind != "blobs" and "/" in ref:
            return None
        if not self._authorized(req):
            challenge = {"WWW-Authenticate": 'Basic realm="ecrcopy-test"', **_API}
            return ProxyResponse.error(401, "UNAUTHORIZED", "authentication required", challenge)
        if req.method in _WRITES or ref.startswith("uploads"):
            return _error(405, "UNSUPPORTED", "this repository is read-only")
        ref = unquote(ref)
        if kind == "tags":
            if route.tags_list is not None:
                return route.tags_list(req)
            listing = {"name": route.name, "tags": sorted(route.tags)}
            return ProxyResponse(200, {**_JSON, **_API}, json.dumps(listing).encode())
        table = route.manifests if kind == "manifests" else route.blobs
        answer = table.get(ref)
        if answer is not None:
            return answer(req)
        if kind == "manifests":
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag" if ":" not in ref else "Digest": ref})
        return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", ref)

    def _redirect_target(self, req: ProxyRequest) -> ProxyResponse | None:
        match = _REDIRECT_PATH.match(req.path)
        if match is None:
            return None
        with self._routes_lock:
            route = self._routes.get(match["name"])
            data = route.redirect_blobs.get(match["digest"]) if route is not None else None
            if data is not None and "authorization" in req.headers:
                self._credential_leaks += 1
        xml = {"Content-Type": "application/xml"}
        if data is None:
            return ProxyResponse(404, xml, b"<Error><Code>NoSuchKey</Code></Error>")
        if "authorization" in req.headers:
            return ProxyResponse(400, xml, S3_AUTH_CONFLICT)
        return ProxyResponse(200, {"Content-Type": "application/octet-stream"}, data)
