"""What the CLI commands share: options from flags, credentials, progress lines, summaries, files."""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ._cache import default_cache_path
from ._cilog import human_size, in_gitlab_ci, progress_line, section_end, section_start
from ._credentials import CredentialsLike, parse_user_pass
from ._exceptions import ConfigurationError
from ._options import CopyOptions
from ._report import CopyReport, ImageResult, ProgressEvent

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    # Only migrate and verify need these (the migration imports the ECR client): imported where used.
    from ._migrate import MigrationReport
    from ._plan import MigrationOptions


def credentials_from(flag: str | None, env_prefix: str, what: str) -> CredentialsLike:
    """From the flag, else ``<PREFIX>_CREDS`` or ``<PREFIX>_USERNAME``/``_PASSWORD``; else None."""
    if flag:
        return parse_user_pass(flag, what=what)
    combined = os.environ.get(f"{env_prefix}_CREDS")
    if combined:
        return parse_user_pass(combined, what=f"{env_prefix}_CREDS")
    user = os.environ.get(f"{env_prefix}_USERNAME")
    if user:
        return (user, os.environ.get(f"{env_prefix}_PASSWORD", ""))
    return None


def options_from(args: argparse.Namespace) -> CopyOptions:
    dry_run = getattr(args, "dry_run", False)
    values: dict[str, object] = {
        "on_conflict": getattr(args, "on_conflict", "fail"),
        "insecure_registries": tuple(args.insecure_registry),
        "referrers": not args.no_referrers,
        "blob_cache": None
        if getattr(args, "no_blob_cache", True) or dry_run
        else (args.blob_cache or default_cache_path()),
    }
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ConfigurationError("--concurrency must be at least 1")
        values["image_concurrency"] = args.concurrency
    if args.retries is not None:
        if not 1 <= args.retries <= 50:
            raise ConfigurationError("--retries must be between 1 and 50")
        values["retries"] = args.retries
    if args.read_timeout is not None:
        if not args.read_timeout > 0:
            raise ConfigurationError("--read-timeout must be a positive number of seconds")
        values["read_timeout"] = args.read_timeout
    interval = getattr(args, "progress_interval", 0.0)
    if not (math.isfinite(interval) and interval >= 0):
        raise ConfigurationError("--progress-interval must be a number of seconds, at least 0")
    if getattr(args, "http_backend", None):
        values["http_backend"] = args.http_backend
    values["max_connections"] = {h: int(n) for h, n in _host_values(args.max_connections, "--max-connections", int)}
    values["max_requests_per_second"] = dict(
        _host_values(args.max_requests_per_second, "--max-requests-per-second", float)
    )
    return CopyOptions.model_validate(values)


def _host_values(items: list[str], flag: str, kind: Callable[[str], float]) -> list[tuple[str, float]]:
    """``HOST=N`` flags as (host, N) pairs; N must be positive."""
    pairs = []
    for item in items:
        host, sep, value = item.rpartition("=")
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if not sep or not host or not number > 0:
            raise ConfigurationError(f"{flag} takes HOST=N with N > 0, got {item!r}")
        pairs.append((host, number))
    return pairs


