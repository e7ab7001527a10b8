"""Registry authentication as a challenge/response flow.

The first request to a registry is ``GET /v2/``; its ``WWW-Authenticate`` challenge decides the
scheme. *Basic* sends the credentials on every request. *Bearer* exchanges them at the realm (which
may live on another host, as GitLab's ``/jwt/auth`` does) for a token per set of scopes; tokens
are cached and refreshed a margin before they expire (``expires_in``, else the JWT ``exp``
claim, measured on the local clock from the moment the token arrived). A 401 triggers one
re-authentication; credentials the realm rejects fail fast — GitLab bans an address after a few
hundred failed attempts.

The challenge, and so the realm credentials are sent to, is learned only from the registry's own
``GET /v2/``; a later 401 may say a token expired, but never moves the realm. A token-service
hiccup (connection trouble, 429, 5xx, an unreadable reply) is transient and retried by the run's
:class:`~ecrcopy._retry.RetryPolicy`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterable

import anyio
import httpx

from ._credentials import CredentialProvider, Credentials
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    EcrcopyError,
    RateLimited,
    RegistryServerError,
    RegistryUnavailable,
    TransferError,
)
from ._limits import HostLimits, host_of_url
from ._options import CopyOptions
from ._protocol import (
    Challenge,
    Scope,
    TokenInfo,
    clean_text,
    format_scopes,
    parse_error_body,
    parse_retry_after,
    parse_token_response,
    parse_www_authenticate,
    redact_url,
)
from ._reference import is_loopback_host, split_host_port
from ._retry import RetryPolicy, is_transient
from ._streams import describe_transport_error, read_limited

__all__ = ["Authenticator"]

#: Largest token reply read (GitLab's JWTs with many scopes are a few KiB).
MAX_TOKEN_REPLY = 1024 * 1024

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
        retry: RetryPolicy | None = None,
        limits: HostLimits | None = None,
    ) -> None:
        self.host = host
        self.base_url = base_url
        self._http = http
        self._credentials = credentials
        self._refresh_margin = refresh_margin
        self._allow_http = allow_http
        self._retry = retry or RetryPolicy(CopyOptions())
        self._limits = limits or HostLimits(self._retry.options)
        self._challenge: Challenge | None = None
        self._pinged = False
        self._ping_lock = anyio.Lock()
        self._tokens: dict[ScopeKey, TokenInfo] = {}
        self._token_locks: dict[ScopeKey, anyio.Lock] = {}
        #: token requests sent, and good tokens received
        self.token_requests = 0
        self.tokens_received = 0

    @property
    def scheme(self) -> str | None:
        return self._challenge.scheme if self._challenge else None

    async def ping(self) -> None:
        """``GET /v2/`` once: learn the auth scheme; fail clearly when the registry is unreachable.

        A refused connection is final at once; other connection trouble, 429 and 5xx answers are
        retried per the run's policy, then reported as :class:`RegistryUnavailable`.
        """
        if self._pinged:  # every request asks: no lock once it is known
            return
        async with self._ping_lock:
            if self._pinged:
                return
            try:
                challenge = await self._retry.run(self._ping_once, what=f"GET {self.host}/v2/", host=self.host)
            except EcrcopyError as exc:
                if exc.fatal:
                    raise
                raise RegistryUnavailable(f"cannot reach registry {self.host}: {exc}") from None
            self._challenge = challenge
            self._pinged = True
            log.debug("registry %s auth scheme: %s", self.host, self.scheme or "none")

    async def _ping_once(self) -> Challenge | None:
        url = f"{self.base_url}/v2/"
        async with self._limits(self.host).slot():
            try:
                response = await self._http.get(url)
            except httpx.ConnectError as exc:  # nothing listens there: no point in waiting
                raise RegistryUnavailable(
                    f"cannot reach registry {self.host}: {describe_transport_error(exc)}"
                ) from None
            except httpx.TransportError as exc:
                raise TransferError(f"GET /v2/: {describe_transport_error(exc)}") from None
            except (httpx.InvalidURL, ValueError, UnicodeError):
                raise ConfigurationError(f"{self.host} answered GET /v2/ with an unusable redirect") from None
        status = response.status_code
        if status == 429:
            raise RateLimited(
                f"registry {self.host} answered 429 to GET /v2/",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status in (500, 502, 503, 504):
            raise RegistryServerError(f"registry {self.host} answered {status} to GET /v2/", status=status)
        if status == 401:
            challenge = _pick_challenge(response.headers.get("www-authenticate"))
            if challenge is None:
                raise AuthenticationError(f"{self.host} answered 401 without a usable WWW-Authenticate challenge")
            return challenge
        if status != 200:
            raise ConfigurationError(
                f"{self.host} does not look like a container registry (GET /v2/ answered {status})"
            )
        return None

    async def check(self, scopes: frozenset[Scope]) -> None:
        """Prove the credentials now (a token for ``scopes``): fatal errors at the start of a run.

        Transient trouble that outlasts the retries becomes :class:`RegistryUnavailable`.
        """
        await self.ping()
        try:
            await self._retry.run(lambda: self.headers(scopes), what=f"token for {self.host}", host=self.host)
        except EcrcopyError as exc:
            if exc.fatal or not is_transient(exc):
                raise
            raise RegistryUnavailable(f"cannot get a token for {self.host}: {exc}") from None

    async def headers(self, scopes: frozenset[Scope]) -> dict[str, str]:
        """The ``Authorization`` header for a request needing ``scopes`` (empty when anonymous)."""
        await self.ping()
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = await self._credentials.get(self.host)
            return {"Authorization": creds.basic_header()} if creds else {}  # basic_header() validates
        token = await self._token(challenge, scopes)
        return {"Authorization": f"Bearer {token.token}"}

    async def prefetch(self, scope_sets: Iterable[frozenset[Scope]], *, concurrency: int = 4) -> None:
        """Fetch a token for each of ``scope_sets`` now (each set may span several repositories),
        so that requests needing any part of a set find a token that covers it.

        A run touching hundreds of repositories then asks the token service a few times instead of
        once per repository. Best effort: a failure here is logged, and each request still gets
        its own token later.
        """
        await self.ping()
        if self._challenge is None or self._challenge.scheme != "bearer":
            return
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(scopes: frozenset[Scope]) -> None:
            async with limiter:
                try:
                    await self.headers(scopes)
                except EcrcopyError as exc:
                    if exc.fatal:
                        raise
                    log.debug("token prefetch for %d scopes of %s failed: %s", len(scopes), self.host, exc)

        async with anyio.create_task_group() as tg:
            for scopes in scope_sets:
                tg.start_soon(one, scopes)

    def unauthorized(self, response: httpx.Response, scopes: frozenset[Scope]) -> bool:
        """React to a 401 from the registry's own origin on a request that carried our credentials.

        True when a retry may succeed: the cached token is dropped (or the credential provider
        asked to refresh). ``insufficient_scope`` is not retried: new credentials would not grant
        more. The challenge learned from ``GET /v2/`` stays: a 401 never moves the realm.
        """
        challenge = _pick_challenge(response.headers.get("www-authenticate"))
        if challenge is not None and challenge.error == "insufficient_scope":
            return False
        if self._challenge is None:
            return False
        if challenge is not None and challenge.realm != self._challenge.realm:
            log.warning(
                "%s: a 401 named another token realm %s; keeping the realm its /v2/ announced",
                self.host,
                clean_text(redact_url(challenge.realm or ""), 120),
            )
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
            now = time.monotonic()
            # the token asked for exactly these scopes first; others that cover them only when it is not fresh
            for cached_key in itertools.chain((key,), (k for k in list(self._tokens) if k != key and _covers(k, key))):
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
        try:
            realm_url = httpx.URL(realm)
            realm_host = realm_url.host if realm_url.port is None else f"{realm_url.host}:{realm_url.port}"
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise AuthenticationError(f"{self.host} announced an unusable token realm") from None
        if realm_url.scheme not in ("http", "https") or not realm_host:
            raise AuthenticationError(f"{self.host} announced a token realm that is not an HTTP URL")
        plain_http_allowed = realm_url.scheme == "http" and (
            self._allow_http(realm_host) or self._allow_http(split_host_port(realm_host)[0])
        )
        if realm_url.scheme != "https" and not plain_http_allowed:
            raise ConfigurationError(
                f"{self.host}: refusing to send credentials to non-https token realm {redact_url(realm)}"
            )
        creds: Credentials | None = await self._credentials.get(self.host)
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in format_scopes(scopes))
        self.token_requests += 1
        what = f"token service {clean_text(redact_url(realm), 160)}"
        try:
            if creds is not None and creds.identity_token is not None:
                form: dict[str, str] = {k: str(v) for k, v in params}
                form.update(
                    grant_type="refresh_token",
                    refresh_token=creds.identity_token.get_secret_value(),
                    client_id="ecrcopy",
                    scope=" ".join(format_scopes(scopes)),
                )
                request = self._http.build_request("POST", realm, data=form)
            else:
                headers = {"Authorization": creds.basic_header()} if creds else {}
                if creds:
                    params.append(("account", creds.username))
                # append to the realm's own query: httpx's params= would replace it
                request = self._http.build_request("GET", realm_url.copy_merge_params(params), headers=headers)
            async with self._limits(host_of_url(realm_url)).slot():
                response = await self._http.send(request, stream=True)
                try:
                    body = await read_limited(response, MAX_TOKEN_REPLY, what, TransferError)
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            raise TransferError(f"{what}: {describe_transport_error(exc)}") from None
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise AuthenticationError(f"{what} answered with an unusable redirect") from None
        received = time.monotonic()
        status = response.status_code
        if status in (401, 403):
            who = f"user {creds.username!r}" if creds else "anonymous access"
            raise AuthenticationError(f"{self.host}: {what} rejected {who} ({status}); check the credentials")
        if status == 429:
            self._limits(host_of_url(realm_url)).throttled()
            raise RateLimited(
                f"{what} answered 429", retry_after=parse_retry_after(response.headers.get("retry-after"))
            )
        if status in (500, 502, 503, 504):
            raise RegistryServerError(f"{what} answered {status}", status=status)
        if status != 200:
            errors = parse_error_body(body)
            detail = f": {errors[0].message}" if errors and errors[0].message else ""
            raise AuthenticationError(f"{what} answered {status}{detail}")
        try:
            token = parse_token_response(body, received, wall_now=time.time())
        except ValueError as exc:
            # a cut or garbled reply: transient (retried); a realm that never answers sensibly fails the run
            raise TransferError(f"{what}: {exc}") from None
        self.tokens_received += 1
        return token


def _key(scopes: frozenset[Scope]) -> ScopeKey:
    return tuple(format_scopes(scopes))


@functools.lru_cache(maxsize=4096)
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
