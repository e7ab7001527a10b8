"""Amazon ECR as a source: the control plane (JSON over signed HTTPS), credentials for the data plane.

Only these IAM actions are ever called (see ``docs/iam-policy.json``)::

    ecr:GetAuthorizationToken  ecr:BatchCheckLayerAvailability  ecr:GetDownloadUrlForLayer
    ecr:DescribeRepositories   ecr:ListImages                   ecr:DescribeImages
    ecr:BatchGetImage

Every API request goes through :meth:`EcrApi._post`, which refuses any other action before
anything is sent. Requests are AWS JSON 1.1 (``X-Amz-Target``) signed with SigV4
(:mod:`ecrcopy._sigv4`); where the endpoint and the keys come from is :mod:`ecrcopy._aws`
(botocore only when the environment does not settle it). Data-plane requests (``/v2/``) use Basic
``AWS:<password>`` from ``GetAuthorizationToken``; the password is renewed before its
``expiresAt`` and after a 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlsplit

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from . import _mediatypes as mt
from ._aws import AwsTarget, dns_suffix, resolve_target
from ._credentials import Credentials
from ._exceptions import AuthenticationError, ConfigurationError, Denied, EcrcopyError, NotFound, RegistryUnavailable
from ._models import MAX_BLOB_SIZE, Manifest
from ._options import full_jitter
from ._plan import EcrImage, EcrRepository
from ._protocol import clean_text, redact_url
from ._sigv4 import sign
from ._streams import describe_transport_error

__all__ = ["ALLOWED_ACTIONS", "EcrApi", "EcrCredentials", "EcrSource"]

log = logging.getLogger("ecrcopy")

#: The read-only IAM actions ecrcopy needs; nothing else is ever called.
ALLOWED_ACTIONS = frozenset(
    {
        "GetAuthorizationToken",
        "BatchCheckLayerAvailability",
        "GetDownloadUrlForLayer",
        "DescribeRepositories",
        "ListImages",
        "DescribeImages",
        "BatchGetImage",
    }
)

_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "AuthFailure",
    }
)
#: Error codes AWS SDKs retry (throttling and transient service faults), besides HTTP 429 and 5xx.
_RETRY_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "ServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "LimitExceededException",
        "BandwidthLimitExceeded",
    }
)
_TARGET = "AmazonEC2ContainerRegistry_V20150921."
_JSON = "application/x-amz-json-1.1"
#: An answer larger than this is refused (100 manifests of ECR's 4 MiB limit fit).
MAX_ANSWER = 512 * 1024 * 1024
#: Attempts per API call (as botocore's adaptive mode here): throttling and server faults are retried.
MAX_ATTEMPTS = 10


class EcrSource(BaseModel):
    """Where the images come from. Unset fields fall back to AWS's usual configuration (the
    environment; else botocore's chain: profiles, roles, config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = Field(None, description="AWS region (else AWS_DEFAULT_REGION / AWS_REGION / profile)")
    registry_id: str | None = Field(None, description="AWS account id of the registry (else from the auth token)")
    registry_url: str | None = Field(
        None,
        description="data-plane URL override (VPC endpoint, tests); default https://<id>.dkr.ecr.<region>.amazonaws.com",
    )
    profile: str | None = Field(None, description="AWS profile name (else AWS_PROFILE / default chain)")
    endpoint_url: str | None = Field(
        None, description="ECR API endpoint override (else AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL)"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> EcrSource:
        """``AWS_DEFAULT_REGION``/``AWS_REGION``, ``AWS_ACCOUNT_ID``, ``ECRCOPY_SOURCE_REGISTRY_URL``; kwargs win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {
            "region": env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None,
            "registry_id": env.get("AWS_ACCOUNT_ID") or None,
            "registry_url": env.get("ECRCOPY_SOURCE_REGISTRY_URL") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def _error_code(response: httpx.Response, body: Any) -> tuple[str, str]:
    """``(code, message)`` of an AWS JSON error answer (``__type`` or ``x-amzn-ErrorType``)."""
    raw = ""
    message = ""
    if isinstance(body, dict):
        raw = str(body.get("__type") or body.get("code") or "")
        message = str(body.get("message") or body.get("Message") or "")
    raw = raw or response.headers.get("x-amzn-ErrorType", "")
    code = clean_text(raw.split(":", 1)[0].rsplit("#", 1)[-1], 100)
    return code, clean_text(message, 500)


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a connection failed on TLS certificate verification (retrying cannot help)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11:
        return datetime.fromtimestamp(value, UTC)
    return None


class EcrApi:
    """ECR's API limited to the read-only actions, with clear errors. Blocking: call from a thread.

    One HTTP connection pool for every call (thread-safe); :meth:`close` it when done.
    """

    def __init__(
        self,
        source: EcrSource,
        *,
        transport: httpx.BaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        backoff: float = 0.5,
    ) -> None:
        self.source = source
        self.calls: list[str] = []
        #: (repository, digest) -> what BatchGetImage returned: one read per manifest and run
        self._manifests: dict[tuple[str, str], tuple[bytes, str | None]] = {}
        self._target: AwsTarget = resolve_target(
            region=source.region, profile=source.profile, endpoint_url=source.endpoint_url, environ=environ
        )
        self.region = self._target.region
        self.endpoint = self._target.endpoint
        try:
            parsed = httpx.URL(self.endpoint)
            _ = urlsplit(self.endpoint).port  # a port that is not a number raises here, not in the signer
            usable = parsed.scheme in ("http", "https") and bool(parsed.host)
        except (httpx.InvalidURL, ValueError):
            usable = False
        if not usable:
            raise ConfigurationError(f"invalid ECR API endpoint {clean_text(redact_url(self.endpoint), 200)!r}")
        self._backoff = backoff
        from ._client import tls_context

        # the run's one TLS context (an http endpoint too: httpx would otherwise load CA certificates
        # for a context of its own, ~50 ms), unless AWS's configuration names a CA bundle
        verify = ssl.create_default_context(cafile=self._target.ca_bundle) if self._target.ca_bundle else tls_context()
        self._http = httpx.Client(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(connect=20.0, read=60.0, write=60.0, pool=None),
            follow_redirects=False,
            headers={"User-Agent": "ecrcopy", "Accept-Encoding": "identity"},
        )
        log.debug("ECR API %s (%s, configuration from %s)", self.endpoint, self.region, self._target.resolved_by)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EcrApi(region={self.region!r}, endpoint={self.endpoint!r})"

    def _guard(self, action: str) -> None:
        if action not in ALLOWED_ACTIONS:
            raise ConfigurationError(f"ecrcopy refuses to call ecr:{action}: it is outside the read-only policy")
        self.calls.append(action)

    def _post(self, action: str, payload: Mapping[str, Any], what: str) -> dict[str, Any]:
        """One API call: signed, retried on throttling, 5xx and broken connections, errors mapped."""
        self._guard(action)
        body = json.dumps(payload, separators=(",", ":")).encode()
        url = self.endpoint + "/"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            keys = self._target.keys.keys()
            headers = {"Content-Type": _JSON, "X-Amz-Target": _TARGET + action}
            headers.update(
                sign(
                    "POST",
                    url,
                    headers,
                    body,
                    access_key=keys.access_key,
                    secret_key=keys.secret_key.get_secret_value(),
                    session_token=keys.session_token.get_secret_value() if keys.session_token else None,
                    region=self.region,
                    service="ecr",
                )
            )
            last = attempt == MAX_ATTEMPTS
            try:
                status, answer, response = self._exchange(url, headers, body)
            except httpx.RequestError as exc:
                if not isinstance(exc, httpx.TransportError) or _certificate_refused(exc):
                    # an answer that cannot be decoded, or a certificate this runner does not trust: final
                    raise RegistryUnavailable(
                        f"cannot use the ECR API at {self.endpoint}: {describe_transport_error(exc)}"
                    ) from None
                if last:
                    if isinstance(exc, httpx.TimeoutException):
                        raise RegistryUnavailable(
                            f"ECR API timed out during {what}: {exc.__class__.__name__}"
                        ) from None
                    raise RegistryUnavailable(
                        f"cannot reach the ECR API at {self.endpoint}: {describe_transport_error(exc)}"
                    ) from None
                self._pause(attempt, what, exc.__class__.__name__)
                continue
            if status == 200:
                if not isinstance(answer, dict):
                    raise RegistryUnavailable(f"{what}: the ECR API answered with something that is not a JSON object")
                return answer
            code, message = _error_code(response, answer)
            if status == 429 or status >= 500 or code in _RETRY_CODES:
                if last:
                    raise RegistryUnavailable(
                        f"{what}: the ECR API still answers {code or f'HTTP {status}'} after {MAX_ATTEMPTS} attempts"
                    )
                self._pause(attempt, what, code or str(status))
                continue
            raise self._error(what, status, code, message)
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Any, httpx.Response]:
        with self._http.stream("POST", url, headers=headers, content=body) as response:
            chunks = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise RegistryUnavailable(f"the ECR API answered with more than {MAX_ANSWER} bytes: refused")
                chunks.append(chunk)
        data = b"".join(chunks)
        try:
            answer = json.loads(data) if data else {}
        except (ValueError, UnicodeDecodeError):
            answer = None
        return response.status_code, answer, response

    def _pause(self, attempt: int, what: str, why: str) -> None:
        delay = full_jitter(attempt + 1, self._backoff, 20.0)  # the first retry waits up to 2 x backoff
        log.debug("ECR API %s: %s; attempt %d of %d again in %.1fs", what, why, attempt + 1, MAX_ATTEMPTS, delay)
        time.sleep(delay)

    def _error(self, what: str, status: int, code: str, message: str) -> EcrcopyError:
        if code in _AUTH_CODES:
            return AuthenticationError(f"AWS rejected the credentials ({code}) during {what}: {message}")
        if code in ("AccessDeniedException", "AccessDenied"):
            return AuthenticationError(f"{what}: access denied ({message}); see docs/iam-policy.json")
        if code == "RepositoryNotFoundException":
            return NotFound(f"{what}: {message}", code=code)
        if not code:
            return Denied(f"{what}: the ECR API answered HTTP {status}", code=str(status))
        return Denied(f"{what}: {code}: {message}", code=code)

    def _pages(self, action: str, payload: dict[str, Any], key: str, what: str) -> list[Any]:
        """Every item of a paginated listing (``nextToken``), refusing a token that comes back."""
        items: list[Any] = []
        seen: set[str] = set()
        request = dict(payload)
        while True:
            answer = self._post(action, request, what)
            page = answer.get(key)
            if isinstance(page, list):
                items.extend(page)
            token = answer.get("nextToken")
            if not isinstance(token, str) or not token:
                return items
            if token in seen:
                raise RegistryUnavailable(f"{what}: the ECR API repeated a page token; the listing would never end")
            seen.add(token)
            request["nextToken"] = token

    def authorization(self) -> tuple[Credentials, float, str]:
        """``(credentials, expires_at epoch, proxy endpoint)`` from GetAuthorizationToken."""
        payload = {"registryIds": [self.source.registry_id]} if self.source.registry_id else {}
        reply = self._post("GetAuthorizationToken", payload, "GetAuthorizationToken")
        data = (reply.get("authorizationData") or [None])[0]
        if not isinstance(data, dict):
            raise AuthenticationError("GetAuthorizationToken returned no authorization data")
        try:
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, KeyError, TypeError):
            raise AuthenticationError("GetAuthorizationToken returned an unreadable token") from None
        expires = _epoch(data.get("expiresAt"))
        expires_at = expires.timestamp() if expires is not None else time.time() + 12 * 3600
        return Credentials(user, SecretStr(password)), expires_at, str(data.get("proxyEndpoint") or "")

    def repositories(self) -> list[str]:
        payload = {"registryId": self.source.registry_id} if self.source.registry_id else {}
        found = self._pages("DescribeRepositories", payload, "repositories", "DescribeRepositories")
        return [r["repositoryName"] for r in found if isinstance(r, dict) and isinstance(r.get("repositoryName"), str)]

    def images(self, repository: str) -> EcrRepository:
        """Every image of ``repository``: tagged and untagged, active, archived and activating.

        ``filter.imageStatus = ANY`` makes ECR list archived images too (it lists only ACTIVE ones
        otherwise). An ECR-compatible endpoint that does not know the filter (it answers
        ``InvalidParameterException``/``ValidationException``) is asked again without it, and the
        listing then has active images only, with a warning.
        """
        payload: dict[str, Any] = {
            "repositoryName": repository,
            "filter": {"tagStatus": "ANY", "imageStatus": "ANY"},
            "maxResults": 1000,
        }
        if self.source.registry_id:
            payload["registryId"] = self.source.registry_id
        what = f"DescribeImages {repository}"
        try:
            details = self._pages("DescribeImages", payload, "imageDetails", what)
        except Denied as exc:
            if exc.code not in ("InvalidParameterException", "ValidationException", "SerializationException"):
                raise
            log.warning(
                "the ECR API at %s does not take the imageStatus filter (%s): archived images of %s are not listed",
                self.endpoint,
                exc.code,
                repository,
            )
            payload["filter"] = {"tagStatus": "ANY"}
            details = self._pages("DescribeImages", payload, "imageDetails", what)
        images = []
        for d in details:
            if not isinstance(d, dict):
                continue
            digest = d.get("imageDigest")
            if not isinstance(digest, str):  # nothing to copy it by; the plan cannot name it either
                log.warning("ECR described an image of %s without a digest; left out", repository)
                continue
            pushed = _epoch(d.get("imagePushedAt"))
            size = d.get("imageSizeInBytes")
            images.append(
                EcrImage(
                    digest=digest,  # validated where it becomes a reference (an unusable one fails its image)
                    tags=tuple(t for t in d.get("imageTags") or () if isinstance(t, str)),
                    size=size if isinstance(size, int) and 0 <= size <= MAX_BLOB_SIZE * 64 else None,
                    pushed_at=pushed,
                    media_type=_text(d.get("imageManifestMediaType")),
                    artifact_media_type=_text(d.get("artifactMediaType")),
                    subject_digest=_text(d.get("subjectManifestDigest")),
                    status=status if isinstance(status := d.get("imageStatus"), str) and status else "ACTIVE",
                )
            )
        return EcrRepository(repository, tuple(images))

    def manifests(self, repository: str, digests: Sequence[str]) -> dict[str, tuple[bytes, str | None]]:
        """``BatchGetImage``: digest → (manifest bytes, media type) of the images of ``repository``
        ECR could return (100 per call; images it could not return are left out, with a debug line).

        Each manifest is read once per :class:`EcrApi`: the migration's index reader and the
        shards' blob planning ask for the same ones."""
        wanted = list(dict.fromkeys(digests))
        missing = [d for d in wanted if (repository, d) not in self._manifests]
        for start in range(0, len(missing), 100):
            payload: dict[str, Any] = {
                "repositoryName": repository,
                "imageIds": [{"imageDigest": d} for d in missing[start : start + 100]],
                "acceptedMediaTypes": sorted(mt.MANIFEST_TYPES),
            }
            if self.source.registry_id:
                payload["registryId"] = self.source.registry_id
            reply = self._post("BatchGetImage", payload, f"BatchGetImage {repository}")
            for image in reply.get("images") or ():
                if not isinstance(image, dict):
                    continue
                image_id = image.get("imageId")
                digest = image_id.get("imageDigest") if isinstance(image_id, dict) else None
                manifest = image.get("imageManifest")
                if isinstance(digest, str) and isinstance(manifest, str):
                    self._manifests[repository, digest] = (
                        manifest.encode(),
                        _text(image.get("imageManifestMediaType")),
                    )
            for failure in reply.get("failures") or ():
                log.debug(
                    "BatchGetImage %s: %s", repository, failure.get("failureCode") if isinstance(failure, dict) else "?"
                )
        return {d: self._manifests[repository, d] for d in wanted if (repository, d) in self._manifests}

    def parsed_manifests(self, repository: str, digests: Sequence[str]) -> dict[str, Manifest]:
        """:meth:`manifests`, parsed. A manifest that does not parse is left out, with a warning."""
        parsed: dict[str, Manifest] = {}
        for digest, (raw, media_type) in self.manifests(repository, digests).items():
            try:
                parsed[digest] = Manifest.from_bytes(raw, media_type)
            except (EcrcopyError, ValueError) as exc:
                log.warning("cannot read manifest %s@%s that BatchGetImage returned: %s", repository, digest, exc)
        return parsed

    def data_plane_url(self, proxy_endpoint: str | None = None) -> str:
        if self.source.registry_url:
            return self.source.registry_url.rstrip("/")
        if self.source.registry_id:
            return f"https://{self.source.registry_id}.dkr.ecr.{self.region}.{dns_suffix(self.region)}"
        if proxy_endpoint:
            return proxy_endpoint.rstrip("/")
        raise ConfigurationError("cannot tell the ECR registry: set AWS_ACCOUNT_ID or --registry-id")


async def inventory(
    api: EcrApi,
    *,
    concurrency: int = 8,
    then: Callable[[EcrRepository], Awaitable[EcrRepository]] | None = None,
) -> list[EcrRepository]:
    """Every repository and image, DescribeImages for several repositories at a time.

    ``then`` completes each repository as soon as it is listed (while others are still being
    listed), e.g. with what its indexes say.
    """
    names = await anyio.to_thread.run_sync(api.repositories)
    limiter = anyio.CapacityLimiter(concurrency)
    results: dict[str, EcrRepository] = {}
    errors: list[EcrcopyError] = []

    async def one(name: str) -> None:
        try:
            repository = await anyio.to_thread.run_sync(api.images, name, limiter=limiter)
            results[name] = await then(repository) if then is not None else repository
        except NotFound:
            log.warning("repository %s disappeared during enumeration", name)
        except EcrcopyError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    if errors:
        raise errors[0]
    return [results[n] for n in names if n in results]


class EcrCredentials:
    """A credential provider handing out ECR's ``AWS:<password>``, renewed before ``expiresAt``."""

    def __init__(self, api: EcrApi, *, margin: float = 1800.0) -> None:
        self._api = api
        self._margin = margin
        self._lock = anyio.Lock()
        self._cached: Credentials | None = None
        self._expires_at = 0.0
        self._issued_at = 0.0
        self.proxy_endpoint: str | None = None
        self.fetches = 0

    async def get(self, host: str) -> Credentials | None:
        async with self._lock:
            now = time.time()
            lifetime = self._expires_at - self._issued_at
            margin = min(self._margin, lifetime * 0.2)
            if self._cached is None or now >= self._expires_at - margin:
                creds, expires_at, endpoint = await anyio.to_thread.run_sync(self._api.authorization)
                self._cached, self._expires_at, self._issued_at = creds, expires_at, now
                self.proxy_endpoint = endpoint or self.proxy_endpoint
                self.fetches += 1
                log.debug("ECR authorization token renewed; valid for %.0fs", expires_at - now)
            return self._cached

    def invalidate(self, host: str) -> None:
        self._cached = None

    def __repr__(self) -> str:
        return f"EcrCredentials(region={self._api.region!r})"


def host_of(url: str) -> tuple[str, str]:
    """``(scheme, host[:port])`` of a registry URL."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"invalid registry URL {url!r}")
    return parts.scheme, parts.netloc
