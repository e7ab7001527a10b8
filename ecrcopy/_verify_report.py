"""The outcome of ``ecrcopy verify``: models, the status rules, the summary table and JUnit. No I/O.

Statuses of one selected source image:

* ``identical`` — the destination tag holds the source digest (and, with ``deep``, every child
  manifest, blob and referrer of it is at the destination);
* ``missing`` — the destination has no such tag;
* ``different`` — the destination tag holds another digest;
* ``incomplete`` — (``deep``) the tag is right but something it needs is absent (``missing`` lists it);
* ``archived`` — the source image is in ECR's archive storage class (or being restored) and the
  destination does not hold it: it cannot be verified or copied until restored;
* ``skipped`` — a source tag no registry can hold (not a valid OCI tag): never copied, not a difference;
* ``error`` — the check itself failed (``error`` says why).

A verification is ``ok`` only when every image is ``identical`` or ``skipped``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from ._plan import PlanSummary
from ._protocol import clean_text
from ._report import Count, as_utc

__all__ = [
    "VerifiedImage",
    "VerifyReport",
    "VerifyStatus",
    "VerifyTotals",
    "compare_digests",
    "render_verify_table",
    "verify_junit_xml",
]

VerifyStatus = Literal["identical", "missing", "different", "incomplete", "archived", "skipped", "error"]
_PASSING = frozenset({"identical", "skipped"})


def compare_digests(source: str, destination: str | None) -> VerifyStatus:
    """The status of a tag from the source digest and what the destination tag holds (``None``: absent)."""
    if destination is None:
        return "missing"
    return "identical" if destination == source else "different"


class VerifiedImage(BaseModel):
    """One selected source image (a tag, or an untagged image's ``untagged-<hex>`` tag) and its verdict."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    source: str
    destination: str
    #: the source's digest
    digest: str | None = None
    status: VerifyStatus
    #: what the destination tag holds, when it holds something
    destination_digest: str | None = None
    reason: str | None = None
    error: str | None = None
    #: ``deep``: what is absent at the destination ("manifest sha256:…", "blob sha256:…",
    #: "referrer sha256:…", "referrers tag sha256-…")
    missing: list[str] = Field(default_factory=list)
    #: ``deep``: manifests, blobs and referrers checked
    checked: Count = 0

    @field_validator("error", "reason")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else clean_text(value, 1000)


class VerifyTotals(BaseModel):
    images: int = 0
    identical: int = 0
    missing: int = 0
    different: int = 0
    incomplete: int = 0
    archived: int = 0
    skipped: int = 0
    error: int = 0
    #: ``deep``: objects checked, and absent
    checked: int = 0
    absent: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


class VerifyReport(BaseModel):
    """What ``verify`` found; ``model_dump_json()`` is the JSON ``--report`` writes."""

    model_config = ConfigDict(extra="ignore")

    images: list[VerifiedImage] = Field(default_factory=list)
    deep: bool = False
    #: the plan verified against (the migration form)
    plan: PlanSummary | None = None
    started_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None

    _utc = field_validator("started_at", "finished_at")(as_utc)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """True when every selected image is identical at the destination (or can never be copied)."""
        return all(image.status in _PASSING for image in self.images)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> VerifyTotals:
        totals = VerifyTotals(images=len(self.images))
        for image in self.images:
            setattr(totals, image.status, getattr(totals, image.status) + 1)
            totals.checked += image.checked
            totals.absent += len(image.missing)
        return totals

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float:
        end = self.finished_at or _now()
        return round((end - self.started_at).total_seconds(), 3)

    def differences(self) -> list[VerifiedImage]:
        return [image for image in self.images if image.status not in _PASSING]

    def finish(self) -> Self:
        self.finished_at = _now()
        return self

    def to_html(self, *, title: str = "ecrcopy verify report") -> str:
        """The verification as one self-contained HTML page (what ``verify --html`` writes)."""
        from ._html import overview, render_html  # the renderer builds on these models

        return render_html(overview([], [self]), title=title)

    @classmethod
    def merge(cls, reports: Sequence[VerifyReport]) -> Self:
        """One report for several verify runs: images concatenated (one entry per source and
        destination, the last), ``deep`` only if every run was deep."""
        merged = cls(
            images=list({(i.source, i.destination): i for r in reports for i in r.images}.values()),
            deep=bool(reports) and all(r.deep for r in reports),
            plan=PlanSummary.merge([r.plan for r in reports if r.plan is not None])
            if any(r.plan for r in reports)
            else None,
        )
        if reports:
            merged.started_at = min(r.started_at for r in reports)
            ends = [r.finished_at for r in reports if r.finished_at is not None]
            merged.finished_at = max(ends) if ends else None
        return merged


def _repository(reference: str) -> str:
    name = reference.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


_COLUMNS = ("identical", "missing", "different", "incomplete", "archived", "skipped", "error")


def render_verify_table(report: VerifyReport) -> str:
    """Per destination repository, images by status; then one line per difference and a total line."""
    rows: dict[str, dict[str, int]] = {}
    for image in report.images:
        row = rows.setdefault(_repository(image.destination), dict.fromkeys(_COLUMNS, 0))
        row[image.status] += 1
    lines = []
    if rows:
        width = max(len("repository"), *(len(n) for n in rows))
        lines.append(f"{'repository':<{width}}  " + "  ".join(_COLUMNS))
        for name, row in sorted(rows.items()):
            lines.append(f"{name:<{width}}  " + "  ".join(f"{row[c]:>{len(c)}}" for c in _COLUMNS))
    for image in report.differences():
        detail = image.error or ""
        if image.status == "different":
            detail = f"destination holds {image.destination_digest}, source is {image.digest}"
        elif image.status == "incomplete":
            shown = ", ".join(image.missing[:3]) + (
                f" and {len(image.missing) - 3} more" if len(image.missing) > 3 else ""
            )
            detail = f"absent at the destination: {shown}"
        elif image.status == "missing":
            detail = f"no such tag at the destination (source {image.digest})"
        lines.append(f"{image.status.upper()} {image.source} -> {image.destination}: {detail}".rstrip(": "))
    t = report.totals
    verdict = "identical" if report.ok else "DIFFERENT"
    lines.append(
        f"verify{' (deep)' if report.deep else ''}: {verdict}: {t.images} images, {t.identical} identical, "
        f"{t.missing} missing, {t.different} different"
        + (f", {t.incomplete} incomplete" if t.incomplete else "")
        + (f", {t.archived} archived" if t.archived else "")
        + (f", {t.skipped} skipped" if t.skipped else "")
        + (f", {t.error} errors" if t.error else "")
        + (f"; {t.checked} objects checked, {t.absent} absent" if report.deep else "")
        + f"; {report.duration_seconds:.1f}s"
    )
    return "\n".join(lines)


def verify_junit_xml(report: VerifyReport, *, suite: str = "ecrcopy verify") -> str:
    """The verification as JUnit XML: one test case per image, a failure for every difference."""
    totals = report.totals
    failures = totals.images - totals.identical - totals.skipped - totals.error
    root = ET.Element("testsuites", name=suite)
    element = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(totals.images),
        failures=str(failures),
        errors=str(totals.error),
        skipped=str(totals.skipped),
        time=f"{report.duration_seconds:.3f}",
    )
    for image in report.images:
        repository = _repository(image.destination)
        name = image.destination[len(repository) :].lstrip(":@") or image.destination
        case = ET.SubElement(element, "testcase", classname=repository, name=name)
        message = image.error or ", ".join(image.missing[:20]) or f"{image.status}"
        if image.status == "error":
            ET.SubElement(case, "error", type=image.reason or "error", message=message).text = message
        elif image.status == "skipped":
            ET.SubElement(case, "skipped", message=message)
        elif image.status != "identical":
            failure = ET.SubElement(case, "failure", type=image.status, message=message)
            failure.text = (
                f"{image.source} -> {image.destination}\nsource {image.digest}, destination {image.destination_digest}"
                + "".join(f"\nabsent: {m}" for m in image.missing)
            )
        ET.SubElement(
            case, "system-out"
        ).text = f"{image.status} {image.source} -> {image.destination} digest={image.digest}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
