"""Small pieces shared by the test services: lifecycle, loopback addresses and request records.

* :class:`Service`: ``start()``/``stop()``/``running`` plus context management (``with`` starts and
  stops); the helpers that say the service is not running.
* :class:`ServiceGroup`: a service made of other services on one :class:`contextlib.ExitStack`
  (the emulators), stopped in the reverse order of start, also after a failed start.
* :class:`LoopbackAddress`: ``host`` and ``url`` on 127.0.0.1 from a ``port``.
* :class:`RequestLog`: a thread-safe record that hands out snapshots.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Generic, Self, TypeVar

__all__ = ["LoopbackAddress", "RequestLog", "Service", "ServiceGroup", "http_url", "loopback_host"]

T = TypeVar("T")


def loopback_host(port: int) -> str:
    """``127.0.0.1:PORT``."""
    return f"127.0.0.1:{port}"


def http_url(host: str) -> str:
    """``http://HOST`` (no trailing slash)."""
    return f"http://{host}"


class Service(ABC):
    """Something started and stopped explicitly or as a context manager (``with`` starts and stops it)."""

    @abstractmethod
    def start(self) -> Self:
        """Start the service and return it (a RuntimeError when already started)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the service; does nothing when it is not running."""

    @property
    @abstractmethod
    def running(self) -> bool:
        """Whether the service is running."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _not_running(self, what: str | None = None) -> RuntimeError:
        """``<Class> is not running`` (with ``(<what> unavailable)`` when given)."""
        detail = f" ({what} unavailable)" if what is not None else ""
        return RuntimeError(f"{type(self).__name__} is not running{detail}")

    def _require(self, part: T | None, what: str | None = None) -> T:
        """``part``, or :meth:`_not_running` raised when it is ``None`` (the service is stopped)."""
        if part is None:
            raise self._not_running(what)
        return part


class ServiceGroup(Service):
    """A service made of parts entered on one :class:`contextlib.ExitStack`.

    :meth:`start` calls :meth:`_start_parts` with a fresh stack; when that fails the parts started so
    far are stopped (in reverse order), :meth:`_forget_parts` runs and the error propagates.
    :meth:`stop` closes the stack and then runs :meth:`_forget_parts`.
    """

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None

    @abstractmethod
    def _start_parts(self, stack: contextlib.ExitStack) -> None:
        """Start the parts, entering each (or a callback that stops it) on ``stack``."""

    @abstractmethod
    def _forget_parts(self) -> None:
        """Drop the references to the parts (after a failed start and after stop)."""

    def start(self) -> Self:
        """Start the parts in order."""
        if self._stack is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        stack = contextlib.ExitStack()
        try:
            self._start_parts(stack)
        except BaseException:
            stack.close()
            self._forget_parts()
            raise
        self._stack = stack
        return self

    def stop(self) -> None:
        """Stop the parts in reverse order."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            stack.close()
        finally:
            self._forget_parts()

    @property
    def running(self) -> bool:
        """Whether the service is started."""
        return self._stack is not None


class LoopbackAddress(ABC):
    """``host`` and ``url`` of something listening on 127.0.0.1 at :attr:`port`."""

    @property
    @abstractmethod
    def port(self) -> int:
        """The TCP port."""

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return loopback_host(self.port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return http_url(self.host)


class RequestLog(Generic[T]):
    """A thread-safe, append-only record of what a service saw, read as snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[T] = []

    def append(self, item: T) -> None:
        """Record ``item``."""
        with self._lock:
            self._items.append(item)

    def snapshot(self) -> list[T]:
        """A copy of everything recorded so far, oldest first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._items.clear()
