"""The HTML report: totals equal the JSON report's, hostile text is escaped, Chromium renders it.

The end-to-end part runs the real CLI through the ECR and GitLab emulations as a pipeline would:
two ``migrate`` shards with ``--html`` and ``--report``, ``verify``, then ``report merge``. The
pages are read back with a real HTML parser (the standard library's ``html.parser``) and rendered
in headless Chromium (screenshot and PDF under the test's temporary directory).

``ECRCOPY_UPDATE_DOCS_SCREENSHOT=1`` (``make docs-screenshot``) also writes the screenshot that
``docs/html-report.md`` shows, made by this same code.
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from ecrcopy import CopyReport, ImageResult
from ecrcopy._html import CHART_LIMIT, overview, render_html, repository_of
from ecrcopy._migration_report import MigrationReport
from ecrcopy._plan import PlanSummary
from ecrcopy._report import ReferrerResult
from ecrcopy._verify_report import VerifiedImage, VerifyReport
from ecrcopy.testing import Blob, EcrEmulator, GitLabEmulator, oci_image, oci_index, push

from ._browser import render
from .test_migrate import cli_env

ROOT = Path(__file__).resolve().parent.parent
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "html-report.png"
T0 = datetime(2026, 6, 1, tzinfo=UTC)

#: the elements a report page may contain (anything else would be injected markup)
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "p", "section", "dl", "div",
    "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "pre", "code", "footer", "svg", "g", "text", "rect",
    "span", "br",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- parsing


@dataclass
class Page:
    """What a real HTML parser sees in a page."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    totals: dict[str, str] = field(default_factory=dict)
    repositories: dict[str, dict[str, str | None]] = field(default_factory=dict)
    verdict: str | None = None

    @property
    def all_text(self) -> str:
        return "".join(self.text)


class _Collector(html.parser.HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.page.tags.append((tag, attributes))
        if "data-total" in attributes:
            self.page.totals[attributes["data-total"] or ""] = attributes.get("data-value") or ""
        if "data-repository" in attributes:
            self.page.repositories[attributes["data-repository"] or ""] = attributes
        if "data-verdict" in attributes:
            self.page.verdict = attributes["data-verdict"]

    def handle_data(self, data: str) -> None:
        self.page.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    collector = _Collector(page)
    collector.feed(text)
    collector.close()
    return page


def assert_safe_markup(page: Page) -> None:
    for tag, attributes in page.tags:
        assert tag in ALLOWED_TAGS, f"unexpected element <{tag}>"
        for name, value in attributes.items():
            assert not name.startswith("on"), f"event handler {name}={value!r} on <{tag}>"
            assert name != "src" and "url(" not in (value or ""), f"{name}={value!r}: pages load nothing"


def assert_totals_match(page: Page, report: dict[str, Any]) -> None:
    """The page's totals are the JSON report's."""
    totals = report["totals"]
    for name in ("images", "copied", "skipped", "failed", "bytes_uploaded", "blobs_uploaded", "blobs_mounted"):
        assert int(page.totals[name]) == totals[name], name
    assert int(page.totals["referrers_copied"]) == totals["referrers_copied"]
    archived = sum(1 for i in report["images"] if i["reason"] in ("archived", "activating"))
    assert int(page.totals["archived"]) == archived
    rows = page.repositories
    assert sum(int(r["data-images"] or 0) for r in rows.values()) == totals["images"]
    assert sum(int(r["data-bytes"] or 0) for r in rows.values()) == totals["bytes_uploaded"]
    assert sum(int(r["data-failed"] or 0) for r in rows.values()) == totals["failed"]


# ---------------------------------------------------------------------------------------------- pure


hostile_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "<script>alert(1)</script>",
            '"><img src=x onerror=alert(1)>',
            "</title><script>x</script>",
            "]]><svg onload=alert(1)>",
            "&amp; &lt; &#x3c;",
            "' onmouseover='x",
            "<style>body{display:none}</style>",
            "\u202egnp.exe",
        ]
    ),
)


