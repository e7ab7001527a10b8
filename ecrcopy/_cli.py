"""The ``ecrcopy`` command line. Only this module prints or exits.

Exit codes: 0 every image ok, 1 some images failed, 2 usage, configuration or authentication
error (one line on stderr; ``--debug`` adds the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import __version__
from ._api import run_blocking
from ._cache import default_cache_path
from ._copier import Copier
from ._credentials import Credentials, CredentialsLike, parse_user_pass
from ._ecr import EcrSource
from ._exceptions import ConfigurationError, EcrcopyError
from ._gitlab import GitLabDestination
from ._junit import junit_xml
from ._migrate import MigrationReport, migrate_with
from ._options import CopyOptions
from ._plan import MigrationOptions, parse_shard
from ._protocol import clean_text
from ._report import CopyReport, ImageResult, ProgressEvent

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

_terminated: list[int] = []


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a cancelled CI job, ``docker stop``) ends the run as Ctrl-C does: in-flight work is
    cancelled, the blob location cache is saved, and the exit status is 143."""
    _terminated.append(signum)
    signal.raise_signal(signal.SIGINT)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ecrcopy",
        description="Copy container images between registries, byte-exact, without a Docker daemon.",
    )
    parser.add_argument("--version", action="version", version=f"ecrcopy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    copy = sub.add_parser(
        "copy",
        help="copy an image or a whole repository",
        description=(
            "Copy SOURCE to DEST. A repository (host/path) copies every tag; an image reference "
            "(host/path:tag or @sha256:...) copies one image with all its platforms."
        ),
    )
    copy.add_argument("source", metavar="SOURCE")
    copy.add_argument("destination", metavar="DEST")
    copy.add_argument("--tag", action="append", dest="tags", metavar="T", help="copy this tag (repeatable)")
    copy.add_argument("--tags", dest="tag_pattern", metavar="REGEX", help="copy tags matching REGEX in full")
    copy.add_argument(
        "--src-creds",
        metavar="USER:PASS",
        help="source credentials (better: ECRCOPY_SRC_CREDS, or Docker's config.json)",
    )
    copy.add_argument(
        "--dest-creds",
        metavar="USER:PASS",
        help="destination credentials (better: ECRCOPY_DEST_CREDS, or Docker's config.json)",
    )
    add_common_options(copy)

    migrate = sub.add_parser(
        "migrate",
        help="copy every ECR repository and tag to GitLab's registry",
        description=(
            "Copy every repository and tag of an Amazon ECR registry to $CI_REGISTRY_IMAGE/<repository>. "
            "In GitLab CI it needs no flags: AWS_* and CI_REGISTRY* variables configure it."
        ),
    )
    src = migrate.add_argument_group("source (Amazon ECR)")
    src.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION / AWS_REGION)")
    src.add_argument("--registry-id", metavar="ACCOUNT", help="registry account id (default: AWS_ACCOUNT_ID)")
    src.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or the standard chain)")
    src.add_argument(
        "--source-registry-url",
        metavar="URL",
        help="ECR data-plane URL override, e.g. a VPC endpoint (default: ECRCOPY_SOURCE_REGISTRY_URL)",
    )
    dst = migrate.add_argument_group("destination (GitLab)")
    dst.add_argument("--to", metavar="PREFIX", help="destination prefix (default: CI_REGISTRY_IMAGE)")
    dst.add_argument(
        "--dest-creds",
        metavar="USER:PASS",
        help="(better: ECRCOPY_DEST_CREDS; default CI_REGISTRY_USER/CI_REGISTRY_PASSWORD or CI_JOB_TOKEN)",
    )
    dst.add_argument("--name-template", metavar="T", help="destination path, e.g. '{repo_flat}' (see docs)")
    dst.add_argument("--mapping-file", type=Path, metavar="PATH", help="JSON object or 'ecr-name dest-path' lines")
    sel = migrate.add_argument_group("selection")
    sel.add_argument("--include", action="append", default=[], metavar="REGEX", help="repositories to copy")
    sel.add_argument("--exclude", action="append", default=[], metavar="REGEX", help="repositories to leave out")
    sel.add_argument("--tags", dest="tag_pattern", metavar="REGEX", help="copy tags matching REGEX in full")
    sel.add_argument("--newest", type=int, metavar="N", help="per repository, the N most recently pushed images")
    sel.add_argument("--pushed-since", metavar="DATE", help="images pushed at or after DATE (ISO 8601)")
    sel.add_argument("--shard", metavar="I/N", help="this job's share (default: CI_NODE_INDEX/CI_NODE_TOTAL)")
    sel.add_argument(
        "--untagged",
        choices=("skip", "tag"),
        default="skip",
        help="untagged standalone images (not index children, not signatures): skip them (counted), or copy "
        "them tagged untagged-<hex of the digest> so GitLab's garbage collection keeps them (default skip)",
    )
    add_common_options(migrate)
    return parser


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-conflict", choices=("fail", "skip", "overwrite"), default="fail")
    p.add_argument("--report", type=Path, metavar="PATH", help="write the JSON report here")
    p.add_argument("--concurrency", type=int, metavar="N", help="images copied at the same time (default 4)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST", help="speak plain http to HOST")
    p.add_argument("--dry-run", action="store_true", help="show what would be copied; write nothing")
    p.add_argument(
        "--no-referrers",
        action="store_true",
        help="leave signatures, attestations and SBOMs (OCI referrers, cosign tags) behind",
    )
    p.add_argument(
        "--blob-cache",
        type=Path,
        metavar="PATH",
        help="where this machine remembers blob locations for later runs' mounts "
        "(default: $XDG_CACHE_HOME/ecrcopy/blob-locations-v1.json)",
    )
    p.add_argument("--no-blob-cache", action="store_true", help="do not read or write the blob location cache")
    p.add_argument("--junit", type=Path, metavar="PATH", help="write a JUnit XML report here (one test case per image)")
    limits = p.add_argument_group("retries and rate limits")
    limits.add_argument(
        "--max-connections",
        action="append",
        default=[],
        metavar="HOST=N",
        help="at most N requests in flight to HOST ('*' for every host; repeatable)",
    )
    limits.add_argument(
        "--max-requests-per-second",
        action="append",
        default=[],
        metavar="HOST=N",
        help="start at most N requests a second to HOST ('*' for every host; repeatable)",
    )
    limits.add_argument("--retries", type=int, metavar="N", help="attempts of an operation that fails transiently")
    limits.add_argument(
        "--read-timeout", type=float, metavar="SECONDS", help="a connection silent this long is retried (default 300)"
    )
    p.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    p.add_argument("--quiet", "-q", action="store_true", help="only the summary")


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
    values: dict[str, object] = {
        "on_conflict": args.on_conflict,
        "insecure_registries": tuple(args.insecure_registry),
        "referrers": not args.no_referrers,
        "blob_cache": None if args.no_blob_cache or args.dry_run else (args.blob_cache or default_cache_path()),
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
    """Progress on a TTY (images done/total, bytes uploaded, rate, ETA), else one plain line per image."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.planned = 0
        self.started = 0
        self.finished = 0
        self.uploaded = 0
        self._t0 = time.monotonic()

    def __enter__(self) -> Reporter:
        if self.out.isatty() and not self.quiet:
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
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "images_planned":
            self.planned += event.total
        elif event.kind == "image_started":
            self.started += 1
        elif event.kind == "image_finished" and event.result is not None:
            self.finished += 1
            self.line(event.result)
        elif event.kind == "bytes_uploaded":
            self.uploaded += event.bytes
        if self._progress is None or self._task is None:
            return
        rate = self.uploaded / max(time.monotonic() - self._t0, 1e-3)
        self._progress.update(
            self._task,
            total=max(self.started, self.planned, self.finished),
            completed=self.finished,
            transfer=f"{_size(self.uploaded)} uploaded, {_size(rate)}/s",
        )

    def line(self, r: ImageResult) -> None:
        if self.quiet:
            return
        digest = (r.digest or "")[:19]
        detail = r.error if r.status == "failed" else (r.reason or "")
        if r.status == "copied":
            detail = (
                f"{r.blobs_uploaded} uploaded, {r.blobs_mounted} mounted, {r.blobs_existing} existing, "
                f"{_size(r.bytes_uploaded)}"
            )
        text = f"{r.status:<8} {r.source} -> {r.destination} {digest} {detail}".rstrip()
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

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
            + f"; blobs: {t.blobs_uploaded} uploaded ({_size(t.bytes_uploaded)}), {t.blobs_mounted} mounted, "
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


def write_report(path: Path, report: CopyReport) -> None:
    write_text(path, report.model_dump_json(indent=2) + "\n")


def _cmd_copy(args: argparse.Namespace, out: TextIO) -> int:
    options = options_from(args)
    src_creds = credentials_from(args.src_creds, "ECRCOPY_SRC", "--src-creds")
    dst_creds = credentials_from(args.dest_creds, "ECRCOPY_DEST", "--dest-creds")
    with Reporter(out, quiet=args.quiet) as reporter:

        async def run() -> CopyReport:
            async with Copier(
                options, source_credentials=src_creds, destination_credentials=dst_creds, on_event=reporter.on_event
            ) as copier:
                return await copier.copy_repository(
                    args.source, args.destination, tags=args.tags, tag_pattern=args.tag_pattern, dry_run=args.dry_run
                )

        report = run_blocking("copy_repository", run)
    if args.report:
        write_report(args.report, report)
    if args.junit:
        write_text(args.junit, junit_xml(report, suite="ecrcopy copy"))
    reporter.summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED


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
        dry_run=args.dry_run,
    )


def _cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    env = os.environ
    options = options_from(args)
    migration = migration_options_from(args, env)
    source = EcrSource.from_env(
        env,
        region=args.region,
        registry_id=args.registry_id,
        registry_url=args.source_registry_url,
        profile=args.profile,
    )
    explicit = credentials_from(args.dest_creds, "ECRCOPY_DEST", "--dest-creds")
    overrides: dict[str, object] = {"image_prefix": args.to}
    if isinstance(explicit, tuple):
        overrides["username"], overrides["password"] = explicit
    elif isinstance(explicit, Credentials):
        overrides["username"], overrides["password"] = explicit.username, explicit.password
    destination = GitLabDestination.from_env(env, **overrides)
    with Reporter(out, quiet=args.quiet) as reporter:

        async def run() -> MigrationReport:
            async with Copier(options, on_event=reporter.on_event) as copier:
                return await migrate_with(copier, source, destination, migration)

        report = run_blocking("migrate", run)
    if args.report:
        write_report(args.report, report)
    if args.junit:
        write_text(args.junit, junit_xml(report, suite="ecrcopy migrate"))
    print_plan(out, report)
    print_table(out, report)
    print_archived(out, report)
    reporter.summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def print_plan(out: TextIO, report: MigrationReport) -> None:
    plan = report.plan
    line = (
        f"plan (shard {plan.shard}): {plan.repositories} of {plan.repositories_total} repositories, "
        f"{plan.tags} tags, {plan.images} images, ~{_size(plan.estimated_bytes)} estimated"
    )
    if plan.already_present_bytes is not None:
        line += f", ~{_size(plan.already_present_bytes)} already at the destination"
    extras = []
    if plan.referrers:
        extras.append(f"{plan.referrers} referrers (signatures, SBOMs) go with their images")
    if plan.untagged_tagged:
        extras.append(f"{plan.untagged_tagged} untagged images copied as untagged-<digest>")
    if plan.untagged_standalone and plan.untagged_skipped:
        extras.append(f"{plan.untagged_standalone} untagged standalone images skipped (--untagged tag copies them)")
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
        print(f"  {repository}: {count} untagged standalone images not copied (untagged: skip)", file=out)


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
        print(f"{name:<{width}}  {copied:>6}  {skipped:>7}  {failed:>6}  {planned:>7}  {_size(uploaded):>8}", file=out)


def write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror or exc}") from None


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {"copy": _cmd_copy, "migrate": _cmd_migrate}


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("ecrcopy")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    root.propagate = False
    # httpx logs every URL with its query string: presigned blob URLs carry signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _terminated.clear()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        _configure_logging(args.debug)
        return COMMANDS[args.command](args, sys.stdout)
    except _UsageError as exc:
        print(f"ecrcopy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EcrcopyError as exc:
        if debug:
            traceback.print_exc()
        print(f"ecrcopy: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE if exc.fatal else EXIT_FAILED
    except KeyboardInterrupt:
        if _terminated:
            print("ecrcopy: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        print("ecrcopy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"ecrcopy: internal error: {exc.__class__.__name__}: {_one_line(str(exc))}", file=sys.stderr)
        print("ecrcopy: rerun with --debug for a traceback and report it", file=sys.stderr)
        return EXIT_USAGE


def _one_line(text: str) -> str:
    return clean_text(text, 2000)
