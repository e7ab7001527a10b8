"""Concurrency helpers of the engine: bounded fan-out, and one holder per key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager

import anyio

from ._exceptions import EcrcopyError

__all__ = ["KeyedLock", "run_all"]


class KeyedLock:
    """One holder per key at a time (FIFO); locks exist only while someone holds or awaits them."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (anyio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


async def run_all(jobs: Sequence[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run ``jobs`` with at most ``limit`` at a time; on the first error cancel the rest, raise it."""
    if not jobs:
        return
    if len(jobs) == 1:
        await jobs[0]()
        return
    errors: list[BaseException] = []
    limiter = anyio.CapacityLimiter(limit)

    async def run(job: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                await job()
            except Exception as exc:
                errors.append(exc)
                scope.cancel()

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(run, job, tg.cancel_scope)
    if errors:
        fatal = [e for e in errors if isinstance(e, EcrcopyError) and e.fatal]
        raise (fatal or errors)[0]