@settings(max_examples=60, deadline=None)
@given(name=hostile_text, error=hostile_text, reason=hostile_text)
@example(name="<b>", error="</td></tr></table><script>alert(1)</script>", reason='"')
def test_hostile_names_and_errors_are_escaped(name: str, error: str, reason: str) -> None:
    failed = ImageResult(
        source=f"src/{name}:v1", destination=f"dst/{name}:v1", status="failed", reason=reason, error=error
    )
    skipped = ImageResult(source=f"src/{name}:v2", destination=f"dst/{name}:v2", status="skipped", reason=reason)
    verified = VerifiedImage(source=f"src/{name}:v1", destination=f"dst/{name}:v1", status="error", error=error)
    report = MigrationReport(images=[failed, skipped], restore_commands=[f"aws ecr restore {name}"]).finish()
    report.verification = VerifyReport(images=[verified]).finish()
    text = report.to_html(title=name)
    page = parse(text)
    assert_safe_markup(page)
    # everything shown is the text itself (cleaned of control characters by the report), escaped once
    for shown in (failed.error, failed.reason, failed.destination, verified.error):
        assert shown is not None and shown.strip() in page.all_text
    assert text.count("<script") == 0 and text.count("<style") == 1


statuses = st.sampled_from(["copied", "skipped", "failed", "planned"])


@st.composite
def images(draw: st.DrawFn) -> ImageResult:
    repo = draw(st.sampled_from(["a", "b/c", "d/e/f"]))
    status = draw(statuses)
    reasons = [None, "up-to-date", "archived", "conflict", "invalid_tag", "unsupported"]
    reason = draw(st.sampled_from(reasons)) if status == "skipped" else None
    return ImageResult(
        source=f"src.example/{repo}:t{draw(st.integers(0, 9))}",
        destination=f"dst.example/g/p/{repo}:t",
        status=status,
        reason=reason,
        bytes_uploaded=draw(st.integers(0, 10**10)),
        blobs_uploaded=draw(st.integers(0, 50)),
        blobs_mounted=draw(st.integers(0, 50)),
        referrers=[
            ReferrerResult(digest="sha256:" + "1" * 64, subject="sha256:" + "2" * 64, status="copied")
            for _ in range(draw(st.integers(0, 2)))
        ],
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(images(), max_size=12), min_size=1, max_size=4))
def test_the_page_totals_are_the_merged_reports_totals(shards: list[list[ImageResult]]) -> None:
    reports = [
        MigrationReport(images=list(imgs), plan=PlanSummary(shard=f"{n}/{len(shards)}")).finish()
        for n, imgs in enumerate(shards, 1)
    ]
    merged = MigrationReport.merge(reports)
    as_json = json.loads(merged.model_dump_json())
    page = parse(render_html(overview(reports)))
    assert_totals_match(page, as_json)
    # merging and rendering the merged report gives the same page totals
    assert parse(merged.to_html()).totals == page.totals
    # one source and destination is one image: the last report's word on it counts
    images = list({(i.source, i.destination): i for imgs in shards for i in imgs}.values())
    failed = any(i.status == "failed" for i in images)
    assert (page.verdict == "failed") == failed
    if not failed and images and not any(i.status == "planned" for i in images):
        present = sum(1 for i in images if i.status == "copied" or i.reason == "up-to-date")
        assert f"{present:,} image{'s' if present != 1 else ''} at the destination" in page.all_text
        assert (page.verdict == "ok") == (present == len(images))


def test_verdicts() -> None:
    tags = iter(range(10**6))

    def one(status: str, reason: str | None = None) -> ImageResult:
        tag = next(tags)  # distinct images: one source and destination is one image
        return ImageResult(source=f"s/a:{tag}", destination=f"d/a:{tag}", status=status, reason=reason)  # type: ignore[arg-type]

    assert overview([CopyReport(images=[one("copied")])]).verdict == "ok"
    assert overview([CopyReport(images=[one("skipped", "up-to-date")])]).verdict == "ok"
    assert overview([CopyReport(images=[one("skipped", "archived")])]).verdict == "warning"
    assert overview([CopyReport(images=[one("copied"), one("failed")])]).verdict == "failed"
    assert overview([CopyReport(images=[one("planned")])]).verdict == "planned"
    for reason in ("invalid_tag", "unsupported", "conflict", "activating"):
        view = overview([CopyReport(images=[one("copied"), one("skipped", reason)])])
        assert view.verdict == "warning", reason
        assert view.headline == "1 image at the destination; 1 image not moved (see Skipped)"
    assert overview([CopyReport()]).verdict == "warning"  # nothing selected is not a success
    assert overview([], [VerifyReport()]).headline.startswith("Nothing to report")
    missing = VerifyReport(images=[VerifiedImage(source="s/a:1", destination="d/a:1", status="missing")])
    assert overview([CopyReport(images=[one("copied")])], [missing]).verdict == "failed"
    assert overview([], [missing]).headline.startswith("Verify: 1 of 1 image differ")


