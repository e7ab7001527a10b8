"""Faults a :class:`~ecrcopy.testing.Proxy` applies on the wire, and a seeded injector that picks them.

A proxy hook returns ``None`` (forward), a :class:`~ecrcopy.testing.ProxyResponse` (answer instead of
forwarding) or a :class:`Fault`. Fault kinds:

* ``rate_limited``: 429 ``TOOMANYREQUESTS`` JSON error, with ``Retry-After`` when given.
* ``unavailable``: a 500/502/503/504 registry-style JSON error (code ``UNKNOWN`` for 500, else
  ``UNAVAILABLE``), with ``Retry-After`` when given.
* ``insufficient_scope``: 401 ``UNAUTHORIZED`` with ``WWW-Authenticate: Bearer realm="..",
  service="..",scope="..",error="insufficient_scope"`` -- realm and service copied from the
  upstream's challenge when not given, scope derived from the request path when not given.
* ``reset``: forward; send the real status, headers and the first bytes of the body; then abort the
  TCP connection with RST (``SO_LINGER`` on with timeout 0).
* ``truncate``: like ``reset`` but a clean close (FIN), although the headers promised the full length.
* ``stall``: forward; send status, headers and the first bytes; then nothing for ``seconds`` (cut
  short when the proxy stops or the client closes its side); then close (FIN).
* ``no_response``: read the whole request (body included) and close without sending a byte.

The first three answer without reaching the upstream (a request body is read and dropped). The
wire faults (``reset``, ``truncate``, ``stall``) forward the request, so an upload they hit *has* reached
the upstream; only its response is damaged. They cut after ``after_bytes`` body bytes, or -- with
``fraction`` and a response ``Content-Length`` of L >= 2 -- after ``1 + int(fraction * (L - 1))`` bytes,
strictly inside the body. A response without a body is cut right after its headers. A body shorter
than the cut is sent whole (a relayed chunked body without its last chunk).

:class:`FaultInjector` is a hook drawing faults at random (seeded, reproducible) for the requests its
``applies`` predicate selects, with a bound on how often one request is faulted in a row.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ._messages import ProxyRequest, ProxyResponse

__all__ = [
    "FAULT_RATE_KEYS",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "InjectedFault",
    "ProxyHook",
    "any_request",
    "data_requests",
    "token_requests",
]

FaultKind = Literal["rate_limited", "unavailable", "insufficient_scope", "reset", "truncate", "stall", "no_response"]

_ANSWERS = frozenset({"rate_limited", "unavailable", "insufficient_scope"})
_WIRE = frozenset({"reset", "truncate", "stall"})
_UNAVAILABLE = {500: ("UNKNOWN", "unknown error"), 502: ("UNAVAILABLE", "bad gateway")}
_UNAVAILABLE.update({503: ("UNAVAILABLE", "service unavailable"), 504: ("UNAVAILABLE", "gateway timeout")})
_SCOPED = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags|referrers)/")


def _json_error(status: int, code: str, message: str, detail: object, headers: dict[str, str]) -> ProxyResponse:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}, separators=(",", ":"))
    return ProxyResponse(status, {"Content-Type": "application/json", **headers}, body.encode())


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault for a :class:`~ecrcopy.testing.Proxy` to apply to a request (see the module docs).

    Build with the classmethods; the fields are the parameters of the kinds that use them.
    """

    kind: FaultKind
    status: int = 0
    retry_after: str | None = None
    realm: str | None = None
    service: str | None = None
    scope: str | None = None
    after_bytes: int = 0
    fraction: float | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        if self.fraction is not None and not 0.0 <= self.fraction < 1.0:
            raise ValueError("fraction must be in [0, 1)")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if self.kind == "unavailable" and self.status not in _UNAVAILABLE:
            raise ValueError(f"unavailable status must be one of {sorted(_UNAVAILABLE)}, got {self.status}")

    # -- constructors --------------------------------------------------------------------------------

    @classmethod
    def rate_limited(cls, retry_after: str | None = None) -> Fault:
        """429 ``TOOMANYREQUESTS``; ``retry_after`` (``"1"`` or an HTTP date) becomes ``Retry-After``."""
        return cls("rate_limited", status=429, retry_after=retry_after)

    @classmethod
    def unavailable(cls, status: int = 503, retry_after: str | None = None) -> Fault:
        """A registry-style JSON 500, 502, 503 or 504 (``Retry-After`` when given)."""
        return cls("unavailable", status=status, retry_after=retry_after)

    @classmethod
    def insufficient_scope(
        cls, realm: str | None = None, service: str | None = None, scope: str | None = None
    ) -> Fault:
        """401 with a Bearer ``error="insufficient_scope"`` challenge.

        ``realm``/``service`` left ``None`` are taken from the upstream's ``GET /v2/`` Bearer challenge
        (read once, when first needed); ``scope`` left ``None`` is ``repository:<name>:pull`` (GET/HEAD)
        or ``repository:<name>:pull,push`` derived from the request path (left out when not derivable).
        """
        return cls("insufficient_scope", status=401, realm=realm, service=service, scope=scope)

    @classmethod
    def reset_mid_body(cls, after_bytes: int = 0, *, fraction: float | None = None) -> Fault:
        """Forward, send status, headers and ``after_bytes`` body bytes, then abort with RST."""
        return cls("reset", after_bytes=after_bytes, fraction=fraction)

    @classmethod
    def truncate(cls, after_bytes: int = 0, *, fraction: float | None = None) -> Fault:
        """Forward, send status, headers (full ``Content-Length``) and ``after_bytes`` bytes, then FIN."""
        return cls("truncate", after_bytes=after_bytes, fraction=fraction)

    @classmethod
    def stall(cls, seconds: float, after_bytes: int = 0, *, fraction: float | None = None) -> Fault:
        """Forward, send status, headers and ``after_bytes`` bytes, go silent for ``seconds``, then FIN."""
        return cls("stall", after_bytes=after_bytes, fraction=fraction, seconds=seconds)

    @classmethod
    def close_without_response(cls) -> Fault:
        """Read the whole request, then close the connection without sending anything."""
        return cls("no_response")

    # -- what the proxy does with it -----------------------------------------------------------------

    @property
    def answers(self) -> bool:
        """Whether this fault is a canned answer (429, 5xx, 401) that does not reach the upstream."""
        return self.kind in _ANSWERS

    @property
    def forwards(self) -> bool:
        """Whether the request is forwarded and the upstream's response damaged (reset/truncate/stall)."""
        return self.kind in _WIRE

    def cut_offset(self, length: int | None) -> int:
        """How many body bytes to send before the cut, for a response body of ``length`` (None: unknown)."""
        if self.fraction is not None and length is not None:
            return 0 if length < 2 else 1 + int(self.fraction * (length - 1))
        return self.after_bytes

    def as_response(self, request: ProxyRequest | None = None) -> ProxyResponse | None:
        """The canned response of an answering fault (``None`` for the others).

        ``request`` is used to derive an ``insufficient_scope`` scope when none was given.
        """
        if self.kind == "rate_limited" or self.kind == "unavailable":
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            if self.kind == "rate_limited":
                return _json_error(429, "TOOMANYREQUESTS", "too many requests", None, headers)
            code, message = _UNAVAILABLE[self.status]
            return _json_error(self.status, code, message, None, headers)
        if self.kind != "insufficient_scope":
            return None
        scope = self.scope
        if scope is None and request is not None:
            match = _SCOPED.match(request.path)
            if match is not None:
                actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
                scope = f"repository:{match['name']}:{actions}"
        parts = [f'realm="{self.realm or ""}"', f'service="{self.service or ""}"']
        if scope is not None:
            parts.append(f'scope="{scope}"')
        parts.append('error="insufficient_scope"')
        detail = None
        if scope is not None:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            detail = [{"Type": kind, "Class": "", "Name": name, "Action": a} for a in actions.split(",") if a]
        return _json_error(
            401, "UNAUTHORIZED", "authentication required", detail, {"WWW-Authenticate": "Bearer " + ",".join(parts)}
        )

    def with_challenge(self, realm: str, service: str) -> Fault:
        """This fault with a missing ``realm``/``service`` filled in."""
        return replace(
            self,
            realm=self.realm if self.realm is not None else realm,
            service=self.service if self.service is not None else service,
        )


