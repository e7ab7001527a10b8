"""Credentials and where they come from: explicit values or Docker's ``config.json``.

A :class:`CredentialProvider` answers "which username/password for this registry host?". Providers
may be refreshed (ECR's passwords expire): after a registry rejects credentials once, the client
calls :meth:`CredentialProvider.invalidate` and asks again before giving up.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio
from pydantic import SecretStr

from ._exceptions import AuthenticationError, ConfigurationError

__all__ = [
    "CredentialProvider",
    "Credentials",
    "DockerConfigCredentials",
    "StaticCredentials",
    "as_provider",
    "parse_user_pass",
]

log = logging.getLogger("ecrcopy")


@dataclass(frozen=True)
class Credentials:
    """A username and a secret. The secret never shows in ``repr`` or ``str``."""

    username: str
    password: SecretStr
    #: An OAuth2 refresh token from ``config.json``'s ``identitytoken`` (exchanged at the realm).
    identity_token: SecretStr | None = None

    @classmethod
    def of(cls, username: str, password: str | SecretStr) -> Credentials:
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        return cls(username, secret)

    def basic_header(self) -> str:
        """``Basic base64(user:password)``; a :class:`ConfigurationError` when either holds a control
        character (a password pasted with its trailing newline is the usual case)."""
        password = self.password.get_secret_value()
        if _has_control(self.username) or _has_control(password):
            which = "user name" if _has_control(self.username) else f"password of user {self.username!r}"
            raise ConfigurationError(f"the {which} contains a control character (a trailing newline?)")
        raw = f"{self.username}:{password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='**********')"

    __str__ = __repr__


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def parse_user_pass(text: str, *, what: str = "credentials") -> Credentials:
    """``USER:PASS`` → :class:`Credentials` (the password may contain ``:``)."""
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise ConfigurationError(f"{what} must be USER:PASSWORD")
    return Credentials.of(user, password)


@runtime_checkable
class CredentialProvider(Protocol):
    """Anything that can hand out credentials for a registry host (``host[:port]``)."""

    async def get(self, host: str) -> Credentials | None: ...

    def invalidate(self, host: str) -> None: ...


class StaticCredentials:
    """Fixed credentials: one for every host, or a mapping of host → credentials."""

    def __init__(self, credentials: Credentials | Mapping[str, Credentials] | None) -> None:
        self._default = credentials if isinstance(credentials, Credentials) else None
        self._by_host = dict(credentials) if isinstance(credentials, Mapping) else {}

    async def get(self, host: str) -> Credentials | None:
        return self._by_host.get(host, self._default)

    def invalidate(self, host: str) -> None:
        """Static credentials cannot be refreshed."""

    def __repr__(self) -> str:
        hosts = sorted(self._by_host) or (["*"] if self._default else [])
        return f"StaticCredentials(hosts={hosts!r})"


def _docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _host_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    return keys


class DockerConfigCredentials:
    """Credentials from Docker's ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker/config.json``).

    Reads ``auths`` (``auth`` = base64 ``user:pass``, or ``username``/``password``,
    ``identitytoken``), ``credHelpers`` (per host) and ``credsStore`` (default helper), running
    ``docker-credential-<name> get`` with the host on standard input.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else _docker_config_path()
        self._cache: dict[str, Credentials | None] = {}

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read Docker config {self._path}: {exc.__class__.__name__}") from None
        return data if isinstance(data, dict) else {}

    async def get(self, host: str) -> Credentials | None:
        if host not in self._cache:
            self._cache[host] = await anyio.to_thread.run_sync(self._lookup, host)
        return self._cache[host]

    def invalidate(self, host: str) -> None:
        self._cache.pop(host, None)

    def _lookup(self, host: str) -> Credentials | None:
        config = self._load()
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key in _host_keys(host):
                if isinstance(helpers.get(key), str):
                    return self._from_helper(str(helpers[key]), key)
        auths = config.get("auths")
        if isinstance(auths, dict):
            for key in _host_keys(host):
                entry = auths.get(key)
                if isinstance(entry, dict):
                    found = self._from_entry(entry, key)
                    if found is not None:
                        return found
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return self._from_helper(store, host)
        return None

    def _from_entry(self, entry: dict[str, object], key: str) -> Credentials | None:
        identity = entry.get("identitytoken")
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                decoded = base64.b64decode(auth).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ConfigurationError(f"Docker config entry for {key} has an invalid 'auth' value") from None
            user, _, password = decoded.partition(":")
        else:
            user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if isinstance(identity, str) and identity:
            return Credentials(user or "<token>", SecretStr(password), SecretStr(identity))
        if user:
            return Credentials.of(user, password)
        return None

    def _from_helper(self, helper: str, server: str) -> Credentials | None:
        program = f"docker-credential-{helper}"
        try:
            proc = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=60, check=False)
        except FileNotFoundError:
            raise ConfigurationError(f"credential helper {program} named in Docker config is not installed") from None
        except OSError as exc:
            raise ConfigurationError(f"credential helper {program} cannot run: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise AuthenticationError(f"credential helper {program} did not answer within 60 s") from None
        if proc.returncode != 0:
            if b"credentials not found" in proc.stdout.lower() + proc.stderr.lower():
                return None
            raise AuthenticationError(f"credential helper {program} failed for {server} (exit {proc.returncode})")
        try:
            data = json.loads(proc.stdout)
            user, secret = str(data["Username"]), str(data["Secret"])
        except (ValueError, KeyError, TypeError):
            raise AuthenticationError(f"credential helper {program} gave an unreadable answer") from None
        if user == "<token>":
            return Credentials(user, SecretStr(""), SecretStr(secret))
        return Credentials.of(user, secret)

    def __repr__(self) -> str:
        return f"DockerConfigCredentials(path={str(self._path)!r})"


CredentialsLike = Credentials | tuple[str, str] | CredentialProvider | None


def as_provider(value: CredentialsLike) -> CredentialProvider:
    """Turn what the public API accepts into a provider; ``None`` means Docker's config.json."""
    if value is None:
        return DockerConfigCredentials()
    if isinstance(value, Credentials):
        return StaticCredentials(value)
    if isinstance(value, tuple):
        user, password = value
        return StaticCredentials(Credentials.of(user, password))
    if isinstance(value, CredentialProvider):
        return value
    raise ConfigurationError(f"unsupported credentials object {type(value).__name__}")
