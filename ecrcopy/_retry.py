"""One retry policy for every request ecrcopy sends: registries, token services, object storage.

What is retried (:func:`is_transient`): connection errors, timeouts, stalled or cut bodies
(:class:`~ecrcopy.TransferError`), 429 (:class:`~ecrcopy.RateLimited`) and 500/502/503/504
(:class:`~ecrcopy.RegistryServerError`). Never retried: 400, 403 ``DENIED``, 404, a 401 after
one re-authentication, 401 ``insufficient_scope`` and every fatal error.

How: exponential backoff with full jitter (:meth:`CopyOptions.backoff_delay`), at least the
server's ``Retry-After``; at most ``CopyOptions.retries`` attempts, and no new attempt later than
``CopyOptions.operation_deadline`` after the first. The loop is a plain one: it wraps every request
of a run, and a first attempt that succeeds costs nothing more than the call itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ._exceptions import EcrcopyError, RateLimited, RegistryServerError, TransferError
from ._options import CopyOptions

__all__ = ["RetryPolicy", "RetryStats", "is_transient"]

log = logging.getLogger("ecrcopy")

T = TypeVar("T")

_TRANSIENT = (TransferError, RateLimited, RegistryServerError)


def is_transient(exc: BaseException) -> bool:
    """True for a failure that another attempt may not meet (see the module docstring)."""
    return isinstance(exc, _TRANSIENT) and not exc.fatal


@dataclass
class RetryStats:
    """What retrying cost a run; ``CopyReport`` carries a copy of these counters."""

    retries: int = 0
    rate_limited: int = 0
    retry_wait_seconds: float = 0.0

    def snapshot(self) -> RetryStats:
        return RetryStats(self.retries, self.rate_limited, self.retry_wait_seconds)

    def since(self, earlier: RetryStats) -> RetryStats:
        return RetryStats(
            self.retries - earlier.retries,
            self.rate_limited - earlier.rate_limited,
            round(self.retry_wait_seconds - earlier.retry_wait_seconds, 3),
        )


class RetryPolicy:
    """Runs an operation with the run's retry rules; shared by every client of a run."""

    def __init__(
        self,
        options: CopyOptions,
        stats: RetryStats | None = None,
    ) -> None:
        self.options = options
        self.stats = stats if stats is not None else RetryStats()

    async def run(self, operation: Callable[[], Awaitable[T]], *, what: str, host: str) -> T:
        """Await ``operation()`` until it succeeds, fails permanently, or attempts or time run out.

        The last failure is raised as it was (an :class:`~ecrcopy.EcrcopyError`).
        """

        started = anyio.current_time()
        attempt = 1
        while True:
            try:
                return await operation()
            except EcrcopyError as exc:
                if not is_transient(exc) or attempt >= self.options.retries:
                    raise
                if anyio.current_time() - started >= self.options.operation_deadline:
                    raise
                delay = self.delay(attempt, exc)
                self._record(attempt, exc, delay, what=what, host=host)
                await anyio.sleep(delay)
                attempt += 1

    async def pause(self, attempt: int, exc: EcrcopyError, *, what: str, host: str) -> None:
        """Wait before attempt ``attempt + 1`` of a loop that resumes rather than repeats (uploads)."""
        delay = self.delay(attempt, exc)
        self._record(attempt, exc, delay, what=what, host=host)
        await anyio.sleep(delay)

    def delay(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (the server's ``Retry-After`` counts)."""
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        return self.options.backoff_delay(attempt, retry_after)

    def _record(self, attempt: int, exc: BaseException | None, delay: float, *, what: str, host: str) -> None:
        """Count a retry (a 429 also narrowed the host's window where it was answered) and log it."""
        self.stats.retries += 1
        self.stats.retry_wait_seconds += delay
        if isinstance(exc, RateLimited):
            self.stats.rate_limited += 1
        log.info("%s %s: %s; retry %d in %.1fs", host, what, _describe(exc), attempt, delay)


def _describe(exc: BaseException | None) -> str:
    return str(exc) if exc is not None else "failed"
