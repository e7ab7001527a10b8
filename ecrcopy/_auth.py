"""Registry authentication as a challenge/response flow.

The first request to a registry is ``GET /v2/``; its ``WWW-Authenticate`` challenge decides the
scheme. *Basic* sends the credentials on every request. *Bearer* exchanges them at the realm (which
may live on another host, as GitLab's ``/jwt/auth`` does) for a token per set of scopes; tokens
are cached and refreshed a margin before they expire (``expires_in``, else the JWT ``exp``
claim). A 401 triggers one re-authentication; credentials the realm rejects fail fast — GitLab
bans an address after a few hundred failed attempts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import httpx

from ._credentials import CredentialProvider, Credentials
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    RateLimited,
    RegistryServerError,
    RegistryUnavailable,
)
from ._protocol import (
    Challenge,
    Scope,
    TokenInfo,
    format_scopes,
    parse_error_body,
    parse_retry_after,
    parse_token_response,
    parse_www_authenticate,
    redact_url,
)
from ._reference import is_loopback_host, split_host_port

__all__ = ["Authenticator"]

log = logging.getLogger("ecrcopy")

ScopeKey = tuple[str, ...]


def _pick_challenge(header: str | None) -> Challenge | None:
    if not header:
        return None
    challenges = parse_www_authenticate(header)
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


class Authenticator:
    """Authentication state for one registry host, shared by every request to it."""

    def __init__(
        self,
        host: str,
        base_url: str,
        http: httpx.AsyncClient,
        credentials: CredentialProvider,
        *,
        refresh_margin: float = 30.0,
        allow_http: Callable[[str], bool] = is_loopback_host,
        retries: int = 5,
    ) -> None:
        self.host = host
        self.base_url = base_url
        self._http = http
        self._credentials = credentials
        self._refresh_margin = refresh_margin
        self._allow_http = allow_http
        self._retries = max(1, retries)
        self._challenge: Challenge | None = None
        self._pinged = False
        self._ping_lock = anyio.Lock()
        self._tokens: dict[ScopeKey, TokenInfo] = {}
        self._token_locks: dict[ScopeKey, anyio.Lock] = {}
        self.token_requests = 0

    @property
    def scheme(self) -> str | None:
        return self._challenge.scheme if self._challenge else None

    async def ping(self) -> None:
        """``GET /v2/`` once: learn the auth scheme; fail clearly when the registry is unreachable.

        429 and 5xx answers (and a broken connection) are retried a few times: they are passing.
        """
        async with self._ping_lock:
            if self._pinged:
                return
            url = f"{self.base_url}/v2/"
            for attempt in range(1, self._retries + 1):
                last = attempt == self._retries
                try:
                    response = await self._http.get(url)
                except httpx.ConnectError as exc:  # nothing listens there: no point in waiting
                    raise RegistryUnavailable(f"cannot reach registry {self.host}: {_describe(exc)}") from None
                except httpx.TransportError as exc:
                    if last:
                        raise RegistryUnavailable(f"cannot reach registry {self.host}: {_describe(exc)}") from None
                    await anyio.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
                    continue
                status = response.status_code
                if status == 429 or status >= 500:
                    if last:
                        raise RegistryUnavailable(f"registry {self.host} answered {status} to GET /v2/")
                    wait = parse_retry_after(response.headers.get("retry-after"))
                    await anyio.sleep(min(wait if wait is not None else 0.5 * 2 ** (attempt - 1), 30.0))
                    continue
                if status == 401:
                    self._challenge = _pick_challenge(response.headers.get("www-authenticate"))
                    if self._challenge is None:
                        raise AuthenticationError(
                            f"{self.host} answered 401 without a usable WWW-Authenticate challenge"
                        )
                elif status != 200:
                    raise ConfigurationError(
                        f"{self.host} does not look like a container registry (GET /v2/ answered {status})"
                    )
                break
            self._pinged = True
            log.debug("registry %s auth scheme: %s", self.host, self.scheme or "none")

    async def headers(self, scopes: frozenset[Scope]) -> dict[str, str]:
        """The ``Authorization`` header for a request needing ``scopes`` (empty when anonymous)."""
        await self.ping()
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = await self._credentials.get(self.host)
            return {"Authorization": creds.basic_header()} if creds else {}
        token = await self._token(challenge, scopes)
        return {"Authorization": f"Bearer {token.token}"}

    def unauthorized(self, response: httpx.Response, scopes: frozenset[Scope]) -> bool:
        """React to a 401 on a request that carried our credentials; True when a retry may succeed.

        Drops the cached token (or asks the credential provider to refresh) and learns a changed
        challenge. ``insufficient_scope`` is not retried: new credentials would not grant more.
        """
        challenge = _pick_challenge(response.headers.get("www-authenticate"))
        if challenge is not None:
            if challenge.error == "insufficient_scope":
                return False
            self._challenge = challenge
        if self._challenge is None:
            return False
        if self._challenge.scheme == "bearer":
            wanted = _key(scopes)
            for key in [k for k in self._tokens if k == wanted or _covers(k, wanted)]:
                del self._tokens[key]
        self._credentials.invalidate(self.host)
        return True

    def _lock(self, key: ScopeKey) -> anyio.Lock:
        lock = self._token_locks.get(key)
        if lock is None:
            lock = self._token_locks[key] = anyio.Lock()
        return lock

    async def _token(self, challenge: Challenge, scopes: frozenset[Scope]) -> TokenInfo:
        key = _key(scopes)
        async with self._lock(key):
            now = time.time()
            for cached_key in (key, *(k for k in self._tokens if k != key and _covers(k, key))):
                cached = self._tokens.get(cached_key)
                if cached is not None:
                    margin = min(self._refresh_margin, cached.lifetime * 0.2)
                    if now < cached.expires_at - margin:
                        return cached
            token = await self._fetch_token(challenge, scopes)
            self._tokens[key] = token
            return token

    async def _fetch_token(self, challenge: Challenge, scopes: frozenset[Scope]) -> TokenInfo:
        realm = challenge.realm
        if not realm:
            raise AuthenticationError(f"{self.host} sent a Bearer challenge without a realm")
        realm_url = httpx.URL(realm)
        if realm_url.scheme != "https":
            realm_host = realm_url.host if realm_url.port is None else f"{realm_url.host}:{realm_url.port}"
            if realm_url.scheme != "http" or not (
                self._allow_http(realm_host) or self._allow_http(split_host_port(realm_host)[0])
            ):
                raise ConfigurationError(
                    f"{self.host}: refusing to send credentials to non-https token realm {redact_url(realm)}"
                )
        creds: Credentials | None = await self._credentials.get(self.host)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in format_scopes(scopes))
        self.token_requests += 1
        try:
            if creds is not None and creds.identity_token is not None:
                form: dict[str, str] = {k: str(v) for k, v in params}
                form.update(
                    grant_type="refresh_token",
                    refresh_token=creds.identity_token.get_secret_value(),
                    client_id="ecrcopy",
                    scope=" ".join(format_scopes(scopes)),
                )
                response = await self._http.post(realm, data=form)
            else:
                headers = {"Authorization": creds.basic_header()} if creds else {}
                if creds:
                    params.append(("account", creds.username))
                # append to the realm's own query: httpx's params= would replace it
                url = httpx.URL(realm)
                response = await self._http.get(url.copy_merge_params(params), headers=headers)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"cannot reach token service {redact_url(realm)}: {_describe(exc)}") from None
        status = response.status_code
        if status in (401, 403):
            who = f"user {creds.username!r}" if creds else "anonymous access"
            raise AuthenticationError(
                f"{self.host}: token service {redact_url(realm)} rejected {who} ({status}); check the credentials"
            )
        if status == 429:
            raise RateLimited(
                f"token service {redact_url(realm)} rate-limited us",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            raise RegistryServerError(f"token service {redact_url(realm)} answered {status}", status=status)
        if status != 200:
            errors = parse_error_body(response.content)
            detail = f": {errors[0].message}" if errors else ""
            raise AuthenticationError(f"token service {redact_url(realm)} answered {status}{detail}")
        try:
            return parse_token_response(response.content, time.time())
        except ValueError as exc:
            raise AuthenticationError(f"token service {redact_url(realm)}: {exc}") from None


def _key(scopes: frozenset[Scope]) -> ScopeKey:
    return tuple(format_scopes(scopes))


def _covers(have: ScopeKey, want: ScopeKey) -> bool:
    """True when a token granted for ``have`` was asked for everything in ``want``."""
    granted: dict[str, set[str]] = {}
    for text in have:
        head, _, actions = text.rpartition(":")
        granted[head] = set(actions.split(","))
    for text in want:
        head, _, actions = text.rpartition(":")
        if not set(actions.split(",")) <= granted.get(head, set()):
            return False
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
