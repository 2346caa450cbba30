"""Real local servers for the tests of the gateway's HTTP clients: an aiohttp app on a free port,
a raw asyncio server for answers no well-behaved server gives, an HTTP forward proxy and a CONNECT
tunnel proxy that record what they were asked, and a self-signed TLS certificate."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from typing import Awaitable, Callable, List, Optional

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@contextlib.asynccontextmanager
async def served(app: web.Application, ssl_context: Optional[ssl.SSLContext] = None):
    """Serves `app` on 127.0.0.1 at a free port; yields the port."""
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
    """An asyncio server that hands each connection to `handle(server, reader, writer)`, counting
    connections and keeping the requests it read."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.connections = 0
        self.requests: List[bytes] = []
        self.closed_by_client = asyncio.Event()
        self._writers: List[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "RawServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()

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
        """One whole request (head and Content-Length body); None once the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def answering(answer: bytes, then_close: bool = False) -> Handler:
    """A handler that answers every request on a connection with `answer`."""
    async def handle(server: RawServer, reader, writer):
        while await server.read_request(reader) is not None:
            writer.write(answer)
            await writer.drain()
            if then_close:
                return
    return handle


def json_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body


class ForwardProxy:
    """An HTTP forward proxy: records each request line's method and target (absolute-form, as a
    client configured with HTTP_PROXY sends it) and forwards the request to that target."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    async def __aenter__(self) -> "ForwardProxy":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._served = served(app)
        self.port = await self._served.__aenter__()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._served.__aexit__(*exc)

    async def _forward(self, request: web.Request) -> web.Response:
        self.lines.append(f"{request.method} {request.raw_path}")
        headers = {k: v for k, v in request.headers.items() if k.lower() == "content-type"}
        async with aiohttp.ClientSession(trust_env=False) as session:
            async with session.request(request.method, request.url, data=await request.read(), headers=headers,
                                       allow_redirects=False) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    headers={"Content-Type": answer.headers.get("Content-Type", "text/plain")})


class TunnelProxy:
    """An HTTPS proxy: records each CONNECT line, opens the tunnel and carries the bytes both ways
    without reading them. `silent`: it takes the connection and never answers the CONNECT."""

    def __init__(self, silent: bool = False) -> None:
        self.silent = silent
        self.lines: List[str] = []
        self._writers: List[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "TunnelProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.lines.append(line)
            if self.silent:
                await reader.read()
                return
            host, _, port = line.split(" ")[1].rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self._writers.append(up_writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def tls_server_context(tmp_path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for localhost and 127.0.0.1 (trusted by no client)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context
