"""``ecrcopy report merge``: the JSON reports of parallel jobs (and of verify) as one page and one report.

A GitLab pipeline runs ``migrate`` in ``parallel:`` jobs, each writing its own ``--report``; a later
job merges them, with the ``verify`` job's report, into the page people look at.
"""

from __future__ import annotations

import argparse
import json
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from ._cli_support import write_text
from ._exceptions import ConfigurationError, validation_summary
from ._html import overview, render_html
from ._migration_report import MigrationReport
from ._report import CopyReport
from ._verify_report import VerifyReport

__all__ = ["MAX_REPORT_SIZE", "merge_command", "read_report"]

#: a report of 10,000 images is some 10 MB: anything far larger is not one
MAX_REPORT_SIZE = 1 << 30


def read_report(path: Path) -> CopyReport | VerifyReport:
    """A JSON report written by ``copy``, ``migrate`` (a :class:`MigrationReport`), ``verify`` or ``report merge``."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"cannot read {path}: not a regular file")
        if info.st_size > MAX_REPORT_SIZE:
            raise ConfigurationError(f"{path}: {info.st_size:,} bytes is more than any ecrcopy report")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ConfigurationError(f"{path}: not JSON, so not an ecrcopy report") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConfigurationError(f"{path}: not an ecrcopy report (it has no list of images)")
    model: type[CopyReport] | type[VerifyReport]
    if "deep" in data:
        model = VerifyReport
    elif "plan" in data or "verification" in data:
        model = MigrationReport
    else:
        model = CopyReport
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: not an ecrcopy report ({validation_summary(exc)})") from None


def merge_command(args: argparse.Namespace, out: TextIO) -> int:
    if args.html is None and args.report is None:
        raise ConfigurationError("report merge writes --html PATH and/or --report PATH: give at least one")
    paths = _distinct(args.reports, out)
    reports = [read_report(path) for path in paths]
    copies = [r for r in reports if isinstance(r, CopyReport)]
    checks = [r for r in reports if isinstance(r, VerifyReport)]
    merged: CopyReport | VerifyReport
    if any(isinstance(r, MigrationReport) for r in copies) or (copies and checks):
        merged = MigrationReport.merge(copies, checks)
    elif copies:
        merged = CopyReport.merge(copies)
    else:
        merged = VerifyReport.merge(checks)
    # the page is the merged report's: what --html shows is what --report writes
    view = overview([merged]) if isinstance(merged, CopyReport) else overview([], [merged])
    duplicates = sum(_images(r) for r in reports) - _images(merged)
    if duplicates:
        print(f"report merge: {duplicates} images are in more than one report: each counted once", file=out)
    if args.html is not None:
        write_text(args.html, render_html(view, title=args.title))
    if args.report is not None:
        write_text(args.report, merged.model_dump_json(indent=2) + "\n")
    written = " and ".join(str(p) for p in (args.html, args.report) if p is not None)
    print(f"merged {len(reports)} report{'s' if len(reports) != 1 else ''} into {written}: {view.headline}", file=out)
    return 0


def _images(report: CopyReport | VerifyReport) -> int:
    """The images a report holds, its verification's included."""
    verification = report.verification if isinstance(report, MigrationReport) else None
    return len(report.images) + (len(verification.images) if verification is not None else 0)


def _distinct(paths: Sequence[Path], out: TextIO) -> list[Path]:
    """Each file once (a glob and an explicit name may both match it)."""
    seen: set[Path] = set()
    distinct = []
    for path in paths:
        key = path.resolve()
        if key in seen:
            print(f"report merge: {path} given twice, read once", file=out)
            continue
        seen.add(key)
        distinct.append(path)
    return distinct
