"""Every compiled transport keeps httpx's contract: ``ecrcopy._http11`` (the default) and
``ecrcopy._aiohttp`` run through the same tests.

Real servers on 127.0.0.1: the testing package's :class:`StubServer` (it records each request's
headers) and raw sockets for what no well-behaved server does (never reading a request body,
never answering, a cut body, a malformed status line).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress

import anyio
import httpx
import pytest

from ecrcopy._aiohttp import AiohttpTransport
from ecrcopy._client import tls_context
from ecrcopy._http11 import Http11Transport
from ecrcopy._transport import default_transport, proxy_configured
from ecrcopy.testing import ProxyRequest, ProxyResponse, StubServer

pytestmark = pytest.mark.anyio

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)

Transport = type[Http11Transport] | type[AiohttpTransport]
Client = Callable[..., httpx.AsyncClient]


@pytest.fixture(params=[Http11Transport, AiohttpTransport], ids=["http11", "aiohttp"])
def transport_class(request: pytest.FixtureRequest) -> Transport:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def client(transport_class: Transport) -> Client:
    def make(**timeouts: float) -> httpx.AsyncClient:
        timeout = httpx.Timeout(timeouts.pop("all", 10.0), **timeouts)
        return httpx.AsyncClient(
            transport=transport_class(verify=tls_context(), limits=LIMITS),
            timeout=timeout,
            headers={"User-Agent": "ecrcopy", "Accept-Encoding": "identity"},
        )

    return make


# -- servers on raw sockets: what no well-behaved server does, and answers a registry rarely gives --


def read_head(conn: socket.socket, buffer: bytearray) -> bytes:
    """One request head (through the blank line) from ``conn``; what follows stays in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("client went away")
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