def test_chart_shows_the_largest_repositories_and_says_so() -> None:
    imgs = [
        ImageResult(source=f"s/r{n}:t", destination=f"d/g/r{n}:t", status="copied", bytes_uploaded=n * 1000)
        for n in range(CHART_LIMIT + 5)
    ]
    page = parse(CopyReport(images=imgs).to_html())
    assert len(page.repositories) == CHART_LIMIT + 5  # the table lists all
    bars = [a for tag, a in page.tags if tag == "rect"]
    assert len(bars) == 2 * CHART_LIMIT
    assert f"The {CHART_LIMIT} largest of {CHART_LIMIT + 5} repositories" in page.all_text


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("h/g/app:v1", "h/g/app"),
        ("h:5000/g/app@sha256:" + "0" * 64, "h:5000/g/app"),
        ("h:5000/g/app", "h:5000/g/app"),
        ("h/g/app:v1@sha256:" + "0" * 64, "h/g/app"),
    ],
)
def test_repository_of(reference: str, repository: str) -> None:
    assert repository_of(reference) == repository


# ---------------------------------------------------------------------------------------------- a pipeline


@dataclass
class Pipeline:
    work: Path
    shards: list[dict[str, Any]]
    verify: dict[str, Any]
    merged: dict[str, Any]
    merge_output: str
    verify_output: str


def _plain_env() -> dict[str, str]:
    """This process's environment without AWS, CI or ecrcopy settings (a GitLab job running the tests has them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CI_", "ECRCOPY_"))}


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecrcopy", *args],
        capture_output=True,
        text=True,
        env=_plain_env() if env is None else env,
        cwd=cwd,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Two migrate shards, verify and report merge, as the CI component runs them; one conflict fails."""
    work = tmp_path_factory.mktemp("pipeline")
    with EcrEmulator(work / "ecr") as ecr, GitLabEmulator(work / "gitlab") as gl:
        base = [Blob.generated(300_000, seed=700), Blob.generated(120_000, seed=701)]
        for n, repo in enumerate(["shop/web", "shop/api", "billing/worker", "billing/ledger", "tools/ci-runner"]):
            for t in range(3):
                ecr.add_image(repo, oci_image([*base, 40_000 * (n + 1) + t], seed=10 * n + t), [f"v{t}"])
        index = oci_index(
            [
                oci_image([base[0], 90_000], seed=80, platform="linux/amd64"),
                oci_image([base[0], 95_000], seed=81, platform="linux/arm64"),
            ]
        )
        ecr.add_image("shop/web", index, ["multi"])
        ecr.add_image("shop/web", oci_image([64], seed=82, artifact_type="application/vnd.example.sig", subject=index))
        old = oci_image([50_000], seed=83)
        ecr.add_image("tools/ci-runner", old, ["2019"], pushed_at=T0 - timedelta(days=900))
        ecr.archive_image("tools/ci-runner", old.digest)
        # the destination already has another image under billing/ledger:v1: a conflict, which fails it
        push(gl.registry.url, f"{gl.project_path}/billing/ledger", oci_image([777], seed=99), "v1", auth=gl.credentials)
        ecr.reset_calls()

        env = cli_env(ecr, gl, XDG_CACHE_HOME=str(work / "cache"), GITLAB_CI="true")
        for index_ in (1, 2):
            shard = {**env, "CI_NODE_INDEX": str(index_), "CI_NODE_TOTAL": "2"}
            proc = _cli(
                "migrate",
                "--report",
                f"ecrcopy-report-{index_}.json",
                "--html",
                f"ecrcopy-report-{index_}.html",
                env=shard,
                cwd=work,
            )
            assert proc.returncode in (0, 1), proc.stderr
        proc = _cli("verify", "--report", "ecrcopy-verify.json", "--html", "ecrcopy-verify.html", env=env, cwd=work)
        assert proc.returncode == 1, proc.stdout + proc.stderr  # the conflicting tag differs
        verify_output = proc.stdout
        reports = sorted(str(p.name) for p in work.glob("ecrcopy-report-*.json"))
        merge = _cli(
            "report",
            "merge",
            *reports,
            "ecrcopy-verify.json",
            "--html",
            "ecrcopy-report.html",
            "--report",
            "ecrcopy-report.json",
            env=env,
            cwd=work,
        )
        assert merge.returncode == 0, merge.stdout + merge.stderr

        def load(name: str) -> dict[str, Any]:
            data: dict[str, Any] = json.loads((work / name).read_text())
            return data

        yield Pipeline(
            work=work,
            shards=[load(name) for name in reports],
            verify=load("ecrcopy-verify.json"),
            merged=load("ecrcopy-report.json"),
            merge_output=merge.stdout,
            verify_output=verify_output,
        )


