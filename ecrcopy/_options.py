"""Options of a copy, as one typed object."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConflictPolicy", "CopyOptions", "ForeignLayerPolicy", "HttpBackend"]

MiB = 1024 * 1024

ConflictPolicy = Literal["fail", "skip", "overwrite"]
ForeignLayerPolicy = Literal["skip-image", "copy"]
HttpBackend = Literal["http11", "aiohttp", "httpx"]


def full_jitter(attempt: int, base: float, ceiling: float) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(ceiling, base * 2**(attempt-1))]``
    seconds before retry ``attempt`` (1-based), as the AWS SDKs and this project's registries wait."""
    return random.uniform(0.0, min(base * 2.0 ** (attempt - 1), ceiling))  # noqa: S311 - jitter, not crypto


class CopyOptions(BaseModel):
    """Knobs of a :class:`~ecrcopy.Copier`. Defaults suit an overnight ECR → GitLab run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_concurrency: int = Field(4, ge=1, le=256, description="images copied at the same time")
    blob_concurrency: int = Field(8, ge=1, le=256, description="blob uploads in flight in the whole run")
    connections_per_host: int = Field(16, ge=1, le=512, description="HTTP connections per registry")
    chunk_size: int = Field(128 * MiB, ge=64 * 1024, description="PATCH size of chunked uploads")
    monolithic_threshold: int = Field(
        64 * MiB, ge=0, description="blobs up to this size are uploaded in one PUT, bigger ones in chunks"
    )
    on_conflict: ConflictPolicy = Field(
        "fail", description="destination tag holding another digest: fail (leave it), skip, or overwrite"
    )
    foreign_layers: ForeignLayerPolicy = Field(
        "skip-image",
        description="images with non-distributable (foreign) layers: skip them with a reason, or copy the layers",
    )
    referrers: bool = Field(
        True,
        description="also copy every image's referrers (signatures, attestations, SBOMs: OCI 1.1 "
        "subject, the referrers tag schema and cosign's .sig/.att/.sbom tags)",
    )
    insecure_registries: tuple[str, ...] = Field(
        (), description="hosts spoken to over plain http (loopback hosts always are)"
    )
    http_backend: HttpBackend = Field(
        "http11",
        description="HTTP stack under httpx's client: http11 (HTTP/1.1 with llhttp's compiled parser: the "
        "least CPU), aiohttp (needs ecrcopy[aiohttp]) or httpx (httpcore + h11); httpx's own stack is used "
        "whenever a proxy variable is set, and on an event loop other than asyncio",
    )
    connect_timeout: float = Field(30.0, gt=0)
    read_timeout: float = Field(300.0, gt=0, description="longest silence on a connection")
    retries: int = Field(6, ge=1, le=50, description="attempts of one operation that fails transiently")
    retry_backoff: float = Field(0.5, ge=0, description="base retry delay in seconds, doubled each attempt")
    retry_backoff_max: float = Field(30.0, ge=0, description="ceiling of the doubling retry delay")
    retry_after_max: float = Field(
        300.0, ge=0, description="longest wait a registry's Retry-After may impose before one retry"
    )
    operation_deadline: float = Field(
        900.0,
        gt=0,
        description="no retry of one operation starts later than this many seconds after its first attempt",
    )
    max_connections: dict[str, int] = Field(
        default_factory=dict,
        description="fixed ceiling of requests in flight per host ('*' for every host); "
        "the adaptive limit never goes above it",
    )
    max_requests_per_second: dict[str, float] = Field(
        default_factory=dict, description="requests started per second per host ('*' for every host)"
    )
    adaptive_concurrency: bool = Field(
        True, description="halve a host's in-flight limit on each 429 from it, raise it slowly on successes"
    )
    token_refresh_margin: float = Field(30.0, ge=0, description="renew tokens this long before they expire")
    blob_cache: Path | None = Field(
        None,
        description="file remembering where blobs went, so later runs mount instead of uploading "
        "(the CLI uses ~/.cache/ecrcopy/blob-locations-v1.json)",
    )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based).

        Exponential backoff with full jitter: uniform in ``[0, min(retry_backoff_max,
        retry_backoff * 2**(attempt-1))]``; never less than the registry's ``Retry-After``
        (itself capped at ``retry_after_max``).
        """
        delay = full_jitter(attempt, self.retry_backoff, self.retry_backoff_max)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay

    def host_setting(self, table: dict[str, int] | dict[str, float], host: str) -> float | None:
        """The entry of ``table`` for ``host`` (``host:port``, then the bare host name, then ``*``)."""
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        for key in (host, bare, "*"):
            if key in table:
                return table[key]
        return None
