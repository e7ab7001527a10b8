"""Per-host request limits: an adaptive in-flight window (AIMD) and an optional request rate.

Each host (a registry, a token service) has one :class:`HostLimit`, shared by every client of a
run. A request holds a slot from sending until its response headers (and a non-streamed body)
have arrived. The window starts at ``CopyOptions.connections_per_host`` (or the host's fixed
``max_connections``), is halved by each 429 from that host (at most once per second, so one burst
of 429s counts once) and grows back by one slot per window's worth of successes — additive
increase, multiplicative decrease, as TCP does. ``max_requests_per_second`` spaces request starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx

from ._options import CopyOptions

__all__ = ["HostLimit", "HostLimits", "host_of_url"]

_DECREASE_INTERVAL = 1.0


def host_of_url(url: httpx.URL) -> str:
    """The key of ``url``'s host in the limits: ``host`` or ``host:port``."""
    try:
        return url.host if url.port is None else f"{url.host}:{url.port}"
    except (ValueError, UnicodeError):  # an IDNA name that does not decode
        return url.netloc.decode("ascii", "replace")


class HostLimit:
    """The limits of one host."""

    def __init__(self, host: str, *, ceiling: int, adaptive: bool, rate: float | None) -> None:
        self.host = host
        self.ceiling = max(1, ceiling)
        self.adaptive = adaptive
        self.rate = rate if rate is not None and rate > 0 else None
        self._limiter = anyio.CapacityLimiter(self.ceiling)
        self._successes = 0
        self._last_decrease = -math.inf
        self._next_start = 0.0
        #: how often a 429 from this host shrank its window
        self.decreases = 0

    @property
    def window(self) -> int:
        """Requests allowed in flight right now."""
        return int(self._limiter.total_tokens)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one in-flight slot (and respect the request rate) around a request."""
        async with self._limiter:
            if self.rate is not None:
                now = time.monotonic()
                start = max(now, self._next_start)
                self._next_start = start + 1.0 / self.rate
                if start > now:
                    await anyio.sleep(start - now)
            yield

    def succeeded(self) -> None:
        """Additive increase: one more slot after a full window of successes."""
        if not self.adaptive or self.window >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= self.window:
            self._successes = 0
            self._limiter.total_tokens = min(self.ceiling, self.window + 1)

    def throttled(self) -> None:
        """Multiplicative decrease on a 429: halve the window (once per burst)."""
        if not self.adaptive:
            return
        now = time.monotonic()
        if now - self._last_decrease < _DECREASE_INTERVAL:
            return
        self._last_decrease = now
        self._successes = 0
        self.decreases += 1
        self._limiter.total_tokens = max(1, self.window // 2)


class HostLimits:
    """The :class:`HostLimit` of every host a run talks to."""

    def __init__(self, options: CopyOptions) -> None:
        self._options = options
        self._hosts: dict[str, HostLimit] = {}

    def __call__(self, host: str) -> HostLimit:
        limit = self._hosts.get(host)
        if limit is None:
            options = self._options
            fixed = options.host_setting(options.max_connections, host)
            rate = options.host_setting(options.max_requests_per_second, host)
            ceiling = int(fixed) if fixed is not None else options.connections_per_host
            limit = self._hosts[host] = HostLimit(
                host, ceiling=ceiling, adaptive=options.adaptive_concurrency, rate=rate
            )
        return limit
