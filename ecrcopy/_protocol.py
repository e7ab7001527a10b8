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
from urllib.parse import unquote, urlencode, urljoin, urlsplit, urlunsplit

__all__ = [
    "LARGE_PIECES",
    "Challenge",
    "OciError",
    "Scope",
    "TokenInfo",
    "append_query",
    "clean_text",
    "format_scopes",
    "jwt_claims",
    "jwt_expiry",
    "next_link",
    "parse_error_body",
    "parse_range_end",
    "parse_retry_after",
    "parse_scope",
    "parse_token_response",
    "parse_www_authenticate",
    "redact_url",
    "same_origin",
    "same_path",
    "simple_absolute_url",
    "token_lifetime",
]

#: A response extension a transport sets when it hands the body over in large pieces (>= 1 MiB but
#: the last): readers then take the pieces as they come instead of re-chunking (which copies each).
LARGE_PIECES = "ecrcopy.large_pieces"

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
                try:
                    return urljoin(base_url, target)
                except ValueError:  # a target that is no URL (``https://[::1``): no next page to follow
                    return None
    return None


_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte (colours, cursor movement)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST (window titles, hyperlinks)
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[@-_]"  # other two-byte escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
# C0 and C1 controls, DEL, surrogates and the XML-invalid non-characters
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean_text(text: str, limit: int = 300) -> str:
    """Text from a registry made safe for a terminal, a log line, JSON and XML: one line, printable.

    ANSI/terminal escape sequences are removed, every other control character becomes a space,
    runs of white space fold into one, and the result is cut to ``limit`` characters (``…`` marks a cut).
    """
    text = _CONTROL_RE.sub(" ", _ANSI_RE.sub("", text))
    text = " ".join(text.split())
    if limit <= 0:
        return ""
    if len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    return text


@dataclass(frozen=True)
class OciError:
    code: str
    message: str


def parse_error_body(body: bytes, limit: int = 3) -> list[OciError]:
    """The ``errors`` of an OCI error body; a plain-text body becomes one error with code ``""``."""
    text = body[:65536].decode("utf-8", "replace").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return [OciError("", clean_text(text))]
    errors: list[OciError] = []
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        for item in data["errors"][:limit]:
            if isinstance(item, dict):
                errors.append(OciError(_error_code(item.get("code")), clean_text(_as_text(item.get("message")))))
    elif isinstance(data, dict) and ("error" in data or "message" in data):
        message = _as_text(data.get("error") or data.get("message"))
        errors.append(OciError(_error_code(data.get("code")), clean_text(message)))
    return errors


_ERROR_CODE_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def _error_code(value: object) -> str:
    """An OCI error code (``MANIFEST_UNKNOWN``); anything else a registry puts there is dropped."""
    return value if isinstance(value, str) and _ERROR_CODE_RE.fullmatch(value) else ""


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:4096]
    try:
        return json.dumps(value)[:4096]
    except (TypeError, ValueError, RecursionError):
        return ""


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


_RANGE_RE = re.compile(r"(?:bytes=)?0-([0-9]{1,19})")


def parse_range_end(value: str | None) -> int | None:
    """The number of bytes an upload session holds, from its ``Range: 0-<last>`` header.

    ``0-41`` → 42; a missing or malformed header → ``None``; ``0-0`` is ambiguous (distribution
    sends it for an empty session) and counts as 0.
    """
    if not value:
        return None
    match = _RANGE_RE.fullmatch(value.strip())
    if match is None:
        return None
    last = int(match.group(1))
    return 0 if last == 0 else last + 1


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
    """A token and its expiry on the *local* clock: ``expires_at = received + lifetime``."""

    token: str = field(repr=False)
    expires_at: float  # on the clock passed to parse_token_response (ecrcopy uses time.monotonic)
    lifetime: float


