"""The report of a run and the progress events emitted while it runs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from ._protocol import clean_text

__all__ = [
    "CopyReport",
    "EventCallback",
    "ImageResult",
    "ImageStatus",
    "ProgressEvent",
    "ReferrerResult",
    "Totals",
]

log = logging.getLogger("ecrcopy")

ImageStatus = Literal["copied", "skipped", "failed", "planned"]

#: a count or a size in a report: read back from files, so bounded (a 64-bit integer at most)
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
#: seconds in a report: finite, never negative
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def as_utc(value: datetime | None) -> datetime | None:
    """A timestamp read from a report: one without an offset is taken as UTC (reports write UTC)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class ReferrerResult(BaseModel):
    """One referrer (signature, attestation, SBOM) of an image, and what happened to it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    digest: str
    #: the manifest it refers to: the image, one of its index children, or another referrer
    subject: str
    artifact_type: str | None = None
    #: cosign's tag convention (``sha256-<hex>.sig``, ``.att``, ``.sbom``) when it came by tag
    tag: str | None = None
    #: ``copied`` (pushed now), ``existing`` (already at the destination), ``skipped`` or ``failed``
    status: Literal["copied", "existing", "skipped", "failed"]
    error: str | None = None

    @field_validator("error", "artifact_type")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else clean_text(value, 1000)


class ImageResult(BaseModel):
    """What happened to one image (a source tag or digest and its destination)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    source: str
    destination: str
    digest: str | None = None
    status: ImageStatus
    #: Why an image was skipped or failed: ``up-to-date``, ``conflict``, ``digest_mismatch``,
    #: ``unsupported``, ``not_found``, ``denied``, ... (see the errors module).
    reason: str | None = None
    error: str | None = None
    media_type: str | None = None
    blobs_uploaded: Count = 0
    blobs_mounted: Count = 0
    blobs_existing: Count = 0
    bytes_uploaded: Count = 0
    manifests_pushed: Count = 0
    #: referrers (signatures, attestations, SBOMs) of this image and of its index children
    referrers: list[ReferrerResult] = Field(default_factory=list)
    #: fallback tags (``sha256-<hex>``) written at a destination without the referrers API
    referrer_tags_written: Count = 0
    duration_seconds: Seconds = 0.0

    @property
    def referrers_copied(self) -> int:
        return sum(1 for r in self.referrers if r.status == "copied")

    @field_validator("error", "reason")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        """One printable line: registry text may carry control characters or terminal escapes."""
        return None if value is None else clean_text(value, 1000)


class Totals(BaseModel):
    images: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    planned: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_existing: int = 0
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    #: referrers pushed to the destination (and referrers found there already)
    referrers_copied: int = 0
    referrers_existing: int = 0
    referrers_failed: int = 0
    referrer_tags_written: int = 0
    #: requests repeated after a transient failure (connection trouble, 429, 5xx), token requests included
    retries: int = 0
    #: of those, after a 429 (the registry asked to slow down)
    rate_limited: int = 0
    #: seconds spent waiting before retries
    retry_wait_seconds: float = 0.0


def _now() -> datetime:
    return datetime.now(UTC)


class CopyReport(BaseModel):
    """The outcome of a run; ``model_dump_json()`` gives the JSON written by ``--report``.

    ``CopyReport.model_validate_json(text)`` reads such a report back (``ok``, ``totals`` and
    ``duration_seconds`` are recomputed from the images).
    """

    model_config = ConfigDict(extra="ignore")

    images: list[ImageResult] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None
    #: what retrying cost this run (see :class:`Totals`)
    retries: Count = 0
    rate_limited: Count = 0
    retry_wait_seconds: Seconds = 0.0

    _utc = field_validator("started_at", "finished_at")(as_utc)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """True when no image failed."""
        return all(image.status != "failed" for image in self.images)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> Totals:
        totals = Totals(
            images=len(self.images),
            retries=self.retries,
            rate_limited=self.rate_limited,
            retry_wait_seconds=round(self.retry_wait_seconds, 3),
        )
        for image in self.images:
            setattr(totals, image.status, getattr(totals, image.status) + 1)
            totals.blobs_uploaded += image.blobs_uploaded
            totals.blobs_mounted += image.blobs_mounted
            totals.blobs_existing += image.blobs_existing
            totals.bytes_uploaded += image.bytes_uploaded
            totals.manifests_pushed += image.manifests_pushed
            totals.referrer_tags_written += image.referrer_tags_written
            for referrer in image.referrers:
                if referrer.status == "copied":
                    totals.referrers_copied += 1
                elif referrer.status == "existing":
                    totals.referrers_existing += 1
                elif referrer.status == "failed":
                    totals.referrers_failed += 1
        return totals

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or _now()
        return round((end - self.started_at).total_seconds(), 3)

    def failed(self) -> list[ImageResult]:
        return [image for image in self.images if image.status == "failed"]

    def finish(self) -> Self:
        self.finished_at = _now()
        return self

    def to_html(self, *, title: str | None = None) -> str:
        """The report as one self-contained HTML page (what ``--html`` writes); see :mod:`ecrcopy._html`."""
        from ._html import overview, render_html  # the renderer builds on these models

        return render_html(overview([self]), title=title or _default_title(self))

    @classmethod
    def merge(cls, reports: Sequence[CopyReport]) -> Self:
        """One report for several runs (for example several repositories).

        An image in several of them (the same source and destination: a report merged with a
        merge of itself, a rerun) is counted once, as the last report has it.
        """
        merged = cls(
            images=list({(i.source, i.destination): i for r in reports for i in r.images}.values()),
            retries=sum(r.retries for r in reports),
            rate_limited=sum(r.rate_limited for r in reports),
            retry_wait_seconds=sum(r.retry_wait_seconds for r in reports),
        )
        if reports:
            merged.started_at = min(r.started_at for r in reports)
            ends = [r.finished_at for r in reports if r.finished_at is not None]
            merged.finished_at = max(ends) if ends else None
        return merged


def _default_title(report: CopyReport) -> str:
    return "ecrcopy migration report" if hasattr(report, "plan") else "ecrcopy copy report"


EventKind = Literal[
    "images_planned",
    "image_started",
    "image_finished",
    "verify_planned",
    "image_verified",
    "repository_finished",
    "blob_finished",
    "bytes_uploaded",
]


@dataclass(frozen=True)
class ProgressEvent:
    """A progress notification for UIs.

    ``images_planned`` with ``total`` when a batch of images is about to start;
    ``image_started`` / ``image_finished`` (with ``result``) per image; ``repository_finished``
    when the last image of a destination repository in the batch is done; ``blob_finished`` per blob
    with ``outcome`` (``uploaded``, ``mounted`` or ``existing``) and its size in ``bytes``;
    ``bytes_uploaded`` as bytes stream to the destination. A verification sends ``verify_planned``
    (with ``total``) and then ``image_verified`` per image, with its verify status (``identical``, ``missing``, …)
    in ``outcome``.
    """

    kind: EventKind
    source: str
    destination: str
    digest: str | None = None
    bytes: int = 0
    outcome: str | None = None
    result: ImageResult | None = None
    total: int = 0


EventCallback = Callable[[ProgressEvent], None]


def emit(callback: EventCallback | None, event: ProgressEvent) -> None:
    """Deliver an event; a failing callback is logged, never allowed to break a copy."""
    if callback is None:
        return
    try:
        callback(event)
    except Exception:
        log.exception("progress callback failed on %s", event.kind)
