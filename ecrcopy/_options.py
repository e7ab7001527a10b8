"""Options of a copy, as one typed object."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConflictPolicy", "CopyOptions", "ForeignLayerPolicy"]

MiB = 1024 * 1024

ConflictPolicy = Literal["fail", "skip", "overwrite"]
ForeignLayerPolicy = Literal["skip-image", "copy"]


class CopyOptions(BaseModel):
    """Knobs of a :class:`~ecrcopy.Copier`. Defaults suit an overnight ECR → GitLab run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_concurrency: int = Field(4, ge=1, le=256, description="images copied at the same time")
    blob_concurrency: int = Field(8, ge=1, le=256, description="blob uploads in flight in the whole run")
    connections_per_host: int = Field(16, ge=1, le=512, description="HTTP connections per registry")
    chunk_size: int = Field(32 * MiB, ge=64 * 1024, description="PATCH size of chunked uploads")
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
    insecure_registries: tuple[str, ...] = Field(
        (), description="hosts spoken to over plain http (loopback hosts always are)"
    )
    connect_timeout: float = Field(30.0, gt=0)
    read_timeout: float = Field(300.0, gt=0, description="longest silence on a connection")
    retries: int = Field(5, ge=1, le=50, description="attempts for a request that failed transiently")
    retry_backoff: float = Field(0.5, ge=0, description="first retry delay in seconds, doubled each time")
    retry_backoff_max: float = Field(30.0, ge=0)
    token_refresh_margin: float = Field(30.0, ge=0, description="renew tokens this long before they expire")
    blob_cache: Path | None = Field(
        None,
        description="file remembering where blobs went, so later runs mount instead of uploading "
        "(the CLI uses ~/.cache/ecrcopy/blob-locations-v1.json)",
    )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): doubling from ``retry_backoff`` up to
        ``retry_backoff_max``, with jitter; at least the registry's ``Retry-After`` (capped)."""
        delay = min(self.retry_backoff * 2.0 ** (attempt - 1), self.retry_backoff_max)
        delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
        if retry_after:
            delay = max(delay, min(retry_after, self.retry_backoff_max * 4))
        return delay
