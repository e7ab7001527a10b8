"""Build and seed test images with plain synchronous httpx -- independent of ecrcopy's own code.

Everything here is deterministic: the same arguments give the same bytes and digests, so two
repositories can share base layers by passing the same :class:`Blob` objects (or the same seeds).
Manifests are serialized with a 3-space indent (as Docker does), which is *not* canonical JSON: a
copier that re-serializes manifests instead of copying bytes changes their digests and gets caught.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

import httpx

from ._registry import Registry, blob_data_path

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Auth",
    "Blob",
    "Image",
    "Index",
    "PushError",
    "corrupt_blob",
    "docker_image",
    "docker_manifest_list",
    "fetch_blob",
    "fetch_manifest",
    "list_tags",
    "oci_artifact",
    "oci_image",
    "oci_index",
    "push",
    "referrers_index",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

#: Every manifest type, so no registry converts what it serves.
ACCEPT_MANIFESTS = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ]
)

#: Credentials for the helpers: ``(user, password)`` (the helpers answer Basic and Bearer challenges
#: themselves, fetching a token from the realm), an :class:`httpx.Auth` used as-is, or ``None``.
Auth: TypeAlias = httpx.Auth | tuple[str, str] | None

_BLOCK = 1 << 20  # generated blobs are made of 1 MiB blocks
_SMALL = 4 << 20  # generated blobs up to this size keep their bytes in memory
_CREATED = "2024-01-01T00:00:00Z"


class PushError(RuntimeError):
    """A seeding request got an unexpected answer."""


# -- blobs -------------------------------------------------------------------------------------------


def _block(seed: int, index: int) -> bytes:
    return hashlib.shake_128(b"ecrcopy-testing:%d:%d" % (seed, index)).digest(_BLOCK)


def _generate(size: int, seed: int) -> Iterator[bytes]:
    full, rest = divmod(size, _BLOCK)
    for index in range(full):
        yield _block(seed, index)
    if rest:
        yield _block(seed, full)[:rest]


@functools.lru_cache(maxsize=256)
def _generated_digest(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for piece in _generate(size, seed):
        h.update(piece)
    return "sha256:" + h.hexdigest()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob: its bytes (``data``) or, for big generated blobs, a recipe (``seed``) to stream them.

    Build with :meth:`from_bytes` or :meth:`generated`; iterate with :meth:`chunks`.
    """

    data: bytes | None
    digest: str
    size: int
    media_type: str = OCI_LAYER
    seed: int | None = field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str = OCI_LAYER) -> Blob:
        """A blob holding ``data``."""
        return cls(data, _sha256(data), len(data), media_type)

    @classmethod
    def generated(cls, size: int, seed: int, media_type: str = OCI_LAYER) -> Blob:
        """``size`` deterministic pseudo-random bytes (SHAKE-128 of ``(seed, block)`` per 1 MiB block).

        Blobs up to 4 MiB keep their bytes in ``data``; bigger ones are never held in memory whole: the
        digest is computed by streaming once (cached per ``(size, seed)``) and :meth:`chunks` streams.
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        if size <= _SMALL:
            return cls.from_bytes(b"".join(_generate(size, seed)), media_type)
        return cls(None, _generated_digest(size, seed), size, media_type, seed)

    def chunks(self, chunk_size: int = _BLOCK) -> Iterator[bytes]:
        """The bytes in pieces of ``chunk_size`` (the last one may be shorter)."""
        if self.data is not None:
            for start in range(0, self.size, chunk_size):
                yield self.data[start : start + chunk_size]
            return
        assert self.seed is not None
        if chunk_size == _BLOCK:
            yield from _generate(self.size, self.seed)
            return
        buffer = bytearray()
        for piece in _generate(self.size, self.seed):
            buffer += piece
            while len(buffer) >= chunk_size:
                yield bytes(buffer[:chunk_size])
                del buffer[:chunk_size]
        if buffer:
            yield bytes(buffer)

    def read(self) -> bytes:
        """All bytes at once (fine for small blobs)."""
        return self.data if self.data is not None else b"".join(self.chunks())

    def with_media_type(self, media_type: str) -> Blob:
        """The same bytes with another media type."""
        return replace(self, media_type=media_type)

    def descriptor(self) -> dict[str, Any]:
        """``{"mediaType", "size", "digest"}``."""
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


# -- manifests ---------------------------------------------------------------------------------------


def _serialize(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, indent=3).encode()


class _Manifested:
    """What :class:`Image` and :class:`Index` derive from their exact manifest bytes."""

    __slots__ = ()
    raw: bytes
    digest: str
    media_type: str

    @property
    def size(self) -> int:
        """Length of the manifest bytes."""
        return len(self.raw)

    @property
    def manifest(self) -> dict[str, Any]:
        """The decoded manifest (the index, for an :class:`Index`)."""
        result: dict[str, Any] = json.loads(self.raw)
        return result

    def descriptor(self) -> dict[str, Any]:
        """``{"mediaType", "size", "digest"}`` of the manifest (the index, for an :class:`Index`)."""
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class Image(_Manifested):
    """A single-platform image: config + layers and the exact manifest bytes (``raw``)."""

    raw: bytes
    digest: str
    media_type: str
    config: Blob
    layers: tuple[Blob, ...]
    platform: dict[str, str]
    subject: Image | Index | None = None

    @property
    def blobs(self) -> list[Blob]:
        """Config first, then the layers."""
        return [self.config, *self.layers]


@dataclass(frozen=True, slots=True)
class Index(_Manifested):
    """A multi-platform image (OCI index or Docker manifest list) and its children."""

    raw: bytes
    digest: str
    media_type: str
    children: tuple[Image | Index, ...]
    subject: Image | Index | None = None

    @property
    def blobs(self) -> list[Blob]:
        """Every blob of every child, without duplicates, in push order."""
        seen: dict[str, Blob] = {}
        for child in self.children:
            for blob in child.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())


def _parse_platform(platform: str | Mapping[str, str]) -> dict[str, str]:
    if not isinstance(platform, str):
        return dict(platform)
    parts = platform.split("/")
    result = {"architecture": parts[1] if len(parts) > 1 else "amd64", "os": parts[0]}
    if len(parts) > 2:
        result["variant"] = parts[2]
    return result


def _layers(layers: Sequence[Blob | int], seed: int, media_type: str) -> tuple[Blob, ...]:
    result = []
    for position, layer in enumerate(layers):
        if isinstance(layer, Blob):
            result.append(layer)
        else:
            result.append(Blob.generated(layer, (seed << 16) + position, media_type))
    return tuple(result)


def _config_blob(
    layers: Sequence[Blob], platform: Mapping[str, str], seed: int, labels: Mapping[str, str] | None, media_type: str
) -> Blob:
    config: dict[str, Any] = {
        "architecture": platform["architecture"],
        "os": platform["os"],
        "created": _CREATED,
        "config": {"Labels": {"org.ecrcopy.test.seed": str(seed), **(labels or {})}},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": _CREATED, "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    if "variant" in platform:
        config["variant"] = platform["variant"]
    return Blob.from_bytes(json.dumps(config, separators=(",", ":"), sort_keys=True).encode(), media_type)


def docker_image(
    layers: Sequence[Blob | int] = (1024,),
    *,
    seed: int = 0,
    platform: str | Mapping[str, str] = "linux/amd64",
    labels: Mapping[str, str] | None = None,
) -> Image:
    """A Docker schema 2 image. ``layers`` are blobs or sizes (generated from ``seed``)."""
    plat = _parse_platform(platform)
    layer_blobs = _layers(layers, seed, DOCKER_LAYER)
    config = _config_blob(layer_blobs, plat, seed, labels, DOCKER_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layer_blobs],
    }
    raw = _serialize(manifest)
    return Image(raw, _sha256(raw), DOCKER_MANIFEST, config, layer_blobs, plat)


def oci_image(
    layers: Sequence[Blob | int] = (1024,),
    *,
    seed: int = 0,
    platform: str | Mapping[str, str] = "linux/amd64",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    config: Blob | None = None,
    artifact_type: str | None = None,
    subject: Image | Index | None = None,
) -> Image:
    """An OCI image manifest; ``subject``/``artifact_type`` make it an OCI 1.1 referrer."""
    plat = _parse_platform(platform)
    layer_blobs = _layers(layers, seed, OCI_LAYER)
    config_blob = config or _config_blob(layer_blobs, plat, seed, labels, OCI_CONFIG)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    manifest["config"] = config_blob.descriptor()
    manifest["layers"] = [layer.descriptor() for layer in layer_blobs]
    if subject is not None:
        manifest["subject"] = subject.descriptor()
    if annotations:
        manifest["annotations"] = dict(annotations)
    raw = _serialize(manifest)
    return Image(raw, _sha256(raw), OCI_MANIFEST, config_blob, layer_blobs, plat, subject)


def oci_artifact(
    subject: Image | Index,
    *,
    artifact_type: str = "application/vnd.example.signature.v1",
    payload: bytes = b"signed",
    annotations: Mapping[str, str] | None = None,
) -> Image:
    """An OCI 1.1 artifact (signature/SBOM-like) referring to ``subject``: empty config, one layer."""
    empty = Blob.from_bytes(b"{}", OCI_EMPTY)
    layer = Blob.from_bytes(payload, artifact_type)
    return oci_image(
        [layer],
        config=empty,
        artifact_type=artifact_type,
        subject=subject,
        annotations=annotations,
        platform="unknown/unknown",
    )


def _index(
    media_type: str,
    children: Sequence[Image | Index],
    platforms: Sequence[str | Mapping[str, str] | None] | None,
    annotations: Mapping[str, str] | None,
    subject: Image | Index | None = None,
    artifact_type: str | None = None,
) -> Index:
    if platforms is not None and len(platforms) != len(children):
        raise ValueError("platforms must match children one to one")
    entries = []
    for position, child in enumerate(children):
        entry = child.descriptor()
        plat = platforms[position] if platforms is not None else None
        if plat is not None:
            entry["platform"] = _parse_platform(plat)
        elif isinstance(child, Image):
            entry["platform"] = dict(child.platform)
        entries.append(entry)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    manifest["manifests"] = entries
    if subject is not None:
        manifest["subject"] = subject.descriptor()
    if annotations:
        manifest["annotations"] = dict(annotations)
    raw = _serialize(manifest)
    return Index(raw, _sha256(raw), media_type, tuple(children), subject)


def oci_index(
    images: Sequence[Image | Index],
    platforms: Sequence[str | Mapping[str, str] | None] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    subject: Image | Index | None = None,
    artifact_type: str | None = None,
) -> Index:
    """An OCI image index over ``images``; platforms default to each image's own."""
    return _index(OCI_INDEX, images, platforms, annotations, subject, artifact_type)