#: ``hook(request) -> None (forward) | ProxyResponse (answer instead) | Fault (apply it)``.
ProxyHook = Callable[[ProxyRequest], ProxyResponse | Fault | None]

# -- request predicates ------------------------------------------------------------------------------

_DATA_PATH = re.compile(r"^/v2/.+/(?:manifests/[^/]+|blobs/.+|tags/list|referrers/[^/]+)$")
_STORAGE_PATH = re.compile(r"^/docker/registry/v2/blobs/")
_TOKEN_PATH = re.compile(r"/jwt/auth|(?:/token|/oauth2/token|/service/token)$")


def data_requests(request: ProxyRequest) -> bool:
    """Registry data requests: manifests, blobs (uploads included), ``tags/list``, referrers, storage blobs.

    Matches ``/v2/<name>/manifests/<ref>``, ``/v2/<name>/blobs/<digest>``, ``/v2/<name>/blobs/uploads/...``,
    ``/v2/<name>/tags/list``, ``/v2/<name>/referrers/<digest>`` and object-storage paths
    ``/docker/registry/v2/blobs/...`` (the :class:`~ecrcopy.testing.BlobServer`). Not the ``GET /v2/``
    ping, not ``/v2/_catalog``, not token requests.
    """
    return bool(_DATA_PATH.match(request.path) or _STORAGE_PATH.match(request.path))


