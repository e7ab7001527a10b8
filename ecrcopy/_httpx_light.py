"""Keep ``import httpx`` from importing httpx's own command line (click, pygments, rich).

``httpx/__init__.py`` runs ``from ._main import main`` so that ``httpx.main`` exists for the
``httpx`` console script, and ``httpx._main`` imports click, pygments and rich at module level
whenever they are installed. rich is a dependency of ecrcopy, so they usually are: that is some
130 more modules (243 instead of 116) and 40-50 ms at the start of every ``ecrcopy copy``,
``migrate`` and ``verify``, for a command line ecrcopy never runs.

:func:`install` registers a small stand-in as ``sys.modules["httpx._main"]`` before httpx is first
imported; httpx then binds ``httpx.main`` to the stand-in's ``main``. Calling ``httpx.main`` (or
reading any of its attributes, or any other name of ``httpx._main``) imports the real module at
that moment and delegates to it, so the httpx command line still works in a process that imported
ecrcopy first. ``httpx.main`` is then a forwarding object, not the ``click.Command`` itself.

``install`` does nothing when httpx is already imported (its real ``_main`` is loaded then) or when
something else already sits at ``httpx._main``. ``ecrcopy/__init__.py`` calls it before anything
else, so it precedes every ``import httpx`` of the package, whichever module comes first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["install"]

_NAME = "httpx._main"

_stub: types.ModuleType | None = None
_real: types.ModuleType | None = None

_MISSING_CLI = (
    "The httpx command line client could not run because the required dependencies were not "
    "installed.\nMake sure you've installed everything with: pip install 'httpx[cli]'"
)


def _load() -> types.ModuleType:
    """The real ``httpx._main``, imported on first use (it replaces the stand-in in ``sys.modules``)."""
    global _real
    if _real is None:
        if _stub is not None and sys.modules.get(_NAME) is _stub:
            sys.modules.pop(_NAME, None)
        _real = importlib.import_module(_NAME)
    return _real


class _Main:
    """Stands in for ``httpx.main`` (a ``click.Command``): calls and attributes go to the real one."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            real = _load()
        except ImportError:
            # What httpx itself binds to ``httpx.main`` when its CLI extras are missing.
            print(_MISSING_CLI)
            sys.exit(1)
        return real.main(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_load().main, name)

    def __repr__(self) -> str:
        return "<httpx.main, loaded on first use by ecrcopy>"


def _module_getattr(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(f"module {_NAME!r} has no attribute {name!r}")
    return getattr(_load(), name)


def install() -> None:
    """Register the stand-in for ``httpx._main`` unless httpx (or ``httpx._main``) is already imported."""
    global _stub
    if "httpx" in sys.modules or _NAME in sys.modules:
        return
    stub = types.ModuleType(_NAME, "Stand-in for httpx's command line module; see ecrcopy._httpx_light.")
    vars(stub).update(__package__="httpx", main=_Main(), __getattr__=_module_getattr)
    _stub = stub
    sys.modules[_NAME] = stub