def test_each_shard_page_has_its_reports_totals(pipeline: Pipeline) -> None:
    assert len(pipeline.shards) == 2
    for n, report in enumerate(pipeline.shards, 1):
        page = parse((pipeline.work / f"ecrcopy-report-{n}.html").read_text())
        assert_safe_markup(page)
        assert_totals_match(page, report)
        assert page.totals["verify"] == "not run"


def test_the_merged_page_has_every_shard_and_the_verify_result(pipeline: Pipeline) -> None:
    page = parse((pipeline.work / "ecrcopy-report.html").read_text())
    assert_safe_markup(page)
    merged = pipeline.merged
    assert_totals_match(page, merged)
    for name in ("images", "copied", "skipped", "failed", "bytes_uploaded"):
        assert merged["totals"][name] == sum(s["totals"][name] for s in pipeline.shards), name
    assert merged["plan"]["shard"] == "1/2,2/2"
    assert merged["plan"]["estimated_bytes"] == sum(s["plan"]["estimated_bytes"] for s in pipeline.shards)
    assert int(page.totals["bytes_planned"]) == merged["plan"]["estimated_bytes"]
    # the verdict: the conflicting tag failed, and verify saw it differ
    assert page.verdict == "failed"
    assert merged["totals"]["failed"] == 1 and page.totals["verify"] == "failed"
    assert int(page.totals["verify_identical"]) == pipeline.verify["totals"]["identical"]
    v = pipeline.verify["totals"]
    differ = v["images"] - v["identical"] - v["skipped"]
    assert differ == 2 and v["different"] == 1 and v["archived"] == 1  # the conflict, and the archived image
    assert f"1 of {merged['totals']['images']} images failed; verify found 2 differences" in page.all_text
    # failures first: the Failures section precedes the tables of everything else
    sections = [a.get("id") for tag, a in page.tags if tag == "section"]
    assert sections[:2] == ["totals", "failures"] and sections[-1] == "repositories"
    failed_row = next(name for name, row in page.repositories.items() if row["data-failed"] != "0")
    assert failed_row.endswith("/billing/ledger")
    assert next(iter(page.repositories)) == failed_row  # repositories needing attention come first
    # archived image counted, with the command that restores it
    assert int(page.totals["archived"]) == 1
    assert "aws ecr update-image-storage-class" in page.all_text
    assert "merged 3 reports into ecrcopy-report.html and ecrcopy-report.json" in pipeline.merge_output


def test_verify_progress_counts_every_image_it_reports(pipeline: Pipeline) -> None:
    """The archived image is settled without a check of its own: the last progress line counts it too."""
    progress = [line for line in pipeline.verify_output.splitlines() if line.startswith("progress: ")]
    n = pipeline.verify["totals"]["images"]
    assert progress and progress[-1].startswith(f"progress: {n}/{n} images, 2 differ, "), progress


def test_the_verify_page(pipeline: Pipeline) -> None:
    page = parse((pipeline.work / "ecrcopy-verify.html").read_text())
    assert_safe_markup(page)
    totals = pipeline.verify["totals"]
    assert page.verdict == "failed"
    assert int(page.totals["verify_identical"]) == totals["identical"]
    assert sum(int(r["data-images"] or 0) for r in page.repositories.values()) == 0  # nothing copied by verify
    assert "differ from the source" in page.all_text


def test_report_merge_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"images": [{"source": 1}]}')
    (tmp_path / "text.json").write_text("not json")
    for name, fragment in (
        ("bad.json", "not an ecrcopy report"),
        ("text.json", "not JSON"),
        ("gone.json", "cannot read"),
    ):
        proc = _cli("report", "merge", name, "--html", "out.html", cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ecrcopy: error: ") and fragment in lines[0], proc.stderr
    assert not (tmp_path / "out.html").exists()
    proc = _cli("report", "merge", "bad.json", cwd=tmp_path)
    assert proc.returncode == 2 and "--html PATH and/or --report PATH" in proc.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"images": [], "retry_wait_seconds": Infinity}', "not an ecrcopy report (retry_wait_seconds"),
        ('{"images": [{"source": "a", "destination": "b", "status": "copied", "bytes_uploaded": 1' + "0" * 400 + "}]}",
         "images.0.bytes_uploaded"),
        ('{"images": [], "plan": {"estimated_bytes": -1}}', "plan.estimated_bytes"),
        ('{"images": [], "plan": "x"}', "not an ecrcopy report (plan"),
        ('{"images": ["x"]}', "not an ecrcopy report (images.0"),
        ("[]", "it has no list of images"),
    ],
)  # fmt: skip
def test_report_merge_refuses_hostile_reports_in_one_line(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "r.json").write_text(content)
    proc = _cli("report", "merge", "r.json", "--html", "out.html", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ecrcopy: error: r.json: ") and fragment in lines[0], proc.stderr


def test_report_merge_reads_timestamps_without_offset_as_utc_and_writes_utf8_in_any_locale(tmp_path: Path) -> None:
    naive = CopyReport(images=[ImageResult(source="s/a:1", destination="d/a:1", status="copied")]).finish()
    data = json.loads(naive.model_dump_json())
    data["started_at"] = data["started_at"].replace("Z", "").split("+")[0]
    (tmp_path / "naive.json").write_text(json.dumps(data))
    (tmp_path / "aware.json").write_text(CopyReport().finish().model_dump_json())
    env = {k: v for k, v in _plain_env().items() if not k.startswith(("LC_", "LANG"))}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    proc = _cli(
        "report", "merge", "naive.json", "aware.json", "--html", "o.html", "--report", "o.json", env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "·" in (tmp_path / "o.html").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "o.json").read_text())["totals"]["copied"] == 1