def token_requests(request: ProxyRequest) -> bool:
    """Token-service requests: a path containing ``/jwt/auth`` (GitLab) or ending in ``/token``
    (distribution, Docker Hub), ``/oauth2/token`` or ``/service/token`` (Harbor).

    For a proxy that fronts nothing but a token service, :func:`any_request` selects everything.
    """
    return bool(_TOKEN_PATH.search(request.path))


def any_request(request: ProxyRequest) -> bool:
    """Every request."""
    return True


#: The keys :class:`FaultInjector` accepts in ``rates``.
FAULT_RATE_KEYS = (
    "429",
    "429-retry-after",
    "500",
    "502",
    "503",
    "504",
    "insufficient_scope",
    "cut",
    "reset",
    "truncate",
    "stall",
    "no-response",
)


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One fault a :class:`FaultInjector` injected: the request's method and path, the rate key, the fault."""

    method: str
    path: str
    key: str
    fault: Fault


class FaultInjector:
    """A proxy hook that injects faults at random, reproducibly, into the requests ``applies`` selects.

    For each selected request (``applies(request)`` true and :attr:`enabled`) one uniform number from
    ``random.Random(seed)`` picks a rate key by walking ``rates`` in :data:`FAULT_RATE_KEYS` order
    (cumulative probabilities; the rates must sum to at most 1), and two more pick the variant and the
    cut position -- always three draws, so the sequence depends only on the seed and the order of the
    requests. Keys:

    * ``"429"``: :meth:`Fault.rate_limited` without ``Retry-After``; ``"429-retry-after"``: with
      ``retry_after`` (default ``"1"``);
    * ``"500"``, ``"502"``, ``"503"``, ``"504"``: :meth:`Fault.unavailable`;
    * ``"insufficient_scope"``: :meth:`Fault.insufficient_scope` with ``realm``/``service`` (``None``:
      taken from the upstream's challenge by the proxy);
    * ``"cut"``: :meth:`Fault.reset_mid_body` or :meth:`Fault.truncate` (even odds); ``"reset"`` and
      ``"truncate"`` pick one; all at a random position strictly inside the body when the response
      has a ``Content-Length`` of at least 2 bytes, else after ``int(fraction * 1024)`` bytes;
    * ``"stall"``: :meth:`Fault.stall` for ``stall_seconds`` at a random position;
    * ``"no-response"``: :meth:`Fault.close_without_response`.

    Bounded faults: a request key (method + path) that was faulted ``max_consecutive`` times in a row
    is let through the next time (its streak then restarts at 0, as it does on any request let
    through), so a client that retries the *same* request up to ``max_consecutive`` times after the
    first attempt always gets through. A retry on another path (e.g. a blob upload restarted with a
    new session URL) is a new key. ``max_consecutive=None`` removes the bound.

    A request not faulted (not selected, disabled, no draw, or streak bound) goes to ``then`` when given
    (another hook -- such as an emulator's gate -- whose answer is returned), else is forwarded.

    Counters (thread-safe snapshots): :attr:`seen` (selected requests considered while enabled),
    :attr:`injected` (rate key -> count), :attr:`history` (each :class:`InjectedFault`, oldest first).
    """

    def __init__(
        self,
        seed: int = 0,
        rates: Mapping[str, float] | None = None,
        *,
        applies: Callable[[ProxyRequest], bool] = data_requests,
        then: ProxyHook | None = None,
        max_consecutive: int | None = 3,
        stall_seconds: float = 1.0,
        retry_after: str = "1",
        realm: str | None = None,
        service: str | None = None,
    ) -> None:
        rates = dict(rates or {})
        unknown = sorted(set(rates) - set(FAULT_RATE_KEYS))
        if unknown:
            raise ValueError(f"unknown fault rate keys {unknown}; known: {', '.join(FAULT_RATE_KEYS)}")
        if any(rate < 0 for rate in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        if max_consecutive is not None and max_consecutive < 0:
            raise ValueError("max_consecutive must be >= 0 or None")
        self.seed = seed
        self.rates = {key: rates[key] for key in FAULT_RATE_KEYS if rates.get(key)}
        self.applies = applies
        self.then = then
        self.max_consecutive = max_consecutive
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.realm = realm
        self.service = service
        #: Faults are injected only while this is true (requests are then not counted in :attr:`seen`).
        self.enabled = True
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test faults, not cryptography
        self._lock = threading.Lock()
        self._seen = 0
        self._injected: Counter[str] = Counter()
        self._history: list[InjectedFault] = []
        self._streaks: dict[tuple[str, str], int] = {}

    # -- records -------------------------------------------------------------------------------------

    @property
    def seen(self) -> int:
        """How many selected requests were considered (while enabled)."""
        with self._lock:
            return self._seen

    @property
    def injected(self) -> Counter[str]:
        """A copy of the counts of injected faults per rate key."""
        with self._lock:
            return Counter(self._injected)

    @property
    def history(self) -> list[InjectedFault]:
        """Every injected fault, oldest first."""
        with self._lock:
            return list(self._history)

    def reset(self) -> None:
        """Forget the counters, history and streaks (the random sequence goes on)."""
        with self._lock:
            self._seen = 0
            self._injected.clear()
            self._history.clear()
            self._streaks.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inject nothing inside the ``with`` block (e.g. while seeding through the proxy)."""
        previous = self.enabled
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = previous

    # -- the hook ------------------------------------------------------------------------------------

    def _pick(self, draw: float) -> str | None:
        total = 0.0
        for key, rate in self.rates.items():
            total += rate
            if draw < total:
                return key
        return None

    def _fault(self, key: str, variant: float, position: float) -> Fault:
        if key == "429":
            return Fault.rate_limited(None)
        if key == "429-retry-after":
            return Fault.rate_limited(self.retry_after)
        if key in ("500", "502", "503", "504"):
            return Fault.unavailable(int(key))
        if key == "insufficient_scope":
            return Fault.insufficient_scope(self.realm, self.service)
        if key == "no-response":
            return Fault.close_without_response()
        fallback = int(position * 1024)
        if key == "stall":
            return Fault.stall(self.stall_seconds, fallback, fraction=position)
        if key == "reset" or (key == "cut" and variant < 0.5):
            return Fault.reset_mid_body(fallback, fraction=position)
        return Fault.truncate(fallback, fraction=position)

    def __call__(self, request: ProxyRequest) -> ProxyResponse | Fault | None:
        """The fault to apply, or what ``then`` answers (``None``: forward)."""
        fault: Fault | None = None
        if self.enabled and self.applies(request):
            key = (request.method, request.path)
            with self._lock:
                self._seen += 1
                draw, variant, position = self._rng.random(), self._rng.random(), self._rng.random()
                name = self._pick(draw)
                streak = self._streaks.get(key, 0)
                if name is not None and (self.max_consecutive is None or streak < self.max_consecutive):
                    fault = self._fault(name, variant, position)
                    self._streaks[key] = streak + 1
                    self._injected[name] += 1
                    self._history.append(InjectedFault(request.method, request.path, name, fault))
                else:
                    self._streaks.pop(key, None)
        if fault is not None:
            return fault
        return self.then(request) if self.then is not None else None
