"""Pure protocol helpers: no I/O, trivial to test.

``WWW-Authenticate`` challenges, ``Link`` pagination, OCI error bodies, ``Retry-After``, token
responses, scopes and upload ``Location`` handling.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

__all__ = [
    "Challenge",
    "OciError",
    "Scope",
    "TokenInfo",
    "append_query",
    "format_scopes",
    "jwt_expiry",
    "next_link",
    "parse_error_body",
    "parse_retry_after",
    "parse_scope",
    "parse_token_response",
    "parse_www_authenticate",
    "redact_url",
    "same_origin",
]

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN68_CHARS = "-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge: ``scheme`` lower-cased, ``params`` with lower-cased keys."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        assert self.peek() == '"'
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == '"':
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        return "".join(out)  # unterminated: take what is there

    def token68(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN68_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def bare_value(self) -> str:
        """An unquoted parameter value: up to the next comma or blank (sloppy servers send URLs bare)."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ", \t":
            self.pos += 1
        return self.text[start : self.pos]

    def skip_to_comma(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] != ",":
            self.pos += 1


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into challenges (RFC 7235, tolerant of sloppy servers).

    ``Bearer realm="https://a/b",service="x",scope="repository:p:pull"`` →
    ``[Challenge("bearer", {"realm": ..., "service": ..., "scope": ...})]``. Several challenges in
    one header are split; unparseable fragments are skipped rather than raising.
    """
    lex = _Lexer(header)
    challenges: list[Challenge] = []
    current: Challenge | None = None
    while lex.pos < len(lex.text):
        lex.skip_ws()
        if lex.peek() == ",":
            lex.pos += 1
            continue
        start = lex.pos
        name = lex.token()
        if not name:
            lex.pos = start + 1
            lex.skip_to_comma()
            continue
        lex.skip_ws()
        if lex.peek() == "=" and current is not None:
            # auth-param of the current challenge
            lex.pos += 1
            lex.skip_ws()
            value = lex.quoted() if lex.peek() == '"' else lex.bare_value()
            current.params.setdefault(name.lower(), value)
            lex.skip_ws()
            if lex.peek() not in (",", ""):
                lex.skip_to_comma()
            continue
        # a new challenge: scheme [token68 | params]
        current = Challenge(name.lower(), {})
        challenges.append(current)
        lex.skip_ws()
        save = lex.pos
        if lex.token():
            lex.skip_ws()
            if lex.peek() == "=":
                lex.pos += 1
                lex.skip_ws()
                if lex.peek() not in ("=", ",", ""):
                    lex.pos = save  # ``name=value``: the first auth-param, re-read on the next loop turn
                    continue
        lex.pos = save
        token68 = lex.token68()
        if token68:  # ``Basic dXNlcjpw==``: padding belongs to the token
            while lex.peek() == "=":
                lex.pos += 1
            current.params.setdefault("token68", lex.text[save : lex.pos])
    return challenges


_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")


def next_link(header: str | None, base_url: str) -> str | None:
    """The absolute URL of the ``rel="next"`` entry of a ``Link`` header, if any."""
    if not header:
        return None
    for match in _LINK_RE.finditer(header):
        target, params = str(match.group(1)), str(match.group(2))
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return urljoin(base_url, target)
    return None


@dataclass(frozen=True)
class OciError:
    code: str
    message: str


def parse_error_body(body: bytes, limit: int = 3) -> list[OciError]:
    """The ``errors`` of an OCI error body; a plain-text body becomes one error with code ``""``."""
    text = body[:4096].decode("utf-8", "replace").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return [OciError("", " ".join(text.split())[:300])]
    errors: list[OciError] = []
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        for item in data["errors"][:limit]:
            if isinstance(item, dict):
                errors.append(OciError(str(item.get("code") or ""), str(item.get("message") or "")[:300]))
    elif isinstance(data, dict) and ("error" in data or "message" in data):
        errors.append(OciError(str(data.get("code") or ""), str(data.get("error") or data.get("message"))[:300]))
    return errors


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS_RE.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(seconds, 3600.0))


_DELTA_SECONDS_RE = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,9})?")


@dataclass(frozen=True)
class Scope:
    """A token scope such as ``repository:group/app:pull,push``."""

    type: str
    name: str
    actions: frozenset[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


def parse_scope(text: str) -> Scope:
    """Parse ``type:name:actions``; the name may hold ``host:port``, so split from the right."""
    head, sep, actions = text.rpartition(":")
    kind, sep2, name = head.partition(":")
    if not sep or not sep2 or not kind or not name:
        raise ValueError(f"invalid scope {text!r}")
    return Scope(kind, name, frozenset(a for a in actions.split(",") if a))


def format_scopes(scopes: frozenset[Scope]) -> list[str]:
    """Scopes as ``scope=`` values, one per repository with merged actions, in a stable order."""
    merged: dict[tuple[str, str], set[str]] = {}
    for s in scopes:
        merged.setdefault((s.type, s.name), set()).update(s.actions)
    return [f"{t}:{n}:{','.join(sorted(a))}" for (t, n), a in sorted(merged.items())]


@dataclass(frozen=True)
class TokenInfo:
    token: str = field(repr=False)
    expires_at: float  # epoch seconds
    lifetime: float


def _b64url_json(segment: str) -> dict[str, object] | None:
    try:
        padded = segment + "=" * (-len(segment) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (GitLab sends no ``expires_in``)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    claims = _b64url_json(parts[1])
    if claims is None:
        return None
    return _finite(claims.get("exp"))


def _finite(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else (bools, NaN, 1e999, 10**400)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


DEFAULT_TOKEN_LIFETIME = 60.0


def parse_token_response(body: bytes, now: float) -> TokenInfo:
    """Read a token reply: ``token``/``access_token``; expiry from ``expires_in`` else JWT ``exp``.

    Raises ``ValueError`` when the body holds no token.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("token response is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("token response is not a JSON object")
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("token response holds no token")
    expires_in = _finite(data.get("expires_in"))
    if expires_in is not None and expires_in > 0:
        lifetime = expires_in
        return TokenInfo(token, now + lifetime, lifetime)
    exp = jwt_expiry(token)
    if exp is not None:
        return TokenInfo(token, exp, max(exp - now, 0.0))
    return TokenInfo(token, now + DEFAULT_TOKEN_LIFETIME, DEFAULT_TOKEN_LIFETIME)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        parts.port or {"http": 80, "https": 443}.get(parts.scheme),
    )


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port (default ports filled in)."""
    return _origin(a) == _origin(b)


def append_query(url: str, **params: str) -> str:
    """Add query parameters to ``url`` keeping the ones it has (an upload ``Location`` carries state)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """The URL without query string and user info (presigned URLs, upload state and passwords stay out)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