@contextmanager
def scripted_server(script: Callable[[socket.socket, int], None]) -> Iterator[tuple[str, list[int]]]:
    """A TCP server that runs ``script(conn, n)`` for its n-th connection, in a thread of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    accepted: list[int] = []
    held: list[socket.socket] = []

    def run(conn: socket.socket, n: int) -> None:
        conn.settimeout(5)
        with suppress(OSError):
            script(conn, n)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            held.append(conn)
            threading.Thread(target=run, args=(conn, len(accepted)), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def _answer_each(conn: socket.socket, n: int) -> None:
    while conn.recv(65536):  # one small GET per read
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def _read_request(conn: socket.socket) -> None:
    conn.recv(65536)


def _answer_once(answer: bytes) -> Callable[[socket.socket, int], None]:
    def script(conn: socket.socket, n: int) -> None:
        conn.recv(65536)
        conn.sendall(answer)
        conn.close()

    return script


#: What each misbehaving server of :func:`raw_server` does with a connection.
_BEHAVIOURS: dict[str, Callable[[socket.socket, int], None]] = {
    "never-read": lambda conn, n: None,  # the request body fills the socket buffers, then the client blocks
    "keep-alive": _answer_each,
    "cut-body": _answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10),
    "garbage": _answer_once(b"NOT-HTTP garbage\r\n\r\n"),
    "silent": lambda conn, n: _read_request(conn),  # reads the request, never answers
}


def raw_server(behaviour: str) -> contextlib.AbstractContextManager[tuple[str, list[int]]]:
    """A TCP server misbehaving as ``behaviour``; yields its URL and the connections it accepted."""
    return scripted_server(_BEHAVIOURS[behaviour])


async def test_requests_go_out_exactly_as_httpx_built_them(client: Client) -> None:
    def hook(req: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(202, {"Location": "/next", "X-Long": "v" * 20_000}, b"")

    with StubServer(hook) as stub:
        async with client() as http:
            url = f"{stub.url}/v2/a/b/blobs/uploads/u-1?_state=Zm9v%2Bbar%3D&digest=sha256%3Aabc"
            response = await http.post(url, headers={"Content-Length": "0"}, content=b"")
            assert response.status_code == 202
            assert response.headers["x-long"] == "v" * 20_000  # longer than aiohttp's 8 KiB default line
            await http.put(f"{stub.url}/v2/x/manifests/v1", content=b"{}", headers={"Content-Type": "application/json"})
        (post, put) = stub.captured
        assert post.method == "POST" and post.path == "/v2/a/b/blobs/uploads/u-1"
        assert post.query == "_state=Zm9v%2Bbar%3D&digest=sha256%3Aabc"  # not re-quoted
        assert post.headers["user-agent"] == "ecrcopy"
        assert post.headers["accept-encoding"] == "identity"
        assert "content-type" not in post.headers  # the transport adds none of its own
        assert "cookie" not in post.headers
        assert put.headers["content-type"] == "application/json" and put.headers["content-length"] == "2"


async def test_streamed_bodies_with_and_without_length(client: Client) -> None:
    received: list[tuple[str, str | None, str | None]] = []

    def hook(req: ProxyRequest) -> ProxyResponse:
        received.append((req.method, req.headers.get("content-length"), req.headers.get("transfer-encoding")))
        return ProxyResponse(201, {}, b"ok")

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 300_000

    with StubServer(hook) as stub:
        async with client() as http:
            sized = http.build_request("PUT", f"{stub.url}/up", content=pieces(), headers={"Content-Length": "1200000"})
            assert (await http.send(sized)).status_code == 201
            chunked = http.build_request("PATCH", f"{stub.url}/up", content=pieces())
            assert (await http.send(chunked)).status_code == 201
    assert received == [("PUT", "1200000", None), ("PATCH", None, "chunked")]


async def test_an_error_of_the_body_source_reaches_the_caller_as_itself(client: Client) -> None:
    class SourceBroke(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"z" * 100_000
        raise SourceBroke("the source blob did not verify")

    with StubServer(lambda req: ProxyResponse(201)) as stub:
        async with client() as http:
            request = http.build_request(
                "PUT", f"{stub.url}/up", content=failing(), headers={"Content-Length": "500000"}
            )
            with pytest.raises(SourceBroke, match="did not verify"):
                await http.send(request)


async def test_a_server_that_stops_taking_the_body_is_a_write_timeout(client: Client) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"w" * 1_048_576

    with raw_server("never-read") as (url, _):
        async with client(write=0.5) as http:
            request = http.build_request(
                "PUT", f"{url}/up", content=endless(), headers={"Content-Length": str(1 << 40)}
            )
            with pytest.raises(httpx.WriteTimeout):
                await http.send(request)


async def test_silence_is_a_read_timeout_and_a_closed_port_a_connect_error(client: Client) -> None:
    with raw_server("silent") as (url, _):
        async with client(read=0.5) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"{url}/v2/")
    port = socket.create_server(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{closed}/v2/")


async def test_a_cut_body_and_a_malformed_answer_are_protocol_errors(client: Client) -> None:
    with raw_server("cut-body") as (url, _):
        async with client() as http:
            response = await http.send(http.build_request("GET", f"{url}/blob"), stream=True)
            with pytest.raises(httpx.RemoteProtocolError):
                async for _ in response.aiter_raw():
                    pass
            await response.aclose()
    with raw_server("garbage") as (url, _):
        async with client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="malformed response"):
                await http.get(f"{url}/v2/")


async def test_connections_are_reused_and_bounded(client: Client) -> None:
    with raw_server("keep-alive") as (url, accepted):
        async with client() as http:
            for _ in range(20):
                assert (await http.get(f"{url}/v2/")).content == b"ok"
            assert len(accepted) == 1  # one connection for requests one after another

            async def one() -> None:
                assert (await http.get(f"{url}/v2/")).content == b"ok"

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)
        assert len(accepted) <= LIMITS.max_connections  # never more than the pool's limit
    with raw_server("silent") as (url, accepted):
        async with client(read=0.3) as http:
            for _ in range(3):
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(f"{url}/v2/")
        assert len(accepted) == 3  # a timed-out connection is not reused


def test_default_transport_steps_aside_for_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(default_transport(verify=tls_context(), limits=LIMITS), Http11Transport)
    assert isinstance(default_transport(verify=tls_context(), limits=LIMITS, backend="aiohttp"), AiohttpTransport)
    assert default_transport(verify=tls_context(), limits=LIMITS, backend="httpx") is None
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert proxy_configured()
    assert default_transport(verify=tls_context(), limits=LIMITS) is None  # httpx's stack honours it
    assert proxy_configured({"ALL_PROXY": "socks5://p:1080"}) and not proxy_configured({"NO_PROXY": "*"})


def test_the_aiohttp_backend_without_aiohttp_and_an_unknown_backend_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from ecrcopy import ConfigurationError

    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    with pytest.raises(ConfigurationError, match=r"pip install 'ecrcopy\[aiohttp\]'"):
        default_transport(verify=tls_context(), limits=LIMITS, backend="aiohttp", trust_env=False)
    with pytest.raises(ConfigurationError, match="unknown HTTP backend 'h2'"):
        default_transport(verify=tls_context(), limits=LIMITS, backend="h2", trust_env=False)


async def test_a_head_answer_has_no_body_and_the_connection_carries_on(client: Client) -> None:
    def script(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        for _ in range(3):
            head = read_head(conn, buffer)
            if head.startswith(b"HEAD"):  # the blob's length, as a registry announces it, and no body
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nDocker-Content-Digest: sha256:ab\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted_server(script) as (url, accepted):
        async with client() as http:
            first = await http.head(f"{url}/v2/r/blobs/sha256:ab")
            assert first.status_code == 200 and first.headers["content-length"] == "5000" and first.content == b""
            assert (await http.get(f"{url}/v2/")).content == b"ok"
            assert (await http.head(f"{url}/v2/r/blobs/sha256:ab")).headers["docker-content-digest"] == "sha256:ab"
        assert len(accepted) == 1


async def test_chunked_close_delimited_and_interim_answers(client: Client) -> None:
    body = bytes(range(256)) * 12_000  # 3 MB: several pieces

    def script(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        read_head(conn, buffer)
        if n == 1:  # an interim answer, then a chunked body
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 100_000):
                piece = body[i : i + 100_000]
                conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
            read_head(conn, buffer)  # the connection is reused for the second request
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)  # ends with the connection
        conn.shutdown(socket.SHUT_WR)

    with scripted_server(script) as (url, accepted):
        async with client() as http:
            for _ in range(2):
                response = await http.send(http.build_request("GET", f"{url}/blob"), stream=True)
                assert response.status_code == 200
                pieces = [piece async for piece in response.aiter_raw()]
                await response.aclose()
                assert b"".join(pieces) == body
                assert all(len(piece) >= 1024 * 1024 for piece in pieces[:-1])  # large pieces
        assert len(accepted) == 1


async def test_an_answer_while_the_body_is_still_going_out_is_returned(client: Client) -> None:
    def script(conn: socket.socket, n: int) -> None:
        read_head(conn, bytearray())
        conn.recv(100_000)  # a little of the body, then a refusal
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big")
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(1 << 20):  # read and drop the rest, as a server that closes gracefully does
            pass

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"q" * 1_048_576

    with scripted_server(script) as (url, _):
        async with client() as http:
            request = http.build_request(
                "PUT", f"{url}/up", content=endless(), headers={"Content-Length": str(64 << 20)}
            )
            response = await http.send(request)
            assert response.status_code == 413 and response.content == b"too big"


async def test_a_body_unlike_its_content_length_and_a_header_with_a_line_break_are_refused() -> None:
    async def pieces(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"p" * 1000

    with StubServer(lambda req: ProxyResponse(201)) as stub:
        async with httpx.AsyncClient(transport=Http11Transport(verify=tls_context(), limits=LIMITS)) as http:
            for n in (1, 3):
                request = http.build_request(
                    "PUT", f"{stub.url}/up", content=pieces(n), headers={"Content-Length": "2000"}
                )
                with pytest.raises(httpx.LocalProtocolError, match=r"(longer|shorter) than its Content-Length"):
                    await http.send(request)
            with pytest.raises(httpx.LocalProtocolError, match="line break"):
                await http.get(f"{stub.url}/v2/", headers={"X-Evil": "a\r\nAuthorization: Basic eA=="})
            assert (await http.put(f"{stub.url}/up", content=b"p" * 2000)).status_code == 201  # still works
    assert "GET" not in [r.method for r in stub.captured]  # the head with a line break never went out


async def test_idle_connections_expire_and_a_full_pool_times_out() -> None:
    with raw_server("keep-alive") as (url, accepted):
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=0.3)
        transport = Http11Transport(verify=tls_context(), limits=limits)
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=0.3)) as http:
            await http.get(f"{url}/v2/")
            await http.get(f"{url}/v2/")
            assert len(accepted) == 1
            await anyio.sleep(0.5)
            await http.get(f"{url}/v2/")
            assert len(accepted) == 2  # the idle connection had expired
            held = await http.send(http.build_request("GET", f"{url}/v2/"), stream=True)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(f"{url}/v2/")  # the only connection is taken
            await held.aclose()
            assert (await http.get(f"{url}/v2/")).content == b"ok"


async def test_data_out_of_turn_retires_the_connection() -> None:
    def script(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        read_head(conn, buffer)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")  # nobody asked
        read_head(conn, buffer)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted_server(script) as (url, accepted):
        async with httpx.AsyncClient(transport=Http11Transport(verify=tls_context(), limits=LIMITS)) as http:
            assert (await http.get(f"{url}/a")).content == b"ok"
            await anyio.sleep(0.2)
            assert (await http.get(f"{url}/b")).content == b"ok"  # on a new connection, not "stale"
        assert len(accepted) == 2


def http11(limits: httpx.Limits = LIMITS, **timeouts: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=Http11Transport(verify=tls_context(), limits=limits),
        timeout=httpx.Timeout(timeouts.pop("all", 10.0), **timeouts),
    )


async def test_a_refusal_from_a_server_that_stops_reading_comes_back_at_once() -> None:
    closed = threading.Event()

    def script(conn: socket.socket, n: int) -> None:
        read_head(conn, bytearray())
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied")  # and reads no more
        conn.settimeout(10)
        try:
            while True:  # wait for the client to give the connection up
                time.sleep(0.05)
                if not conn.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    break
        except BlockingIOError:
            pass
        except OSError:
            pass
        closed.set()

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(256):
            yield b"u" * 1_048_576

    with scripted_server(script) as (url, _):
        async with http11(write=5.0) as http:
            started = time.monotonic()
            request = http.build_request(
                "PUT", f"{url}/up", content=endless(), headers={"Content-Length": str(256 << 20)}
            )
            response = await http.send(request)
            assert response.status_code == 401 and response.content == b"denied"
            assert time.monotonic() - started < 3.0  # not after the write timeout
            blob = await http.send(http.build_request("PUT", f"{url}/up", content=b"x" * (4 << 20)))
            assert blob.status_code == 401  # the same with a body given as bytes


async def test_a_write_timeout_drops_the_connection_and_steady_slow_reading_is_no_timeout() -> None:
    peer_saw_close = threading.Event()

    def never_reads(conn: socket.socket, n: int) -> None:
        read_head(conn, bytearray())
        time.sleep(1.5)
        conn.settimeout(3)
        try:
            while conn.recv(1 << 20):  # the client's abort ends the stream (or resets it)
                pass
        except OSError:
            pass
        peer_saw_close.set()

    async def body(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"w" * 1_048_576

    with scripted_server(never_reads) as (url, _):
        async with http11(write=0.5) as http:
            request = http.build_request(
                "PUT", f"{url}/up", content=body(64), headers={"Content-Length": str(64 << 20)}
            )
            with pytest.raises(httpx.WriteTimeout):
                await http.send(request)
        await anyio.to_thread.run_sync(peer_saw_close.wait, 5.0)
        assert peer_saw_close.is_set()

    def slow_reader(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        head = read_head(conn, buffer)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        got = len(buffer)
        while got < length:  # 128 KiB every 0.1 s: slow, but never silent for the 0.5 s timeout
            time.sleep(0.1)
            got += len(conn.recv(128 * 1024))
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    with scripted_server(slow_reader) as (url, _):
        async with http11(write=0.5) as http:
            request = http.build_request("PUT", f"{url}/up", content=body(4), headers={"Content-Length": str(4 << 20)})
            assert (await http.send(request)).status_code == 201


async def test_endless_headers_and_unannounced_framing_are_refused() -> None:
    def endless_header(conn: socket.socket, n: int) -> None:
        read_head(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(64):
            conn.sendall(b"a" * 65536)

    with scripted_server(endless_header) as (url, _):
        async with http11() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="headers longer than"):
                await http.get(f"{url}/v2/")

    class Pieces(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"data"

    with StubServer(lambda req: ProxyResponse(201)) as stub:
        async with http11() as http:
            request = httpx.Request("PUT", f"{stub.url}/up", stream=Pieces())  # no length, no chunked
            with pytest.raises(httpx.LocalProtocolError, match="needs Content-Length or chunked"):
                await http.send(request)
        assert stub.captured == []


async def test_a_head_answer_without_length_keeps_the_connection() -> None:
    def script(conn: socket.socket, n: int) -> None:
        buffer = bytearray()
        for _ in range(2):
            read_head(conn, buffer)
            conn.sendall(b"HTTP/1.1 404 Not Found\r\n\r\n")  # no Content-Length: fine for a HEAD

    with scripted_server(script) as (url, accepted):
        async with http11() as http:
            for _ in range(2):
                assert (await http.head(f"{url}/v2/r/manifests/v1")).status_code == 404
        assert len(accepted) == 1


def test_a_transport_outlives_its_event_loop() -> None:
    with raw_server("keep-alive") as (url, accepted):
        transport = Http11Transport(verify=tls_context(), limits=LIMITS)

        async def get() -> bytes:
            http = httpx.AsyncClient(transport=transport)
            return (await http.get(f"{url}/v2/")).content

        assert asyncio.run(get()) == b"ok"  # leaves an idle connection of a loop that then ends
        assert asyncio.run(get()) == b"ok"  # on a connection of its own loop; the old one is shut down
        assert len(accepted) == 2
        asyncio.run(transport.aclose())
        with warnings.catch_warnings():  # the first loop's transport object, collected: Python warns of it
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
