"""The HTML report: one self-contained page for the people who asked for the migration. No I/O.

:func:`overview` condenses copy/migration reports (one per shard) and verify reports into an
:class:`Overview`: the verdict, the totals, failures, skips by reason and one row per destination
repository. :func:`render_html` turns that into a page with no scripts, no fonts, no images and no
network (a Content-Security-Policy of ``default-src 'none'`` makes any attempt visible as a browser
console error), readable on a phone and printable. Every piece of text from a registry, a report or
the user is escaped. The chart is inline SVG.

Totals in the page carry ``data-total="<name>"`` and repository rows ``data-repository`` so that
tools (and the tests) can read the numbers back without scraping prose.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ._cilog import human_duration, human_size
from ._migration_report import MigrationReport
from ._plan import PlanSummary
from ._report import CopyReport, ImageResult, Totals
from ._verify_report import VerifiedImage, VerifyReport, VerifyTotals

__all__ = ["Overview", "RepositoryRow", "overview", "render_html", "repository_of"]

Verdict = Literal["ok", "warning", "failed", "planned"]

#: the one skip reason that means the image is at the destination (every other one: it is not)
_PRESENT = "up-to-date"
#: at most this many repositories in the chart (the table lists them all)
CHART_LIMIT = 30


def repository_of(reference: str) -> str:
    """``host/group/app`` of ``host/group/app:tag`` or ``host/group/app@sha256:…``."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


@dataclass
class RepositoryRow:
    """One destination repository: what the run did there and, when verified, what verify found."""

    name: str
    images: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    planned: int = 0
    bytes_uploaded: int = 0
    referrers: int = 0
    verified: int = 0
    identical: int = 0

    @property
    def attention(self) -> bool:
        return self.failed > 0 or self.verified > self.identical


@dataclass
class Overview:
    """Everything the page shows, computed from the reports."""

    verdict: Verdict
    headline: str
    totals: Totals
    #: the copy/migration reports merged (``None`` for a page of verify reports only)
    copy: CopyReport | None
    verify: VerifyReport | None
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    archived: int = 0
    untagged_not_copied: int = 0
    bytes_planned: int | None = None
    shards: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failures: list[ImageResult] = field(default_factory=list)
    differences: list[VerifiedImage] = field(default_factory=list)
    restore_commands: list[str] = field(default_factory=list)
    repositories: list[RepositoryRow] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


def overview(reports: Sequence[CopyReport], verifications: Sequence[VerifyReport] = ()) -> Overview:
    """Condense shard reports and verify reports (a migration's own ``verification`` included)."""
    verify_reports = list(verifications)
    for report in reports:
        if isinstance(report, MigrationReport) and report.verification is not None:
            verify_reports.append(report.verification)
    copy = CopyReport.merge(list(reports)) if reports else None
    verify = VerifyReport.merge(verify_reports) if verify_reports else None
    totals = copy.totals if copy is not None else Totals()

    skipped = Counter(image.reason or "skipped" for image in (copy.images if copy else []) if image.status == "skipped")
    migrations = [r for r in reports if isinstance(r, MigrationReport)]
    # a plain copy merged with verify reports is a MigrationReport with the default (empty) plan
    plans = [r.plan for r in migrations if r.plan != PlanSummary()]
    plan = PlanSummary.merge(plans) if plans else None
    restore = [c for r in migrations for c in r.restore_commands]
    runs: list[CopyReport | VerifyReport] = [*reports, *verify_reports]
    starts = [r.started_at for r in runs]
    ends = [r.finished_at for r in runs if r.finished_at is not None]
    view = Overview(
        verdict="ok",
        headline="",
        totals=totals,
        copy=copy,
        verify=verify,
        skipped_by_reason=dict(sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))),
        archived=skipped.get("archived", 0) + skipped.get("activating", 0),
        untagged_not_copied=sum(plan.untagged_skipped.values()) if plan else 0,
        bytes_planned=plan.estimated_bytes if plan else None,
        shards=plan.shard.split(",") if plan else [],
        started_at=min(starts) if starts else None,
        finished_at=max(ends) if ends else None,
        failures=[image for image in (copy.images if copy else []) if image.status == "failed"],
        differences=verify.differences() if verify else [],
        restore_commands=list(dict.fromkeys(restore)),
        repositories=_rows(copy.images if copy else [], verify.images if verify else []),
    )
    view.verdict, view.headline = _verdict(view)
    return view