def referrer_descriptor(raw: bytes, media_type: str) -> dict[str, Any]:
    """A referrer's descriptor as the referrers API and the tag schema list it: ``mediaType``, ``size``,
    ``digest``, ``artifactType`` (the manifest's, else its config's media type) and ``annotations``."""
    body = json.loads(raw)
    entry: dict[str, Any] = {"mediaType": media_type, "size": len(raw), "digest": _sha256(raw)}
    config = body.get("config")
    artifact_type = body.get("artifactType") or (config.get("mediaType") if isinstance(config, dict) else None)
    if artifact_type:
        entry["artifactType"] = artifact_type
    if isinstance(body.get("annotations"), dict) and body["annotations"]:
        entry["annotations"] = body["annotations"]
    return entry


def referrers_index(referrers: Sequence[Image | Index]) -> Index:
    """The referrers tag schema's index (tag it ``sha256-<hex of the subject>``): one
    :func:`referrer_descriptor` per referrer."""
    entries = [referrer_descriptor(referrer.raw, referrer.media_type) for referrer in referrers]
    raw = _serialize({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return Index(raw, _sha256(raw), OCI_INDEX, tuple(referrers))


def docker_manifest_list(
    images: Sequence[Image],
    platforms: Sequence[str | Mapping[str, str] | None] | None = None,
) -> Index:
    """A Docker manifest list over ``images`` (use :func:`docker_image` children)."""
    return _index(DOCKER_MANIFEST_LIST, images, platforms, None)


# -- HTTP helpers ------------------------------------------------------------------------------------


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), {m[1].lower(): m[2] for m in re.finditer(r'([A-Za-z_]+)="([^"]*)"', rest)}


class _Session:
    """Minimal auth handling: Basic, or Bearer fetched from the challenge's realm, retried on 401."""

    def __init__(self, client: httpx.Client, registry_url: str, repo: str, auth: Auth, actions: str) -> None:
        self.client = client
        self.base = registry_url.rstrip("/")
        self.repo = repo
        self.actions = actions
        self.httpx_auth = auth if isinstance(auth, httpx.Auth) else None
        self.credentials = auth if isinstance(auth, tuple) else None
        self.authorization: str | None = None

    def url(self, suffix: str) -> str:
        return f"{self.base}/v2/{self.repo}/{suffix}"

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: Any = None,
        content_factory: Any = None,
    ) -> httpx.Response:
        response: httpx.Response | None = None
        for _attempt in range(3):
            sent = dict(headers or {})
            if self.authorization is not None:
                sent["Authorization"] = self.authorization
            body = content_factory() if content_factory is not None else content
            if self.httpx_auth is not None:
                response = self.client.request(method, url, headers=sent, content=body, auth=self.httpx_auth)
            else:
                response = self.client.request(method, url, headers=sent, content=body)
            if response.status_code != 401 or self.httpx_auth is not None:
                return response
            if not self._authenticate(response.headers.get("WWW-Authenticate", ""), sent):
                return response
        assert response is not None
        return response

    def _authenticate(self, header: str, sent: Mapping[str, str]) -> bool:
        scheme, params = _challenge(header)
        if scheme == "basic":
            if self.credentials is None:
                return False
            value = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if sent.get("Authorization") == value:
                return False
            self.authorization = value
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        query: list[tuple[str, str | int | float | bool | None]] = []
        if "service" in params:
            query.append(("service", params["service"]))
        query.append(("scope", f"repository:{self.repo}:{self.actions}"))
        response = self.client.get(params["realm"], params=query, auth=self.credentials or httpx.USE_CLIENT_DEFAULT)
        if response.status_code != 200:
            raise PushError(f"token request to {params['realm']} failed: {response.status_code} {response.text}")
        payload = response.json()
        token = payload.get("token") or payload.get("access_token")
        if not token:
            raise PushError(f"token response without a token: {payload!r}")
        self.authorization = f"Bearer {token}"
        return True


