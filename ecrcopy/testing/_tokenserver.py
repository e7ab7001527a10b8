"""A GitLab-like JWT token service for distribution's ``auth: token`` mode."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ._httpserver import BackgroundHTTPServer, QuietHandler, logger
from ._service import RequestLog

__all__ = ["Grant", "TokenRequest", "TokenServer", "parse_scope"]

#: ``grant(user, repository_name) -> allowed actions``; ``user`` is ``None`` for anonymous requests.
Grant = Callable[[str | None, str], set[str]]


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One request to ``/jwt/auth``.

    ``user`` is the Basic-auth user name sent (``None`` without credentials), ``scopes`` the raw
    ``scope`` parameters in order, ``ok`` whether a token was issued.
    """

    user: str | None
    scopes: list[str]
    ok: bool


def parse_scope(scope: str) -> tuple[str, str, list[str]]:
    """Split ``type:name:actions`` into its parts.

    The resource type ends at the first ``:`` and the actions start after the last one, so a name may
    itself contain ``:`` (``repository:localhost:5000/a:pull``).  Raises :class:`ValueError` when the
    scope has fewer than three parts.
    """
    head, sep, actions = scope.rpartition(":")
    kind, sep2, name = head.partition(":")
    if not sep or not sep2 or not kind or not name:
        raise ValueError(f"malformed scope {scope!r}")
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer(BackgroundHTTPServer):
    """A threaded token service answering ``GET /jwt/auth`` like GitLab's.

    * Basic credentials are checked against ``users``; missing or wrong credentials answer 401 with a
      JSON error (GitLab does not hand anonymous tokens for private projects either).
    * Every ``scope`` parameter (``repository:<name>:<actions>``, split from the right) is granted as
      asked, or intersected with ``grant(user, name)`` when ``grant`` is given. Scopes whose granted
      action set is empty are left out of the token's ``access`` claim.
    * The reply body is only ``{"token": "<jwt>"}`` (no ``expires_in``, no ``issued_at``), as GitLab's.
    * The JWT is ES256-signed by a fresh P-256 key; the header carries ``x5c`` with the self-signed
      certificate (whose PEM is written to :attr:`cert_path` for the registry's ``rootcertbundle``).
      Claims: ``iss``, ``sub``, ``aud`` (= service), ``exp`` = ``ceil(now + lifetime)``, ``nbf`` =
      ``floor(now) - 1``, ``iat``, ``jti``, ``access``. distribution requires integer ``exp``/``nbf``,
      hence the rounding; note that distribution itself keeps accepting a token for 60 s past ``exp``
      (use :class:`~ecrcopy.testing.Proxy` with ``token_gate=True`` to emulate GitLab's hard expiry).

    :attr:`requests` lists every ``/jwt/auth`` request (thread-safe snapshot).
    """

    def __init__(
        self,
        *,
        users: dict[str, str],
        lifetime: float = 300.0,
        service: str = "container_registry",
        issuer: str = "ecrcopy-test-issuer",
        grant: Grant | None = None,
    ) -> None:
        super().__init__()
        self.users = dict(users)
        self.lifetime = lifetime
        self.service = service
        self.issuer = issuer
        self.grant = grant
        self._requests: RequestLog[TokenRequest] = RequestLog()
        self._key: Any = None
        self._cert_pem: bytes | None = None
        self._x5c: str | None = None
        self._tmpdir: str | None = None
        self._cert_path: Path | None = None

    # -- key material --------------------------------------------------------------------------------

    def _ensure_key(self) -> None:
        if self._key is not None:
            return
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecrcopy test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self._key = key
        self._cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")

    @property
    def cert_pem(self) -> bytes:
        """PEM of the self-signed signing certificate (the registry's ``rootcertbundle``)."""
        self._ensure_key()
        assert self._cert_pem is not None
        return self._cert_pem

    @property
    def cert_path(self) -> Path:
        """Temporary file holding :attr:`cert_pem` (exists while the server runs)."""
        return self._require(self._cert_path)

    @property
    def realm(self) -> str:
        """``http://127.0.0.1:PORT/jwt/auth``."""
        return f"{self.url}/jwt/auth"

    # -- tokens --------------------------------------------------------------------------------------

    def issue_token(
        self,
        user: str | None,
        scopes: list[str],
        *,
        lifetime: float | None = None,
    ) -> str:
        """Mint a token directly (no HTTP, not recorded), applying ``grant`` like the endpoint does."""
        import jwt

        self._ensure_key()
        now = time.time()
        access: list[dict[str, Any]] = []
        for scope in scopes:
            try:
                kind, name, actions = parse_scope(scope)
            except ValueError:
                continue
            allowed = set(actions)
            if self.grant is not None:
                allowed &= self.grant(user, name)
            if allowed:
                access.append({"type": kind, "name": name, "actions": sorted(allowed)})
        life = self.lifetime if lifetime is None else lifetime
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": math.ceil(now + life),
            "nbf": math.floor(now) - 1,
            "iat": math.floor(now),
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": [self._x5c]})

    def check_credentials(self, authorization: str | None) -> tuple[str | None, bool]:
        """Return ``(user, valid)`` for an ``Authorization`` header value."""
        if not authorization:
            return None, False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        user, sep, password = decoded.partition(":")
        if not sep:
            return user, False
        return user, self.users.get(user) == password

    # -- records -------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        """Snapshot of every ``/jwt/auth`` request so far."""
        return self._requests.snapshot()

    def reset(self) -> None:
        """Forget recorded requests."""
        self._requests.clear()

    def _record(self, req: TokenRequest) -> None:
        self._requests.append(req)

    # -- lifecycle -----------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _TokenHandler

    def _before_start(self) -> None:
        self._ensure_key()
        self._tmpdir = tempfile.mkdtemp(prefix="ecrcopy-token-")
        path = Path(self._tmpdir) / "token-signing-cert.pem"
        path.write_bytes(self.cert_pem)
        self._cert_path = path

    def _after_stop(self) -> None:
        if self._cert_path is not None:
            self._cert_path.unlink(missing_ok=True)
            self._cert_path = None
        if self._tmpdir is not None:
            os.rmdir(self._tmpdir)
            self._tmpdir = None


_DENIED = json.dumps(
    {"errors": [{"code": "UNAUTHORIZED", "message": "HTTP Basic: Access denied", "detail": None}]}
).encode()


class _TokenHandler(QuietHandler):
    def do_GET(self) -> None:
        owner = cast(TokenServer, self.tracking_server.owner)
        parts = urlsplit(self.path)
        if parts.path != "/jwt/auth":
            self.send_bytes(404, b'{"message":"404 Not Found"}', {"Content-Type": "application/json"})
            return
        params = parse_qs(parts.query, keep_blank_values=True)
        scopes = params.get("scope", [])
        user, valid = owner.check_credentials(self.headers.get("Authorization"))
        if not valid:
            owner._record(TokenRequest(user=user, scopes=scopes, ok=False))
            logger.debug("token request denied for user %r", user)
            self.send_bytes(
                401,
                _DENIED,
                {"Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="GitLab"'},
            )
            return
        token = owner.issue_token(user, scopes)
        owner._record(TokenRequest(user=user, scopes=scopes, ok=True))
        body = json.dumps({"token": token}).encode()
        self.send_bytes(200, body, {"Content-Type": "application/json"})

    def do_HEAD(self) -> None:
        self.send_bytes(405, b"")

    def do_POST(self) -> None:
        self.discard_body()
        self.send_bytes(405, b"")
