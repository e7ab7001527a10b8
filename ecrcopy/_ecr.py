"""Amazon ECR as a source: the control plane through boto3, credentials for the data plane.

Only these IAM actions are ever called (see ``docs/iam-policy.json``)::

    ecr:GetAuthorizationToken  ecr:BatchCheckLayerAvailability  ecr:GetDownloadUrlForLayer
    ecr:DescribeRepositories   ecr:ListImages                   ecr:DescribeImages
    ecr:BatchGetImage

A botocore hook refuses any other operation before it is sent. Data-plane requests (``/v2/``)
use Basic ``AWS:<password>`` from ``GetAuthorizationToken``; the password is renewed before its
``expiresAt`` and after a 401.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from . import _mediatypes as mt
from ._credentials import Credentials
from ._exceptions import AuthenticationError, ConfigurationError, Denied, EcrcopyError, NotFound, RegistryUnavailable
from ._models import MAX_BLOB_SIZE, Manifest
from ._plan import EcrImage, EcrRepository

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
        "MissingAuthenticationToken",
        "AuthFailure",
    }
)


class EcrSource(BaseModel):
    """Where the images come from. Unset fields fall back to boto3's own configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = Field(None, description="AWS region (else AWS_DEFAULT_REGION / AWS_REGION / profile)")
    registry_id: str | None = Field(None, description="AWS account id of the registry (else from the auth token)")
    registry_url: str | None = Field(
        None,
        description="data-plane URL override (VPC endpoint, tests); default https://<id>.dkr.ecr.<region>.amazonaws.com",
    )
    profile: str | None = Field(None, description="AWS profile name (else AWS_PROFILE / default chain)")
    endpoint_url: str | None = Field(
        None, description="ECR API endpoint override (boto3 also reads AWS_ENDPOINT_URL_ECR)"
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


def _known_regions(session: Any) -> set[str]:
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ecr", partition_name=partition))
    return regions


class EcrApi:
    """A boto3 ECR client limited to the read-only actions, with clear errors. Blocking: call from a thread."""

    def __init__(self, source: EcrSource) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        self.source = source
        self.calls: list[str] = []
        #: (repository, digest) -> what BatchGetImage returned: one read per manifest and run
        self._manifests: dict[tuple[str, str], tuple[bytes, str | None]] = {}
        try:
            session = boto3.Session(profile_name=source.profile, region_name=source.region)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigurationError(str(exc)) from None
        region = session.region_name
        if not region:
            raise ConfigurationError("no AWS region: set AWS_DEFAULT_REGION (or --region)")
        known = _known_regions(session)
        if known and region not in known:
            raise ConfigurationError(f"unknown AWS region {region!r} (ECR is not offered there)")
        self.region = region
        config = botocore.config.Config(
            retries={"mode": "adaptive", "max_attempts": 10},
            user_agent_extra="ecrcopy",
            connect_timeout=20,
            read_timeout=60,
        )
        self._client = session.client("ecr", config=config, endpoint_url=source.endpoint_url)
        self._client.meta.events.register("before-call.ecr", self._guard)

    def _guard(self, model: Any, **_: Any) -> None:
        name = str(model.name)
        if name not in ALLOWED_ACTIONS:
            raise ConfigurationError(f"ecrcopy refuses to call ecr:{name}: it is outside the read-only policy")
        self.calls.append(name)

    def _call(self, what: str, func: Callable[[], Any]) -> Any:
        import botocore.exceptions

        try:
            return func()
        except botocore.exceptions.NoCredentialsError:
            raise AuthenticationError(
                "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or a role"
            ) from None
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = " ".join(str(error.get("Message", "")).split())
            if code in _AUTH_CODES:
                raise AuthenticationError(f"AWS rejected the credentials ({code}) during {what}: {message}") from None
            if code in ("AccessDeniedException", "AccessDenied"):
                raise AuthenticationError(f"{what}: access denied ({message}); see docs/iam-policy.json") from None
            if code == "RepositoryNotFoundException":
                raise NotFound(f"{what}: {message}", code=code) from None
            raise Denied(f"{what}: {code}: {message}", code=code) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise RegistryUnavailable(f"cannot reach the ECR API: {exc}") from None
        except (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError) as exc:
            raise RegistryUnavailable(f"ECR API timed out during {what}: {exc.__class__.__name__}") from None
        except botocore.exceptions.ParamValidationError:
            raise  # the caller decides (an older botocore that lacks a newer parameter)
        except botocore.exceptions.BotoCoreError as exc:
            raise ConfigurationError(f"{what}: {exc}") from None

    def authorization(self) -> tuple[Credentials, float, str]:
        """``(credentials, expires_at epoch, proxy endpoint)`` from GetAuthorizationToken."""
        kwargs = {"registryIds": [self.source.registry_id]} if self.source.registry_id else {}
        reply = self._call("GetAuthorizationToken", lambda: self._client.get_authorization_token(**kwargs))
        data = (reply.get("authorizationData") or [None])[0]
        if not data:
            raise AuthenticationError("GetAuthorizationToken returned no authorization data")
        try:
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, KeyError):
            raise AuthenticationError("GetAuthorizationToken returned an unreadable token") from None
        expires = data.get("expiresAt")
        expires_at = expires.timestamp() if isinstance(expires, datetime) else time.time() + 12 * 3600
        return Credentials(user, SecretStr(password)), expires_at, str(data.get("proxyEndpoint") or "")

    def repositories(self) -> list[str]:
        kwargs = {"registryId": self.source.registry_id} if self.source.registry_id else {}
        paginator = self._client.get_paginator("describe_repositories")

        def run() -> list[str]:
            return [r["repositoryName"] for page in paginator.paginate(**kwargs) for r in page["repositories"]]

        return list(self._call("DescribeRepositories", run))

    def images(self, repository: str) -> EcrRepository:
        """Every image of ``repository``: tagged and untagged, active, archived and activating.

        ``filter.imageStatus = ANY`` makes ECR list archived images too (it lists only ACTIVE ones
        otherwise). A botocore that does not know the filter rejects it before sending anything;
        then the listing falls back to active images only, with a warning.
        """
        import botocore.exceptions

        kwargs: dict[str, Any] = {"repositoryName": repository, "filter": {"tagStatus": "ANY", "imageStatus": "ANY"}}
        if self.source.registry_id:
            kwargs["registryId"] = self.source.registry_id
        paginator = self._client.get_paginator("describe_images")

        def run() -> list[dict[str, Any]]:
            return [
                d
                for page in paginator.paginate(**kwargs, PaginationConfig={"PageSize": 1000})
                for d in page["imageDetails"]
            ]

        try:
            details = self._call(f"DescribeImages {repository}", run)
        except botocore.exceptions.ParamValidationError:
            log.warning(
                "this botocore (%s) does not know ECR's imageStatus filter: archived images of %s are not listed; "
                "upgrade boto3 to see them",
                botocore.__version__,
                repository,
            )
            kwargs["filter"] = {"tagStatus": "ANY"}
            details = self._call(f"DescribeImages {repository}", run)
        images = []
        for d in details:
            digest = d.get("imageDigest")
            if not isinstance(digest, str):  # nothing to copy it by; the plan cannot name it either
                log.warning("ECR described an image of %s without a digest; left out", repository)
                continue
            pushed = d.get("imagePushedAt")
            size = d.get("imageSizeInBytes")
            images.append(
                EcrImage(
                    digest=digest,  # validated where it becomes a reference (an unusable one fails its image)
                    tags=tuple(t for t in d.get("imageTags") or () if isinstance(t, str)),
                    size=size if isinstance(size, int) and 0 <= size <= MAX_BLOB_SIZE * 64 else None,
                    pushed_at=pushed if isinstance(pushed, datetime) else None,
                    media_type=d.get("imageManifestMediaType"),
                    artifact_media_type=d.get("artifactMediaType"),
                    subject_digest=d.get("subjectManifestDigest"),
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
            kwargs: dict[str, Any] = {
                "repositoryName": repository,
                "imageIds": [{"imageDigest": d} for d in missing[start : start + 100]],
                "acceptedMediaTypes": sorted(mt.MANIFEST_TYPES),
            }
            if self.source.registry_id:
                kwargs["registryId"] = self.source.registry_id
            reply = self._call(f"BatchGetImage {repository}", functools.partial(self._client.batch_get_image, **kwargs))
            for image in reply.get("images") or ():
                digest = (image.get("imageId") or {}).get("imageDigest")
                manifest = image.get("imageManifest")
                if isinstance(digest, str) and isinstance(manifest, str):
                    self._manifests[repository, digest] = (manifest.encode(), image.get("imageManifestMediaType"))
            for failure in reply.get("failures") or ():
                log.debug("BatchGetImage %s: %s", repository, failure.get("failureCode"))
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
            return f"https://{self.source.registry_id}.dkr.ecr.{self.region}.amazonaws.com"
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