def test_report_merge_refuses_what_is_no_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.json")
    proc = _cli("report", "merge", "fifo.json", "--html", "o.html", cwd=tmp_path)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr


def test_merging_plain_copy_reports_stays_a_copy_report_and_counts_each_image_once(tmp_path: Path) -> None:
    one = CopyReport(images=[ImageResult(source="s/a:1", destination="d/a:1", status="copied", bytes_uploaded=5)])
    two = CopyReport(images=[ImageResult(source="s/b:1", destination="d/b:1", status="copied", bytes_uploaded=7)])
    (tmp_path / "1.json").write_text(one.finish().model_dump_json())
    (tmp_path / "2.json").write_text(two.finish().model_dump_json())
    proc = _cli("report", "merge", "1.json", "2.json", "--report", "m.json", "--html", "m.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((tmp_path / "m.json").read_text())
    assert "plan" not in merged and merged["totals"]["bytes_uploaded"] == 12
    first = parse((tmp_path / "m.html").read_text())
    # the merge given again with its own inputs: the same page, each image once, and a note
    proc = _cli("report", "merge", "m.json", "1.json", "2.json", "--html", "again.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 images are in more than one report: each counted once" in proc.stdout
    again = parse((tmp_path / "again.html").read_text())
    assert again.totals == first.totals and "bytes_planned" not in again.totals
    assert again.totals["images"] == "2"


def test_plan_summaries_merge_once_per_shard() -> None:
    a = PlanSummary(shard="1/4", repositories=2, repositories_total=9, estimated_bytes=10, untagged_skipped={"x": 1})
    b = PlanSummary(shard="2/4", repositories=3, repositories_total=9, estimated_bytes=5, untagged_skipped={"y": 2})
    ab = PlanSummary.merge([a, b])
    assert (ab.shard, ab.repositories, ab.repositories_total, ab.estimated_bytes) == ("1/4,2/4", 5, 9, 15)
    assert ab.untagged_skipped == {"x": 1, "y": 2}
    assert PlanSummary.merge([ab, b, PlanSummary(shard="10/4")]).shard == "1/4,2/4,10/4"


def test_chromium_renders_the_merged_page(pipeline: Pipeline, tmp_path: Path) -> None:
    page = pipeline.work / "ecrcopy-report.html"
    shot = render(page, tmp_path / "report.png", pdf=tmp_path / "report.pdf")
    assert shot.console == [], shot.console
    with PILImage.open(shot.screenshot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1100, 1600)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, "a blank or nearly blank screenshot"
        # the verdict banner is drawn in the failure colour (#cf222e): the page's CSS applied
        assert any(abs(r - 0xCF) < 6 and abs(g - 0x22) < 6 and abs(b - 0x2E) < 6 for _, (r, g, b) in colours)
    assert shot.pdf is not None and shot.pdf.read_bytes().startswith(b"%PDF")
    phone = render(page, tmp_path / "phone.png", width=390, height=844)
    assert phone.console == []
    if os.environ.get("ECRCOPY_UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot.screenshot, DOCS_SCREENSHOT)


def test_the_console_check_can_fail(tmp_path: Path) -> None:
    """A page that tries to load anything is caught by its policy and shows up in the console."""
    text = CopyReport().to_html().replace("</main>", '<img src="http://127.0.0.1:9/x.png"></main>')
    (tmp_path / "leaky.html").write_text(text)
    shot = render(tmp_path / "leaky.html", tmp_path / "leaky.png")
    assert any("Content Security Policy" in m for m in shot.console), shot.console
