"""Which HTTP transport a :class:`~ecrcopy.RegistryClient` uses under its ``httpx.AsyncClient``.

``CopyOptions.http_backend`` (``--http-backend``):

* ``http11`` (the default): :class:`~ecrcopy._http11.Http11Transport`, HTTP/1.1 on asyncio with
  llhttp's compiled parser; the least CPU per request;
* ``aiohttp``: :class:`~ecrcopy._aiohttp.AiohttpTransport` (``pip install 'ecrcopy[aiohttp]'``);
* ``httpx``: httpx's own transport (httpcore and h11, pure Python).

Whatever is chosen, httpx's own transport is used when the environment configures a proxy
(``HTTPS_PROXY`` and friends: httpx honours them and ``NO_PROXY``), and the two compiled
transports hand requests to it on an event loop other than asyncio.
"""

from __future__ import annotations

import importlib.util
import os
import ssl

import httpx

from ._aiohttp import AiohttpTransport
from ._exceptions import ConfigurationError
from ._http11 import Http11Transport

__all__ = ["default_transport", "proxy_configured"]

_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy")


def proxy_configured(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment configures an HTTP proxy (any case of ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``)."""
    env = os.environ if environ is None else environ
    return any(value for key, value in env.items() if key.lower() in _PROXY_VARIABLES)


def default_transport(
    *, verify: ssl.SSLContext, limits: httpx.Limits, backend: str = "http11", trust_env: bool = True
) -> httpx.AsyncBaseTransport | None:
    """The transport a :class:`~ecrcopy.RegistryClient` uses when it was given none.

    ``None`` (httpx's own transport, which honours proxy variables) for the ``httpx`` backend and
    whenever a proxy is configured.
    """
    if backend == "httpx" or (trust_env and proxy_configured()):
        return None
    if backend == "aiohttp":
        if importlib.util.find_spec("aiohttp") is None:
            raise ConfigurationError("the aiohttp HTTP backend needs aiohttp: pip install 'ecrcopy[aiohttp]'")
        return AiohttpTransport(verify=verify, limits=limits)
    if backend == "http11":
        return Http11Transport(verify=verify, limits=limits)
    raise ConfigurationError(f"unknown HTTP backend {backend!r} (http11, aiohttp or httpx)")
