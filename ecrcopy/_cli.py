"""The ``ecrcopy`` command line. Only this module prints or exits.

Exit codes: 0 every image ok, 1 some images failed, 2 usage, configuration or authentication
error (one line on stderr; ``--debug`` adds the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from . import __version__
from ._api import run_blocking
from ._copier import Copier
from ._credentials import CredentialsLike, parse_user_pass
from ._exceptions import ConfigurationError, EcrcopyError
from ._options import CopyOptions
from ._report import CopyReport, ImageResult, ProgressEvent

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    return parser


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-conflict", choices=("fail", "skip", "overwrite"), default="fail")
    p.add_argument("--report", type=Path, metavar="PATH", help="write the JSON report here")
    p.add_argument("--concurrency", type=int, metavar="N", help="images copied at the same time (default 4)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST", help="speak plain http to HOST")
    p.add_argument("--dry-run", action="store_true", help="show what would be copied; write nothing")
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
    }
    if args.concurrency is not None:
        if args.concurrency < 1:
            raise ConfigurationError("--concurrency must be at least 1")
        values["image_concurrency"] = args.concurrency
    return CopyOptions.model_validate(values)


class Reporter:
    """Progress on a TTY (rich: images done/seen, bytes, rate), else one plain line per finished image."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self._progress: Progress | None = None
        self._images: TaskID | None = None
        self._bytes: TaskID | None = None
        self.started = 0
        self.finished = 0

    def __enter__(self) -> Reporter:
        if self.out.isatty() and not self.quiet:
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.out),
                transient=True,
            )
            progress.start()
            self._progress = progress
            self._images = progress.add_task("images", total=None)
            self._bytes = progress.add_task("uploaded", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "image_started":
            self.started += 1
        elif event.kind == "image_finished" and event.result is not None:
            self.finished += 1
            self.line(event.result)
        progress = self._progress
        if progress is None or self._images is None or self._bytes is None:
            return
        if event.kind == "bytes_uploaded":
            progress.update(self._bytes, advance=event.bytes)
        else:
            progress.update(self._images, total=self.started, completed=self.finished)

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
            + f"; blobs: {t.blobs_uploaded} uploaded ({_size(t.bytes_uploaded)}), {t.blobs_mounted} mounted, "
            f"{t.blobs_existing} existing; {report.duration_seconds:.1f}s",
            file=self.out,
            flush=True,
        )
        for r in report.failed():
            print(f"FAILED {r.source} -> {r.destination}: {r.error}", file=self.out, flush=True)


def write_report(path: Path, report: CopyReport) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(report.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot write report {path}: {exc.strerror or exc}") from None


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
    reporter.summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {"copy": _cmd_copy}


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
        print("ecrcopy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"ecrcopy: internal error: {exc.__class__.__name__}: {_one_line(str(exc))}", file=sys.stderr)
        print("ecrcopy: rerun with --debug for a traceback and report it", file=sys.stderr)
        return EXIT_USAGE


def _one_line(text: str) -> str:
    return " ".join(text.split())