def _rows(images: Iterable[ImageResult], verified: Iterable[VerifiedImage]) -> list[RepositoryRow]:
    rows: dict[str, RepositoryRow] = {}
    for image in images:
        row = rows.setdefault(repository_of(image.destination), RepositoryRow(repository_of(image.destination)))
        row.images += 1
        setattr(row, image.status, getattr(row, image.status) + 1)
        row.bytes_uploaded += image.bytes_uploaded
        row.referrers += sum(1 for r in image.referrers if r.status in ("copied", "existing"))
    for checked in verified:
        row = rows.setdefault(repository_of(checked.destination), RepositoryRow(repository_of(checked.destination)))
        row.verified += 1
        row.identical += checked.status in ("identical", "skipped")
    return sorted(rows.values(), key=lambda r: (not r.attention, r.name))


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _verdict(view: Overview) -> tuple[Verdict, str]:
    t = view.totals
    verify = view.verify
    differ = len(view.differences)
    if t.images == 0 and (verify is None or verify.totals.images == 0):
        return "warning", "Nothing to report: the run selected no images"
    if view.copy is None and verify is not None:
        n = verify.totals.images
        if differ:
            return "failed", f"Verify: {differ:,} of {_count(n, 'image')} differ from the source"
        return "ok", f"Verify: all {_count(n, 'image')} are identical at the destination"
    problems = []
    if t.failed:
        problems.append(f"{t.failed:,} of {_count(t.images, 'image')} failed")
    if differ:
        problems.append(f"verify found {_count(differ, 'difference')}")
    if problems:
        return "failed", "; ".join(problems).capitalize()
    if t.planned:
        return "planned", f"Dry run: {_count(t.planned, 'image')} would be copied"
    left_out = sum(n for reason, n in view.skipped_by_reason.items() if reason != _PRESENT)
    present = t.copied + view.skipped_by_reason.get(_PRESENT, 0)
    done = f"{_count(present, 'image')} at the destination"
    checked = ", verified" if verify is not None else ""
    if left_out:
        return "warning", f"{done}{checked}; {_count(left_out, 'image')} not moved (see Skipped)"
    return "ok", f"Migration complete: {done}{checked}"