def _b64url_json(segment: str) -> dict[str, object] | None:
    try:
        padded = segment + "=" * (-len(segment) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def jwt_claims(token: str) -> dict[str, object] | None:
    """The claims of a JWT, read without verifying anything; ``None`` when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 65536:
        return None
    return _b64url_json(parts[1])


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (GitLab sends no ``expires_in``)."""
    claims = jwt_claims(token)
    return None if claims is None else _finite(claims.get("exp"))


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
#: A lifetime below this is not believed (clock skew, a broken server): the default is used instead.
MIN_TOKEN_LIFETIME = 1.0
MAX_TOKEN_LIFETIME = 24 * 3600.0
MAX_TOKEN_LENGTH = 64 * 1024
_HEADER_SAFE_RE = re.compile(r"[\x21-\x7e]+")


def token_lifetime(expires_in: float | None, token: str, wall_now: float) -> float:
    """How long a token lives, measured from when it was received.

    ``expires_in`` when the server sent it; else the JWT's ``exp - iat`` (both stamped by the
    token service's clock, so the runner's clock does not matter); else ``exp - wall_now``. A
    lifetime under :data:`MIN_TOKEN_LIFETIME` (a clock far off, a broken server) becomes
    :data:`DEFAULT_TOKEN_LIFETIME`; a re-authentication on 401 covers a token that dies sooner.
    """
    lifetime: float | None = expires_in if expires_in is not None and expires_in > 0 else None
    if lifetime is None:
        claims = jwt_claims(token) or {}
        exp, iat = _finite(claims.get("exp")), _finite(claims.get("iat"))
        if exp is not None and iat is not None and exp > iat:
            lifetime = exp - iat
        elif exp is not None:
            lifetime = exp - wall_now
    if lifetime is None or lifetime < MIN_TOKEN_LIFETIME:
        return DEFAULT_TOKEN_LIFETIME
    return min(lifetime, MAX_TOKEN_LIFETIME)


def parse_token_response(body: bytes, now: float, *, wall_now: float | None = None) -> TokenInfo:
    """Read a token reply: ``token``/``access_token``; its lifetime per :func:`token_lifetime`.

    ``now`` is the local clock reading when the reply arrived (``expires_at`` is on that clock);
    ``wall_now`` the wall-clock time, used only for a JWT with ``exp`` but no ``iat``. Raises
    ``ValueError`` when the body holds no token, or one that cannot go into an HTTP header.
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
    if len(token) > MAX_TOKEN_LENGTH or not _HEADER_SAFE_RE.fullmatch(token):
        raise ValueError("token response holds a token with characters not allowed in an HTTP header")
    lifetime = token_lifetime(_finite(data.get("expires_in")), token, time.time() if wall_now is None else wall_now)
    return TokenInfo(token, now + lifetime, lifetime)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparseable netloc or port (``h:99999``, ``[::1``)
        return None
    return (parts.scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme))


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port (default ports filled in); an unparseable URL is no one's origin."""
    origin = _origin(a)
    return origin is not None and origin == _origin(b)


#: An absolute http(s) URL that resolving against any base leaves exactly as it is: a lower-case
#: host name or an IPv4 address in its one canonical form, a port that is not the scheme's default,
#: a non-empty path without dot segments, characters that need no quoting, no fragment. Redirects
#: to object storage and upload ``Location`` headers are such URLs; taking them as they are spares
#: httpx's pure-Python parser two parses each (a visible share of a copy's CPU). Anything else is
#: resolved by httpx.
_SIMPLE_ABSOLUTE = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?P<path>/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*)"
    r"(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]+)?"
)


_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def simple_absolute_url(url: str) -> bool:
    """Whether ``url`` is an absolute URL that needs no resolving or normalising (see above)."""
    match = _SIMPLE_ABSOLUTE.fullmatch(url)
    if match is None:
        return False
    host = match["host"]
    if host[-1].isdigit() and _DIGITS_AND_DOTS.fullmatch(host) and not _IPV4.fullmatch(host):
        return False  # not an IPv4 address as httpx accepts it unchanged (octets 0-255, no leading zeros)
    port = match["port"]
    if port is not None and (int(port) > 65535 or int(port) == (443 if match["scheme"] == "https" else 80)):
        return False
    segments = match["path"].split("/")
    return "." not in segments and ".." not in segments


def same_path(a: str, b: str) -> bool:
    """Same URL path, percent-encoding aside (an unparseable URL shares no one's path)."""
    try:
        return unquote(urlsplit(a).path) == unquote(urlsplit(b).path)
    except ValueError:
        return False


def append_query(url: str, **params: str) -> str:
    """Add query parameters to ``url`` keeping the ones it has (an upload ``Location`` carries state)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """The URL without query string and user info (presigned URLs, upload state and passwords stay out)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable (``https://[::1``): cut query, fragment and user info by hand
        head = url.split("?", 1)[0].split("#", 1)[0]
        scheme, sep, rest = head.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else head
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
