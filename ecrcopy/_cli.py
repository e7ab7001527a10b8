"""The ``ecrcopy`` command line. Only this module prints or exits.

Exit codes: 0 every image ok (``verify``: identical), 1 some images failed (``verify``: any
difference), 2 usage, configuration or authentication
error (one line on stderr; ``--debug`` adds the traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from . import __version__
from ._exceptions import ConfigurationError, EcrcopyError

if TYPE_CHECKING:
    from ._ecr import EcrSource
    from ._gitlab import GitLabDestination
    from ._migrate import MigrationReport
    from ._report import CopyReport
    from ._verify_report import VerifyReport

# Building the parser (``--version``, ``--help``) imports nothing of the engine: each command imports
# what it needs when it runs, and only ``migrate`` and ``verify`` import the ECR client (boto3).

__all__ = ["main"]

# Defaults the help quotes. CopyOptions owns them, but importing it here would load pydantic at every
# start; tests/test_startup.py checks that these copies (and the help text) equal the model's.
HELP_IMAGE_CONCURRENCY = 4  # CopyOptions.image_concurrency
HELP_READ_TIMEOUT = 300.0  # CopyOptions.read_timeout
HELP_SHARD_WAIT = 300.0  # MigrationOptions.shard_wait

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
    add_migration_arguments(migrate)
    checks = migrate.add_argument_group("proof")
    checks.add_argument(
        "--verify", action="store_true", help="end with a verify pass: exit 1 unless the destination equals the plan"
    )
    checks.add_argument("--deep", action="store_true", help="with --verify: also every child, blob and referrer")
    add_common_options(migrate)

    verify = sub.add_parser(
        "verify",
        help="prove the destination holds every selected image (read-only)",
        description=(
            "Compare every image a migration selects (same flags, names and shard as 'migrate') with the "
            "destination by digest, or, given SOURCE and DEST, what 'copy SOURCE DEST' copies. Writes nothing. "
            "Exit 0 when everything is identical, 1 on any difference, 2 on usage or configuration errors."
        ),
    )
    verify.add_argument("source", metavar="SOURCE", nargs="?", help="copy form: the source repository or image")
    verify.add_argument("destination", metavar="DEST", nargs="?", help="copy form: the destination")
    verify.add_argument("--tag", action="append", dest="tags", metavar="T", help="copy form: verify this tag")
    verify.add_argument("--src-creds", metavar="USER:PASS", help="copy form: source credentials")
    verify.add_argument(
        "--deep", action="store_true", help="also HEAD every child manifest, blob and referrer at the destination"
    )
    add_migration_arguments(verify)
    add_common_options(verify, writes=False)
    report = sub.add_parser(
        "report",
        help="work with JSON reports: merge shards' reports into one page",
        description="Work with the JSON reports that copy, migrate and verify write with --report.",
    )
    report_sub = report.add_subparsers(dest="report_command", metavar="ACTION", parser_class=_Parser, required=True)
    merge = report_sub.add_parser(
        "merge",
        help="merge copy/migrate/verify reports (one per parallel job) into one",
        description=(
            "Merge JSON reports of copy, migrate (one per parallel job) and verify into one HTML page and/or "
            "one JSON report. Exit 0 when the outputs are written, whatever the reports say; 2 when a file "
            "cannot be read."
        ),
    )
    merge.add_argument("reports", nargs="+", type=Path, metavar="REPORT", help="JSON reports (--report files)")
    merge.add_argument("--html", type=Path, metavar="PATH", help="write the merged HTML page here")
    merge.add_argument("--report", type=Path, metavar="PATH", help="write the merged JSON report here")
    merge.add_argument("--title", default="ecrcopy migration report", help="the page's title")
    merge.add_argument("--debug", action="store_true", help="tracebacks for errors")
    return parser


def add_migration_arguments(migrate: argparse.ArgumentParser) -> None:
    """Where from, where to and what: the flags ``migrate`` and ``verify`` share."""
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
        "--shard-wait",
        type=float,
        metavar="SECONDS",
        help="sharded runs: how long to wait for the shard that owns a shared blob to upload it, then mount it "
        f"from there, before uploading it here (default {HELP_SHARD_WAIT:g}; 0: never wait)",
    )
    sel.add_argument(
        "--untagged",
        choices=("skip", "tag"),
        default="skip",
        help="untagged standalone images (not index children, not signatures): skip them (counted), or copy "
        "them tagged untagged-<hex of the digest> so GitLab's garbage collection keeps them (default skip)",
    )


def add_common_options(p: argparse.ArgumentParser, *, writes: bool = True) -> None:
    p.add_argument("--report", type=Path, metavar="PATH", help="write the JSON report here")
    p.add_argument("--html", type=Path, metavar="PATH", help="write the report as one self-contained HTML page here")
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help=f"images handled at the same time (default {HELP_IMAGE_CONCURRENCY})",
    )
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST", help="speak plain http to HOST")
    p.add_argument(
        "--no-referrers",
        action="store_true",
        help="leave signatures, attestations and SBOMs (OCI referrers, cosign tags) out",
    )
    p.add_argument("--junit", type=Path, metavar="PATH", help="write a JUnit XML report here (one test case per image)")
    if writes:
        add_write_options(p)
    add_limit_options(p)
    p.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    p.add_argument("--quiet", "-q", action="store_true", help="only the summary")
    p.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="without a terminal (a CI job log): print a progress line this often (default 30; 0: never)",
    )


def add_write_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-conflict", choices=("fail", "skip", "overwrite"), default="fail")
    p.add_argument("--dry-run", action="store_true", help="show what would be copied; write nothing")
    p.add_argument(
        "--blob-cache",
        type=Path,
        metavar="PATH",
        help="where this machine remembers blob locations for later runs' mounts "
        "(default: $XDG_CACHE_HOME/ecrcopy/blob-locations-v1.json)",
    )
    p.add_argument("--no-blob-cache", action="store_true", help="do not read or write the blob location cache")


def add_limit_options(p: argparse.ArgumentParser) -> None:
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
        "--http-backend",
        choices=("http11", "aiohttp", "httpx"),
        help="HTTP stack: http11 (default; compiled parser, least CPU), aiohttp (needs ecrcopy[aiohttp]) "
        "or httpx's own (used anyway behind a proxy variable)",
    )
    limits.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        help=f"a connection silent this long is retried (default {HELP_READ_TIMEOUT:g})",
    )


def _cmd_copy(args: argparse.Namespace, out: TextIO) -> int:
    from ._api import run_blocking
    from ._cli_support import Reporter, credentials_from, options_from, section, write_report, write_text
    from ._copier import Copier
    from ._junit import junit_xml

    options = options_from(args)
    src_creds = credentials_from(args.src_creds, "ECRCOPY_SRC", "--src-creds")
    dst_creds = credentials_from(args.dest_creds, "ECRCOPY_DEST", "--dest-creds")
    with (
        section(out, "copy", "ecrcopy copy: copying"),  # no user input in the header: it may hold secrets
        Reporter(out, quiet=args.quiet, interval=args.progress_interval) as reporter,
    ):

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
    if args.html:
        write_text(args.html, report.to_html())
    with section(out, "summary", "summary"):
        reporter.summary(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _ecr_and_gitlab(args: argparse.Namespace) -> tuple[EcrSource, GitLabDestination]:
    from ._cli_support import credentials_from
    from ._credentials import Credentials
    from ._ecr import EcrSource
    from ._gitlab import GitLabDestination

    env = os.environ
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
    return source, GitLabDestination.from_env(env, **overrides)


def _cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    from ._api import run_blocking
    from ._cli_support import (
        Reporter,
        migration_options_from,
        options_from,
        print_archived,
        print_plan,
        print_table,
        section,
        write_report,
        write_text,
    )
    from ._copier import Copier
    from ._junit import junit_xml
    from ._migrate import migrate_with
    from ._verify import verify_migration
    from ._verify_report import render_verify_table

    options = options_from(args)
    migration = migration_options_from(args, os.environ)
    source, destination = _ecr_and_gitlab(args)
    if args.deep and not args.verify:
        raise ConfigurationError("--deep goes with --verify (or use 'ecrcopy verify --deep')")
    if args.verify and args.dry_run:
        raise ConfigurationError("--verify checks what a migration wrote: it cannot follow --dry-run")
    with (
        section(out, "copy", "ecrcopy migrate: copying"),
        Reporter(out, quiet=args.quiet, interval=args.progress_interval) as reporter,
    ):

        async def run() -> MigrationReport:
            async with Copier(options, on_event=reporter.on_event) as copier:
                report = await migrate_with(copier, source, destination, migration)
                if args.verify:
                    report.verification = await verify_migration(copier, source, destination, migration, deep=args.deep)
                return report

        report = run_blocking("migrate", run)
    if args.report:
        write_report(args.report, report)
    if args.junit:
        write_text(args.junit, junit_xml(report, suite="ecrcopy migrate"))
    if args.html:
        write_text(args.html, report.to_html())
    with section(out, "plan", "plan", collapsed=True):
        print_plan(out, report)
    with section(out, "summary", "summary"):
        print_table(out, report)
        print_archived(out, report)
        reporter.summary(report)
    if report.verification is not None:
        with section(out, "verify", "verify"):
            print(render_verify_table(report.verification), file=out)
        if not report.verification.ok:
            return EXIT_FAILED
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    from ._api import run_blocking
    from ._cli_support import (
        Reporter,
        credentials_from,
        migration_options_from,
        options_from,
        print_plan,
        section,
        write_text,
    )
    from ._copier import Copier
    from ._migrate import MigrationReport
    from ._verify import verify_migration, verify_repository
    from ._verify_report import render_verify_table, verify_junit_xml

    options = options_from(args)
    if (args.source is None) != (args.destination is None):
        raise ConfigurationError("verify takes both SOURCE and DEST (copy form) or neither (migration form)")
    copy_form = args.source is not None
    if copy_form:
        src_creds = credentials_from(args.src_creds, "ECRCOPY_SRC", "--src-creds")
        dst_creds = credentials_from(args.dest_creds, "ECRCOPY_DEST", "--dest-creds")
    else:
        if args.tags or args.src_creds:
            raise ConfigurationError("--tag and --src-creds belong to the copy form: verify SOURCE DEST")
        migration = migration_options_from(args, os.environ)
        source, destination = _ecr_and_gitlab(args)
        src_creds = dst_creds = None

    with section(out, "verify", "ecrcopy verify"):
        with Reporter(out, quiet=args.quiet, interval=args.progress_interval, verifying=True) as reporter:

            async def run() -> VerifyReport:
                async with Copier(
                    options, source_credentials=src_creds, destination_credentials=dst_creds, on_event=reporter.on_event
                ) as copier:
                    if copy_form:
                        return await verify_repository(
                            copier,
                            args.source,
                            args.destination,
                            tags=args.tags,
                            tag_pattern=args.tag_pattern,
                            deep=args.deep,
                        )
                    return await verify_migration(copier, source, destination, migration, deep=args.deep)

            report = run_blocking("verify", run)
        if not args.quiet:
            for image in report.images:
                print(f"{image.status:<10} {image.source} -> {image.destination} {(image.digest or '')[:19]}", file=out)
    if args.report:
        write_text(args.report, report.model_dump_json(indent=2) + "\n")
    if args.junit:
        write_text(args.junit, verify_junit_xml(report))
    if args.html:
        write_text(args.html, report.to_html())
    if report.plan is not None:
        with section(out, "plan", "plan", collapsed=True):
            print_plan(out, MigrationReport(plan=report.plan))
    with section(out, "summary", "summary"):
        print(render_verify_table(report), file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from ._cli_report import merge_command

    return merge_command(args, out)


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "copy": _cmd_copy,
    "migrate": _cmd_migrate,
    "verify": _cmd_verify,
    "report": _cmd_report,
}


def _configure_logging(debug: bool) -> None:
    import logging  # here, not at the top: --version and --help need none of it

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
            _print_traceback()
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
            _print_traceback()
        print(f"ecrcopy: internal error: {exc.__class__.__name__}: {_one_line(str(exc))}", file=sys.stderr)
        print("ecrcopy: rerun with --debug for a traceback and report it", file=sys.stderr)
        return EXIT_USAGE


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _one_line(text: str) -> str:
    from ._protocol import clean_text

    return clean_text(text, 2000)