@contextmanager
def _client_for(client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0)) as own:
        yield own


def _check(response: httpx.Response, expected: Sequence[int], what: str) -> None:
    if response.status_code not in expected:
        raise PushError(f"{what}: HTTP {response.status_code} {response.text[:500]}")


def _push_blob(session: _Session, blob: Blob, pushed: set[str]) -> None:
    if blob.digest in pushed:
        return
    head = session.request("HEAD", session.url(f"blobs/{blob.digest}"))
    if head.status_code in (200, 307):  # 307: the registry redirects blob reads to storage
        pushed.add(blob.digest)
        return
    start = session.request("POST", session.url("blobs/uploads/"), headers={"Content-Length": "0"})
    _check(start, (202,), f"start upload of {blob.digest}")
    location = str(start.url.join(start.headers["Location"]))
    target = location + ("&" if "?" in location else "?") + "digest=" + blob.digest
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
    if blob.data is not None:
        done = session.request("PUT", target, headers=headers, content=blob.data)
    else:
        done = session.request("PUT", target, headers=headers, content_factory=blob.chunks)
    _check(done, (201,), f"finish upload of {blob.digest}")
    pushed.add(blob.digest)


def _push_manifest(session: _Session, obj: Image | Index, ref: str) -> None:
    response = session.request(
        "PUT",
        session.url(f"manifests/{ref}"),
        headers={"Content-Type": obj.media_type},
        content=obj.raw,
    )
    _check(response, (201,), f"put manifest {ref}")
    echoed = response.headers.get("Docker-Content-Digest")
    if echoed is not None and echoed != obj.digest:
        raise PushError(f"registry computed {echoed} for manifest {obj.digest}")


