"""A local Amazon ECR: moto's ECR control plane behind an ECR-like front, plus a real registry data plane.

Control plane: moto's ``ThreadedMotoServer`` (in this process) behind a small front server
(:attr:`EcrEmulator.api_url`) that checks the SigV4 credential scope, answers
``GetAuthorizationToken`` itself, paginates ``DescribeRepositories``/``DescribeImages``/``ListImages``
like ECR (moto does not), applies ``DescribeImages``'s ``filter.tagStatus`` (moto ignores it) and fixes
the image details moto gets wrong (``imageSizeInBytes``, ``artifactMediaType``, ``subjectManifestDigest``).

Data plane: a :class:`~ecrcopy.testing.Registry` (no auth of its own, blob GETs redirected with 307 to a
:class:`~ecrcopy.testing.BlobServer` standing in for S3) behind a :class:`~ecrcopy.testing.Proxy` whose
hook accepts only ``Authorization: Basic base64("AWS:<password>")`` with an unexpired password issued by
``GetAuthorizationToken`` (:attr:`EcrEmulator.data_url`).

moto keeps its state in process-global backends keyed by account and region: two emulators running at
the same time in one process must use different ``account_id``/``region`` pairs (enforced). The
emulator's backend is reset on start and on stop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar, Self, cast
from urllib.parse import parse_qs, unquote

import httpx

from ._blobserver import BlobServer
from ._faults import Fault, ProxyHook
from ._httpserver import BackgroundHTTPServer, QuietHandler
from ._images import Image, Index, push, referrer_descriptor
from ._proxy import Proxy, ProxyRequest, ProxyResponse
from ._registry import Registry
from ._service import RequestLog, ServiceGroup, http_url, loopback_host

__all__ = ["EcrEmulator"]

logger = logging.getLogger("ecrcopy.testing")

_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
_JSON = "application/x-amz-json-1.1"
#: Requests carrying this header (the emulator's own seeding client) are not recorded in ``calls``.
_SEED_HEADER = "X-Ecrcopy-Testing-Seed"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
_OCI_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_NAME_LIMITED = re.compile(r"^/v2/(_catalog|.+/tags/list)$")
_MANIFEST_PATH = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_REFERRERS_PATH = re.compile(r"^/v2/(?P<repo>.+)/referrers/(?P<digest>[^/]+)$")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

#: action -> (list key in the response, default page size)
_PAGINATED = {
    "DescribeRepositories": ("repositories", 100),
    "DescribeImages": ("imageDetails", 100),
    "ListImages": ("imageIds", 100),
}


class _AwsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _invalid_parameter(message: str) -> _AwsError:
    return _AwsError(400, "InvalidParameterException", message)


@dataclass(frozen=True, slots=True)
class _ImageMeta:
    size: int
    artifact_media_type: str | None
    subject: str | None


def _moto_backend(account_id: str, region: str) -> Any:
    from moto.backends import get_backend

    return get_backend("ecr")[account_id][region]


class EcrEmulator(ServiceGroup):
    """A local Amazon ECR (control plane + data plane) on 127.0.0.1. Context manager or start()/stop().

    Files live in ``workdir/registry`` (the data-plane registry: config, storage, logs).

    Control plane (:attr:`api_url`, point boto3's ``endpoint_url`` / ``AWS_ENDPOINT_URL_ECR`` at it):

    * every request's action (``X-Amz-Target``) is appended to :attr:`calls` -- also requests later
      refused for their credentials; the emulator's own seeding requests are not recorded;
    * the ``Authorization`` header's credential scope must name ``access_key_id`` (else 400
      ``UnrecognizedClientException``), the emulator's region (else 400 ``InvalidSignatureException``
      "Credential should be scoped to a valid region") and service ``ecr``; with ``verify_signatures``
      (default) the SigV4 signature is recomputed with ``secret_access_key`` (mismatch -> 400
      ``InvalidSignatureException`` "The request signature we calculated does not match ...");
      no ``Authorization`` -> 400 ``MissingAuthenticationTokenException``;
    * ``GetAuthorizationToken`` is answered by the front: a fresh random password per call,
      ``authorizationToken`` = base64 ``AWS:<password>``, ``expiresAt`` = now + ``token_lifetime``,
      ``proxyEndpoint`` = :attr:`data_url`;
    * ``DescribeRepositories``, ``DescribeImages`` (without ``imageIds``) and ``ListImages`` are paginated
      by the front: ``maxResults`` (default 100, 1..1000 else ``InvalidParameterException``), opaque
      ``nextToken``. ``DescribeImages`` honours ``filter.tagStatus`` and ``filter.imageStatus`` (default
      ``ACTIVE``; see :meth:`archive_image`), with ``imageStatus`` and ``lastArchivedAt``, and reports
      ``imageSizeInBytes`` as ECR does (config + layers; an index: its largest child),
      ``artifactMediaType`` and ``subjectManifestDigest``;
    * everything else goes to moto unchanged.

    Data plane (:attr:`data_url`): only ``Authorization: Basic base64("AWS:<password>")`` with a live
    password passes; otherwise 401 with ECR's ``Basic realm="https://<registry_host>/",
    service="ecr.amazonaws.com"`` challenge (counted in :attr:`rejected_auth`). ``/v2/_catalog`` and
    ``tags/list`` with ``n > 1000`` answer 400. Blob GETs/HEADs answer 307 to :attr:`blob_server`, which
    refuses any ``Authorization`` header like S3 does.

    Referrers API (``referrers_api``, default on, as ECR has served it since June 2024): ``GET
    /v2/<name>/referrers/<digest>`` answers an OCI image index listing every image of that repository
    whose manifest's ``subject`` is ``digest`` (sorted by digest): ``mediaType``, ``digest``, ``size``,
    ``artifactType`` (the manifest's, else its config's media type) and ``annotations``. An unknown
    subject gets an empty list, a malformed digest 400 ``DIGEST_INVALID``, an unknown repository 404
    ``NAME_UNKNOWN``. ``?artifactType=T`` filters and sets ``OCI-Filters-Applied: artifactType``.
    With ``referrers_page_size`` the list comes in pages of that many, each but the last with a
    ``Link: <…>; rel="next"`` header. With ``referrers_api=False`` the request goes to the data-plane
    registry, which has no such route (404), like a registry without the API.

    Faults: ``data_faults`` (a hook such as :class:`~ecrcopy.testing.FaultInjector`, whose counters show
    what it did) is consulted by the data-plane proxy before the ECR credential check (a wire fault,
    which forwards the request, is applied only when the credential check passes), and also by a
    second :class:`~ecrcopy.testing.Proxy` put in front of the blob server (:attr:`blob_proxy`): the
    registry's redirects then point at that proxy (:attr:`blob_url`), so redirected blob downloads can
    be cut, stalled or refused too (the proxy forwards ``Authorization``, which the blob server still
    refuses). Without ``data_faults`` redirects go straight to the blob server. The
    :class:`~ecrcopy.testing.FaultInjector` default predicate selects both kinds of request. The
    attribute ``data_faults`` is read on every data-plane request (it may be swapped while running);
    the blob proxy's hook is ``blob_proxy.hook``.

    Seeding: :meth:`create_repository`, :meth:`add_image` (data plane + moto), and the metadata-only
    :meth:`register_only` / :meth:`add_many` (fast; those images cannot be pulled).
    """

    _active: ClassVar[set[tuple[str, str]]] = set()
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        workdir: Path,
        *,
        account_id: str = "123456789012",
        region: str = "eu-west-1",
        token_lifetime: float = 43200.0,
        access_key_id: str = "AKIDECRCOPYTEST",
        secret_access_key: str = "ecrcopy-test-secret",  # noqa: S107 - a fake credential
        verify_signatures: bool = True,
        data_faults: ProxyHook | None = None,
        referrers_api: bool = True,
        referrers_page_size: int | None = None,
    ) -> None:
        if not re.fullmatch(r"\d{12}", account_id):
            raise ValueError(f"account_id must be 12 digits, got {account_id!r}")
        super().__init__()
        self.workdir = Path(workdir)
        self.account_id = account_id
        self.region = region
        self.token_lifetime = token_lifetime
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.verify_signatures = verify_signatures
        self.data_faults = data_faults
        if referrers_page_size is not None and referrers_page_size < 1:
            raise ValueError(f"referrers_page_size must be at least 1, got {referrers_page_size}")
        self.referrers_api = referrers_api
        self.referrers_page_size = referrers_page_size
        self._lock = threading.Lock()
        self._calls: RequestLog[str] = RequestLog()
        self._passwords: dict[str, float] = {}
        self._rejected_auth = 0
        self._meta: dict[str, _ImageMeta] = {}
        #: (repository, digest) -> (imageStatus, lastArchivedAt) for images not ACTIVE
        self._status: dict[tuple[str, str], tuple[str, float]] = {}
        #: (repository, tag or digest) of images not ACTIVE: their manifests answer 404 on the data plane
        self._unpullable: set[tuple[str, str]] = set()
        self._last_pushed_at = 0.0
        self._clients: list[Any] = []
        self._seed_client: Any = None
        self._blob_server: BlobServer | None = None
        self._blob_proxy: Proxy | None = None
        self._registry: Registry | None = None
        self._gate: Proxy | None = None
        self._moto: Any = None
        self._moto_port: int | None = None
        self._front: _EcrFront | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the blob server (and its fault proxy), the data-plane registry and gate, moto and the front."""
        return super().start()

    def _start_parts(self, stack: contextlib.ExitStack) -> None:
        key = (self.account_id, self.region)
        with self._active_lock:
            if key in self._active:
                raise RuntimeError(f"another EcrEmulator for account {key[0]} in {key[1]} is running in this process")
            self._active.add(key)
        stack.callback(self._release, key)
        registry_dir = self.workdir / "registry"
        self._blob_server = stack.enter_context(BlobServer(Registry.data_dir_for(registry_dir)))
        redirect = self._blob_server.url
        if self.data_faults is not None:
            self._blob_proxy = stack.enter_context(Proxy(self._blob_server.url, hook=self.data_faults))
            redirect = self._blob_proxy.url
        self._registry = stack.enter_context(Registry(registry_dir, redirect_blobs_to=redirect))
        self._gate = stack.enter_context(Proxy(self._registry.url, hook=self._data_hook))
        self._start_moto(stack)
        self._reset_backend()
        stack.callback(self._reset_backend)
        self._front = stack.enter_context(_EcrFront(self))
        stack.callback(self._close_clients)

    def _start_moto(self, stack: contextlib.ExitStack) -> None:
        server = _make_moto_server()
        server.start()
        error = server.start_error
        if error is not None:
            raise RuntimeError(f"could not start the moto server: {error}") from error
        self._moto = server
        self._moto_port = int(server.get_host_and_port()[1])
        stack.callback(self._stop_moto)

    def _stop_moto(self) -> None:
        server, self._moto = self._moto, None
        if server is not None:
            server.stop()

    def _release(self, key: tuple[str, str]) -> None:
        with self._active_lock:
            self._active.discard(key)

    def _reset_backend(self) -> None:
        _moto_backend(self.account_id, self.region).reset()
        with self._lock:
            self._meta.clear()

    def _close_clients(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._seed_client = None

    def _forget_parts(self) -> None:
        self._blob_server = self._blob_proxy = self._registry = self._gate = self._front = None
        self._moto = self._moto_port = None
        self._seed_client = None

    def stop(self) -> None:
        """Stop everything (front, moto, gate, registry, blob proxy and server) and reset moto's state."""
        super().stop()

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the control-plane front (boto3 ``endpoint_url``)."""
        return self._require(self._front, "api_url").url

    @property
    def data_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the data plane (the ECR-like gate); also the ``proxyEndpoint``."""
        return self._require(self._gate, "data_url").url

    @property
    def data_host(self) -> str:
        """``127.0.0.1:PORT`` of the data plane."""
        return self._require(self._gate, "data_host").host

    @property
    def registry_host(self) -> str:
        """The real ECR registry name ``<account>.dkr.ecr.<region>.amazonaws.com`` (for display)."""
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com"

    @property
    def data_registry(self) -> Registry:
        """The data-plane registry (its access log shows what reached it through the gate)."""
        return self._require(self._registry, "data_registry")

    @property
    def data_proxy(self) -> Proxy:
        """The data-plane gate (its ``requests`` show every request with the status the client got)."""
        return self._require(self._gate, "data_proxy")

    @property
    def blob_server(self) -> BlobServer:
        """The S3 stand-in that blob GETs are redirected to (through :attr:`blob_proxy` when there is one)."""
        return self._require(self._blob_server, "blob_server")

    @property
    def blob_proxy(self) -> Proxy | None:
        """The fault proxy in front of :attr:`blob_server` (``None`` without ``data_faults``)."""
        return self._blob_proxy

    @property
    def blob_url(self) -> str:
        """``http://127.0.0.1:PORT`` that blob redirects point at (the blob proxy's, else the blob server's)."""
        proxy = self._blob_proxy
        return proxy.url if proxy is not None else self.blob_server.url

    @property
    def moto_url(self) -> str:
        """Direct URL of the moto server (bypasses the front: no pagination, no checks)."""
        return http_url(loopback_host(self._require(self._moto_port, "moto_url")))

    # -- records -------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[str]:
        """Control-plane actions requested so far (e.g. ``["GetAuthorizationToken", "DescribeImages"]``)."""
        return self._calls.snapshot()

    def reset_calls(self) -> None:
        """Forget :attr:`calls`."""
        self._calls.clear()

    @property
    def rejected_auth(self) -> int:
        """How many data-plane requests got 401 (no, malformed, unknown or expired credentials)."""
        with self._lock:
            return self._rejected_auth

    @property
    def issued_passwords(self) -> dict[str, float]:
        """Every password issued by ``GetAuthorizationToken`` and its expiry (epoch seconds)."""
        with self._lock:
            return dict(self._passwords)

    def expire_passwords(self) -> None:
        """Make every issued data-plane password expire now (simulates 12 h passing)."""
        now = time.time()
        with self._lock:
            for password in self._passwords:
                self._passwords[password] = min(self._passwords[password], now)

    def issue_password(self, lifetime: float | None = None) -> tuple[str, float]:
        """Issue a data-plane password without an API call: ``(password, expires_at)``."""
        password = secrets.token_urlsafe(96)
        expires_at = time.time() + (self.token_lifetime if lifetime is None else lifetime)
        with self._lock:
            self._passwords[password] = expires_at
        return password, expires_at

    # -- client configuration ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment variables a client needs to reach this ECR (and nothing outside 127.0.0.1)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCOUNT_ID": self.account_id,
            "AWS_ENDPOINT_URL_ECR": self.api_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "ECRCOPY_SOURCE_REGISTRY_URL": self.data_url,
        }

    def boto3_client(self, *, access_key_id: str | None = None, region: str | None = None) -> Any:
        """A boto3 ECR client for :attr:`api_url` with the emulator's credentials (or the ones given).

        Clients are closed by :meth:`stop` (closing one earlier is fine). No retries, so refused
        requests fail at once.
        """
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=region or self.region,
        )
        client = session.client(
            "ecr",
            endpoint_url=self.api_url,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=60),
        )
        with self._lock:
            self._clients.append(client)
        return client

    def _seeder(self) -> Any:
        if self._seed_client is None:
            client = self.boto3_client()

            def mark(request: Any, **_: Any) -> None:
                request.headers[_SEED_HEADER] = "1"

            client.meta.events.register("before-sign.ecr.*", mark)
            self._seed_client = client
        return self._seed_client

    # -- seeding -------------------------------------------------------------------------------------

    def create_repository(self, name: str) -> None:
        """Create a repository (``CreateRepository`` through the front; not recorded in :attr:`calls`)."""
        self._require(self._front, "create_repository")
        self._seeder().create_repository(repositoryName=name)

    def _ensure_repository(self, name: str) -> None:
        if name not in _moto_backend(self.account_id, self.region).repositories:
            self.create_repository(name)

    def add_image(
        self,
        repo: str,
        obj: Image | Index,
        tags: Sequence[str] = (),
        *,
        pushed_at: datetime | float | None = None,
    ) -> str:
        """Push ``obj`` to the data plane and register it in moto as ``repo`` with ``tags``; its digest.

        The repository is created when missing. The data-plane push goes straight to
        :attr:`data_registry` (bypassing the gate, so it is not in :attr:`data_proxy`'s log). Then
        ``PutImage`` registers the exact manifest bytes once per tag (untagged when ``tags`` is empty);
        an index's children (recursively) are registered as untagged images too, as ECR lists them.

        Tags that are not valid OCI tags (longer than 128 characters or with other characters -- ECR
        allows up to 300 of any kind) are registered in moto only: they can be listed but not pulled by
        tag. When no tag is a valid OCI tag the manifest is pushed by digest.

        ``pushed_at`` (aware ``datetime`` or epoch seconds) sets ``imagePushedAt`` for the image and its
        children; by default "now" (millisecond precision, strictly increasing across calls so "newest"
        is well defined) for images new to ``repo`` -- re-adding a known image (e.g. with another tag)
        keeps its date unless ``pushed_at`` is given.
        """
        registry = self.data_registry
        self._ensure_repository(repo)
        oci_tags = [tag for tag in tags if _OCI_TAG.fullmatch(tag)]
        with httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0)) as client:
            refs: list[str | None] = [*oci_tags] or [None]
            for tag in refs:
                push(registry.url, repo, obj, tag, client=client)
        when = self._pushed_at(pushed_at)
        self._register_tree(repo, obj, list(tags), when, pushed_at is not None)
        return obj.digest

    def _pushed_at(self, pushed_at: datetime | float | None) -> float:
        if isinstance(pushed_at, datetime):
            return pushed_at.timestamp()
        if pushed_at is not None:
            return float(pushed_at)
        with self._lock:
            when = max(round(time.time(), 3), round(self._last_pushed_at + 0.001, 3))
            self._last_pushed_at = when
        return when

    def _register_tree(self, repo: str, obj: Image | Index, tags: list[str], when: float, force: bool) -> None:
        if isinstance(obj, Index):
            for child in obj.children:
                self._register_tree(repo, child, [], when, force)
        self._register(repo, obj.raw, obj.media_type, obj.digest, tags, when, force)

    def _register(
        self, repo: str, raw: bytes, media_type: str, digest: str, tags: list[str], when: float, force: bool
    ) -> None:
        """PutImage per new tag; sets imagePushedAt for a new image (or any image when ``force``)."""
        self._remember(digest, raw)
        backend = _moto_backend(self.account_id, self.region)
        existing = self._find(backend, repo, digest)
        manifest = raw.decode("utf-8")
        client = self._seeder()
        if existing is None and not tags:
            client.put_image(
                repositoryName=repo,
                imageManifest=manifest,
                imageManifestMediaType=media_type,
                imageDigest=digest,
            )
        for tag in tags:
            if existing is not None and tag in existing.image_tags:
                continue
            repository = backend.repositories[repo]
            previous = next(
                (i for i in repository.images if tag in i.image_tags and i.get_image_digest() != digest), None
            )
            client.put_image(
                repositoryName=repo,
                imageManifest=manifest,
                imageManifestMediaType=media_type,
                imageDigest=digest,
                imageTag=tag,
            )
            if previous is not None and previous not in repository.images:
                # moto deletes an image whose last tag moves elsewhere; ECR keeps it, untagged.
                previous.image_tags = []
                previous.image_tag = None
                repository.images.append(previous)
        image = self._find(backend, repo, digest)
        if image is not None and (existing is None or force):
            image.image_pushed_at = when

    @staticmethod
    def _find(backend: Any, repo: str, digest: str) -> Any:
        repository = backend.repositories.get(repo)
        if repository is None:
            return None
        for image in repository.images:
            if image.get_image_digest() == digest:
                return image
        return None

    def _remember(self, digest: str, raw: bytes) -> None:
        try:
            manifest = json.loads(raw)
        except ValueError:
            return
        if not isinstance(manifest, dict):
            return
        subject = manifest.get("subject")
        subject_digest = subject.get("digest") if isinstance(subject, dict) else None
        artifact_type = manifest.get("artifactType")
        if isinstance(manifest.get("manifests"), list):
            with self._lock:
                sizes = [
                    self._meta[entry["digest"]].size
                    for entry in manifest["manifests"]
                    if isinstance(entry, dict) and entry.get("digest") in self._meta
                ]
            meta = _ImageMeta(max(sizes, default=0), artifact_type, subject_digest)
        else:
            config = manifest.get("config") or {}
            layers = manifest.get("layers") or []
            size = int(config.get("size", 0)) + sum(int(layer.get("size", 0)) for layer in layers)
            meta = _ImageMeta(size, artifact_type or config.get("mediaType"), subject_digest)
        with self._lock:
            self._meta[digest] = meta

    def set_pushed_at(self, repo: str, digest: str, pushed_at: datetime | float) -> None:
        """Change an image's ``imagePushedAt``."""
        image = self._find(_moto_backend(self.account_id, self.region), repo, digest)
        if image is None:
            raise KeyError(f"{repo}@{digest} is not registered")
        image.image_pushed_at = self._pushed_at(pushed_at)

    def register_only(
        self,
        repo: str,
        obj: Image | Index | bytes,
        tags: Sequence[str] = (),
        *,
        media_type: str | None = None,
        pushed_at: datetime | float | None = None,
    ) -> str:
        """Register a manifest in moto only (metadata; nothing in the data plane, so it cannot be pulled).

        ``obj`` is an :class:`Image`/:class:`Index` (its children are *not* registered) or raw manifest
        bytes (``media_type`` defaults to the manifest's ``mediaType``). Talks to moto's backend
        in-process: thousands per second. Creates the repository when missing. Returns the digest.
        """
        if isinstance(obj, bytes):
            raw = obj
            mt = media_type or str(json.loads(raw).get("mediaType") or "")
            if not mt:
                raise ValueError("media_type is required for a manifest without mediaType")
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        else:
            raw, mt, digest = obj.raw, media_type or obj.media_type, obj.digest
        self._bulk_register(repo, [(raw, mt, digest, list(tags), self._pushed_at(pushed_at))])
        return digest

    def _bulk_register(self, repo: str, entries: list[tuple[bytes, str, str, list[str], float]]) -> None:
        from moto.ecr.models import Image as MotoImage

        self._require(self._front, "register_only")
        backend = _moto_backend(self.account_id, self.region)
        if repo not in backend.repositories:
            backend.create_repository(repo, None, None, None, "MUTABLE", [])
        repository = backend.repositories[repo]
        by_digest = {image.get_image_digest(): image for image in repository.images}
        tag_owner = {tag: image for image in repository.images for tag in image.image_tags}
        for raw, media_type, digest, tags, when in entries:
            self._remember(digest, raw)
            image = by_digest.get(digest)
            if image is None:
                first: Any = tags[0] if tags else None  # moto's Image takes None for "untagged"
                image = MotoImage(self.account_id, first, raw.decode(), repo, media_type, digest)
                repository.images.append(image)
                by_digest[digest] = image
            for tag in tags:
                owner = tag_owner.get(tag)
                if owner is not None and owner is not image:
                    owner.remove_tag(tag)
                    if not owner.image_tags:
                        owner.image_tag = None
                image.update_tag(tag)
                tag_owner[tag] = image
            image.image_pushed_at = when

    def add_many(
        self,
        repo_count: int,
        images_per_repo: int,
        *,
        prefix: str = "bulk",
        layer_size: int = 1 << 20,
    ) -> list[str]:
        """Create ``repo_count`` repositories ``<prefix>-0000``... with ``images_per_repo`` images each.

        Metadata only (see :meth:`register_only`): distinct synthetic OCI manifests whose blobs exist
        nowhere, tagged ``v0``, ``v1``, ... Fast: ~1,100 images and 120 repositories in well under a
        second. Returns the repository names.
        """
        names = []
        for r in range(repo_count):
            name = f"{prefix}-{r:04d}"
            entries = []
            base = self._pushed_at(None)
            for i in range(images_per_repo):
                raw = _synthetic_manifest(name, i, layer_size)
                digest = "sha256:" + hashlib.sha256(raw).hexdigest()
                entries.append((raw, _OCI_MANIFEST, digest, [f"v{i}"], round(base + i * 0.001, 3)))
            if images_per_repo:
                with self._lock:
                    self._last_pushed_at = max(self._last_pushed_at, entries[-1][4])
            self._bulk_register(name, entries)
            names.append(name)
        return names

    # -- control plane -------------------------------------------------------------------------------

    def _record_call(self, action: str) -> None:
        self._calls.append(action)

    def _check_credentials(self, headers: dict[str, str], body: bytes) -> None:
        authorization = _header(headers, "Authorization")
        if not authorization:
            raise _AwsError(400, "MissingAuthenticationTokenException", "Missing Authentication Token")
        match = _CREDENTIAL.search(authorization)
        if match is None:
            raise _AwsError(
                400,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential' parameter. Authorization header requires "
                "'Signature' parameter. Authorization header requires 'SignedHeaders' parameter.",
            )
        access_key, _date, region, service = match.groups()
        if access_key != self.access_key_id:
            raise _AwsError(
                400, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        if region != self.region:
            raise _AwsError(
                400, "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'. "
            )
        if service != "ecr":
            raise _AwsError(400, "InvalidSignatureException", "Credential should be scoped to correct service: 'ecr'. ")
        if self.verify_signatures and not _signature_matches(
            authorization, headers, body, self.access_key_id, self.secret_access_key, self.region
        ):
            raise _AwsError(
                400,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.",
            )

    def _authorization_token(self) -> dict[str, Any]:
        password, expires_at = self.issue_password()
        token = base64.b64encode(f"AWS:{password}".encode()).decode("ascii")
        return {
            "authorizationData": [
                {"authorizationToken": token, "expiresAt": round(expires_at, 3), "proxyEndpoint": self.data_url}
            ]
        }

    def _moto_call(self, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._moto_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self._moto_port, timeout=120)
        try:
            conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"127.0.0.1:{self._moto_port}")
            for name, value in headers.items():
                if name.lower() not in ("host", "content-length", "connection", "transfer-encoding", "expect"):
                    conn.putheader(name, value)
            conn.putheader("x-moto-account-id", self.account_id)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def _paginate(
        self, action: str, headers: dict[str, str], request: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        key, default_size = _PAGINATED[action]
        size = request.pop("maxResults", None)
        token = request.pop("nextToken", None)
        if size is None:
            size = default_size
        elif not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 1000:
            raise _invalid_parameter(
                "Invalid parameter at 'maxResults' failed to satisfy constraint: "
                "'Member must have value less than or equal to 1000'"
            )
        scope = f"{action}:{request.get('repositoryName', '')}"
        offset = _decode_token(token, scope) if token is not None else 0
        status, resp_headers, data = self._moto_call(headers, json.dumps(request).encode())
        if status != 200:
            return status, resp_headers, data
        payload = json.loads(data)
        items = list(payload.get(key) or [])
        if action == "DescribeImages":
            items = self._fix_details(items, request.get("filter") or {})
        page = items[offset : offset + size]
        payload[key] = page
        payload.pop("nextToken", None)
        if offset + size < len(items):
            payload["nextToken"] = _encode_token(offset + size, scope)
        return 200, resp_headers, json.dumps(payload).encode()

    def _fix_details(self, details: list[dict[str, Any]], filters: dict[str, Any]) -> list[dict[str, Any]]:
        tag_status = filters.get("tagStatus", "ANY")
        image_status = filters.get("imageStatus", "ACTIVE")
        result = []
        for detail in details:
            tagged = bool(detail.get("imageTags"))
            if (tag_status == "TAGGED" and not tagged) or (tag_status == "UNTAGGED" and tagged):
                continue
            with self._lock:
                status, archived_at = self._status.get(
                    (str(detail.get("repositoryName")), str(detail.get("imageDigest"))), ("ACTIVE", 0.0)
                )
            if image_status != "ANY" and status != image_status:
                continue
            detail["imageStatus"] = status
            if status != "ACTIVE":
                detail["lastArchivedAt"] = archived_at
            result.append(self._fix_detail(detail))
        return result

    # -- archive storage class -----------------------------------------------------------------------

    def archive_image(self, repo: str, digest: str, at: float | None = None) -> None:
        """Move an image to the archive storage class: listed only with ``filter.imageStatus`` ARCHIVED or
        ANY (``imageStatus``, ``lastArchivedAt``), and its manifest answers 404 on the data plane."""
        self._set_status(repo, digest, "ARCHIVED", time.time() if at is None else at)

    def set_activating(self, repo: str, digest: str) -> None:
        """An archived image being restored (``ACTIVATING``): still not pullable."""
        with self._lock:
            archived_at = self._status.get((repo, digest), ("", time.time()))[1]
        self._set_status(repo, digest, "ACTIVATING", archived_at)

    def restore_image(self, repo: str, digest: str) -> None:
        """Back to ``ACTIVE``: listed by default and pullable again."""
        tags = self._tags_of(repo, digest)
        with self._lock:
            self._status.pop((repo, digest), None)
            for ref in (digest, *tags):
                self._unpullable.discard((repo, ref))

    def _set_status(self, repo: str, digest: str, status: str, archived_at: float) -> None:
        tags = self._tags_of(repo, digest)
        with self._lock:
            self._status[(repo, digest)] = (status, archived_at)
            self._unpullable.update((repo, ref) for ref in (digest, *tags))

    def _tags_of(self, repo: str, digest: str) -> list[str]:
        reply = self._seeder().describe_images(repositoryName=repo, imageIds=[{"imageDigest": digest}])
        return [t for d in reply.get("imageDetails", []) for t in d.get("imageTags") or []]

    def _fix_detail(self, detail: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            meta = self._meta.get(str(detail.get("imageDigest")))
        if meta is not None:
            detail["imageSizeInBytes"] = meta.size
            if meta.artifact_media_type:
                detail["artifactMediaType"] = meta.artifact_media_type
            if meta.subject:
                detail["subjectManifestDigest"] = meta.subject
        if detail.get("imageSizeInBytes") is None:
            detail.pop("imageSizeInBytes", None)
        return detail

    def _api(self, action: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        self._check_credentials(headers, body)
        if action == "GetAuthorizationToken":
            return 200, [("Content-Type", _JSON)], json.dumps(self._authorization_token()).encode()
        if action in _PAGINATED:
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                raise _AwsError(
                    400, "SerializationException", "Start of structure or map found where not expected."
                ) from None
            if not isinstance(request, dict):
                raise _AwsError(400, "SerializationException", "Start of structure or map found where not expected.")
            if action == "DescribeImages" and request.get("imageIds"):
                status, resp_headers, data = self._moto_call(headers, body)
                if status == 200:
                    payload = json.loads(data)
                    payload["imageDetails"] = [self._fix_detail(d) for d in payload.get("imageDetails") or []]
                    data = json.dumps(payload).encode()
                return status, resp_headers, data
            return self._paginate(action, headers, request)
        return self._moto_call(headers, body)

    # -- data plane ----------------------------------------------------------------------------------

    @property
    def challenge(self) -> str:
        """ECR's data-plane challenge."""
        return f'Basic realm="https://{self.registry_host}/",service="ecr.amazonaws.com"'

    def _data_hook(self, req: ProxyRequest) -> ProxyResponse | Fault | None:
        faults = self.data_faults
        answer = faults(req) if faults is not None else None
        if answer is None or (isinstance(answer, Fault) and answer.forwards):
            refused = self._data_gate(req)
            if refused is not None:
                return refused  # a wire fault forwards: the credential check still applies
        return answer

    def _data_gate(self, req: ProxyRequest) -> ProxyResponse | None:
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        expired = False
        ok = False
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            with self._lock:
                expires_at = self._passwords.get(password) if sep and user == "AWS" else None
            if expires_at is not None:
                ok = time.time() < expires_at
                expired = not ok
        if not ok:
            with self._lock:
                self._rejected_auth += 1
            if expired:
                code, message = "DENIED", "Your authorization token has expired. Reauthenticate and try again."
            else:
                code, message = "UNAUTHORIZED", "Not Authorized"
            return ProxyResponse.error(401, code, message, {"WWW-Authenticate": self.challenge})
        referrers = _REFERRERS_PATH.match(req.path) if self.referrers_api and req.method == "GET" else None
        if referrers is not None:
            return self._referrers(unquote(referrers["repo"]), unquote(referrers["digest"]), req.query)
        manifest = _MANIFEST_PATH.match(req.path)
        if manifest is not None:
            with self._lock:
                archived = (manifest["repo"], unquote(manifest["ref"])) in self._unpullable
            if archived:  # AWS: "Requests to pull the archived image will fail with a 404 error"
                return ProxyResponse.error(404, "MANIFEST_UNKNOWN", "The image is archived and cannot be pulled.")
        if _NAME_LIMITED.match(req.path):
            values = parse_qs(req.query).get("n")
            if values:
                try:
                    n = int(values[-1])
                except ValueError:
                    n = -1
                if not 0 <= n <= 1000:
                    return ProxyResponse.error(
                        400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested: n must be <= 1000"
                    )
        return None

    def _referrers(self, repo: str, digest: str, query: str) -> ProxyResponse:
        """The referrers API over moto's images of ``repo`` (see the class docstring)."""
        if not _DIGEST.fullmatch(digest):
            return ProxyResponse.error(400, "DIGEST_INVALID", f"invalid digest {digest!r}")
        repository = _moto_backend(self.account_id, self.region).repositories.get(repo)
        if repository is None:
            return ProxyResponse.error(404, "NAME_UNKNOWN", f"repository {repo!r} not known to registry")
        params = parse_qs(query)
        wanted = params.get("artifactType", [None])[-1]
        found: dict[str, dict[str, Any]] = {}
        for image in list(repository.images):
            raw = (image.image_manifest or "").encode("utf-8")
            referrer = _as_referrer(raw, image.image_manifest_media_type)
            if referrer is None or referrer[0] != digest:
                continue
            descriptor = referrer_descriptor(raw, referrer[1])
            if wanted is not None and descriptor.get("artifactType") != wanted:
                continue
            found.setdefault(descriptor["digest"], descriptor)
        listed = [found[d] for d in sorted(found)]
        headers = {"Content-Type": _OCI_INDEX}
        if wanted is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        size = self.referrers_page_size
        if size is not None:
            try:
                start = max(0, int(params.get("page", ["0"])[-1]))
            except ValueError:
                return ProxyResponse.error(400, "PAGINATION_NUMBER_INVALID", "invalid page")
            if start + size < len(listed):
                keep = {"artifactType": wanted} if wanted is not None else {}
                rest = "&".join(f"{k}={v}" for k, v in {**keep, "page": str(start + size)}.items())
                headers["Link"] = f'</v2/{repo}/referrers/{digest}?{rest}>; rel="next"'
            listed = listed[start : start + size]
        body = {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": listed}
        return ProxyResponse(200, headers, json.dumps(body, separators=(",", ":")).encode())


_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _as_referrer(raw: bytes, stored_type: str | None) -> tuple[str, str] | None:
    """``(subject digest, media type)`` of a stored manifest that has a ``subject``; else ``None``."""
    try:
        manifest = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(manifest, dict):
        return None
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
        return None
    return subject["digest"], manifest.get("mediaType") or stored_type or _OCI_MANIFEST


def _header(headers: dict[str, str], name: str) -> str | None:
    lower = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lower), None)


def _signature_matches(
    authorization: str, headers: dict[str, str], body: bytes, access_key: str, secret_key: str, region: str
) -> bool:
    """Recompute the SigV4 signature of a ``POST /`` with botocore and compare."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed = re.search(r"SignedHeaders=([^,\s]+)", authorization)
    signature = re.search(r"Signature=([0-9a-f]+)", authorization)
    timestamp = _header(headers, "X-Amz-Date")
    if signed is None or signature is None or timestamp is None:
        return False
    names = signed[1].split(";")
    signed_headers = {}
    for name in names:
        value = _header(headers, name)
        if value is None:
            return False
        signed_headers[name] = value
    request = AWSRequest(method="POST", url=f"http://{signed_headers.get('host', '')}/", data=body)
    for name, value in signed_headers.items():
        request.headers[name] = value
    request.context["timestamp"] = timestamp
    auth = SigV4Auth(Credentials(access_key, secret_key, _header(headers, "X-Amz-Security-Token")), "ecr", region)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    return hmac.compare_digest(str(expected), signature[1])


def _synthetic_manifest(repo: str, index: int, layer_size: int) -> bytes:
    def fake_digest(kind: str) -> str:
        return "sha256:" + hashlib.sha256(f"{kind}:{repo}:{index}".encode()).hexdigest()

    manifest = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 512, "digest": fake_digest("c")},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": layer_size, "digest": fake_digest("l")}
        ],
    }
    return json.dumps(manifest, indent=3).encode()


def _encode_token(offset: int, scope: str) -> str:
    raw = json.dumps({"o": offset, "s": scope, "n": secrets.token_hex(4)}).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_token(token: Any, scope: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        offset = data["o"]
        ok = isinstance(offset, int) and offset >= 0 and data["s"] == scope
    except (ValueError, KeyError, TypeError, binascii.Error):
        ok = False
    if not ok:
        raise _invalid_parameter("Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'")
    return cast(int, offset)


# -- the moto server ---------------------------------------------------------------------------------


def _make_moto_server() -> Any:
    """A ``ThreadedMotoServer`` on a free port of 127.0.0.1 that is quiet and leaves nothing behind.

    Differences from the stock one: binds port 0 (no race for a free port), a bind error is reported
    instead of hanging ``start()``, handler threads are non-daemonic and joined on ``stop()``, which
    also closes the listening socket, the accept loop polls every 50 ms (fast ``stop()``), and
    werkzeug's access log goes to the ``ecrcopy.testing`` logger at DEBUG level.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class QuietMotoRequestHandler(MotoRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            logger.debug("moto %s: %s", type, message % args if args else message)

    class QuietMotoServer(ThreadedMotoServer):
        start_error: BaseException | None = None

        def _server_entry(self) -> None:
            try:
                server: Any = make_server(
                    "127.0.0.1",
                    0,
                    DomainDispatcherApplication(create_backend_app),
                    True,
                    request_handler=QuietMotoRequestHandler,
                )
            except BaseException as exc:
                self.start_error = exc
                self._server_ready_event.set()
                return
            server.daemon_threads = False
            self._server = server
            self._server_ready_event.set()
            server.serve_forever(poll_interval=0.05)

        def stop(self) -> None:
            server: Any = self._server
            if server is not None:
                server.shutdown()
            if self._thread is not None:
                self._thread.join()
            if server is not None:
                server.server_close()  # joins handler threads, closes the listening socket
            self._server = None

    return QuietMotoServer(ip_address="127.0.0.1", port=0, verbose=False)


# -- the front server --------------------------------------------------------------------------------


class _EcrFront(BackgroundHTTPServer):
    def __init__(self, emulator: EcrEmulator) -> None:
        super().__init__()
        self.emulator = emulator

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _EcrFrontHandler


def _request_id() -> str:
    return str(uuid.uuid4())


class _EcrFrontHandler(QuietHandler):
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_error(self, error: _AwsError) -> None:
        body = json.dumps({"__type": error.code, "message": error.message}).encode()
        self.send_bytes(
            error.status,
            body,
            {"Content-Type": _JSON, "x-amzn-ErrorType": error.code, "x-amzn-RequestId": _request_id()},
        )

    def do_POST(self) -> None:
        emulator = cast(_EcrFront, self.tracking_server.owner).emulator
        body = self._body()
        target = self.headers.get("X-Amz-Target") or ""
        if not target.startswith(_TARGET_PREFIX):
            self._send_error(_AwsError(400, "UnknownOperationException", ""))
            return
        action = target[len(_TARGET_PREFIX) :]
        if self.headers.get(_SEED_HEADER) is None:
            emulator._record_call(action)
        headers = dict(self.headers.items())
        try:
            status, resp_headers, data = emulator._api(action, headers, body)
        except _AwsError as error:
            self._send_error(error)
            return
        except Exception:
            logger.exception("EcrEmulator: %s failed", action)
            self._send_error(_AwsError(500, "ServerException", "internal error in the emulator"))
            return
        out = {
            name: value
            for name, value in resp_headers
            if name.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date")
        }
        out.setdefault("x-amzn-RequestId", _request_id())
        self.send_bytes(status, data, out)

    def do_GET(self) -> None:
        self.send_bytes(404, b"", {"Content-Type": _JSON})
