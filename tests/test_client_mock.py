"""RegistryClient against ``httpx.MockTransport``: edge cases a real registry does not easily produce.

A small in-process fake plays registry, token realm and object store; every request is logged so
the tests can count attempts and inspect headers.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import httpx
import pytest

from ecrcopy import _mediatypes as mt
from ecrcopy._client import RegistryClient
from ecrcopy._credentials import Credentials, StaticCredentials
from ecrcopy._exceptions import (
    AuthenticationError,
    Denied,
    DigestMismatch,
    EcrcopyError,
    NotFound,
    RateLimited,
    RegistryError,
    RegistryServerError,
    TransferError,
)
from ecrcopy._models import Manifest
from ecrcopy._options import CopyOptions

pytestmark = pytest.mark.anyio

HOST = "registry.example.com"
AUTH_HOST = "auth.example.com"
S3_HOST = "bucket.s3.example.com"
REALM = f"https://{AUTH_HOST}/token"
USER, PASSWORD = "robot", "mock-Secret-9d4e17"
CREDS = Credentials.of(USER, PASSWORD)
BASIC = CREDS.basic_header()
FAST = CopyOptions(retries=3, retry_backoff=0, retry_backoff_max=0)

Route = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(exp: float) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "K1"}).encode())
    claims = b64url(json.dumps({"iss": "gitlab", "aud": "container_registry", "exp": int(exp)}).encode())
    return f"{header}.{claims}.{b64url(b'not-a-real-signature')}"


def oci_manifest_bytes(seed: int = 0) -> bytes:
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = bytes([seed]) * 100
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": 37},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": 100}],
    }
    # odd spacing: a client that re-serialises would change the digest
    return json.dumps(body, indent=3, separators=(" ,", ":  ")).encode()


class FakeRegistry:
    """Registry + token realm + object store behind one MockTransport.

    ``auth`` is ``"bearer"``, ``"basic"`` or ``None``. ``routes`` maps ``(method, path)`` to a
    handler for authorised registry requests; everything else is 404. ``token_route`` replaces the
    realm's behaviour; ``other_hosts`` handles requests to any other host.
    """

    def __init__(self, auth: str | None = "bearer") -> None:
        self.auth = auth
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Route] = {}
        self.valid_tokens: set[str] = set()
        self.token_route: Route | None = None
        self.other_hosts: Route | None = None
        self._serial = itertools.count(1)

    # ----------------------------------------------------------------- views of the log
    def calls(self, method: str, path: str | None = None, host: str = HOST) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if r.method == method and r.url.host == host and (path is None or r.url.path == path)
        ]

    @property
    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == AUTH_HOST]

    # ----------------------------------------------------------------- behaviour
    def challenge(self, error: str | None = None, scope: str | None = None) -> str:
        if self.auth == "basic":
            return f'Basic realm="https://{HOST}/",service="ecr.amazonaws.com"'
        header = f'Bearer realm="{REALM}",service="{HOST}"'
        if scope:
            header += f',scope="{scope}"'
        if error:
            header += f',error="{error}"'
        return header

    def unauthorized(self, error: str | None = None) -> httpx.Response:
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return httpx.Response(401, json=body, headers={"WWW-Authenticate": self.challenge(error)})

    def issue_token(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != BASIC:
            return httpx.Response(401, json={"details": "access forbidden"})
        token = f"tok-{next(self._serial)}"
        self.valid_tokens.add(token)
        return httpx.Response(200, json={"token": token, "expires_in": 300})

    def authorised(self, request: httpx.Request) -> bool:
        header = request.headers.get("authorization")
        if self.auth is None:
            return True
        if self.auth == "basic":
            return header == BASIC
        return header is not None and header.startswith("Bearer ") and header[7:] in self.valid_tokens

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == AUTH_HOST:
            route = self.token_route or self.issue_token
        elif request.url.host != HOST:
            if self.other_hosts is None:
                return streamed(httpx.Response(502))
            route = self.other_hosts
        elif request.url.path == "/v2/":
            return streamed(httpx.Response(200) if self.auth is None else self.unauthorized())
        elif not self.authorised(request):
            return streamed(self.unauthorized())
        else:
            found = self.routes.get((request.method, request.url.path))
            if found is None:
                return streamed(httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "unknown"}]}))
            route = found
        response = route(request)
        if not isinstance(response, httpx.Response):
            response = await response
        return streamed(response)


def streamed(response: httpx.Response) -> httpx.Response:
    """The response with its body as a stream, as a network transport delivers it.

    ``httpx.Response(content=b"...")`` is read on construction; the client reads error bodies and
    blobs with ``aiter_raw()``, which a real connection allows and a pre-read response does not.
    """
    if not response.is_stream_consumed:
        return response
    body = response.content

    async def stream() -> AsyncIterator[bytes]:
        if body:
            yield body

    return httpx.Response(response.status_code, headers=response.headers, content=stream())


def make_client(fake: FakeRegistry, options: CopyOptions = FAST, creds: Credentials = CREDS) -> RegistryClient:
    return RegistryClient(HOST, StaticCredentials(creds), options, transport=httpx.MockTransport(fake))


def serve_manifest(raw: bytes, media_type: str = mt.OCI_MANIFEST) -> Route:
    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=raw, headers={"Content-Type": media_type, "Docker-Content-Digest": sha256(raw)}
        )

    return route


def sequence(*responses: httpx.Response | Route) -> Route:
    """Answer with each response in turn, the last one for ever after."""
    items = list(responses)

    def route(request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        item = items.pop(0) if len(items) > 1 else items[0]
        return item(request) if callable(item) else item

    return route


def assert_no_secret(exc: BaseException) -> None:
    text = f"{exc} {exc!r}"
    assert PASSWORD not in text
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


# ---------------------------------------------------------------------------------------------- retries


async def test_429_with_retry_after_zero_is_retried() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = sequence(
        httpx.Response(429, headers={"Retry-After": "0"}, json={"errors": [{"code": "TOOMANYREQUESTS"}]}),
        serve_manifest(raw),
    )
    client = make_client(fake)
    try:
        manifest = await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert manifest.raw == raw and manifest.media_type == mt.OCI_MANIFEST
    assert len(fake.calls("GET", "/v2/team/app/manifests/v1")) == 2
    assert len(fake.token_requests) == 1


async def test_429_beyond_retries_is_rate_limited_with_retry_after() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = lambda r: httpx.Response(429, headers={"Retry-After": "0"})
    client = make_client(fake)
    try:
        with pytest.raises(RateLimited) as info:
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert info.value.retry_after == 0.0 and info.value.status == 429
    assert len(fake.calls("GET", "/v2/team/app/manifests/v1")) == FAST.retries


async def test_503_beyond_retries_is_server_error() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = lambda r: httpx.Response(503, text="Service Unavailable")
    client = make_client(fake, CopyOptions(retries=4, retry_backoff=0, retry_backoff_max=0))
    try:
        with pytest.raises(RegistryServerError) as info:
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert info.value.status == 503
    assert "Service Unavailable" in str(info.value)
    assert len(fake.calls("GET", "/v2/team/app/manifests/v1")) == 4
    assert len(fake.token_requests) == 1  # the token was reused across attempts


async def test_404_is_not_retried() -> None:
    fake = FakeRegistry()
    client = make_client(fake)
    try:
        with pytest.raises(NotFound) as info:
            await client.get_manifest("team/app", "missing")
        assert await client.head_manifest("team/app", "missing") is None
    finally:
        await client.aclose()
    assert info.value.code == "NAME_UNKNOWN"
    assert len(fake.calls("GET", "/v2/team/app/manifests/missing")) == 1


async def test_broken_connection_is_retried() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset by peer", request=request)

    fake.routes["GET", "/v2/team/app/manifests/v1"] = sequence(broken, serve_manifest(raw))
    client = make_client(fake)
    try:
        assert (await client.get_manifest("team/app", "v1")).raw == raw
    finally:
        await client.aclose()
    assert len(fake.calls("GET", "/v2/team/app/manifests/v1")) == 2


async def test_ping_answered_429_is_retried() -> None:
    fake = FakeRegistry(auth=None)
    raw = oci_manifest_bytes()
    pings = sequence(httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200))
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
    base = fake.__call__

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            fake.requests.append(request)
            response = pings(request)
            assert isinstance(response, httpx.Response)
            return response
        return await base(request)

    client = RegistryClient(HOST, StaticCredentials(CREDS), FAST, transport=httpx.MockTransport(handler))
    try:
        assert (await client.get_manifest("team/app", "v1")).raw == raw
    finally:
        await client.aclose()


async def test_token_realm_503_is_retried() -> None:
    """A flaky token service (503, then a token) does not fail the request."""
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
    fake.token_route = sequence(httpx.Response(503), fake.issue_token)
    client = make_client(fake)
    try:
        assert (await client.get_manifest("team/app", "v1")).raw == raw
    finally:
        await client.aclose()
    assert len(fake.token_requests) == 2


async def test_error_status_from_a_pre_read_response_maps_to_ecrcopy_errors() -> None:
    """MockTransport handlers usually build responses whose body is already read."""

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})

    client = RegistryClient(HOST, StaticCredentials(CREDS), FAST, transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()


async def test_blob_from_a_pre_read_response_is_verified() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BLOB if request.url.path != "/v2/" else b"")

    client = RegistryClient(HOST, StaticCredentials(CREDS), FAST, transport=httpx.MockTransport(handler))
    try:
        async with client.open_blob("team/app", BLOB_DIGEST, len(BLOB)) as stream:
            assert await read_all(stream) == BLOB
        with pytest.raises(DigestMismatch):
            async with client.open_blob("team/app", sha256(b"other"), len(BLOB)) as stream:
                await read_all(stream)
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------- authentication


async def test_realm_401_fails_fast_after_one_token_request() -> None:
    fake = FakeRegistry()
    fake.token_route = lambda r: httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED", "message": PASSWORD}]})
    client = make_client(fake)
    try:
        with pytest.raises(AuthenticationError) as info:
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert len(fake.token_requests) == 1
    assert fake.calls("GET", "/v2/team/app/manifests/v1") == []
    assert info.value.fatal
    assert USER in str(info.value)  # says whose credentials were rejected ...
    assert_no_secret(info.value)  # ... but never the secret


async def test_token_request_carries_credentials_service_and_merged_scopes() -> None:
    fake = FakeRegistry()
    fake.routes["POST", "/v2/dst/blobs/uploads/"] = lambda r: httpx.Response(201)
    client = make_client(fake)
    try:
        assert await client.mount_blob("dst", sha256(b"x"), "src/app") is None
    finally:
        await client.aclose()
    [token_request] = fake.token_requests
    assert token_request.headers["authorization"] == BASIC
    params = token_request.url.params
    assert params["service"] == HOST and params["account"] == USER
    assert sorted(params.get_list("scope")) == ["repository:dst:pull,push", "repository:src/app:pull"]
    [post] = fake.calls("POST", "/v2/dst/blobs/uploads/")
    assert post.url.params["mount"] == sha256(b"x") and post.url.params["from"] == "src/app"


async def test_jwt_exp_without_expires_in_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """GitLab replies ``{"token": jwt}`` only: reuse the token until shortly before ``exp``, then renew."""
    clock = [1_700_000_000.0]
    monkeypatch.setattr("ecrcopy._auth.time", types.SimpleNamespace(time=lambda: clock[0], monotonic=lambda: clock[0]))
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)

    def gitlab_realm(request: httpx.Request) -> httpx.Response:
        token = make_jwt(clock[0] + 300)
        fake.valid_tokens.add(token)
        return httpx.Response(200, json={"token": token})

    fake.token_route = gitlab_realm
    client = make_client(fake)  # token_refresh_margin: 30 s
    try:
        await client.get_manifest("team/app", "v1")
        assert len(fake.token_requests) == 1
        clock[0] += 200
        await client.get_manifest("team/app", "v1")
        assert len(fake.token_requests) == 1  # still 100 s to go: reused
        clock[0] += 75
        await client.get_manifest("team/app", "v1")
        assert len(fake.token_requests) == 2  # 25 s before exp, inside the margin: renewed
        clock[0] += 100
        await client.get_manifest("team/app", "v1")
        assert len(fake.token_requests) == 2
    finally:
        await client.aclose()
    tokens = [r.headers["authorization"] for r in fake.calls("GET", "/v2/team/app/manifests/v1")]
    assert len(set(tokens)) == 2 and tokens[0] == tokens[1] and tokens[2] == tokens[3]


async def test_short_lived_jwt_in_real_time() -> None:
    """A token valid for 1-2 s: the margin shrinks to 20 % of the lifetime, so it is still reused."""
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)

    def realm(request: httpx.Request) -> httpx.Response:
        token = make_jwt(time.time() + 2)
        fake.valid_tokens.add(token)
        return httpx.Response(200, json={"token": token})

    fake.token_route = realm
    client = make_client(fake)
    try:
        await client.get_manifest("team/app", "v1")
        await client.get_manifest("team/app", "v1")
        assert len(fake.token_requests) == 1
        await anyio.sleep(2.1)
        await client.get_manifest("team/app", "v1")
        assert len(fake.token_requests) == 2
    finally:
        await client.aclose()


async def test_invalid_token_reauthenticates_once_and_retries() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
    client = make_client(fake)
    try:
        await client.get_manifest("team/app", "v1")
        fake.valid_tokens.clear()  # the registry expires every token early
        original = fake.unauthorized
        fake.unauthorized = lambda error=None: original("invalid_token")  # type: ignore[method-assign]
        assert (await client.get_manifest("team/app", "v1")).raw == raw
    finally:
        await client.aclose()
    gets = fake.calls("GET", "/v2/team/app/manifests/v1")
    assert len(gets) == 3 and len(fake.token_requests) == 2
    assert gets[1].headers["authorization"] != gets[2].headers["authorization"]


async def test_token_rejected_twice_stops_without_a_loop() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = lambda r: fake.unauthorized("invalid_token")
    client = make_client(fake)
    try:
        with pytest.raises(AuthenticationError) as info:
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert len(fake.calls("GET", "/v2/team/app/manifests/v1")) == 2
    assert len(fake.token_requests) == 2
    assert_no_secret(info.value)


async def test_insufficient_scope_is_denied_without_retry() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()

    def protected(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401,
            json={"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]},
            headers={"WWW-Authenticate": fake.challenge("insufficient_scope", "repository:g/p/a/b/c:pull,push")},
        )

    fake.routes["PUT", "/v2/g/p/a/b/c/manifests/v1"] = protected
    client = make_client(fake)
    try:
        with pytest.raises(Denied) as info:
            await client.put_manifest("g/p/a/b/c", "v1", Manifest.from_bytes(raw))
    finally:
        await client.aclose()
    assert "insufficient_scope" in str(info.value) and not info.value.fatal
    assert len(fake.calls("PUT")) == 1 and len(fake.token_requests) == 1


async def test_403_is_denied_not_retried() -> None:
    fake = FakeRegistry()
    fake.routes["PUT", "/v2/g/p/manifests/v1"] = lambda r: httpx.Response(
        403, json={"errors": [{"code": "DENIED", "message": "tag is protected"}]}
    )
    client = make_client(fake)
    try:
        with pytest.raises(Denied, match="tag is protected") as info:
            await client.put_manifest("g/p", "v1", Manifest.from_bytes(oci_manifest_bytes()))
    finally:
        await client.aclose()
    assert info.value.status == 403 and info.value.code == "DENIED"
    assert len(fake.calls("PUT")) == 1


async def test_basic_auth_sent_on_every_request_and_rejection_is_clean() -> None:
    fake = FakeRegistry(auth="basic")
    raw = oci_manifest_bytes()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
    client = make_client(fake)
    try:
        await client.get_manifest("team/app", "v1")
        await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert [r.headers.get("authorization") for r in fake.calls("GET", "/v2/team/app/manifests/v1")] == [BASIC] * 2
    assert fake.token_requests == []

    wrong = Credentials.of(USER, "wrong-" + PASSWORD)
    client = make_client(FakeRegistry(auth="basic"), creds=wrong)
    try:
        with pytest.raises(AuthenticationError) as info:
            await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    assert_no_secret(info.value)
    assert "wrong-" not in str(info.value)


async def test_realm_query_is_kept() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(oci_manifest_bytes())
    original = fake.challenge
    fake.challenge = lambda error=None, scope=None: original(error, scope).replace(  # type: ignore[method-assign]
        REALM, REALM + "?tenant=acme"
    )
    client = make_client(fake)
    try:
        await client.get_manifest("team/app", "v1")
    finally:
        await client.aclose()
    [token_request] = fake.token_requests
    assert token_request.url.params.get("tenant") == "acme"
    assert token_request.url.params.get("service") == HOST


# ---------------------------------------------------------------------------------------------- tag listing


def tag_page(tags: list[str], link: str | None) -> Route:
    def route(request: httpx.Request) -> httpx.Response:
        headers = {"Link": f'<{link}>; rel="next"'} if link else {}
        return httpx.Response(200, json={"name": "team/app", "tags": tags}, headers=headers)

    return route


def paged(pages: dict[str | None, Route]) -> Route:
    """Route by the ``last`` query parameter."""

    def route(request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        return pages[request.url.params.get("last")](request)

    return route


async def test_tag_list_follows_relative_links_over_three_pages() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/tags/list"] = paged(
        {
            None: tag_page(["a", "b"], "/v2/team/app/tags/list?n=2&last=b"),
            "b": tag_page(["c", "d"], "/v2/team/app/tags/list?n=2&last=d"),
            "d": tag_page(["e"], None),
        }
    )
    client = make_client(fake)
    try:
        assert await client.list_tags("team/app", page_size=2) == ["a", "b", "c", "d", "e"]
    finally:
        await client.aclose()
    pages = fake.calls("GET", "/v2/team/app/tags/list")
    assert [r.url.params.get("last") for r in pages] == [None, "b", "d"]
    assert all(r.url.params["n"] == "2" for r in pages)


async def test_tag_list_link_loop_terminates() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/tags/list"] = paged(
        {
            None: tag_page(["a", "b"], "/v2/team/app/tags/list?n=2&last=b"),
            "b": tag_page(["b", "c"], "/v2/team/app/tags/list?n=2&last=b"),  # points at itself
        }
    )
    client = make_client(fake)
    try:
        assert await client.list_tags("team/app", page_size=2) == ["a", "b", "c"]
    finally:
        await client.aclose()
    assert len(fake.calls("GET", "/v2/team/app/tags/list")) == 2


async def test_tag_list_link_back_to_first_page_terminates() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/tags/list"] = paged(
        {
            None: tag_page(["a"], "/v2/team/app/tags/list?n=1&last=a"),
            "a": tag_page(["b"], "/v2/team/app/tags/list?n=1"),
        }
    )
    client = make_client(fake)
    try:
        assert await client.list_tags("team/app", page_size=1) == ["a", "b"]
    finally:
        await client.aclose()
    # the first URL is not remembered, so it is fetched once more before the loop is seen
    assert len(fake.calls("GET", "/v2/team/app/tags/list")) <= 3


@pytest.mark.parametrize("link", ["https:registry.example.com/", "other", "/v2/team/app/tags/list/more?last=a"])
async def test_tag_list_link_away_from_the_listing_is_refused(link: str) -> None:
    """``<https:host/>`` resolves relative to the page and grows the path each time: no endless listing."""
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/tags/list"] = tag_page(["a"], link)
    client = make_client(fake)
    try:
        with pytest.raises(RegistryError, match="away from the listing's path"):
            await client.list_tags("team/app")
    finally:
        await client.aclose()
    assert len(fake.requests) <= 3  # ping, (token,) the one page


async def test_tag_list_empty_and_null() -> None:
    fake = FakeRegistry()
    fake.routes["GET", "/v2/team/app/tags/list"] = lambda r: httpx.Response(200, json={"name": "x", "tags": None})
    client = make_client(fake)
    try:
        assert await client.list_tags("team/app") == []
    finally:
        await client.aclose()


async def test_tag_list_link_to_other_origin_gets_no_credentials() -> None:
    fake = FakeRegistry(auth="basic")
    fake.routes["GET", "/v2/team/app/tags/list"] = tag_page(["a"], "https://evil.example.net/v2/team/app/tags/list")
    fake.other_hosts = tag_page(["b"], None)
    client = make_client(fake)
    try:
        await client.list_tags("team/app")
    except EcrcopyError:
        pass  # refusing to follow is fine too
    finally:
        await client.aclose()
    leaked = [r for r in fake.requests if r.url.host != HOST and "authorization" in r.headers]
    assert leaked == []


# ---------------------------------------------------------------------------------------------- manifests


async def test_manifest_by_digest_that_hashes_differently() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes(1)
    wanted = sha256(oci_manifest_bytes(2))
    fake.routes["GET", f"/v2/team/app/manifests/{wanted}"] = serve_manifest(raw)
    client = make_client(fake)
    try:
        with pytest.raises(DigestMismatch, match=wanted):
            await client.get_manifest("team/app", wanted)
        # by tag there is nothing to verify against: accepted, digest computed from the bytes
        fake.routes["GET", "/v2/team/app/manifests/v1"] = serve_manifest(raw)
        assert (await client.get_manifest("team/app", "v1")).digest == sha256(raw)
    finally:
        await client.aclose()


async def test_manifest_get_accept_lists_every_type_and_bytes_are_exact() -> None:
    fake = FakeRegistry()
    raw = oci_manifest_bytes()
    digest = sha256(raw)
    fake.routes["GET", f"/v2/team/app/manifests/{digest}"] = serve_manifest(raw)
    client = make_client(fake)
    try:
        manifest = await client.get_manifest("team/app", digest)
    finally:
        await client.aclose()
    assert manifest.raw == raw and manifest.digest == digest
    [request] = fake.calls("GET", f"/v2/team/app/manifests/{digest}")
    accepted = {part.strip() for part in request.headers["accept"].split(",")}
    assert {mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST_V2} <= accepted


async def test_manifest_put_sends_media_type_and_exact_bytes() -> None:
    fake = FakeRegistry()
    raw = json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": []}, indent=7).encode()
    manifest = Manifest.from_bytes(raw)
    fake.routes["PUT", "/v2/team/app/manifests/v1"] = lambda r: httpx.Response(
        201, headers={"Docker-Content-Digest": sha256(r.content)}
    )
    client = make_client(fake)
    try:
        await client.put_manifest("team/app", "v1", manifest)
    finally:
        await client.aclose()
    [put] = fake.calls("PUT", "/v2/team/app/manifests/v1")
    assert put.headers["content-type"] == mt.DOCKER_MANIFEST_LIST
    assert put.content == raw


async def test_manifest_put_echoing_another_digest_is_a_mismatch() -> None:
    fake = FakeRegistry()
    fake.routes["PUT", "/v2/team/app/manifests/v1"] = lambda r: httpx.Response(
        201, headers={"Docker-Content-Digest": sha256(b"converted")}
    )
    client = make_client(fake)
    try:
        with pytest.raises(DigestMismatch):
            await client.put_manifest("team/app", "v1", Manifest.from_bytes(oci_manifest_bytes()))
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------- blobs

BLOB = bytes(range(256)) * 40
BLOB_DIGEST = sha256(BLOB)
BLOB_PATH = f"/v2/team/app/blobs/{BLOB_DIGEST}"


async def test_blob_redirect_to_other_host_drops_authorization() -> None:
    """ECR answers 307 to S3, and S3 rejects a request that carries ``Authorization``."""
    fake = FakeRegistry(auth="basic")
    presigned = f"https://{S3_HOST}/layers/obj?X-Amz-Signature=s3cr3t&X-Amz-Credential=abc"
    fake.routes["GET", BLOB_PATH] = lambda r: httpx.Response(307, headers={"Location": presigned})

    def s3(request: httpx.Request) -> httpx.Response:
        if "authorization" in request.headers:
            return httpx.Response(400, text="InvalidArgument: Only one auth mechanism allowed")
        return httpx.Response(200, content=BLOB)

    fake.other_hosts = s3
    client = make_client(fake)
    try:
        async with client.open_blob("team/app", BLOB_DIGEST, len(BLOB)) as stream:
            assert await read_all(stream) == BLOB
    finally:
        await client.aclose()
    [first] = fake.calls("GET", BLOB_PATH)
    [second] = fake.calls("GET", host=S3_HOST)
    assert first.headers["authorization"] == BASIC
    assert "authorization" not in second.headers
    assert second.url.params["X-Amz-Signature"] == "s3cr3t"  # presigned query kept intact


async def test_blob_redirect_to_other_host_error_hides_presigned_query() -> None:
    fake = FakeRegistry()
    fake.routes["GET", BLOB_PATH] = lambda r: httpx.Response(
        307, headers={"Location": f"https://{S3_HOST}/obj?X-Amz-Signature=s3cr3t"}
    )
    fake.other_hosts = lambda r: httpx.Response(403, text="<Error><Code>AccessDenied</Code></Error>")
    client = make_client(fake)
    try:
        # object storage's 403 (an expired presigned URL): a transient error of this blob, never "credentials rejected"
        with pytest.raises(TransferError) as info:
            async with client.open_blob("team/app", BLOB_DIGEST, len(BLOB)) as stream:
                await read_all(stream)
    finally:
        await client.aclose()
    assert "s3cr3t" not in str(info.value) and S3_HOST in str(info.value)
    assert not info.value.fatal


async def test_blob_redirect_to_same_origin_keeps_authorization() -> None:
    fake = FakeRegistry()
    fake.routes["GET", BLOB_PATH] = lambda r: httpx.Response(307, headers={"Location": "/storage/blob-1?sig=x"})
    fake.routes["GET", "/storage/blob-1"] = lambda r: httpx.Response(200, content=BLOB)
    client = make_client(fake)
    try:
        async with client.open_blob("team/app", BLOB_DIGEST, len(BLOB)) as stream:
            assert await read_all(stream) == BLOB
    finally:
        await client.aclose()
    [first] = fake.calls("GET", BLOB_PATH)
    [second] = fake.calls("GET", "/storage/blob-1")
    assert first.headers["authorization"].startswith("Bearer ")
    assert second.headers["authorization"] == first.headers["authorization"]
    assert second.url.params["sig"] == "x"


async def test_blob_redirect_loop_is_bounded() -> None:
    fake = FakeRegistry()
    fake.routes["GET", BLOB_PATH] = lambda r: httpx.Response(307, headers={"Location": BLOB_PATH})
    client = make_client(fake)
    try:
        with pytest.raises(EcrcopyError, match="too many redirects"):
            async with client.open_blob("team/app", BLOB_DIGEST, len(BLOB)) as stream:
                await read_all(stream)
    finally:
        await client.aclose()
    assert len(fake.calls("GET", BLOB_PATH)) <= 6


def chunked(data: bytes, size: int = 1000) -> Route:
    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return lambda r: httpx.Response(200, content=body())


@pytest.mark.parametrize(
    ("served", "size"),
    [
        (BLOB[:-1], len(BLOB)),  # shorter than the descriptor
        (BLOB + b"!", len(BLOB)),  # longer than the descriptor
        (BLOB, len(BLOB) + 1),  # right bytes, descriptor says one more
        (BLOB, len(BLOB) - 1),  # right bytes, descriptor says one less
        (BLOB[:-1] + b"\x00", len(BLOB)),  # right length, wrong content
        (b"", len(BLOB)),
    ],
)
async def test_blob_length_or_content_mismatch(served: bytes, size: int) -> None:
    fake = FakeRegistry()
    fake.routes["GET", BLOB_PATH] = chunked(served)
    client = make_client(fake)
    received = bytearray()
    # fewer bytes than announced is a cut transfer (retried); anything else is wrong content
    expected = TransferError if len(served) < size else DigestMismatch
    try:
        with pytest.raises(expected):
            async with client.open_blob("team/app", BLOB_DIGEST, size) as stream:
                async for piece in stream:
                    received += piece
    finally:
        await client.aclose()
    assert bytes(received) != served or not served  # the last piece is held back until verified


async def test_blob_stream_in_pieces_verifies() -> None:
    fake = FakeRegistry()
    fake.routes["GET", BLOB_PATH] = chunked(BLOB, 333)
    client = make_client(fake)
    try:
        async with client.open_blob("team/app", BLOB_DIGEST, len(BLOB)) as stream:
            assert await read_all(stream) == BLOB
        async with client.open_blob("team/app", BLOB_DIGEST, None) as stream:  # size unknown: digest only
            assert await read_all(stream) == BLOB
    finally:
        await client.aclose()


async def test_blob_exists_head() -> None:
    fake = FakeRegistry()
    fake.routes["HEAD", BLOB_PATH] = lambda r: httpx.Response(307, headers={"Location": f"https://{S3_HOST}/x"})
    client = make_client(fake)
    try:
        assert await client.blob_exists("team/app", BLOB_DIGEST) is True
        assert await client.blob_exists("team/app", sha256(b"other")) is False
    finally:
        await client.aclose()
    assert fake.calls("HEAD", host=S3_HOST) == []


# ---------------------------------------------------------------------------------------------- uploads


async def source(data: bytes, piece: int = 700) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def test_upload_with_relative_location_keeps_state() -> None:
    fake = FakeRegistry()
    fake.routes["POST", "/v2/team/app/blobs/uploads/"] = lambda r: httpx.Response(
        202, headers={"Location": "/v2/team/app/blobs/uploads/abc?_state=xyz", "Docker-Upload-UUID": "abc"}
    )
    fake.routes["PUT", "/v2/team/app/blobs/uploads/abc"] = lambda r: httpx.Response(
        201, headers={"Docker-Content-Digest": sha256(r.content)}
    )
    client = make_client(fake)
    progress: list[int] = []
    try:
        await client.upload_blob("team/app", BLOB_DIGEST, len(BLOB), source(BLOB), on_progress=progress.append)
    finally:
        await client.aclose()
    [put] = fake.calls("PUT", "/v2/team/app/blobs/uploads/abc")
    assert put.url.host == HOST and put.url.scheme == "https"
    assert put.url.params["_state"] == "xyz" and put.url.params["digest"] == BLOB_DIGEST
    assert put.content == BLOB
    assert put.headers["content-type"] == "application/octet-stream"
    assert put.headers["content-length"] == str(len(BLOB))
    assert sum(progress) == len(BLOB)


async def test_chunked_upload_follows_each_location() -> None:
    fake = FakeRegistry()
    session = {"n": 0, "data": bytearray()}
    fake.routes["POST", "/v2/team/app/blobs/uploads/"] = lambda r: httpx.Response(
        202, headers={"Location": "/v2/team/app/blobs/uploads/u?_state=0"}
    )

    def patch(request: httpx.Request) -> httpx.Response:
        assert request.url.params["_state"] == str(session["n"])
        start, end = map(int, request.headers["content-range"].split("-"))
        assert start == len(session["data"]) and end - start + 1 == len(request.content)
        session["data"] += request.content  # type: ignore[operator]
        session["n"] += 1  # type: ignore[operator]
        return httpx.Response(
            202,
            headers={"Location": f"/v2/team/app/blobs/uploads/u?_state={session['n']}", "Range": f"0-{end}"},
        )

    fake.routes["PATCH", "/v2/team/app/blobs/uploads/u"] = patch
    fake.routes["PUT", "/v2/team/app/blobs/uploads/u"] = lambda r: httpx.Response(
        201,
        headers={"Docker-Content-Digest": sha256(bytes(session["data"]))},  # type: ignore[arg-type]
    )
    data = bytes(range(256)) * 1000  # 256000 bytes: 4 chunks of 64 KiB
    options = CopyOptions(retries=2, retry_backoff=0, chunk_size=64 * 1024, monolithic_threshold=0)
    client = make_client(fake, options)
    try:
        await client.upload_blob("team/app", sha256(data), len(data), source(data, 10_000))
    finally:
        await client.aclose()
    assert bytes(session["data"]) == data  # type: ignore[arg-type]
    assert len(fake.calls("PATCH")) == 4
    [put] = fake.calls("PUT")
    assert put.url.params["_state"] == "4" and put.url.params["digest"] == sha256(data)
    assert put.content == b""


async def test_upload_source_longer_than_size_is_a_mismatch() -> None:
    fake = FakeRegistry()
    fake.routes["POST", "/v2/team/app/blobs/uploads/"] = lambda r: httpx.Response(
        202, headers={"Location": "/v2/team/app/blobs/uploads/abc"}
    )
    fake.routes["PUT", "/v2/team/app/blobs/uploads/abc"] = lambda r: httpx.Response(201)
    client = make_client(fake)
    try:
        with pytest.raises(DigestMismatch):
            await client.upload_blob("team/app", BLOB_DIGEST, len(BLOB) - 10, source(BLOB))
    finally:
        await client.aclose()


async def test_mount_answered_202_returns_the_session() -> None:
    fake = FakeRegistry()
    fake.routes["POST", "/v2/dst/blobs/uploads/"] = lambda r: httpx.Response(
        202, headers={"Location": "/v2/dst/blobs/uploads/s1?_state=q"}
    )
    client = make_client(fake)
    try:
        location = await client.mount_blob("dst", BLOB_DIGEST, "src")
    finally:
        await client.aclose()
    assert location == f"https://{HOST}/v2/dst/blobs/uploads/s1?_state=q"


# ---------------------------------------------------------------------------------------------- secrets


def test_secrets_not_in_reprs() -> None:
    creds = Credentials.of(USER, PASSWORD)
    for text in (repr(creds), str(creds), repr(StaticCredentials(creds)), repr(StaticCredentials({HOST: creds}))):
        assert PASSWORD not in text
    client = make_client(FakeRegistry())
    assert PASSWORD not in repr(client)


async def test_no_secret_in_any_error_of_a_failing_session() -> None:
    """Every error a client raises in a hostile session is free of the password and token."""
    fake = FakeRegistry()
    errors: list[BaseException] = []
    fake.routes["GET", "/v2/a/manifests/v1"] = lambda r: httpx.Response(
        400, json={"errors": [{"code": "MANIFEST_INVALID", "message": "bad"}]}
    )
    fake.routes["GET", "/v2/a/manifests/v2"] = lambda r: httpx.Response(500, text="boom")
    fake.routes["GET", BLOB_PATH.replace("team/app", "a")] = chunked(b"junk")
    client = make_client(fake)
    try:
        for call in (
            lambda: client.get_manifest("a", "v1"),
            lambda: client.get_manifest("a", "v2"),
            lambda: client.get_manifest("a", "missing"),
        ):
            try:
                await call()
            except EcrcopyError as exc:
                errors.append(exc)
        try:
            async with client.open_blob("a", BLOB_DIGEST, None) as stream:
                await read_all(stream)
        except EcrcopyError as exc:
            errors.append(exc)
    finally:
        await client.aclose()
    assert len(errors) == 4
    tokens = set(fake.valid_tokens)
    assert tokens
    for exc in errors:
        assert_no_secret(exc)
        assert not any(token in str(exc) for token in tokens)