def _push_tree(session: _Session, obj: Image | Index, ref: str, pushed: set[str]) -> None:
    if isinstance(obj, Image):
        for blob in obj.blobs:
            _push_blob(session, blob, pushed)
    else:
        for child in obj.children:
            if child.digest not in pushed:
                _push_tree(session, child, child.digest, pushed)
    _push_manifest(session, obj, ref)
    pushed.add(obj.digest)


def push(
    registry_url: str,
    repo: str,
    obj: Image | Index,
    tag: str | None = None,
    *,
    auth: Auth = None,
    client: httpx.Client | None = None,
) -> str:
    """Push an image or index to ``registry_url`` (``http://host:port``) as ``repo[:tag]``.

    Blobs go first (``HEAD`` skips ones present -- 200, or 307 under a redirecting registry; then a
    monolithic ``POST`` + ``PUT <Location>&digest=``, streamed for generated blobs, relative Locations
    resolved), then child manifests by digest, then the top manifest by ``tag`` (by digest when ``tag``
    is None). ``auth=(user, password)`` answers Basic challenges and fetches Bearer tokens with scope
    ``repository:<repo>:pull,push`` (refetched on a later 401). The subject of a referrer is *not*
    pushed. Returns the manifest digest.
    """
    with _client_for(client) as http:
        session = _Session(http, registry_url, repo, auth, "pull,push")
        _push_tree(session, obj, tag or obj.digest, set())
    return obj.digest


