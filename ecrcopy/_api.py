"""Blocking entry points for scripts: each runs a :class:`~ecrcopy.Copier` in a fresh event loop."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import sniffio

from ._copier import Copier
from ._credentials import CredentialsLike
from ._ecr import EcrSource
from ._exceptions import WrongContextError
from ._gitlab import GitLabDestination
from ._migrate import MigrationReport
from ._options import CopyOptions
from ._plan import MigrationOptions
from ._report import CopyReport, EventCallback

__all__ = ["copy_image", "copy_repository", "migrate", "run_blocking"]

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

    async def main() -> T:
        return await func()

    return anyio.run(main)


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

    async def run() -> CopyReport:
        async with Copier(
            options,
            source_credentials=source_credentials,
            destination_credentials=destination_credentials,
            on_event=on_event,
        ) as copier:
            return await copier.copy_image(source, destination, dry_run=dry_run)

    return run_blocking("copy_image", run)


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

    async def run() -> CopyReport:
        async with Copier(
            options,
            source_credentials=source_credentials,
            destination_credentials=destination_credentials,
            on_event=on_event,
        ) as copier:
            return await copier.copy_repository(
                source, destination, tags=tags, tag_pattern=tag_pattern, dry_run=dry_run
            )

    return run_blocking("copy_repository", run)


def migrate(
    source: EcrSource | None = None,
    destination: GitLabDestination | None = None,
    options: MigrationOptions | None = None,
    *,
    copy_options: CopyOptions | None = None,
    on_event: EventCallback | None = None,
) -> MigrationReport:
    """Migrate ECR to GitLab; every argument defaults from the environment. See :meth:`Copier.migrate`."""

    async def run() -> MigrationReport:
        async with Copier(copy_options, on_event=on_event) as copier:
            return await copier.migrate(source, destination, options)

    return run_blocking("migrate", run)