# ---------------------------------------------------------------------------------------------- rendering


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
:root{--ok:#1a7f37;--warn:#9a6700;--fail:#cf222e;--plan:#0969da;--ink:#1f2328;--mute:#59636e;--line:#d1d9e0}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:#fff}
main{max-width:1100px;margin:0 auto;padding:16px}
header.verdict{padding:18px 16px;border-radius:8px;color:#fff;margin-bottom:18px}
header.ok{background:var(--ok)} header.warning{background:var(--warn)}
header.failed{background:var(--fail)} header.planned{background:var(--plan)}
header h1{margin:0;font-size:1.45em;overflow-wrap:anywhere} header p{margin:6px 0 0;opacity:.92}
h2{font-size:1.15em;margin:26px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
dl.totals{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;margin:0}
dl.totals div{border:1px solid var(--line);border-radius:6px;padding:8px 10px}
dt{color:var(--mute);font-size:.85em} dd{margin:2px 0 0;font-size:1.25em;font-weight:600}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:8px;border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
table.failures td:first-child{width:40%} table.failures :is(td,th):nth-child(2){white-space:nowrap}
.dst{font-weight:600}
th{background:#f6f8fa} td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.ref,code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.88em;overflow-wrap:anywhere}
tr.attention td{background:#fff1f0}
.bad{color:var(--fail);font-weight:600} .good{color:var(--ok);font-weight:600} .mute{color:var(--mute)}
svg{max-width:100%;height:auto} svg text{font:12px system-ui,sans-serif;fill:var(--ink)}
footer{margin-top:28px;color:var(--mute);font-size:.85em}
@media (max-width:600px){body{font-size:14px} main{padding:8px} th,td{padding:4px 5px}}
@media print{header.verdict{color:#000;border:3px solid currentColor;background:none!important}
 .scroll{overflow:visible} tr{break-inside:avoid} a{color:inherit}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(view: Overview, *, title: str = "ecrcopy migration report", generator: str = "ecrcopy") -> str:
    """The page for ``view``: a complete, self-contained HTML document."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<title>{_e(title)}: {_e(view.headline)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f'<header class="verdict {view.verdict}" data-verdict="{view.verdict}">',
        f"<h1>{_e(view.headline)}</h1><p>{_e(_subline(view, title))}</p></header>",
        _totals(view),
        _failures(view),
        _skipped(view),
        _chart(view.repositories),
        _repositories(view),
        f"<footer>Generated by {_e(generator)}"
        + (f" at {_e(view.finished_at.isoformat(timespec='seconds'))}" if view.finished_at else "")
        + ".</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _subline(view: Overview, title: str) -> str:
    bits = [title]
    if view.shards:
        bits.append(f"{_count(len(view.shards), 'shard')} ({', '.join(view.shards)})")
    if view.started_at is not None:
        bits.append(f"started {view.started_at.isoformat(timespec='seconds')}")
    return " · ".join(bits)


def _item(name: str, label: str, value: float | str, shown: str | None = None, *, css: str = "") -> str:
    """One figure of the totals; a count is shown with thousands separators unless ``shown`` says otherwise."""
    cls = f' class="{css}"' if css else ""
    text = shown if shown is not None else f"{value:,}" if isinstance(value, int) else str(value)
    dd = f'<dd data-total="{_e(name)}" data-value="{_e(value)}"{cls}>{_e(text)}</dd>'
    return f"<div><dt>{_e(label)}</dt>{dd}</div>"


def _totals(view: Overview) -> str:
    t = view.totals
    items: list[str] = []
    if view.copy is not None:
        items += [
            _item("images", "Images", t.images),
            _item("copied", "Copied", t.copied, css="good" if t.copied else ""),
            _item("skipped", "Skipped", t.skipped),
            _item("failed", "Failed", t.failed, css="bad" if t.failed else ""),
        ]
        if t.planned:
            items.append(_item("planned", "Planned (dry run)", t.planned))
        items += [
            _item("archived", "Archived in ECR", view.archived, css="bad" if view.archived else ""),
            _item("untagged_not_copied", "Untagged, not copied", view.untagged_not_copied),
            _item("referrers_copied", "Signatures & SBOMs copied", t.referrers_copied),
            _item("referrers_existing", "Signatures & SBOMs already there", t.referrers_existing),
            _item("bytes_uploaded", "Bytes moved", t.bytes_uploaded, human_size(t.bytes_uploaded)),
        ]
        if view.bytes_planned is not None:
            items.append(_item("bytes_planned", "Bytes planned", view.bytes_planned, human_size(view.bytes_planned)))
        items += [
            _item("blobs_uploaded", "Blobs uploaded", t.blobs_uploaded),
            _item("blobs_mounted", "Blobs mounted", t.blobs_mounted),
            _item("retries", "Retries", t.retries),
        ]
    duration = view.duration_seconds
    items.append(
        _item(
            "duration_seconds",
            "Duration",
            round(duration or 0, 3),
            human_duration(duration) if duration is not None else "-",
        )
    )
    if view.verify is not None:
        v: VerifyTotals = view.verify.totals
        ok = view.verify.ok
        shown = f"{v.identical:,} of {v.images:,} identical" if ok else f"{len(view.differences):,} differ"
        items.append(
            _item(
                "verify",
                "Verify" + (" (deep)" if view.verify.deep else ""),
                "ok" if ok else "failed",
                shown,
                css="good" if ok else "bad",
            )
        )
        items.append(_item("verify_identical", "Verified identical", v.identical))
    else:
        items.append(_item("verify", "Verify", "not run", css="mute"))
    return '<section id="totals"><h2>Totals</h2><dl class="totals">' + "".join(items) + "</dl></section>"


def _head(head: Sequence[str], numeric: frozenset[int] = frozenset()) -> str:
    cells = "".join(f'<th{" class=n" if i in numeric else ""} scope="col">{_e(h)}</th>' for i, h in enumerate(head))
    return f"<thead><tr>{cells}</tr></thead>"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: frozenset[int] = frozenset()) -> str:
    body = "".join(_rows_html(rows, numeric))
    return f'<div class="scroll"><table>{_head(head, numeric)}<tbody>{body}</tbody></table></div>'


def _rows_html(rows: Iterable[Sequence[str]], numeric: frozenset[int]) -> Iterable[str]:
    for row in rows:
        yield (
            "<tr>"
            + "".join(
                f'<td class="{"n" if i in numeric else "ref" if i == 0 else ""}">{_e(c)}</td>'
                for i, c in enumerate(row)
            )
            + "</tr>"
        )


def _image_cell(destination: str, source: str) -> str:
    """The destination (what people look for at GitLab) and, smaller, where it came from."""
    return (
        f'<td class="ref"><span class="dst">{_e(destination)}</span>'
        f'<br><span class="mute">from {_e(source.split("@", 1)[0])}</span></td>'
    )


def _failures(view: Overview) -> str:
    if not view.failures and not view.differences:
        return ""
    head = _head(("Image", "Reason", "Details"))
    out = ['<section id="failures"><h2>Failures</h2>']
    if view.failures:
        rows = "".join(
            f"<tr>{_image_cell(i.destination, i.source)}<td>{_e(i.reason or '')}</td><td>{_e(i.error or '')}</td></tr>"
            for i in view.failures
        )
        out.append(f'<div class="scroll"><table class="failures">{head}<tbody>{rows}</tbody></table></div>')
    if view.differences:
        out.append(f"<p>Verify: {_e(_count(len(view.differences), 'image'))} not identical at the destination.</p>")
        rows = "".join(
            f"<tr>{_image_cell(d.destination, d.source)}<td>{_e(d.status)}</td>"
            f"<td>{_e(d.error or d.reason or '; '.join(d.missing[:5]))}</td></tr>"
            for d in view.differences
        )
        out.append(f'<div class="scroll"><table class="failures">{head}<tbody>{rows}</tbody></table></div>')
    out.append("</section>")
    return "".join(out)


def _skipped(view: Overview) -> str:
    reasons = dict(view.skipped_by_reason)
    if view.untagged_not_copied:
        reasons["untagged (policy skip)"] = view.untagged_not_copied
    if not reasons and not view.restore_commands:
        return ""
    out = ['<section id="skipped"><h2>Skipped</h2>']
    explain = {
        "up-to-date": "already at the destination with the same digest",
        "archived": "in ECR's archive storage class: restore, then run again",
        "activating": "being restored from ECR's archive: run again when ACTIVE",
        "conflict": "the destination tag holds another image (--on-conflict skip)",
        "invalid_tag": "not a valid OCI tag: no registry can hold it",
        "unsupported": "Docker schema 1 or foreign layers: not copied",
        "untagged (policy skip)": "untagged standalone images left out (--untagged tag copies them)",
    }
    out.append(
        _table(
            ("Reason", "Images", "Meaning"),
            ((reason, f"{n:,}", explain.get(reason, "")) for reason, n in reasons.items()),
            numeric=frozenset({1}),
        )
    )
    if view.restore_commands:
        out.append("<p>Restore the archived images, then run the migration again:</p><pre><code>")
        out.append(_e("\n".join(view.restore_commands)))
        out.append("</code></pre>")
    out.append("</section>")
    return "".join(out)


def _chart(rows: Sequence[RepositoryRow]) -> str:
    """Bytes moved and images per repository as horizontal bars (the largest :data:`CHART_LIMIT`)."""
    shown = sorted(rows, key=lambda r: (-r.bytes_uploaded, -r.images, r.name))[:CHART_LIMIT]
    if not shown:
        return ""
    label_w, bar_w, row_h = 230, 300, 22
    width, height = label_w + 2 * bar_w + 40, row_h * len(shown) + 30
    max_bytes = max(r.bytes_uploaded for r in shown) or 1
    max_images = max(r.images for r in shown) or 1
    span = bar_w - 80  # room for the value after the longest bar
    common = _common_prefix([r.name for r in shown])
    out = [
        f'<section id="chart"><h2>Bytes and images per repository</h2>'
        f'<svg viewBox="0 0 {width} {height}" width="{width}" role="img" xmlns="http://www.w3.org/2000/svg"'
        f' aria-label="bytes moved and images per repository">',
        f'<text x="{label_w}" y="14" font-weight="600">bytes moved</text>',
        f'<text x="{label_w + bar_w + 20}" y="14" font-weight="600">images</text>',
    ]
    for n, row in enumerate(shown):
        y = 24 + n * row_h
        label = row.name[len(common) :] or row.name
        label = label if len(label) <= 34 else "…" + label[-33:]
        bw = max(1.0, span * row.bytes_uploaded / max_bytes) if row.bytes_uploaded else 0
        iw = max(1.0, span * row.images / max_images) if row.images else 0
        fill = "#cf222e" if row.attention else "#0969da"
        out.append(
            f"<g><title>{_e(row.name)}: {_e(human_size(row.bytes_uploaded))}, {_e(_count(row.images, 'image'))}</title>"
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bw:.1f}" height="{row_h - 8}" fill="{fill}"/>'
            f'<text x="{label_w + bw + 4:.1f}" y="{y + 14}">{_e(human_size(row.bytes_uploaded))}</text>'
            f'<rect x="{label_w + bar_w + 20}" y="{y + 3}" width="{iw:.1f}" height="{row_h - 8}" fill="#1a7f37"/>'
            f'<text x="{label_w + bar_w + 24 + iw:.1f}" y="{y + 14}">{row.images:,}</text></g>'
        )
    out.append("</svg>")
    if len(rows) > len(shown):
        out.append(f'<p class="mute">The {len(shown)} largest of {len(rows):,} repositories; all are in the table.</p>')
    out.append("</section>")
    return "".join(out)


def _common_prefix(names: Sequence[str]) -> str:
    """The path components every name shares (``host/group/project/``), so chart labels stay short."""
    if len(names) < 2:
        return names[0].rpartition("/")[0] + "/" if names and "/" in names[0] else ""
    parts = [name.split("/") for name in names]
    shared: list[str] = []
    for column in zip(*(p[:-1] for p in parts), strict=False):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return "/".join(shared) + "/" if shared else ""


def _repositories(view: Overview) -> str:
    if not view.repositories:
        return ""
    verified = view.verify is not None
    head = ["Repository", "Images", "Copied", "Skipped", "Failed", "Signatures & SBOMs", "Bytes moved"]
    if verified:
        head.append("Verified identical")
    numeric = frozenset(range(1, len(head)))
    body = []
    for row in view.repositories:
        values = [
            f"{row.images:,}",
            f"{row.copied:,}",
            f"{row.skipped:,}",
            f"{row.failed:,}",
            f"{row.referrers:,}",
            human_size(row.bytes_uploaded),
        ]
        if verified:
            values.append(f"{row.identical:,} / {row.verified:,}")
        css = ' class="attention"' if row.attention else ""
        tds = "".join(f'<td class="n">{_e(v)}</td>' for v in values)
        body.append(
            f'<tr{css} data-repository="{_e(row.name)}" data-images="{row.images}" data-failed="{row.failed}"'
            f' data-bytes="{row.bytes_uploaded}"><td class="ref">{_e(row.name)}</td>{tds}</tr>'
        )
    return (
        f'<section id="repositories"><h2>Repositories ({len(view.repositories):,})</h2><div class="scroll"><table>'
        f"{_head(head, numeric)}<tbody>{''.join(body)}</tbody></table></div></section>"
    )
