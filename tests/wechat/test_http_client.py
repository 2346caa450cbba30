"""The gateway's keep-alive HTTP client against real servers: an aiohttp application for well-formed
answers, a raw asyncio server for the answers aiohttp would never give."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import http.server
import ipaddress
import socket
import ssl
import struct
import threading
import time
from typing import Awaitable, Callable, List, Optional

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels.wechat.http_client import ConnectFailed, KeepAliveClient, RequestFailed
from tests.support import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- servers -------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def aiohttp_server(app: web.Application, ssl_context: Optional[ssl.SSLContext] = None):
    """Serves `app` on 127.0.0.1 at an ephemeral port; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio server that hands each connection to `handle(server, reader, writer)` and counts them."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.connections = 0
        self.requests: List[bytes] = []
        self._writers: List[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "RawServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.sleep(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handle(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> Optional[bytes]:
        """One whole request (head and Content-Length body), or None when the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def answering(*answers: bytes, then_close: bool = False) -> "Handler":
    """A handler that answers successive requests on a connection with `answers` (the last one
    repeated), keeping the connection open unless `then_close`."""
    async def handle(server, reader, writer):
        n = 0
        while await server.read_request(reader) is not None:
            writer.write(answers[min(n, len(answers) - 1)])
            await writer.drain()
            n += 1
            if then_close:
                return
    return handle


@pytest.fixture
async def client():
    c = KeepAliveClient(timeout_s=2.0)
    yield c
    await c.close()


def self_signed_certificate():
    """A certificate for localhost and 127.0.0.1 and its key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


# --- a request and its answer --------------------------------------------------------------------
async def test_a_json_post_arrives_as_sent_and_the_answer_is_readable(client):
    async def handle(server, reader, writer):
        await server.read_request(reader)
        answer = '{"ok": true, "n": "好"}'.encode()
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\n"
                     b"X-Trace: t-1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
        await writer.drain()

    body = '{"text": "你好"}'.encode()
    async with RawServer(handle) as server:
        resp = await client.request("POST", server.url + "relay/webhook", params={"token": "a b", "n": 1},
                                    body=body, headers={"Content-Type": "application/json", "X-Relay-Token": "s3"})
    [request] = server.requests
    head, _, sent_body = request.partition(b"\r\n\r\n")
    request_line, *header_lines = head.split(b"\r\n")
    assert request_line == b"POST /relay/webhook?token=a+b&n=1 HTTP/1.1"
    headers = [tuple(line.split(b": ", 1)) for line in header_lines]
    assert [v for k, v in headers if k.lower() == b"host"] == [b"127.0.0.1:%d" % server.port]
    assert (b"Content-Type", b"application/json") in headers and (b"X-Relay-Token", b"s3") in headers
    assert [v for k, v in headers if k.lower() == b"content-length"] == [str(len(body)).encode()]
    assert sent_body == body

    assert resp.status == 201
    assert resp.headers["x-trace"] == "t-1" and resp.headers["set-cookie"] == "a=1, b=2"
    assert resp.json() == {"ok": True, "n": "好"} and resp.text() == '{"ok": true, "n": "好"}'
    assert resp.body == '{"ok": true, "n": "好"}'.encode()


async def test_an_aiohttp_server_sees_the_method_path_query_headers_and_body(client):
    seen = []

    async def handler(request: web.Request):
        seen.append((request.method, request.path, dict(request.query), request.headers.getall("Host"),
                     request.headers.get("X-Relay-Token"), request.content_length, await request.read()))
        return web.json_response({"replies": [{"text": "收到"}]}, headers={"X-Served-By": "test"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with aiohttp_server(app) as port:
        resp = await client.request("POST", f"http://127.0.0.1:{port}/webhooks/rest", params={"q": "订单"},
                                    body=b'{"a": 1}', headers={"X-Relay-Token": "secret"})
    assert seen == [("POST", "/webhooks/rest", {"q": "订单"}, [f"127.0.0.1:{port}"], "secret", 8, b'{"a": 1}')]
    assert resp.status == 200 and resp.headers["x-served-by"] == "test"
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {"replies": [{"text": "收到"}]}


async def test_text_decodes_with_the_charset_the_server_names():
    answer = "你好".encode("gbk")
    async with RawServer(answering(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=GBK\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(answer) + answer)) as server:
        client = KeepAliveClient(timeout_s=2.0)
        resp = await client.request("GET", server.url)
        await client.close()
    assert resp.text() == "你好"


async def test_the_client_headers_are_sent_with_every_request():
    async with RawServer(answering(OK)) as server:
        client = KeepAliveClient(timeout_s=2.0, headers={"User-Agent": "siyu-gateway"})
        await client.request("GET", server.url)
        await client.request("GET", server.url, headers={"X-Other": "1"})
        await client.close()
    assert all(b"\r\nUser-Agent: siyu-gateway\r\n" in r for r in server.requests) and len(server.requests) == 2
    assert b"\r\nX-Other: 1\r\n" in server.requests[1] and b"X-Other" not in server.requests[0]


# --- keep-alive ------------------------------------------------------------------------------------
async def test_sequential_requests_share_one_connection(client):
    peers = []

    async def handler(request: web.Request):
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text=str(len(peers)))

    app = web.Application()
    app.router.add_get("/", handler)
    async with aiohttp_server(app) as port:
        answers = [(await client.request("GET", f"http://127.0.0.1:{port}/")).text() for _ in range(5)]
    assert answers == ["1", "2", "3", "4", "5"]
    assert len(set(peers)) == 1, f"5 requests used {len(set(peers))} connections"


@pytest.mark.parametrize("closing_answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nok",  # no length: the body runs to the close
], ids=["connection-close", "http-1.0", "read-to-close"])
async def test_an_answer_that_ends_the_connection_makes_the_next_request_open_a_new_one(client, closing_answer):
    async def handle(server, reader, writer):
        if await server.read_request(reader) is None:
            return
        if server.connections == 1:
            writer.write(closing_answer)
            await writer.drain()
            if b"Content-Length" not in closing_answer:
                return  # the close ends the body
            # a careless server keeps it open: the client must close it itself
            await reader.read()
            return
        writer.write(OK)
        await writer.drain()
        while await server.read_request(reader) is not None:
            writer.write(OK)

    async with RawServer(handle) as server:
        first = await client.request("GET", server.url)
        second = await client.request("GET", server.url)
        third = await client.request("GET", server.url)
    assert (first.status, first.body) == (200, b"ok") and second.body == b"ok" and third.body == b"ok"
    assert server.connections == 2


async def test_an_http_1_0_answer_with_keep_alive_keeps_the_connection(client):
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer(answering(answer)) as server:
        for _ in range(3):
            assert (await client.request("GET", server.url)).body == b"ok"
    assert server.connections == 1


async def test_an_idle_connection_older_than_keepalive_is_not_reused():
    client = KeepAliveClient(timeout_s=2.0, keepalive_s=0.2)
    async with RawServer(answering(OK)) as server:
        await client.request("GET", server.url)
        await asyncio.sleep(0.05)
        await client.request("GET", server.url)
        assert server.connections == 1
        await asyncio.sleep(0.3)
        assert (await client.request("GET", server.url)).body == b"ok"
        await client.close()
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused(client):
    async with RawServer(answering(OK, then_close=True)) as server:
        await client.request("GET", server.url)
        await asyncio.sleep(0.1)  # the FIN reaches the client
        resp = await client.request("GET", server.url)
    assert resp.body == b"ok" and server.connections == 2


@pytest.mark.parametrize("delay", [None, 0.05], ids=["with-the-answer", "while-idle"])
async def test_a_server_that_sends_more_than_the_answer_is_not_trusted_again(client, delay):
    # unasked bytes on a kept connection would be taken for the answer to the next request
    stale = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"

    async def handle(server, reader, writer):
        await server.read_request(reader)
        if server.connections > 1:
            writer.write(OK)
        elif delay is None:
            writer.write(OK + stale)
        else:
            writer.write(OK)
            await asyncio.sleep(delay)
            writer.write(stale)
        while await server.read_request(reader) is not None:
            writer.write(OK)

    async with RawServer(handle) as server:
        await client.request("GET", server.url)
        await asyncio.sleep(0.15)
        resp = await client.request("GET", server.url)
    assert resp.body == b"ok" and server.connections == 2


async def test_close_ends_the_idle_connections(client):
    closed = asyncio.Event()

    async def handle(server, reader, writer):
        while await server.read_request(reader) is not None:
            writer.write(OK)
        closed.set()

    async with RawServer(handle) as server:
        await client.request("GET", server.url)
        assert not closed.is_set()
        await client.close()
        await asyncio.wait_for(closed.wait(), 1.0)
        assert (await client.request("GET", server.url)).body == b"ok"
    assert server.connections == 2


def data_segments_received(sock: socket.socket) -> int:
    """Linux's count of the TCP segments with data that arrived on `sock` (tcp_info.tcpi_data_segs_in)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 156:
        pytest.skip("this kernel's tcp_info has no tcpi_data_segs_in")
    return struct.unpack_from("I", info, 152)[0]


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux's TCP_INFO")
async def test_a_request_is_written_in_one_piece(client):
    # asyncio sets TCP_NODELAY, so each write of the client is a segment of its own on the loopback
    segments = []

    async def handle(server, reader, writer):
        while await server.read_request(reader) is not None:
            segments.append(data_segments_received(writer.get_extra_info("socket")))
            writer.write(OK)

    body = b'{"text": "' + b"x" * 3000 + b'"}'
    async with RawServer(handle) as server:
        for _ in range(3):
            await client.request("POST", server.url, body=body, headers={"Content-Type": "application/json"})
    assert segments == [1, 2, 3], f"data segments received after each request: {segments}"


# --- bodies ---------------------------------------------------------------------------------------
async def test_a_chunked_body_written_in_pieces_with_a_trailer_is_read_whole(client):
    async def handle(server, reader, writer):
        while await server.read_request(reader) is not None:
            for piece in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"lo\r\n6;ext=1\r\n wor",
                          b"ld\r\n0\r\nX-Checksum: abc\r\n", b"\r\n"):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.02)

    async with RawServer(handle) as server:
        first = await client.request("GET", server.url)
        second = await client.request("GET", server.url)
    assert first.body == b"hello world" and second.body == b"hello world"
    # the trailer was consumed to its end: the connection was fit for the second request
    assert server.connections == 1


async def test_a_chunked_body_from_aiohttp_is_read_whole(client):
    async def handler(request: web.Request):
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await resp.write(part)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with aiohttp_server(app) as port:
        resp = await client.request("GET", f"http://127.0.0.1:{port}/")
    assert resp.headers["transfer-encoding"] == "chunked" and resp.body == b"one,two,three"


async def test_a_body_without_a_length_runs_to_the_close(client):
    async def handle(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"second part")

    async with RawServer(handle) as server:
        resp = await client.request("GET", server.url)
    assert resp.body == b"first part, second part"


async def test_a_204_answer_has_no_body_and_keeps_the_connection(client):
    peers = []

    async def handler(request: web.Request):
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", handler)
    async with aiohttp_server(app) as port:
        first = await client.request("POST", f"http://127.0.0.1:{port}/", body=b"{}", timeout_s=1.0)
        second = await client.request("POST", f"http://127.0.0.1:{port}/", body=b"{}", timeout_s=1.0)
    assert (first.status, first.body, second.status) == (204, b"", 204)
    assert len(set(peers)) == 1


async def test_a_gzip_body_the_client_did_not_ask_for_is_decoded(client):
    text = "订单已发货 ".encode() * 50
    packed = gzip.compress(text)
    async with RawServer(answering(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(packed) + packed)) as server:
        resp = await client.request("GET", server.url)
    assert b"\r\nAccept-Encoding: identity\r\n" in server.requests[0]
    assert resp.body == text


async def test_a_100_continue_before_the_answer_is_skipped(client):
    async def handle(server, reader, writer):
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")

    async with RawServer(handle) as server:
        first = await client.request("POST", server.url, body=b"x")
        second = await client.request("POST", server.url, body=b"x")
    assert (first.status, first.body) == (200, b"real") and (second.status, second.body) == (200, b"real")
    assert server.connections == 1


async def test_the_answer_to_head_has_no_body_whatever_its_content_length():
    async def handle(server, reader, writer):
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")

    client = KeepAliveClient(timeout_s=0.5)
    async with RawServer(handle) as server:
        try:
            resp = await client.request("HEAD", server.url)
        except asyncio.TimeoutError:
            pytest.fail("BUG: the answer to a HEAD request was awaited for a body of Content-Length bytes")
        finally:
            await client.close()
    assert (resp.status, resp.body, resp.headers["content-length"]) == (200, b"", "1234")


# --- errors ---------------------------------------------------------------------------------------
async def test_a_refused_connection_is_connect_failed(client):
    with pytest.raises(ConnectFailed):
        await client.request("POST", f"http://127.0.0.1:{free_port()}/", body=b"{}")


@pytest.mark.parametrize("answer", [
    pytest.param(b"", id="closes-without-answering"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", id="closes-mid-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", id="closes-mid-chunked-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Len", id="closes-mid-head"),
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="garbage-status-line"),
    pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="four-digit-status"),
    pytest.param(b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n", id="header-without-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", id="non-numeric-content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", id="bad-chunk-size"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nplain", id="gzip-that-is-not"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 5\r\n\r\nxxxxx", id="unknown-encoding"),
])
async def test_a_broken_answer_is_request_failed(client, answer):
    async with RawServer(answering(answer, then_close=True)) as server:
        with pytest.raises(RequestFailed):
            await client.request("POST", server.url, body=b"{}")
    assert len(server.requests) == 1, "the request went out"


async def test_bytes_before_the_request_are_request_failed(client):
    async def handle(server, reader, writer):
        writer.write(b"220 smtp.example ESMTP ready\r\n\r\n")
        while await server.read_request(reader) is not None:
            writer.write(OK)

    async with RawServer(handle) as server:
        with pytest.raises(RequestFailed):
            await client.request("GET", server.url)


async def test_a_read_to_close_body_cut_by_a_reset_is_request_failed(client):
    async def handle(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"replies\": [")
        await writer.drain()
        await asyncio.sleep(0.05)
        # SO_LINGER 0: the close is a reset, not the orderly end that would end the body
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with RawServer(handle) as server:
        try:
            resp = await client.request("GET", server.url)
        except RequestFailed:
            return
    pytest.fail(f"BUG: a body cut by a connection reset was returned as complete: {resp.body!r}")


@pytest.mark.parametrize("answer", [
    lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n,
    lambda n: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b"x" * 64
               + b"\r\n%x\r\n" % (n - 64) + b"x" * (n - 64) + b"\r\n0\r\n\r\n"),
    lambda n: b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * n,
], ids=["content-length", "chunked", "read-to-close"])
async def test_a_body_over_max_body_is_request_failed_and_one_at_the_limit_is_not(answer):
    client = KeepAliveClient(timeout_s=2.0, max_body=100)
    try:
        async with RawServer(answering(answer(101), then_close=True)) as server:
            with pytest.raises(RequestFailed, match="too large"):
                await client.request("GET", server.url)
        async with RawServer(answering(answer(100), then_close=True)) as server:
            assert (await client.request("GET", server.url)).body == b"x" * 100
    finally:
        await client.close()


async def test_a_chunk_declared_over_max_body_is_refused_before_it_arrives():
    async def handle(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n" + b"x" * 1000)
        await reader.read()  # the rest of the 64 GiB never comes

    client = KeepAliveClient(timeout_s=0.5, max_body=100)
    async with RawServer(handle) as server:
        try:
            with pytest.raises(RequestFailed, match="too large"):
                await client.request("GET", server.url)
        except asyncio.TimeoutError:
            pytest.fail("BUG: a chunk larger than max_body was buffered while it arrived instead of refused")
        finally:
            await client.close()


async def test_a_cancelled_request_closes_its_connection(client):
    abandoned = asyncio.Event()

    async def handle(server, reader, writer):
        await server.read_request(reader)
        if server.connections == 1:
            await reader.read()
            abandoned.set()
            return
        writer.write(OK)

    async with RawServer(handle) as server:
        task = asyncio.create_task(client.request("GET", server.url))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(abandoned.wait(), 1.0)
        assert (await client.request("GET", server.url)).body == b"ok"
    assert server.connections == 2


async def test_a_server_that_never_answers_times_out_and_the_client_goes_on():
    given_up = asyncio.Event()

    async def handle(server, reader, writer):
        await server.read_request(reader)
        if server.connections == 1:
            await reader.read()  # silent until the client gives up
            given_up.set()
            return
        writer.write(OK)
        while await server.read_request(reader) is not None:
            writer.write(OK)

    client = KeepAliveClient(timeout_s=5.0, limit=1)  # limit 1: the timed-out request must give its slot back
    async with RawServer(handle) as server:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await client.request("POST", server.url, body=b"{}", timeout_s=0.3)
        assert 0.25 < time.monotonic() - started < 1.0
        # the late answer would belong to nobody: the connection is closed, not kept or leaked
        await asyncio.wait_for(given_up.wait(), 1.0)
        assert (await client.request("POST", server.url, body=b"{}")).body == b"ok"
        await client.close()
    assert server.connections == 2


async def test_a_header_with_cr_or_lf_is_refused_before_anything_is_sent(client):
    async with RawServer(answering(OK)) as server:
        for headers in ({"X-Token": "a\r\nX-Injected: 1"}, {"X-Token": "a\nb"}, {"X-A\rB": "1"}):
            with pytest.raises(ValueError):
                await client.request("GET", server.url, headers=headers)
        with pytest.raises(ValueError):
            KeepAliveClient(timeout_s=1.0, headers={"User-Agent": "x\r\nEvil: 1"})
        await asyncio.sleep(0.05)
        assert server.connections == 0
        assert (await client.request("GET", server.url, headers={"X-Token": "fine"})).body == b"ok"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "127.0.0.1:8080/path", "http:///no-host",
                                 "file:///etc/passwd"])
async def test_a_url_that_is_not_http_is_value_error(client, url):
    with pytest.raises(ValueError):
        await client.request("GET", url)


# --- TLS ------------------------------------------------------------------------------------------
async def test_https_with_a_trusted_certificate_and_refused_without_it(tmp_path):
    cert_pem, key_pem = self_signed_certificate()
    (tmp_path / "cert.pem").write_text(cert_pem)
    (tmp_path / "key.pem").write_text(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def handler(request: web.Request):
        return web.json_response({"secure": request.secure, "body": (await request.read()).decode()})

    app = web.Application()
    app.router.add_post("/", handler)
    trusting = KeepAliveClient(timeout_s=2.0, ssl_context=ssl.create_default_context(cadata=cert_pem))
    default = KeepAliveClient(timeout_s=2.0)
    async with aiohttp_server(app, ssl_context=server_context) as port:
        try:
            first = await trusting.request("POST", f"https://localhost:{port}/", body=b"hi")
            second = await trusting.request("POST", f"https://127.0.0.1:{port}/", body=b"again")
            with pytest.raises(ConnectFailed):
                await default.request("POST", f"https://localhost:{port}/", body=b"hi")
        finally:
            await trusting.close()
            await default.close()
    assert first.json() == {"secure": True, "body": "hi"} and second.json() == {"secure": True, "body": "again"}


# --- concurrency and event loops ------------------------------------------------------------------
async def test_concurrent_requests_stay_within_the_connection_limit():
    peers = set()
    in_flight = [0, 0]  # now, most

    async def handler(request: web.Request):
        peers.add(request.transport.get_extra_info("peername"))
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.05)
        in_flight[0] -= 1
        return web.Response(text=request.query["i"])

    app = web.Application()
    app.router.add_get("/", handler)
    client = KeepAliveClient(timeout_s=3.0, limit=4)
    async with aiohttp_server(app) as port:
        answers = await asyncio.gather(*(client.request("GET", f"http://127.0.0.1:{port}/", params={"i": i})
                                         for i in range(20)))
        await client.close()
    assert [a.text() for a in answers] == [str(i) for i in range(20)]
    assert in_flight[1] == 4 and len(peers) == 4, (in_flight[1], len(peers))


def test_the_client_works_from_a_second_event_loop():
    connections = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    client = KeepAliveClient(timeout_s=1.0)
    try:
        # the first loop ends with a connection in the idle pool
        assert asyncio.run(client.request("GET", url)).body == b"ok"
        assert asyncio.run(client.request("GET", url)).body == b"ok"

        async def twice():
            await client.request("GET", url)
            await client.request("GET", url)
            await client.close()
        asyncio.run(twice())
    finally:
        server.shutdown()
        server.server_close()
    assert len(connections) == 3, "each loop opens its own connection and reuses it within the loop"
