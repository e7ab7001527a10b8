"""The retry policy and per-host limits: what is retried, how long it waits, what it counts.

Edge cases a real registry cannot be made to produce on demand run on ``httpx.MockTransport``
(the FakeRegistry of ``test_client_mock``); the end-to-end behaviour under faults is in
``test_faults.py``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
import httpx
import pytest

from ecrcopy._client import RegistryClient
from ecrcopy._credentials import StaticCredentials
from ecrcopy._exceptions import (
    AuthenticationError,
    Denied,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryServerError,
    RegistryUnavailable,
    TransferError,
)
from ecrcopy._limits import HostLimit, HostLimits
from ecrcopy._options import CopyOptions
from ecrcopy._retry import RetryPolicy, RetryStats, is_transient
from tests.test_client_mock import CREDS, HOST, FakeRegistry, oci_manifest_bytes, serve_manifest

pytestmark = pytest.mark.anyio

NO_WAIT = CopyOptions(retries=4, retry_backoff=0, retry_backoff_max=0)


def client_for(fake: FakeRegistry, options: CopyOptions = NO_WAIT, stats: RetryStats | None = None) -> RegistryClient:
    return RegistryClient(
        HOST,
        StaticCredentials(CREDS),
        options,
        transport=httpx.MockTransport(fake),
        retry=RetryPolicy(options, stats),
    )


# ---------------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TransferError("reset"), True),
        (RateLimited("429"), True),
        (RegistryServerError("503", status=503), True),
        (RegistryError("400", status=400), False),
        (NotFound("404", status=404), False),
        (Denied("403", status=403), False),
        (AuthenticationError("401"), False),
        (RegistryUnavailable("down"), False),
    ],
)
def test_what_is_transient(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_backoff_is_full_jitter_under_the_ceiling_and_honours_retry_after() -> None:
    options = CopyOptions(retry_backoff=0.5, retry_backoff_max=4.0, retry_after_max=60.0)
    delays = [options.backoff_delay(attempt) for attempt in range(1, 8) for _ in range(200)]
    assert min(delays) >= 0.0 and max(delays) <= 4.0
    assert min(delays) < 0.1  # full jitter reaches down to zero
    assert all(options.backoff_delay(1, retry_after=7.0) >= 7.0 for _ in range(50))
    assert options.backoff_delay(1, retry_after=3600.0) == 60.0  # capped


# ---------------------------------------------------------------------------------------------- the policy


async def test_policy_retries_transient_until_success_and_counts() -> None:
    stats = RetryStats()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RateLimited("slow down", retry_after=0.0)
        if calls == 2:
            raise TransferError("reset")
        return "ok"

    assert await RetryPolicy(NO_WAIT, stats).run(flaky, what="x", host="h") == "ok"
    assert calls == 3 and stats.retries == 2 and stats.rate_limited == 1


async def test_policy_gives_up_after_attempts_and_never_retries_permanent_errors() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise RegistryServerError("503", status=503)

    with pytest.raises(RegistryServerError):
        await RetryPolicy(NO_WAIT).run(down, what="x", host="h")
    assert calls == NO_WAIT.retries

    calls = 0

    async def denied() -> None:
        nonlocal calls
        calls += 1
        raise Denied("protected tag", status=403)

    with pytest.raises(Denied):
        await RetryPolicy(NO_WAIT).run(denied, what="x", host="h")
    assert calls == 1


async def test_policy_stops_at_the_operation_deadline() -> None:
    options = CopyOptions(retries=50, retry_backoff=0.05, retry_backoff_max=0.05, operation_deadline=0.3)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TransferError("reset")

    started = time.monotonic()
    with pytest.raises(TransferError):
        await RetryPolicy(options).run(down, what="x", host="h")
    assert time.monotonic() - started < 2.0
    assert 1 < calls < 50


# ---------------------------------------------------------------------------------------------- through the client


async def test_retry_after_as_http_date_is_waited_for() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    answers = iter(["429", "ok"])

    def route(request: httpx.Request) -> httpx.Response:
        if next(answers) == "429":
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
            return httpx.Response(429, headers={"Retry-After": when}, json={"errors": [{"code": "TOOMANYREQUESTS"}]})
        return serve_manifest(raw)(request)

    fake.routes["GET", "/v2/team/app/manifests/v1"] = route
    stats = RetryStats()
    client = client_for(fake, stats=stats)
    try:
        await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    # an HTTP date has one-second resolution: at least about a second was waited
    assert stats.rate_limited == 1 and stats.retry_wait_seconds >= 0.9


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, RegistryError), (403, Denied), (404, NotFound)],
)
async def test_permanent_statuses_are_sent_once(status: int, error: type[Exception]) -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = lambda r: httpx.Response(
        status, json={"errors": [{"code": "DENIED", "message": "no"}]}
    )
    client = client_for(fake)
    try:
        with pytest.raises(error):
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert len(fake.calls("GET", "/v2/team/app/manifests/v1")) == 1


async def test_insufficient_scope_is_denied_at_once_even_for_a_streamed_upload() -> None:
    fake = FakeRegistry()
    fake.routes["PUT", "/v2/team/app/blobs/uploads/u1"] = lambda r: fake.unauthorized("insufficient_scope")
    streamed = 0

    async def body() -> object:
        nonlocal streamed
        for _ in range(4):
            streamed += 1
            yield b"x" * 1024

    client = client_for(fake)
    try:
        with pytest.raises(Denied, match="insufficient_scope"):
            await client.put_blob(
                "team/app", f"https://{HOST}/v2/team/app/blobs/uploads/u1", "sha256:" + "0" * 64, 4096, body()
            )  # type: ignore[arg-type]
    finally:
        await client.aclose()
    assert len(fake.calls("PUT", "/v2/team/app/blobs/uploads/u1")) == 1
    assert len(fake.token_requests) == 1  # no re-authentication either


async def test_token_service_hiccups_are_retried() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
    hiccups = iter([503, 429, "garbled", "ok"])

    def realm(request: httpx.Request) -> httpx.Response:
        kind = next(hiccups)
        if kind == "garbled":
            return httpx.Response(200, content=b'{"tok')
        if kind == "ok":
            return fake.issue_token(request)
        return httpx.Response(int(kind))

    fake.token_route = realm
    stats = RetryStats()
    client = client_for(fake, stats=stats)
    try:
        await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert len(fake.token_requests) == 4 and stats.retries == 3


async def test_rejected_credentials_are_not_retried() -> None:
    fake = FakeRegistry()
    fake.token_route = lambda r: httpx.Response(401, json={"details": "access forbidden"})
    client = client_for(fake)
    try:
        with pytest.raises(AuthenticationError):
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert len(fake.token_requests) == 1


# ---------------------------------------------------------------------------------------------- limits


def test_aimd_window_halves_on_429_and_grows_back_slowly() -> None:
    limit = HostLimit("h", ceiling=16, adaptive=True, rate=None)
    assert limit.window == 16
    limit.throttled()
    assert limit.window == 8
    limit.throttled()  # the same burst (within a second): counted once
    assert limit.window == 8 and limit.decreases == 1
    for _ in range(8):
        limit.succeeded()
    assert limit.window == 9  # one slot per window's worth of successes
    for _ in range(200):
        limit.succeeded()
    assert limit.window == 16  # never above the ceiling


def test_fixed_caps_and_non_adaptive_windows() -> None:
    options = CopyOptions(max_connections={"slow.example": 2, "*": 6}, adaptive_concurrency=False)
    limits = HostLimits(options)
    assert limits("slow.example").window == 2
    assert limits("slow.example:443").window == 2  # the bare host name matches too
    assert limits("other.example").window == 6
    limits("other.example").throttled()
    assert limits("other.example").window == 6


async def test_requests_per_second_spaces_starts() -> None:
    limit = HostLimit("h", ceiling=8, adaptive=True, rate=20.0)
    started = time.monotonic()

    async def one() -> None:
        async with limit.slot():
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert time.monotonic() - started >= 0.4  # 10 starts at 20/s: at least 9 gaps of 50 ms


async def test_window_limits_requests_in_flight() -> None:
    limit = HostLimit("h", ceiling=4, adaptive=True, rate=None)
    limit.throttled()
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        async with limit.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await anyio.sleep(0.01)
            in_flight -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(one)
    assert peak == 2


async def test_refusals_after_credentials_worked_fail_images_until_three_in_a_row() -> None:
    """Once credentials worked, a 401 after re-authentication fails one image (``Denied``); the third in
    a row with no success between means they died (an expired fixed password): ``AuthenticationError``."""
    fake = FakeRegistry(auth="basic")
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
    fake.routes["GET", "/v2/team/app/manifests/locked"] = lambda r: fake.unauthorized()
    client = client_for(fake)
    try:
        await client.get_manifest("team/app", "v1")
        for _ in range(2):
            with pytest.raises(Denied, match="refused after re-authentication"):
                await client.get_manifest("team/app", "locked")
        await client.get_manifest("team/app", "v1")  # a success in between resets the count
        for _ in range(2):
            with pytest.raises(Denied):
                await client.get_manifest("team/app", "locked")
        with pytest.raises(AuthenticationError) as info:
            await client.get_manifest("team/app", "locked")
        assert info.value.fatal
    finally:
        await client.aclose()
