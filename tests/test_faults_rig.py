"""Tests for the rig's faults, stub origin, streamed bodies and hostile registry (ecrcopy.testing)."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import hashlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ecrcopy.testing import (
    ACCEPT_MANIFESTS,
    DEEP_NESTING_LEVELS,
    FAKE_BEARER,
    HOSTILE_TEXT,
    HOSTILE_TEXT_LARGE,
    HUGE_TAG_COUNT,
    NO_RESPONSE,
    OCI_INDEX,
    OCI_MANIFEST,
    S3_AUTH_CONFLICT,
    EcrEmulator,
    Fault,
    FaultInjector,
    GitLabEmulator,
    HostileRegistry,
    Proxy,
    ProxyRequest,
    ProxyResponse,
    Registry,
    Scenario,
    StubServer,
    TokenServer,
    any_request,
    data_requests,
    fetch_manifest,
    oci_image,
    push,
    token_requests,
)

pytestmark = pytest.mark.usefixtures("no_leaked_threads")

IMAGE = oci_image([200_000, 3000], seed=11)
LAYER = IMAGE.layers[0]
LAYER_PATH = f"/v2/app/blobs/{LAYER.digest}"
CREDS = ("alice", "hostile-pw")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An open registry holding IMAGE as app:v1 (shared by the proxy fault tests)."""
    with Registry(tmp_path_factory.mktemp("faults") / "registry") as registry:
        push(registry.url, "app", IMAGE, "v1")
        yield registry


@pytest.fixture
def proxy(upstream: Registry) -> Iterator[Proxy]:
    with Proxy(upstream.url) as server:
        yield server


