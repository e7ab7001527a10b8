"""The aiohttp-backed transport keeps httpx's contract (``ecrcopy._transport``).

Real servers on 127.0.0.1: the testing package's :class:`StubServer` (it records each request's
headers) and raw sockets for what no well-behaved server does (never reading a request body,
never answering, a cut body, a malformed status line).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest

from ecrcopy._client import tls_context
from ecrcopy._transport import AiohttpTransport, default_transport, proxy_configured
from ecrcopy.testing import ProxyRequest, ProxyResponse, StubServer

pytestmark = pytest.mark.anyio

LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)


def client(**timeouts: float) -> httpx.AsyncClient:
    timeout = httpx.Timeout(timeouts.pop("all", 10.0), **timeouts)
    return httpx.AsyncClient(
        transport=AiohttpTransport(verify=tls_context(), limits=LIMITS),
        timeout=timeout,
        headers={"User-Agent": "ecrcopy", "Accept-Encoding": "identity"},
    )


@contextmanager
def raw_server(behaviour: str) -> Iterator[tuple[str, list[int]]]:
    """A TCP server misbehaving as ``behaviour``; yields its URL and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    accepted: list[int] = []
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            held.append(conn)
            if behaviour == "never-read":
                continue  # the request body fills the socket buffers, then the client blocks
            if behaviour == "keep-alive":
                threading.Thread(target=answer_each, args=(conn,), daemon=True).start()
                continue
            conn.settimeout(5)
            try:
                conn.recv(65536)
                if behaviour == "cut-body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
                    conn.close()
                elif behaviour == "garbage":
                    conn.sendall(b"NOT-HTTP garbage\r\n\r\n")
                    conn.close()
                # "silent": read the request, never answer
            except OSError:
                pass

    def answer_each(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            while not stop.is_set() and conn.recv(65536):  # one small GET per read
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass

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


async def test_requests_go_out_exactly_as_httpx_built_them() -> None:
    def hook(req: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(202, {"Location": "/next", "X-Long": "v" * 20_000}, b"")

    with StubServer(hook) as stub:
        async with client() as http:
            url = f"{stub.url}/v2/a/b/blobs/uploads/u-1?_state=Zm9v%2Bbar%3D&digest=sha256%3Aabc"
            response = await http.post(url, headers={"Content-Length": "0"}, content=b"")
            assert response.status_code == 202
            assert response.headers["x-long"] == "v" * 20_000  # longer than aiohttp's 8 KiB default
            await http.put(f"{stub.url}/v2/x/manifests/v1", content=b"{}", headers={"Content-Type": "application/json"})
        (post, put) = stub.captured
        assert post.method == "POST" and post.path == "/v2/a/b/blobs/uploads/u-1"
        assert post.query == "_state=Zm9v%2Bbar%3D&digest=sha256%3Aabc"  # not re-quoted
        assert post.headers["user-agent"] == "ecrcopy"
        assert post.headers["accept-encoding"] == "identity"
        assert "content-type" not in post.headers  # aiohttp adds none of its own
        assert "cookie" not in post.headers
        assert put.headers["content-type"] == "application/json" and put.headers["content-length"] == "2"


async def test_streamed_bodies_with_and_without_length() -> None:
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


async def test_an_error_of_the_body_source_reaches_the_caller_as_itself() -> None:
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


async def test_a_server_that_stops_taking_the_body_is_a_write_timeout() -> None:
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


async def test_silence_is_a_read_timeout_and_a_closed_port_a_connect_error() -> None:
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


async def test_a_cut_body_and_a_malformed_answer_are_protocol_errors() -> None:
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


async def test_connections_are_reused_and_bounded() -> None:
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
    assert isinstance(default_transport(verify=tls_context(), limits=LIMITS), AiohttpTransport)
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert proxy_configured()
    assert default_transport(verify=tls_context(), limits=LIMITS) is None  # httpx's stack honours it
    assert proxy_configured({"ALL_PROXY": "socks5://p:1080"}) and not proxy_configured({"NO_PROXY": "*"})
