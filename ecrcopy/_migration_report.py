"""The report of a migration: a :class:`~ecrcopy.CopyReport` plus the plan it carried out. No I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from pydantic import Field

from ._plan import PlanSummary
from ._report import CopyReport
from ._verify_report import VerifyReport

__all__ = ["MigrationReport"]


class MigrationReport(CopyReport):
    """A :class:`CopyReport` plus the plan it carried out."""

    plan: PlanSummary = Field(default_factory=PlanSummary)
    #: one ``aws ecr update-image-storage-class`` command per archived image the plan had to skip
    restore_commands: list[str] = Field(default_factory=list)
    #: the verify pass that ended the run (``migrate --verify``), or verify runs merged in
    verification: VerifyReport | None = None

    @classmethod
    def merge(cls, reports: Sequence[CopyReport], verifications: Sequence[VerifyReport] = ()) -> Self:
        """One report for several shards' (and verify runs') reports, as ``ecrcopy report merge`` writes it.

        Images are concatenated, the plans merged (:meth:`PlanSummary.merge`), restore commands kept
        once, verifications (the reports' own and ``verifications``) merged into one.
        """
        merged = super().merge(reports)
        migrations = [r for r in reports if isinstance(r, MigrationReport)]
        merged.plan = PlanSummary.merge([r.plan for r in migrations])
        merged.restore_commands = list(dict.fromkeys(c for r in migrations for c in r.restore_commands))
        checks = [r.verification for r in migrations if r.verification is not None] + list(verifications)
        merged.verification = VerifyReport.merge(checks) if checks else None
        return merged
