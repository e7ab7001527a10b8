"""Blocking entry points for scripts: each runs a :class:`~ecrcopy.Copier` in a fresh event loop."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import sniffio

from ._copier import Copier
from ._credentials import CredentialsLike
from ._exceptions import ConfigurationError, WrongContextError
from ._options import CopyOptions
from ._report import CopyReport, EventCallback

if TYPE_CHECKING:
    # migrate() and verify() import these when called: copies need neither the ECR client nor the plan.
    from ._ecr import EcrSource
    from ._gitlab import GitLabDestination
    from ._migrate import MigrationReport
    from ._plan import MigrationOptions
    from ._verify_report import VerifyReport

__all__ = ["copy_image", "copy_repository", "migrate", "run_blocking", "verify"]

T = TypeVar("T")


def run_blocking(name: str, func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func`` in a new event loop; refuse clearly when one is already running."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = None
    if library is not None:
        raise WrongContextError(
            f"ecrcopy.{name}() blocks and cannot run inside a running {library} event loop; "
            f"use 'async with ecrcopy.Copier(...) as copier: await copier.{name}(...)' instead"
        )

    async def main() -> _Boxed[T]:
        return _Boxed(await func())

    return anyio.run(main).value


class _Boxed(Generic[T]):
    """The result of :func:`run_blocking`'s main task, with a repr that costs nothing.

    On its way out, Python 3.11's ``asyncio.Runner`` restores the SIGINT handler, and ``signal``
    formats the handler it replaces, a partial naming the main task, whose repr includes the
    task's result: the whole report, 5 % of a 160-image migration's CPU and more for bigger runs.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<result>"


async def _with_copier(
    func: Callable[[Copier], Awaitable[T]],
    options: CopyOptions | None,
    source_credentials: CredentialsLike,
    destination_credentials: CredentialsLike,
    on_event: EventCallback | None,
) -> T:
    async with Copier(
        options,
        source_credentials=source_credentials,
        destination_credentials=destination_credentials,
        on_event=on_event,
    ) as copier:
        return await func(copier)


def copy_image(
    source: str,
    destination: str,
    *,
    options: CopyOptions | None = None,
    source_credentials: CredentialsLike = None,
    destination_credentials: CredentialsLike = None,
    on_event: EventCallback | None = None,
    dry_run: bool = False,
) -> CopyReport:
    """Copy one image with all its platforms; see :meth:`Copier.copy_image`."""
    return run_blocking(
        "copy_image",
        lambda: _with_copier(
            lambda c: c.copy_image(source, destination, dry_run=dry_run),
            options,
            source_credentials,
            destination_credentials,
            on_event,
        ),
    )


def copy_repository(
    source: str,
    destination: str,
    *,
    tags: Sequence[str] | None = None,
    tag_pattern: str | re.Pattern[str] | None = None,
    options: CopyOptions | None = None,
    source_credentials: CredentialsLike = None,
    destination_credentials: CredentialsLike = None,
    on_event: EventCallback | None = None,
    dry_run: bool = False,
) -> CopyReport:
    """Copy every tag of a repository (or the chosen ones); see :meth:`Copier.copy_repository`."""
    return run_blocking(
        "copy_repository",
        lambda: _with_copier(
            lambda c: c.copy_repository(source, destination, tags=tags, tag_pattern=tag_pattern, dry_run=dry_run),
            options,
            source_credentials,
            destination_credentials,
            on_event,
        ),
    )


def migrate(
    source: EcrSource | None = None,
    destination: GitLabDestination | None = None,
    options: MigrationOptions | None = None,
    *,
    copy_options: CopyOptions | None = None,
    on_event: EventCallback | None = None,
) -> MigrationReport:
    """Migrate ECR to GitLab; every argument defaults from the environment. See :func:`ecrcopy.migrate_with`."""
    from ._migrate import migrate_with

    return run_blocking(
        "migrate",
        lambda: _with_copier(
            lambda c: migrate_with(c, source, destination, options), copy_options, None, None, on_event
        ),
    )


def verify(
    source: str | EcrSource | None = None,
    destination: str | GitLabDestination | None = None,
    options: MigrationOptions | None = None,
    *,
    deep: bool = False,
    tags: Sequence[str] | None = None,
    tag_pattern: str | re.Pattern[str] | None = None,
    copy_options: CopyOptions | None = None,
    source_credentials: CredentialsLike = None,
    destination_credentials: CredentialsLike = None,
) -> VerifyReport:
    """Prove the destination holds what the source holds; read-only. ``report.ok`` is the verdict.

    Two strings (``host/repo`` or an image reference each) verify what ``copy_repository`` (or
    ``copy_image``) copies, with ``tags``/``tag_pattern``; otherwise the migration form verifies the
    plan ``migrate`` computes from ``source``/``destination``/``options`` (defaults from the
    environment, shard included). ``deep`` also checks every child manifest, blob and referrer.
    """
    from ._verify import verify_migration, verify_repository

    if isinstance(source, str) or isinstance(destination, str):
        if not (isinstance(source, str) and isinstance(destination, str)):
            raise ConfigurationError("verify: give two references (copy form) or neither (migration form)")
        src, dst = source, destination
        return run_blocking(
            "verify",
            lambda: _with_copier(
                lambda c: verify_repository(c, src, dst, tags=tags, tag_pattern=tag_pattern, deep=deep),
                copy_options,
                source_credentials,
                destination_credentials,
                None,
            ),
        )
    ecr, gitlab = source, destination
    return run_blocking(
        "verify",
        lambda: _with_copier(
            lambda c: verify_migration(c, ecr, gitlab, options, deep=deep), copy_options, None, None, None
        ),
    )