def fetch_manifest(
    registry_url: str,
    repo: str,
    ref: str,
    *,
    auth: Auth = None,
    client: httpx.Client | None = None,
) -> tuple[bytes, str, str]:
    """``GET`` a manifest with the full Accept list: ``(raw bytes, media type, sha256 of the bytes)``.

    Raises :class:`PushError` on anything but 200 and when a by-digest fetch returns other bytes.
    """
    with _client_for(client) as http:
        session = _Session(http, registry_url, repo, auth, "pull")
        response = session.request("GET", session.url(f"manifests/{ref}"), headers={"Accept": ACCEPT_MANIFESTS})
    _check(response, (200,), f"get manifest {repo}:{ref}")
    raw = response.content
    digest = _sha256(raw)
    if ref.startswith("sha256:") and digest != ref:
        raise PushError(f"manifest {ref} served with digest {digest}")
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    return raw, media_type, digest


def fetch_blob(
    registry_url: str,
    repo: str,
    digest: str,
    *,
    auth: Auth = None,
    client: httpx.Client | None = None,
) -> bytes:
    """``GET`` a blob's bytes (following a redirect *without* credentials). Not verified."""
    with _client_for(client) as http:
        session = _Session(http, registry_url, repo, auth, "pull")
        response = session.request("GET", session.url(f"blobs/{digest}"))
        if response.status_code in (301, 302, 303, 307, 308):
            response = http.get(str(response.url.join(response.headers["Location"])))
    _check(response, (200,), f"get blob {repo}@{digest}")
    return response.content


def list_tags(
    registry_url: str,
    repo: str,
    *,
    auth: Auth = None,
    client: httpx.Client | None = None,
    page_size: int | None = None,
) -> list[str]:
    """All tags of ``repo`` (following ``Link: <...>; rel="next"``); ``[]`` when the repo is unknown."""
    tags: list[str] = []
    with _client_for(client) as http:
        session = _Session(http, registry_url, repo, auth, "pull")
        url = session.url("tags/list") + (f"?n={page_size}" if page_size else "")
        while True:
            response = session.request("GET", url)
            if response.status_code == 404:
                return tags
            _check(response, (200,), f"list tags of {repo}")
            tags.extend(response.json().get("tags") or [])
            link = response.headers.get("Link")
            match = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", link or "")
            if match is None:
                return tags
            url = str(response.url.join(match[1]))


def corrupt_blob(registry: Registry | Path, digest: str, *, offset: int = 0, length: int = 64) -> Path:
    """Flip ``length`` bytes (XOR 0xFF) of a stored blob from ``offset`` on, keeping its size.

    ``registry`` is a :class:`Registry` or a storage root. distribution 2.8 does not re-hash blobs on
    read: it keeps serving the corrupted bytes with the original ``Docker-Content-Digest`` and
    ``Content-Length``, so only a client that verifies digests notices. Returns the file's path.
    """
    data_dir = registry.data_dir if isinstance(registry, Registry) else Path(registry)
    path = blob_data_path(data_dir, digest)
    size = path.stat().st_size
    if size == 0:
        raise ValueError("cannot corrupt an empty blob")
    start = min(offset, size - 1)
    count = max(1, min(length, size - start))
    with open(path, "r+b") as fh:
        fh.seek(start)
        original = fh.read(count)
        fh.seek(start)
        fh.write(bytes(b ^ 0xFF for b in original))
    return path