def raw_get(
    port: int, path: str, *, version: str = "HTTP/1.1", timeout: float = 5.0
) -> tuple[bytes, bytes, OSError | None]:
    """Send one GET on a fresh socket and read until EOF or error: ``(head, body, error)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} {version}\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data = b""
        error: OSError | None = None
        try:
            while piece := sock.recv(65536):
                data += piece
        except OSError as exc:
            error = exc
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, error


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def request(method: str, path: str, **headers: str) -> ProxyRequest:
    return ProxyRequest(method, path, "", {k.lower(): v for k, v in headers.items()})


# -- faults on the wire ------------------------------------------------------------------------------


def test_answering_faults(proxy: Proxy, upstream: Registry) -> None:
    date = email.utils.formatdate(usegmt=True)
    faults: dict[str, Fault] = {}
    proxy.hook = lambda req: faults.get(req.headers.get("x-fault", ""))
    faults.update(
        {
            "429": Fault.rate_limited(),
            "429-1": Fault.rate_limited("1"),
            "429-date": Fault.rate_limited(date),
            "scope": Fault.insufficient_scope("http://realm.test/jwt/auth", "svc"),
            **{str(status): Fault.unavailable(status) for status in (500, 502, 503, 504)},
        }
    )
    upstream.reset()
    url = proxy.url + LAYER_PATH
    with httpx.Client() as client:
        plain = client.get(url, headers={"X-Fault": "429"})
        assert plain.status_code == 429 and "retry-after" not in plain.headers
        assert plain.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert client.get(url, headers={"X-Fault": "429-1"}).headers["Retry-After"] == "1"
        assert client.get(url, headers={"X-Fault": "429-date"}).headers["Retry-After"] == date
        for status, code in ((500, "UNKNOWN"), (502, "UNAVAILABLE"), (503, "UNAVAILABLE"), (504, "UNAVAILABLE")):
            answer = client.get(url, headers={"X-Fault": str(status)})
            assert answer.status_code == status and answer.json()["errors"][0]["code"] == code
        scoped = client.get(url, headers={"X-Fault": "scope"})
        assert scoped.status_code == 401
        assert scoped.headers["WWW-Authenticate"] == (
            'Bearer realm="http://realm.test/jwt/auth",service="svc",scope="repository:app:pull",'
            'error="insufficient_scope"'
        )
        assert scoped.json()["errors"][0]["code"] == "UNAUTHORIZED"
        # An upload body is read and dropped: the same connection serves the next request.
        put = client.put(proxy.url + "/v2/app/blobs/uploads/x", content=b"x" * 100_000, headers={"X-Fault": "503"})
        assert put.status_code == 503
        assert client.get(url).content == LAYER.read()
    assert [r.method for r in upstream.requests()] == ["GET"]  # only the last one reached the registry
    with pytest.raises(ValueError, match="unavailable status"):
        Fault.unavailable(404)


def test_reset_mid_body(proxy: Proxy) -> None:
    proxy.hook = lambda req: Fault.reset_mid_body(1000) if "/blobs/" in req.path else None
    head, body, error = raw_get(proxy.port, LAYER_PATH)
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {LAYER.size}".encode() in head
    assert len(body) == 1000 and body == LAYER.read()[:1000]
    assert isinstance(error, ConnectionResetError)
    with pytest.raises(httpx.ReadError):
        httpx.get(proxy.url + LAYER_PATH)
    proxy.hook = lambda req: Fault.reset_mid_body(fraction=0.5)
    _, body, error = raw_get(proxy.port, LAYER_PATH)
    assert len(body) == 1 + int(0.5 * (LAYER.size - 1)) and isinstance(error, ConnectionResetError)
    assert [r.status for r in proxy.requests] == [200, 200, 200]


def test_truncate(proxy: Proxy) -> None:
    proxy.hook = lambda req: Fault.truncate(5000)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request("GET", LAYER_PATH)
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(LAYER.size)
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
        assert len(info.value.partial) == 5000 and info.value.expected == LAYER.size - 5000
    finally:
        conn.close()
    with pytest.raises(httpx.RemoteProtocolError, match="received 5000 bytes"):
        httpx.get(proxy.url + LAYER_PATH)
    # A manifest cut at a random position stays inside the body.
    proxy.hook = lambda req: Fault.truncate(fraction=0.99)
    _, body, error = raw_get(proxy.port, "/v2/app/manifests/v1")
    assert error is None and 0 < len(body) < IMAGE.size


def test_stall_then_close(proxy: Proxy) -> None:
    proxy.hook = lambda req: Fault.stall(0.6, 100)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=3) as sock:
        started = time.monotonic()
        sock.sendall(f"GET {LAYER_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 100:
            data += sock.recv(65536)
        assert len(data.partition(b"\r\n\r\n")[2]) == 100
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(65536)  # silence
        sock.settimeout(3)
        assert sock.recv(65536) == b""  # then a clean close
        assert 0.55 < time.monotonic() - started < 2.5


def test_stall_ends_when_the_proxy_stops(upstream: Registry) -> None:
    proxy = Proxy(upstream.url, hook=lambda req: Fault.stall(60)).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(f"GET {LAYER_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            proxy.stop()
            assert time.monotonic() - started < 2
    finally:
        proxy.stop()


def test_close_without_response(proxy: Proxy, upstream: Registry) -> None:
    proxy.hook = lambda req: (
        Fault.close_without_response() if req.method == "PUT" or "/manifests/" in req.path else None
    )
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.get(proxy.url + "/v2/app/manifests/v1")
    assert proxy.requests[-1].status == NO_RESPONSE
    data = b"never arrives"
    with httpx.Client() as client:
        start = client.post(proxy.url + "/v2/app/blobs/uploads/")
        assert start.status_code == 202
        upstream.reset()
        with pytest.raises(httpx.RemoteProtocolError):
            client.put(start.headers["Location"] + "&digest=" + sha256(data), content=data)
    assert upstream.requests() == []  # the request was read, never forwarded
    assert httpx.head(f"{upstream.url}/v2/app/blobs/{sha256(data)}").status_code == 404


def test_wire_fault_on_an_upload_damages_only_the_response(proxy: Proxy, upstream: Registry) -> None:
    data = b"uploaded through a fault"
    proxy.hook = lambda req: Fault.truncate(0) if req.method == "PUT" else None
    with httpx.Client() as client:
        start = client.post(proxy.url + "/v2/app/blobs/uploads/")
        done = client.put(start.headers["Location"] + "&digest=" + sha256(data), content=data)
    assert done.status_code == 201  # a body-less response cut after its headers is complete
    assert httpx.head(f"{upstream.url}/v2/app/blobs/{sha256(data)}").status_code == 200


# -- the injector ------------------------------------------------------------------------------------

RATES = {
    "429": 0.10,
    "429-retry-after": 0.05,
    "503": 0.05,
    "cut": 0.04,
    "stall": 0.02,
    "no-response": 0.02,
    "insufficient_scope": 0.02,
}


def test_fault_injector_rates_are_honoured_and_reproducible() -> None:
    requests = [request("GET", f"/v2/app/blobs/sha256:{n:064x}") for n in range(20_000)]
    injector = FaultInjector(seed=1, rates=RATES, stall_seconds=0.25)
    answers = [injector(r) for r in requests]
    assert injector.seen == 20_000
    counts = injector.injected
    for key, rate in RATES.items():
        assert abs(counts[key] - rate * 20_000) < 0.25 * rate * 20_000, (key, counts[key])
    assert sum(1 for a in answers if a is None) == 20_000 - sum(counts.values())
    faults = [a for a in answers if isinstance(a, Fault)]
    cut = Counter(e.fault.kind for e in injector.history if e.key == "cut")
    assert set(cut) == {"reset", "truncate"} and min(cut.values()) > 0.35 * sum(cut.values())
    assert all(f.seconds == 0.25 for f in faults if f.kind == "stall")
    assert {f.retry_after for f in faults if f.kind == "rate_limited"} == {None, "1"}
    assert all(f.fraction is not None and 0 <= f.fraction < 1 for f in faults if f.forwards)

    again = FaultInjector(seed=1, rates=RATES, stall_seconds=0.25)
    assert [again(r) for r in requests] == answers
    other = FaultInjector(seed=2, rates=RATES, stall_seconds=0.25)
    assert [other(r) for r in requests] != answers
    with pytest.raises(ValueError, match="unknown fault rate keys"):
        FaultInjector(rates={"418": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultInjector(rates={"429": 0.7, "503": 0.7})


def test_fault_injector_bounds_consecutive_faults_and_chains() -> None:
    passed = ProxyResponse(299)
    injector = FaultInjector(seed=3, rates={"503": 1.0}, max_consecutive=3, then=lambda req: passed)
    same = request("GET", "/v2/app/manifests/v1")
    outcomes = ["fault" if isinstance(injector(same), Fault) else "pass" for _ in range(8)]
    assert outcomes == ["fault"] * 3 + ["pass"] + ["fault"] * 3 + ["pass"]
    assert isinstance(injector(request("GET", "/v2/app/manifests/v2")), Fault)  # another key, its own streak
    assert injector(request("GET", "/v2/")) is passed  # the ping is not a data request
    assert injector.seen == 9 and injector.injected == Counter({"503": 7})
    with injector.paused():
        assert injector(same) is passed
    assert injector.seen == 9
    injector.reset()
    assert injector.seen == 0 and injector.history == []

    never = FaultInjector(rates={"503": 1.0}, max_consecutive=0)
    always = FaultInjector(rates={"503": 1.0}, max_consecutive=None)
    assert never(same) is None and all(isinstance(always(same), Fault) for _ in range(10))


def test_request_predicates() -> None:
    data = [
        "/v2/a/b/manifests/latest",
        f"/v2/app/blobs/{LAYER.digest}",
        "/v2/app/blobs/uploads/",
        "/v2/app/blobs/uploads/0b3c-uuid",
        "/v2/app/tags/list",
        f"/v2/app/referrers/{LAYER.digest}",
        "/docker/registry/v2/blobs/sha256/ab/abcd/data",
    ]
    other = ["/v2/", "/v2/_catalog", "/jwt/auth", "/", "/v2/app"]
    assert all(data_requests(request("GET", p)) for p in data)
    assert not any(data_requests(request("GET", p)) for p in other)
    tokens = ["/jwt/auth", "/token", "/oauth2/token", "/service/token"]
    assert all(token_requests(request("GET", p)) for p in tokens)
    assert not any(token_requests(request("GET", p)) for p in [*data, "/v2/"])
    assert any_request(request("GET", "/anything"))


def test_injector_through_the_proxy_lets_bounded_retries_through(proxy: Proxy) -> None:
    rates = {"503": 0.2, "429-retry-after": 0.1, "cut": 0.2, "no-response": 0.1}
    injector = FaultInjector(seed=4, rates=rates, max_consecutive=2)
    proxy.hook = injector
    expected = {f"/v2/app/manifests/{IMAGE.digest}": IMAGE.raw, LAYER_PATH: LAYER.read()}
    with httpx.Client(headers={"Accept": ACCEPT_MANIFESTS}) as client:
        for _round in range(15):
            for path, content in expected.items():
                for _attempt in range(3):  # max_consecutive=2: the third attempt always gets through
                    try:
                        response = client.get(proxy.url + path)
                    except httpx.TransportError:
                        continue
                    if response.status_code == 200:
                        assert response.content == content
                        break
                    assert response.status_code in (429, 503)
                else:
                    raise AssertionError(f"{path}: no success in 3 attempts")
    assert injector.seen >= 30 and sum(injector.injected.values()) >= 10
    assert set(injector.injected) == set(rates)


# -- emulators with faults ---------------------------------------------------------------------------


def test_gitlab_emulator_with_token_and_registry_faults(tmp_path: Path) -> None:
    token_faults = FaultInjector(seed=5, rates={"503": 1.0}, applies=any_request, max_consecutive=1)
    registry_faults = FaultInjector(seed=6, rates={"insufficient_scope": 1.0}, max_consecutive=1)
    repo = "group/project/app"
    with GitLabEmulator(tmp_path / "gl", token_faults=token_faults, registry_faults=registry_faults) as gitlab:
        token_proxy = gitlab.token_proxy
        assert token_proxy is not None and gitlab.gate is not None and gitlab.gate.token_gate
        assert gitlab.token_realm == f"{token_proxy.url}/jwt/auth" != gitlab.tokens.realm
        ping = httpx.get(f"{gitlab.registry_url}/v2/")
        assert ping.headers["WWW-Authenticate"] == f'Bearer realm="{gitlab.token_realm}",service="container_registry"'
        assert registry_faults.seen == 0  # the ping is not faulted

        params = {"service": "container_registry", "scope": f"repository:{repo}:pull,push"}
        assert httpx.get(gitlab.token_realm, params=params, auth=gitlab.credentials).status_code == 503
        granted = httpx.get(gitlab.token_realm, params=params, auth=gitlab.credentials)
        assert granted.status_code == 200
        assert token_faults.injected == Counter({"503": 1}) and len(gitlab.tokens.requests) == 1

        url = f"{gitlab.registry_url}/v2/{repo}/manifests/v1"
        auth = {"Authorization": f"Bearer {granted.json()['token']}", "Accept": ACCEPT_MANIFESTS}
        refused = httpx.get(url, headers=auth)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == (
            f'Bearer realm="{gitlab.token_realm}",service="container_registry",'
            f'scope="repository:{repo}:pull",error="insufficient_scope"'
        )
        assert httpx.get(url, headers=auth).status_code == 404  # the retry gets through (not pushed yet)

        image = oci_image([1000], seed=12)
        with token_faults.paused(), registry_faults.paused():
            push(gitlab.registry_url, repo, image, "v1", auth=gitlab.credentials)
            assert fetch_manifest(gitlab.registry_url, repo, "v1", auth=gitlab.credentials)[0] == image.raw
        # Every token request went through the token proxy (which answered the first one itself).
        assert len(token_proxy.requests) == len(gitlab.tokens.requests) + 1

    plain_faults = FaultInjector(rates={"503": 1.0}, max_consecutive=None)
    with GitLabEmulator(tmp_path / "plain", hard_expiry=False, registry_faults=plain_faults) as plain:
        assert plain.gate is not None and not plain.gate.token_gate and plain.token_proxy is None
        assert plain.token_realm == plain.tokens.realm
        assert httpx.get(f"{plain.registry_url}/v2/{repo}/manifests/v1").status_code == 503
    with pytest.raises(ValueError, match="token_realm needs token_auth"):
        Registry(tmp_path / "x", token_realm="http://127.0.0.1:1/jwt/auth")


def test_ecr_emulator_faults_reach_redirected_blob_downloads(tmp_path: Path) -> None:
    injector = FaultInjector(
        seed=7,
        rates={"truncate": 1.0},
        applies=lambda req: req.path.startswith("/docker/registry/v2/blobs/"),
        max_consecutive=1,
    )
    image = oci_image([50_000], seed=13)
    layer = image.layers[0]
    with EcrEmulator(tmp_path / "ecr", data_faults=injector) as ecr:
        ecr.add_image("app", image, ["v1"])
        blob_proxy = ecr.blob_proxy
        assert blob_proxy is not None and ecr.blob_url == blob_proxy.url != ecr.blob_server.url
        password, _ = ecr.issue_password()
        with httpx.Client(auth=("AWS", password)) as client:
            redirect = client.get(f"{ecr.data_url}/v2/app/blobs/{layer.digest}")
            assert redirect.status_code == 307 and redirect.headers["Location"].startswith(ecr.blob_url + "/")
            location = redirect.headers["Location"]
            with injector.paused():  # credentials are still refused behind the proxy
                assert client.get(location).content == S3_AUTH_CONFLICT
        ecr.blob_server.reset()
        injector.reset()
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(location)
        assert httpx.get(location).content == layer.data
        assert injector.injected == Counter({"truncate": 1})
        assert [r.status for r in ecr.blob_server.requests] == [200, 200]

        # Data-plane faults come before the credential check; a wire fault does not bypass it.
        manifest_url = f"{ecr.data_url}/v2/app/manifests/v1"
        ecr.data_faults = lambda req: Fault.rate_limited("1")
        assert httpx.get(manifest_url).status_code == 429
        ecr.data_faults = lambda req: Fault.truncate(0)
        assert httpx.get(manifest_url).status_code == 401


# -- recording, stub origin, streamed bodies ---------------------------------------------------------


def test_record_headers_and_stub_origin(upstream: Registry) -> None:
    with StubServer() as stub, Proxy(upstream.url, record_headers=True) as recording:
        missing = httpx.get(stub.url + "/anything", headers={"X-Probe": "1"})
        assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "NOT_FOUND"
        stub.hook = lambda req: ProxyResponse(200, {"Content-Type": "text/plain"}, req.path.encode())
        assert httpx.get(stub.url + "/echo").text == "/echo"

        # A proxied registry redirects to the stub: the client's credentials must not follow.
        def redirect(req: ProxyRequest) -> ProxyResponse | None:
            if "/blobs/" in req.path:
                return ProxyResponse(307, {"Location": stub.url + "/storage/blob"})
            return None

        recording.hook = redirect
        with httpx.Client(auth=("user", "secret")) as client:
            assert client.get(recording.url + LAYER_PATH, follow_redirects=True).text == "/storage/blob"
        assert recording.captured[-1].headers["authorization"].startswith("Basic ")
        assert [(r.method, r.path) for r in stub.captured] == [
            ("GET", "/anything"),
            ("GET", "/echo"),
            ("GET", "/storage/blob"),
        ]
        assert stub.captured[0].headers["x-probe"] == "1"
        assert "authorization" not in stub.captured[-1].headers
        assert [r.status for r in stub.requests] == [404, 200, 200]

        stub.hook = lambda req: Fault.rate_limited("3") if req.method == "GET" else Fault.truncate(1)
        assert httpx.get(stub.url).headers["Retry-After"] == "3"
        assert httpx.delete(stub.url).status_code == 500  # a wire fault needs an upstream
    with Proxy(upstream.url) as quiet, pytest.raises(RuntimeError, match="record_headers"):
        _ = quiet.captured


def test_streamed_bodies_chunked_and_close_delimited() -> None:
    stub = StubServer(lambda req: ProxyResponse(200, {"X-Kind": "stream"}, b"head:", lambda: iter([b"a", b"", b"b"])))
    with stub:
        response = httpx.get(stub.url)
        assert response.content == b"head:ab" and response.headers["Transfer-Encoding"] == "chunked"
        head, body, error = raw_get(stub.port, "/", version="HTTP/1.0")
        assert error is None and body == b"head:ab"
        assert b"Transfer-Encoding" not in head and b"Connection: close" in head
        stub.hook = lambda req: ProxyResponse(200, {"Content-Length": "7"}, b"head:", lambda: iter([b"ab"]))
        with httpx.Client() as client:  # an exact Content-Length keeps the connection alive
            assert [client.get(stub.url).content for _ in range(2)] == [b"head:ab"] * 2
        wait_for(lambda: not handler_threads())


def test_endless_stream_stops_when_the_client_leaves(upstream: Registry) -> None:
    closed = threading.Event()

    def endless() -> Iterator[bytes]:
        try:
            while True:
                yield b"z" * 65536
        finally:
            closed.set()

    def hook(req: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(200, {"Content-Type": "application/octet-stream"}, stream=endless)

    with Proxy(upstream.url, hook=hook) as proxy:
        received = 0
        with httpx.stream("GET", proxy.url + "/v2/app/blobs/sha256:endless") as response:
            for piece in response.iter_raw():
                received += len(piece)
                if received > 4 << 20:
                    break
        wait_for(closed.is_set)
        wait_for(lambda: not handler_threads())

        # A client that stops reading: stop() interrupts the blocked writer.
        closed.clear()
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(b"GET /v2/app/blobs/sha256:endless HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            proxy.stop()
            assert time.monotonic() - started < 2 and closed.is_set()


# -- the hostile registry ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("hostile") / "registry", htpasswd=dict([CREDS])) as registry:
        yield registry


@pytest.fixture
def hostile(real_source: Registry) -> Iterator[HostileRegistry]:
    with HostileRegistry(real_source) as registry:
        registry.add_all()
        yield registry


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(auth=CREDS, headers={"Accept": ACCEPT_MANIFESTS}, timeout=10) as c:
        yield c


def url(hostile: HostileRegistry, scenario: Scenario, suffix: str) -> str:
    return f"{hostile.url}/v2/hostile/{scenario.value}/{suffix}"


def read_some(client: httpx.Client, target: str, limit: int = 2 << 20) -> tuple[httpx.Response, bytes, int]:
    """Stream ``target`` and stop after ``limit`` bytes: ``(response, first 64 KiB, bytes read)``."""
    first = b""
    count = 0
    with client.stream("GET", target) as response:
        for piece in response.iter_raw():
            if len(first) < 65536:
                first += piece[: 65536 - len(first)]
            count += len(piece)
            if count >= limit:
                break
    return response, first, count


def test_hostile_registry_forwards_good_repositories(real_source: Registry, hostile: HostileRegistry) -> None:
    good = oci_image([500], seed=14)
    push(hostile.url, "good/app", good, "v1", auth=CREDS)
    assert fetch_manifest(hostile.url, "good/app", "v1", auth=CREDS)[0] == good.raw
    assert fetch_manifest(real_source.url, "good/app", "v1", auth=CREDS)[0] == good.raw

    cycle = url(hostile, Scenario.CYCLE, "manifests/latest")
    denied = httpx.get(cycle)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == 'Basic realm="ecrcopy-test"'
    with httpx.Client(auth=CREDS) as c:
        assert c.post(url(hostile, Scenario.CYCLE, "blobs/uploads/")).status_code == 405
        missing = c.get(url(hostile, Scenario.CYCLE, "manifests/nope"))
        assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert c.get(url(hostile, Scenario.CYCLE, "tags/list")).json()["tags"] == ["latest"]

    assert set(HostileRegistry.scenarios()) == set(Scenario)
    assert all(HostileRegistry.scenarios().values())
    # Deterministic: installing a scenario again (under another name) serves the same content.
    for scenario, record in zip(Scenario, hostile.repositories.values(), strict=True):
        again = hostile.add("again/" + scenario.value, scenario)
        assert dataclasses.replace(again, name=record.name) == record


def test_hostile_cycles_and_non_digest_children(hostile: HostileRegistry, client: httpx.Client) -> None:
    top = client.get(url(hostile, Scenario.CYCLE, "manifests/latest"))
    child_digest = top.json()["manifests"][0]["digest"]
    child = client.get(url(hostile, Scenario.CYCLE, f"manifests/{child_digest}"))
    assert child.headers["Docker-Content-Digest"] == child_digest != sha256(child.content)
    assert child.json()["manifests"][0]["digest"] == sha256(top.content)
    assert child.json()["manifests"][0]["size"] == len(top.content)
    assert top.json()["manifests"][0]["size"] == len(child.content)

    selfish = client.get(url(hostile, Scenario.SELF_CYCLE, "manifests/latest"))
    claimed = selfish.headers["Docker-Content-Digest"]
    assert selfish.json()["manifests"][0] == {"mediaType": OCI_INDEX, "digest": claimed, "size": len(selfish.content)}
    assert claimed != sha256(selfish.content)
    assert client.get(url(hostile, Scenario.SELF_CYCLE, f"manifests/{claimed}")).content == selfish.content

    listing = client.get(url(hostile, Scenario.NON_DIGEST_CHILD, "manifests/latest")).json()
    digests = [m["digest"] for m in listing["manifests"]]
    assert digests == ["latest", "../../../etc/passwd", "sha256:XYZ", "sha256:" + "ABCDEF0123456789" * 4, ""]
    single = client.get(url(hostile, Scenario.NON_DIGEST_CHILD, "manifests/bad-3")).json()
    assert [m["digest"] for m in single["manifests"]] == ["sha256:XYZ"]


def test_hostile_algorithms(hostile: HostileRegistry, client: httpx.Client) -> None:
    manifest = client.get(url(hostile, Scenario.UNKNOWN_ALGORITHM, "manifests/latest")).json()
    layers = [layer["digest"] for layer in manifest["layers"]]
    assert [d.split(":")[0] for d in layers] == ["md5", "sha384", "sha256+b64"]
    contents = [client.get(url(hostile, Scenario.UNKNOWN_ALGORITHM, f"blobs/{d}")).content for d in layers]
    assert layers[0] == "md5:" + hashlib.md5(contents[0], usedforsecurity=False).hexdigest()
    assert layers[1] == "sha384:" + hashlib.sha384(contents[1]).hexdigest()
    assert layers[2] == "sha256+b64:" + base64.urlsafe_b64encode(hashlib.sha256(contents[2]).digest()).decode()
    one = client.get(url(hostile, Scenario.UNKNOWN_ALGORITHM, "manifests/sha384")).json()
    assert [layer["digest"] for layer in one["layers"]] == [layers[1]]

    mislabelled = client.get(url(hostile, Scenario.MISLABELLED_ALGORITHM, "manifests/latest")).json()
    digest = mislabelled["layers"][0]["digest"]
    algorithm, _, hexpart = digest.partition(":")
    content = client.get(url(hostile, Scenario.MISLABELLED_ALGORITHM, f"blobs/{digest}")).content
    assert algorithm == "sha512" and len(hexpart) == 128
    assert hexpart == hashlib.sha256(content).hexdigest() + "0" * 64 != hashlib.sha512(content).hexdigest()


def test_hostile_deep_nesting(hostile: HostileRegistry, client: httpx.Client) -> None:
    response = client.get(url(hostile, Scenario.DEEP_NESTING, "manifests/latest"))
    levels = 0
    while response.headers["Content-Type"] == OCI_INDEX:
        levels += 1
        (child,) = response.json()["manifests"]
        response = client.get(url(hostile, Scenario.DEEP_NESTING, f"manifests/{child['digest']}"))
        assert sha256(response.content) == child["digest"] and len(response.content) == child["size"]
    assert levels == DEEP_NESTING_LEVELS and response.headers["Content-Type"] == OCI_MANIFEST
    manifest = response.json()
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = client.get(url(hostile, Scenario.DEEP_NESTING, f"blobs/{descriptor['digest']}")).content
        assert sha256(blob) == descriptor["digest"]


def test_hostile_endless_bodies(hostile: HostileRegistry, client: httpx.Client) -> None:
    started = time.monotonic()
    for scenario in (
        Scenario.ENDLESS_MANIFEST,
        Scenario.ENDLESS_MANIFEST_HUGE_LENGTH,
        Scenario.ENDLESS_MANIFEST_CHUNKED,
    ):
        response, first, count = read_some(client, url(hostile, scenario, "manifests/latest"))
        assert response.status_code == 200 and response.headers["Content-Type"] == OCI_MANIFEST
        assert count >= 2 << 20 and first.startswith(b'{\n   "schemaVersion": 2,')
        digest = response.headers["Docker-Content-Digest"]
        assert read_some(client, url(hostile, scenario, f"manifests/{digest}"), 1 << 20)[2] >= 1 << 20
    framing = {
        scenario: read_some(client, url(hostile, scenario, "manifests/latest"), 1)[0].headers
        for scenario in (Scenario.ENDLESS_MANIFEST, Scenario.ENDLESS_MANIFEST_HUGE_LENGTH)
    }
    assert "content-length" not in framing[Scenario.ENDLESS_MANIFEST]
    assert "transfer-encoding" not in framing[Scenario.ENDLESS_MANIFEST]
    assert framing[Scenario.ENDLESS_MANIFEST_HUGE_LENGTH]["Content-Length"] == str(1 << 50)

    manifest = client.get(url(hostile, Scenario.ENDLESS_BLOB, "manifests/latest")).json()
    layer = manifest["layers"][0]
    response, first, count = read_some(client, url(hostile, Scenario.ENDLESS_BLOB, f"blobs/{layer['digest']}"))
    assert response.status_code == 200 and count > layer["size"] and sha256(first[: layer["size"]]) == layer["digest"]

    response, first, count = read_some(client, url(hostile, Scenario.ENDLESS_ERROR, "manifests/latest"), 1 << 20)
    assert response.status_code == 500 and first.startswith(b'{"errors":[{"code":"UNKNOWN"') and count >= 1 << 20
    response, _, count = read_some(client, url(hostile, Scenario.ENDLESS_ERROR, "manifests/not-found"), 1 << 20)
    assert response.status_code == 404 and count >= 1 << 20
    manifest = client.get(url(hostile, Scenario.ENDLESS_ERROR, "manifests/blob-error")).json()
    target = url(hostile, Scenario.ENDLESS_ERROR, f"blobs/{manifest['layers'][0]['digest']}")
    response, first, count = read_some(client, target, 1 << 20)
    assert response.status_code == 404 and b"BLOB_UNKNOWN" in first and count >= 1 << 20
    assert time.monotonic() - started < 10


def test_hostile_compression(hostile: HostileRegistry, client: httpx.Client) -> None:
    manifest = client.get(url(hostile, Scenario.BAD_COMPRESSION, "manifests/latest")).json()
    layer_url = url(hostile, Scenario.BAD_COMPRESSION, f"blobs/{manifest['layers'][0]['digest']}")
    with pytest.raises(httpx.DecodingError):
        client.get(layer_url)
    response, raw, _ = read_some(client, layer_url)
    assert response.headers["Content-Encoding"] == "gzip" and sha256(raw) == manifest["layers"][0]["digest"]

    manifest_url = url(hostile, Scenario.BAD_COMPRESSION_MANIFEST, "manifests/latest")
    with pytest.raises(httpx.DecodingError):
        client.get(manifest_url)
    response, raw, _ = read_some(client, manifest_url)
    assert response.headers["Content-Encoding"] == "gzip" and sha256(raw) == response.headers["Docker-Content-Digest"]
    config = json.loads(raw)["config"]["digest"]
    assert sha256(client.get(url(hostile, Scenario.BAD_COMPRESSION_MANIFEST, f"blobs/{config}")).content) == config


def test_hostile_error_text(hostile: HostileRegistry, client: httpx.Client) -> None:
    def get(tag: str) -> httpx.Response:
        return client.get(url(hostile, Scenario.HOSTILE_ERROR_TEXT, f"manifests/{tag}"))

    not_found = get("latest")
    error = not_found.json()["errors"][0]
    assert not_found.status_code == 404 and error["code"] == "MANIFEST_UNKNOWN"
    assert error["message"] == HOSTILE_TEXT and error["detail"] == HOSTILE_TEXT_LARGE
    for needle in ("\x1b[31m", "\x1b]0;", "\x07", "\r\n", "\x00", "\x9b", "]]>", "<script>", "&", FAKE_BEARER):
        assert needle in HOSTILE_TEXT
    assert len(HOSTILE_TEXT_LARGE) == 100 * 1024
    bad_request = get("e400")
    assert bad_request.status_code == 400 and b"\x1b]0;pwned-title\x07" in bad_request.content
    assert b"\x00" in bad_request.content and b"\xff" in bad_request.content
    assert get("e403").json()["errors"][0]["code"] == "DENIED"
    assert get("e500").status_code == 500
    gateway = get("e502")
    assert gateway.status_code == 502 and len(gateway.content) > 100 * 1024
    manifest = get("blob-error").json()
    blob = client.get(url(hostile, Scenario.HOSTILE_ERROR_TEXT, f"blobs/{manifest['layers'][0]['digest']}"))
    assert blob.status_code == 404 and blob.json()["errors"][0]["message"] == HOSTILE_TEXT
    tags = client.get(url(hostile, Scenario.HOSTILE_ERROR_TEXT, "tags/list")).json()["tags"]
    assert tags == ["blob-error", "e400", "e403", "e500", "e502", "latest"]


def test_hostile_pagination(hostile: HostileRegistry, client: httpx.Client) -> None:
    target = url(hostile, Scenario.ENDLESS_PAGINATION, "tags/list?n=50")
    seen_urls: set[str] = set()
    tags: list[str] = []
    for _page in range(20):
        assert target not in seen_urls
        seen_urls.add(target)
        response = client.get(target)
        page = response.json()["tags"]
        assert len(page) == 50
        tags.extend(page)
        next_url = response.links["next"]["url"]
        target = str(response.url.join(next_url))
    assert len(set(tags)) == len(tags) == 1000 and tags[0] == "latest"
    assert client.get(url(hostile, Scenario.ENDLESS_PAGINATION, "manifests/latest")).status_code == 200

    huge = client.get(url(hostile, Scenario.HUGE_TAG_PAGE, "tags/list"))
    listing = huge.json()
    assert "link" not in huge.headers and huge.headers["Transfer-Encoding"] == "chunked"
    assert len(listing["tags"]) == HUGE_TAG_COUNT and listing["name"] == "hostile/huge-tag-page"


def test_hostile_headers(real_source: Registry, hostile: HostileRegistry, client: httpx.Client) -> None:
    latest = client.get(url(hostile, Scenario.HOSTILE_HEADERS, "manifests/latest"))
    assert latest.status_code == 200 and latest.headers["Docker-Content-Digest"].startswith("sha256:../")
    assert sha256(latest.content) != latest.headers["Docker-Content-Digest"]

    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url(hostile, Scenario.HOSTILE_HEADERS, "manifests/negative-length"))
    auth = "Basic " + base64.b64encode(":".join(CREDS).encode()).decode()
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=5) as sock:
        path = "/v2/hostile/hostile-headers/manifests/negative-length"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
        assert b"Content-Length: -1\r\n" in sock.recv(65536)

    garbage = client.get(url(hostile, Scenario.HOSTILE_HEADERS, "manifests/auth-garbage"))
    assert garbage.status_code == 401 and garbage.headers["WWW-Authenticate"].startswith("Bearer realm=,,")

    manifest = client.get(url(hostile, Scenario.HOSTILE_HEADERS, "manifests/redirect")).json()
    layer = manifest["layers"][0]
    redirect = client.get(url(hostile, Scenario.HOSTILE_HEADERS, f"blobs/{layer['digest']}"))
    location = redirect.headers["Location"]
    assert redirect.status_code == 307 and "%0D%0AX-Injected:" in location
    assert redirect.headers["X-Injected"] == "raw-crlf"  # the raw CR/LF split the header
    assert location.startswith(f"{hostile.url}/_hostile/hostile/hostile-headers/blobs/")
    assert sha256(httpx.get(location).content) == layer["digest"]
    assert client.get(location).status_code == 400 and hostile.credential_leaks == 1

    with StubServer() as foreign, HostileRegistry(real_source, redirect_origin=foreign.url) as elsewhere:
        elsewhere.add("evil/app", Scenario.HOSTILE_HEADERS)
        moved = client.get(f"{elsewhere.url}/v2/evil/app/blobs/{layer['digest']}")
        assert moved.headers["Location"].startswith(f"{foreign.url}/_hostile/evil/app/blobs/{layer['digest']}")
        assert client.get(moved.headers["Location"]).status_code == 404
        assert "authorization" in foreign.captured[-1].headers  # this client forwards credentials blindly


def test_token_server_behind_a_fault_proxy(tmp_path: Path) -> None:
    """A token service fronted by a Proxy: token_requests selects its path, faults are bounded."""
    injector = FaultInjector(seed=8, rates={"no-response": 1.0}, applies=token_requests, max_consecutive=1)
    with TokenServer(users=dict([CREDS])) as tokens, Proxy(tokens.url, hook=injector) as front:
        realm = f"{front.url}/jwt/auth"
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(realm, auth=CREDS)
        assert httpx.get(realm, auth=CREDS).status_code == 200
        assert httpx.get(f"{front.url}/other").status_code == 404 and injector.seen == 2