class Reporter:
    """Progress on a TTY (images done/total, bytes uploaded, rate, ETA, a rich display); else one
    plain line per finished image and, every ``interval`` seconds, a progress line (a CI job log).

    ``verifying``: the run is a verification (``image_verified`` events): images that are not
    identical count as the failures (``differ``), and there are no bytes to show."""

    def __init__(self, out: TextIO, *, quiet: bool, interval: float = 30.0, verifying: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.interval = interval
        self.verifying = verifying
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.planned = 0
        self.started = 0
        self.finished = 0
        self.failed = 0
        self.uploaded = 0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()  # the progress line's thread and the event loop both print
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Reporter:
        if self.out.isatty() and not self.quiet:
            # rich is some 60 modules: imported only when there is a progress display to show.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            progress = Progress(
                TextColumn("[bold]images"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[transfer]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.out),
                transient=True,
            )
            progress.start()
            self._progress = progress
            self._task = progress.add_task("images", total=None, transfer="")
        elif not self.quiet and self.interval > 0:
            self._ticker = threading.Thread(target=self._tick, name="ecrcopy-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            if self.verifying:  # a verification has no repository ends: one line when it is done
                self.print(self.progress_text())

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.print(self.progress_text())

    @property
    def total(self) -> int:
        """Images of the run as far as known: planned, or at least started or finished."""
        return max(self.started, self.planned, self.finished)

    def progress_text(self) -> str:
        return progress_line(
            done=self.finished,
            total=self.total,
            failed=self.failed,
            uploaded=None if self.verifying else self.uploaded,
            elapsed=time.monotonic() - self._t0,
            failed_word="differ" if self.verifying else "failed",
        )

    def print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "images_planned":
            self.planned += event.total
        elif event.kind == "image_started":
            self.started += 1
        elif event.kind == "image_finished" and event.result is not None:
            self.finished += 1
            if event.result.status == "failed":
                self.failed += 1
            self.line(event.result)
        elif event.kind in ("verify_planned", "image_verified"):
            if not self.verifying:  # migrate --verify: the copy's display counts the copy only
                return
            if event.kind == "verify_planned":
                self.planned += event.total
            else:
                self.finished += 1
                self.failed += event.outcome not in ("identical", "skipped")
        elif event.kind == "bytes_uploaded":
            self.uploaded += event.bytes
        elif event.kind == "repository_finished" and self._ticker is not None:
            self.print(self.progress_text())  # a CI log also gets a progress line at each repository's end
        if self._progress is None or self._task is None:
            return
        rate = self.uploaded / max(time.monotonic() - self._t0, 1e-3)
        transfer = (
            f"{self.failed} differ" if self.verifying else f"{human_size(self.uploaded)} uploaded, {human_size(rate)}/s"
        )
        self._progress.update(self._task, total=self.total, completed=self.finished, transfer=transfer)

    def line(self, r: ImageResult) -> None:
        if self.quiet:
            return
        digest = (r.digest or "")[:19]
        detail = r.error if r.status == "failed" else (r.reason or "")
        if r.status == "copied":
            detail = (
                f"{r.blobs_uploaded} uploaded, {r.blobs_mounted} mounted, {r.blobs_existing} existing, "
                f"{human_size(r.bytes_uploaded)}"
            )
        text = f"{r.status:<8} {r.source} -> {r.destination} {digest} {detail}".rstrip()
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.print(text)

    def summary(self, report: CopyReport) -> None:
        t = report.totals
        print(
            f"{t.images} images: {t.copied} copied, {t.skipped} skipped, {t.failed} failed"
            + (f", {t.planned} planned" if t.planned else "")
            + (
                f"; referrers: {t.referrers_copied} copied, {t.referrers_existing} existing"
                + (f", {t.referrers_failed} failed" if t.referrers_failed else "")
                if t.referrers_copied or t.referrers_existing or t.referrers_failed
                else ""
            )
            + f"; blobs: {t.blobs_uploaded} uploaded ({human_size(t.bytes_uploaded)}), {t.blobs_mounted} mounted, "
            f"{t.blobs_existing} existing"
            + (
                f"; {t.retries} retries ({t.rate_limited} after 429, {t.retry_wait_seconds:.1f}s waited)"
                if t.retries
                else ""
            )
            + f"; {report.duration_seconds:.1f}s",
            file=self.out,
            flush=True,
        )
        for r in report.failed():
            print(f"FAILED {r.source} -> {r.destination}: {r.error}", file=self.out, flush=True)


@contextmanager
def section(out: TextIO, name: str, header: str, *, collapsed: bool = False) -> Iterator[None]:
    """A collapsible section of a GitLab CI job log around what is printed inside; nothing elsewhere."""
    if not in_gitlab_ci(os.environ):
        yield
        return
    print(section_start(name, header, timestamp=int(time.time()), collapsed=collapsed), file=out, flush=True)
    try:
        yield
    finally:
        print(section_end(name, timestamp=int(time.time())), file=out, flush=True)


def write_report(path: Path, report: CopyReport) -> None:
    write_text(path, report.model_dump_json(indent=2) + "\n")


def read_mapping_file(path: Path) -> dict[str, str]:
    """A JSON object ``{"ecr/name": "dest/path"}`` or lines ``ecr/name dest/path`` (``#`` comments)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read mapping file {path}: {exc.strerror or exc}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"mapping file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ConfigurationError(f"mapping file {path} must map repository names to paths")
        return dict(data)
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigurationError(f"{path}:{number}: expected 'ecr-repository destination-path'")
        mapping[parts[0]] = parts[1]
    return mapping


def _parse_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--pushed-since {text!r}: use an ISO 8601 date such as 2026-01-31") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def migration_options_from(args: argparse.Namespace, env: Mapping[str, str]) -> MigrationOptions:
    from ._plan import MigrationOptions, parse_shard

    if args.newest is not None and args.newest < 1:
        raise ConfigurationError("--newest must be at least 1")
    return MigrationOptions.from_env(
        env,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        tag_pattern=args.tag_pattern,
        newest=args.newest,
        pushed_since=_parse_date(args.pushed_since) if args.pushed_since else None,
        name_template=args.name_template,
        mapping=read_mapping_file(args.mapping_file) if args.mapping_file else None,
        shard=parse_shard(args.shard) if args.shard else None,
        untagged=args.untagged,
        shard_wait=args.shard_wait,
        dry_run=getattr(args, "dry_run", False),
    )


def print_plan(out: TextIO, report: MigrationReport) -> None:
    plan = report.plan
    line = (
        f"plan (shard {plan.shard}): {plan.repositories} of {plan.repositories_total} repositories, "
        f"{plan.tags} tags, {plan.images} images, ~{human_size(plan.estimated_bytes)} estimated"
    )
    if plan.already_present_bytes is not None:
        line += f", ~{human_size(plan.already_present_bytes)} already at the destination"
    extras = []
    if plan.referrers:
        goes = "goes with its image" if plan.referrers == 1 else "go with their images"
        extras.append(f"{_count(plan.referrers, 'signature or SBOM', 'signatures and SBOMs')} {goes}")
    if plan.untagged_tagged:
        extras.append(f"{plan.untagged_tagged} untagged images copied as untagged-<digest>")
    if plan.untagged_standalone and plan.untagged_skipped:
        extras.append(
            f"{_count(plan.untagged_standalone, 'untagged standalone image')} not copied (--untagged tag copies them)"
        )
    if plan.tags_invalid:
        extras.append(f"{plan.tags_invalid} tags invalid for OCI skipped")
    if plan.tags_archived:
        extras.append(f"{plan.tags_archived} tags of archived images skipped (see below)")
    if plan.tags_filtered:
        extras.append(f"{plan.tags_filtered} tags filtered out")
    if plan.repositories_excluded:
        extras.append(f"{plan.repositories_excluded} repositories excluded")
    print(line + (f" ({'; '.join(extras)})" if extras else ""), file=out)
    for repository, count in plan.untagged_skipped.items():
        print(f"  {repository}: {_count(count, 'untagged standalone image')} not copied (untagged: skip)", file=out)


def print_archived(out: TextIO, report: MigrationReport) -> None:
    """Images ECR holds in its archive storage class: how to restore each, once (ecrcopy never calls it)."""
    activating = {i.digest for i in report.images if i.reason == "activating"}
    if not report.restore_commands and not activating:
        return
    print(
        f"{len(report.restore_commands) + len(activating)} images are in ECR's archive storage class and were not "
        "copied. Restoring needs ecr:UpdateImageStorageClass (outside ecrcopy's read-only policy); "
        "run the migration again once they are ACTIVE:",
        file=out,
    )
    for command in report.restore_commands:
        print(f"  {command}", file=out)
    if activating:
        print(f"  ({len(activating)} already being restored: ACTIVATING)", file=out)


def print_table(out: TextIO, report: CopyReport) -> None:
    """Per destination repository: images by status and bytes uploaded."""
    rows: dict[str, list[int]] = {}
    for image in report.images:
        name = image.destination.split("@")[0]
        name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        row = rows.setdefault(name, [0, 0, 0, 0, 0])
        index = {"copied": 0, "skipped": 1, "failed": 2, "planned": 3}[image.status]
        row[index] += 1
        row[4] += image.bytes_uploaded
    if not rows:
        return
    width = max(len("repository"), *(len(n) for n in rows))
    print(f"{'repository':<{width}}  copied  skipped  failed  planned  uploaded", file=out)
    for name, (copied, skipped, failed, planned, uploaded) in sorted(rows.items()):
        print(
            f"{name:<{width}}  {copied:>6}  {skipped:>7}  {failed:>6}  {planned:>7}  {human_size(uploaded):>8}",
            file=out,
        )


def write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror or exc}") from None


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
