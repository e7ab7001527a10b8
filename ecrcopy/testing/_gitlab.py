"""A GitLab-like container registry: JWT token service + token-auth registry + hard-expiry gate."""

from __future__ import annotations

import contextlib
import re
import secrets
from pathlib import Path
from typing import Self

from ._faults import ProxyHook
from ._proxy import Proxy
from ._registry import Registry
from ._service import ServiceGroup, http_url
from ._tokenserver import TokenServer

__all__ = ["GitLabEmulator"]

_PROJECT_PATH = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+")


class GitLabEmulator(ServiceGroup):
    """GitLab's container registry for one project, on 127.0.0.1. Context manager or start()/stop().

    * :attr:`tokens`: a :class:`~ecrcopy.testing.TokenServer` (service ``container_registry``, user
      ``user``/``password``, token lifetime ``token_lifetime``; the reply is only ``{"token"}``);
    * :attr:`registry`: a :class:`~ecrcopy.testing.Registry` with ``auth: token`` (files in ``workdir``);
    * with ``hard_expiry`` (default) a :class:`~ecrcopy.testing.Proxy` with ``token_gate=True`` in front
      (:attr:`gate`), so a token is refused from its ``exp`` on like GitLab (distribution alone allows
      60 s of leeway). Clients use :attr:`registry_host` / :attr:`registry_url` either way.

    Faults (hooks such as :class:`~ecrcopy.testing.FaultInjector`; inspect their counters to see what
    they did):

    * ``registry_faults``: the hook of the proxy in front of the registry (:attr:`gate`), consulted
      before the token gate (which still refuses an expired token when a wire fault was drawn).
      Without ``hard_expiry`` a plain proxy (no token gate) is put in front for it. An
      ``insufficient_scope`` fault that names no realm takes the registry's announced realm and
      service.
    * ``token_faults``: a :class:`~ecrcopy.testing.Proxy` with this hook in front of the token service
      (:attr:`token_proxy`), and the registry announces *its* URL as the realm (:attr:`token_realm`),
      so clients reach the token service only through the faults. Every request to that proxy is a
      token request: give a :class:`~ecrcopy.testing.FaultInjector` ``applies=any_request`` (or
      ``token_requests``), not its default data-request predicate.

    GitLab's naming rule is enforced by the token service's grant: repositories at ``project_path`` or
    at most two levels below it get ``pull``, ``push`` and ``delete``; deeper names and names outside
    the project get no actions, so the registry answers 401 ``insufficient_scope`` (a push fails).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        user: str = "gitlab-ci-token",
        password: str | None = None,
        project_path: str = "group/project",
        token_lifetime: float = 300.0,
        hard_expiry: bool = True,
        registry_faults: ProxyHook | None = None,
        token_faults: ProxyHook | None = None,
    ) -> None:
        if not _PROJECT_PATH.fullmatch(project_path):
            raise ValueError(f"project_path must be a lowercase 'namespace/project' path, got {project_path!r}")
        super().__init__()
        self.workdir = Path(workdir)
        self.user = user
        self.password = password if password is not None else "glcbt-" + secrets.token_urlsafe(20)
        self.project_path = project_path
        self.token_lifetime = token_lifetime
        self.hard_expiry = hard_expiry
        self.registry_faults = registry_faults
        self.token_faults = token_faults
        self._tokens: TokenServer | None = None
        self._token_proxy: Proxy | None = None
        self._registry: Registry | None = None
        self._gate: Proxy | None = None

    def allowed_actions(self, user: str | None, name: str) -> set[str]:
        """The token service's grant: what ``user`` may do on repository ``name``."""
        if user != self.user:
            return set()
        if name == self.project_path:
            return {"pull", "push", "delete"}
        prefix = self.project_path + "/"
        if not name.startswith(prefix):
            return set()
        if len(name[len(prefix) :].split("/")) > 2:
            return set()
        return {"pull", "push", "delete"}

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the token service (and its fault proxy), the registry and the gate."""
        return super().start()

    def stop(self) -> None:
        """Stop the gate, the registry, the token fault proxy and the token service."""
        super().stop()

    def _start_parts(self, stack: contextlib.ExitStack) -> None:
        self._tokens = stack.enter_context(
            TokenServer(
                users={self.user: self.password},
                lifetime=self.token_lifetime,
                service="container_registry",
                grant=self.allowed_actions,
            )
        )
        realm: str | None = None
        if self.token_faults is not None:
            self._token_proxy = stack.enter_context(Proxy(self._tokens.url, hook=self.token_faults))
            realm = f"{self._token_proxy.url}/jwt/auth"
        self._registry = stack.enter_context(Registry(self.workdir, token_auth=self._tokens, token_realm=realm))
        if self.hard_expiry or self.registry_faults is not None:
            self._gate = stack.enter_context(
                Proxy(self._registry.url, token_gate=self.hard_expiry, hook=self.registry_faults)
            )

    def _forget_parts(self) -> None:
        self._tokens = self._registry = self._gate = self._token_proxy = None

    # -- parts and addresses -------------------------------------------------------------------------

    @property
    def tokens(self) -> TokenServer:
        """The JWT token service (its ``requests`` log every ``/jwt/auth`` call)."""
        return self._require(self._tokens)

    @property
    def registry(self) -> Registry:
        """The registry process (its access log shows what reached it)."""
        return self._require(self._registry)

    @property
    def token_proxy(self) -> Proxy | None:
        """The proxy in front of the token service (``None`` without ``token_faults``)."""
        return self._token_proxy

    @property
    def token_realm(self) -> str:
        """The realm the registry announces: the token proxy's ``/jwt/auth``, else the token service's."""
        proxy = self._token_proxy
        return f"{proxy.url}/jwt/auth" if proxy is not None else self.tokens.realm

    @property
    def gate(self) -> Proxy | None:
        """The proxy in front of the registry (``None`` without ``hard_expiry`` and ``registry_faults``).

        It gates expired tokens with ``hard_expiry`` and consults ``registry_faults`` first.
        """
        return self._gate

    @property
    def registry_host(self) -> str:
        """``127.0.0.1:PORT`` clients talk to (the gate's, or the registry's when there is no gate)."""
        return self._gate.host if self._gate is not None else self.registry.host

    @property
    def registry_url(self) -> str:
        """``http://`` + :attr:`registry_host`."""
        return http_url(self.registry_host)

    @property
    def image_prefix(self) -> str:
        """``<registry_host>/<project_path>`` (GitLab CI's ``CI_REGISTRY_IMAGE``)."""
        return f"{self.registry_host}/{self.project_path}"

    @property
    def credentials(self) -> tuple[str, str]:
        """``(user, password)``."""
        return self.user, self.password

    def env(self) -> dict[str, str]:
        """GitLab CI's registry variables: ``CI_REGISTRY``, ``CI_REGISTRY_IMAGE``, user and password."""
        return {
            "CI_REGISTRY": self.registry_host,
            "CI_REGISTRY_IMAGE": self.image_prefix,
            "CI_REGISTRY_USER": self.user,
            "CI_REGISTRY_PASSWORD": self.password,
        }
