"""Image references: parsing, validation and formatting. No I/O.

A reference is ``host[:port]/path[:tag][@algorithm:hex]``. The registry host is required to be
explicit unless it is Docker Hub (``docker.io``): the first path component counts as a host when
it contains ``.`` or ``:`` or is ``localhost`` — the rule Docker uses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ._exceptions import InvalidReference

__all__ = [
    "DIGEST_RE",
    "REPOSITORY_RE",
    "TAG_RE",
    "Reference",
    "is_loopback_host",
    "is_valid_digest",
    "is_valid_repository",
    "is_valid_tag",
    "parse_reference",
    "shown_reference",
    "split_host_port",
]

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
MAX_NAME_LENGTH = 255

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


def is_valid_repository(name: str) -> bool:
    return REPOSITORY_RE.fullmatch(name) is not None


def is_valid_tag(tag: str) -> bool:
    return TAG_RE.fullmatch(tag) is not None


def is_valid_digest(digest: str) -> bool:
    return DIGEST_RE.fullmatch(digest) is not None


def split_host_port(host: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) into the bare host and the port."""
    if host.startswith("["):
        end = host.find("]")
        bare, rest = host[1:end], host[end + 1 :]
        return bare, int(rest[1:]) if rest.startswith(":") else None
    if host.count(":") == 1:
        bare, port = host.split(":")
        return bare, int(port)
    return host, None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (with or without a port)."""
    try:
        bare, _ = split_host_port(host)
    except ValueError:  # a port that is not a number: not a host we know to be loopback
        return False
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image or repository reference.

    ``registry`` is ``host[:port]`` as written (``docker.io`` for Docker Hub), ``repository`` the
    path. ``tag`` and ``digest`` are optional; a reference with neither names a whole repository.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if not self.registry or _HOST_RE.fullmatch(self.registry) is None:
            raise InvalidReference(f"invalid registry host {self.registry!r}")
        port = split_host_port(self.registry)[1]
        if port is not None and not 0 < port <= 65535:
            raise InvalidReference(f"invalid registry host {self.registry!r}: port out of range")
        if not is_valid_repository(self.repository):
            raise InvalidReference(
                f"invalid repository name {self.repository!r}: lowercase letters, digits and "
                "separators (. _ __ -) in /-separated components"
            )
        if len(self.registry) + 1 + len(self.repository) > MAX_NAME_LENGTH:
            raise InvalidReference(f"repository name {self.name!r} is longer than {MAX_NAME_LENGTH} characters")
        if self.tag is not None and not is_valid_tag(self.tag):
            raise InvalidReference(f"invalid tag {self.tag!r}: at most 128 of [A-Za-z0-9_.-], not starting with . or -")
        if self.digest is not None and not is_valid_digest(self.digest):
            raise InvalidReference(f"invalid digest {self.digest!r}")

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host that serves the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str | None:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return self.digest or self.tag

    @property
    def is_repository(self) -> bool:
        return self.tag is None and self.digest is None

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str | None) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def repository_ref(self) -> Reference:
        return Reference(self.registry, self.repository)

    def child(self, path: str) -> Reference:
        """The repository ``<this repository>/<path>`` in the same registry."""
        return Reference(self.registry, f"{self.repository}/{path.strip('/')}".strip("/"))

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def shown_reference(text: str) -> str:
    """``text`` fit for an error message: anything that may be user info (``user:pw@``) is cut.

    A reference has at most one ``@``, before a digest; any other ``@`` (``user:pw@host/repo``,
    a mistake in a script) is taken for credentials, and what precedes it is replaced by ``***``.
    """
    head, at, tail = text.rpartition("@")
    prefix, suffix = (head, at + tail) if at and is_valid_digest(tail) else (text, "")
    if "@" in prefix:
        prefix = "***@" + prefix.rpartition("@")[2]
    return prefix + suffix


def parse_reference(text: str) -> Reference:
    """Parse ``host[:port]/path[:tag][@digest]``; raise :class:`InvalidReference` when malformed.

    The error message never repeats user info (``user:pw@host/repo`` is shown as ``***@host/repo``).
    """
    if not isinstance(text, str) or not text:
        raise InvalidReference("empty image reference")
    try:
        return _parse(text)
    except InvalidReference:
        shown = shown_reference(text)
        if shown == text:
            raise
        hint = "credentials do not belong in an image reference (use --src-creds/--dest-creds)"
        tail = text.rpartition("@")[2]
        if not is_valid_digest(tail):
            hint = f"invalid digest {tail!r} after '@'; if what precedes it is user info: {hint}"
        raise InvalidReference(f"{shown!r}: {hint}") from None


def _parse(text: str) -> Reference:
    original = text
    if _URL_RE.match(text):
        raise InvalidReference(f"{original!r}: give a reference such as host/path:tag, not a URL")
    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not is_valid_digest(digest):
            raise InvalidReference(f"{original!r}: invalid digest {digest!r}")
    tag: str | None = None
    last_slash = text.rfind("/")
    last_colon = text.rfind(":")
    if last_colon > last_slash:
        text, tag = text[:last_colon], text[last_colon + 1 :]
        if not is_valid_tag(tag):
            raise InvalidReference(f"{original!r}: invalid tag {tag!r}")
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, text
        if "/" not in repository:
            repository = f"library/{repository}"
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if not repository:
        raise InvalidReference(f"{original!r}: missing repository path")
    try:
        return Reference(registry, repository, tag, digest)
    except InvalidReference as exc:
        raise InvalidReference(f"{original!r}: {exc}") from None
