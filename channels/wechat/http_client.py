"""A keep-alive HTTP/1.1 client for the gateway's outbound calls: the relay to the Rasa server and
the platform's APIs (HTTPS in production, the sandbox over HTTP).

Why not aiohttp's ClientSession: every message costs the gateway two or three such calls, and a
ClientSession request took 300 µs of CPU against 75 µs here (uvloop, the same small JSON POST; the
figure is in docs/BENCHMARKS.md). Its tracing, cookie and redirect machinery is not needed by a
client of two known services, and it writes a request's headers and body in two system calls. Here a
request is one write and its response is parsed as it arrives, in the connection's protocol.

What it does: HTTP/1.1 with keep-alive (one idle pool per origin, most recently used first, an idle
connection kept at most `keepalive_s`), bodies by Content-Length, chunked or up to the close, gzip
or deflate if a server sends them unasked, TLS with the system's verified default context, one
deadline per request, a response size limit. No redirects, cookies, proxies or pipelining.

Errors say whether the server can have seen the request, which decides whether it may be repeated:
ConnectFailed (no connection was made: nothing was sent) and RequestFailed (the connection broke,
or the answer was not HTTP, after the request went out); a deadline passed after sending raises
asyncio.TimeoutError, one passed while connecting ConnectFailed.
"""
from __future__ import annotations

import asyncio
import json
import ssl as ssl_module
import time
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlencode, urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
_URLS_KEPT = 256


class HttpError(Exception):
    pass


class ConnectFailed(HttpError):
    """No connection could be made (refused, unknown host, TLS handshake, deadline): nothing was sent."""


class RequestFailed(HttpError):
    """The request went out (or may have) and no proper answer came: the connection broke, or the
    answer was not HTTP or was too large."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Dict[str, str]  # names in lower case; repeated headers joined with ", "
    body: bytes

    def text(self) -> str:
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    host_header: bytes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the parse of the response to its current request."""

    def __init__(self, max_body: int) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.closed = False
        self.idle_since = 0.0
        self._max_body = max_body
        self._buffer = bytearray()
        self._waiter: Optional[asyncio.Future] = None
        self._eof = False
        self._bodiless = False  # the answer to a HEAD request: no body, whatever its headers say
        self._reset_parse()

    def _reset_parse(self) -> None:
        self._status: Optional[int] = None
        self._version = b""
        self._headers: Dict[str, str] = {}
        self._body_at = 0  # where the body starts in the buffer
        self._length: Optional[int] = None  # Content-Length; None: chunked or up to the close
        self._chunked = False
        self._chunks: List[bytes] = []
        self._chunk_at = 0  # the parse position in a chunked body
        self._body_size = 0

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None:
            # nothing was asked: a server that talks out of turn cannot be trusted with the next request
            self._close()
            return
        self._advance()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiter is not None:
            self._advance()
        return False  # close the transport

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if exc is None:  # an orderly close may end a body that runs to it; a reset never does
                self._eof = True
                self._advance()
            if not self._waiter.done():
                self._waiter.set_exception(RequestFailed(
                    f"connection closed before the answer was complete ({type(exc).__name__ if exc else 'closed'})"))

    # --- a request ---------------------------------------------------------------------------------
    async def exchange(self, request: bytes) -> Tuple[Response, bool]:
        """Sends the request; its response and whether the connection may be used again."""
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._buffer.clear()
        self._eof = False
        self._bodiless = request.startswith(b"HEAD ")
        self._reset_parse()
        try:
            self.transport.write(request)
            return await self._waiter
        finally:
            self._waiter = None

    def _fail(self, reason: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(RequestFailed(reason))
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _advance(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            outcome = self._parse()
        except RequestFailed as exc:
            self._fail(str(exc))
            return
        if outcome is not None:
            waiter.set_result(outcome)

    def _parse(self) -> Optional[Tuple[Response, bool]]:
        buffer = self._buffer
        while self._status is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise RequestFailed("response head too large")
                if self._eof:
                    raise RequestFailed("connection closed before the response head" if buffer
                                        else "connection closed without an answer")
                return None
            self._read_head(bytes(buffer[:end]))
            self._body_at = end + 4
            if self._status is not None and 100 <= self._status < 200:
                # an interim answer (100 Continue, 103 Early Hints): the real one follows
                del buffer[:self._body_at]
                self._reset_parse()
        if self._chunked:
            body = self._parse_chunked()
            if body is None:
                return None
            rest = len(buffer) - self._chunk_at
        elif self._length is not None:
            if len(buffer) - self._body_at < self._length:
                if self._eof:
                    raise RequestFailed("connection closed in the middle of the body")
                return None
            body = bytes(buffer[self._body_at:self._body_at + self._length])
            rest = len(buffer) - self._body_at - self._length
        else:  # the body runs to the close
            if len(buffer) - self._body_at > self._max_body:
                raise RequestFailed("response body too large")
            if not self._eof:
                return None
            body = bytes(buffer[self._body_at:])
            rest = 0
        reusable = self._keep_alive() and rest == 0 and not self._eof and (self._chunked or self._length is not None)
        return Response(self._status, self._headers, _decoded(body, self._headers.get("content-encoding", ""))), reusable

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
            raise RequestFailed(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise RequestFailed(f"malformed response header: {line[:60]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._version, self._status, self._headers = parts[0], int(parts[1]), headers
        if self._bodiless or self._status in (204, 304):
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
            self._chunk_at = 0
        elif "content-length" in headers:
            value = headers["content-length"].split(",")[0].strip()
            if not value.isdigit():
                raise RequestFailed(f"bad Content-Length: {headers['content-length'][:40]!r}")
            self._length = int(value)
            if self._length > self._max_body:
                raise RequestFailed("response body too large")

    def _parse_chunked(self) -> Optional[bytes]:
        buffer = self._buffer
        at = self._chunk_at or self._body_at
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return self._need_more(len(buffer) - at > 1024)
            size_text = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise RequestFailed(f"bad chunk size {size_text[:20]!r}") from None
            if self._body_size + size > self._max_body:  # refused before it arrives, not after
                raise RequestFailed("response body too large")
            if size == 0:
                # the trailer: header lines up to an empty line
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return self._need_more(len(buffer) - line_end > MAX_HEAD_BYTES)
                self._chunk_at = trailer_end + 4
                return b"".join(self._chunks)
            if len(buffer) < line_end + 2 + size + 2:
                self._chunk_at = at
                return self._need_more(False)
            if buffer[line_end + 2 + size:line_end + 4 + size] != b"\r\n":
                raise RequestFailed("chunk not followed by CRLF")
            self._chunks.append(bytes(buffer[line_end + 2:line_end + 2 + size]))
            self._body_size += size
            at = line_end + 4 + size
            self._chunk_at = at

    def _need_more(self, malformed: bool) -> None:
        if malformed:
            raise RequestFailed("malformed chunked body")
        if self._eof:
            raise RequestFailed("connection closed in the middle of the body")
        return None

    def _keep_alive(self) -> bool:
        connection = self._headers.get("connection", "").lower()
        if self._version == b"HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def _decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if not body or encoding in ("", "identity"):
        return body
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:  # raw deflate, as some servers send it
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise RequestFailed(f"undecodable {encoding} body: {exc}") from None
    raise RequestFailed(f"unsupported Content-Encoding {encoding!r}")


def _check_header_text(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError("a header name or value may not contain CR or LF")
    return text


class KeepAliveClient:
    """requests over kept-alive connections; see the module's docstring."""

    def __init__(self, *, timeout_s: float, keepalive_s: float = 15.0, limit: int = 100,
                 headers: Optional[Mapping[str, str]] = None, max_body: int = MAX_BODY_BYTES,
                 ssl_context: Optional[ssl_module.SSLContext] = None) -> None:
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.limit = limit
        self.max_body = max_body
        self._ssl = ssl_context
        self._headers = b"".join(f"{_check_header_text(k)}: {_check_header_text(v)}\r\n".encode("latin-1")
                                 for k, v in (headers or {}).items())
        self._idle: Dict[_Origin, List[_Connection]] = {}
        self._slots: Optional[asyncio.Semaphore] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._urls: Dict[str, Tuple[_Origin, str]] = {}

    # --- the pool ----------------------------------------------------------------------------------
    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # connections belong to the loop that made them (a test's loop, a restarted server's):
            # a new loop starts with none
            for idle in self._idle.values():
                for conn in idle:
                    try:
                        conn.abort()
                    except RuntimeError:  # its loop is closed; the socket goes with the transport
                        pass
            self._loop, self._idle = loop, {}
            self._slots = asyncio.Semaphore(self.limit)

    def _taken_idle(self, origin: _Origin) -> Optional[_Connection]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            self._forget(conn)
        return None

    @staticmethod
    def _forget(conn: _Connection) -> None:
        if not conn.closed:
            conn.abort()

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        ssl: Any = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl_module.create_default_context()
            ssl = self._ssl
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self.max_body), origin.host, origin.port,
                                                   ssl=ssl, server_hostname=origin.host if ssl else None)
        except (OSError, ssl_module.SSLError) as exc:
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {type(exc).__name__}: {exc}") from exc
        return conn

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle = {}

    # --- requests ----------------------------------------------------------------------------------
    def _target(self, url: str) -> Tuple[_Origin, str]:
        known = self._urls.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url[:80]!r}")
        default_port = 443 if parts.scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        shown = f"[{host}]".encode("ascii") if ":" in host else host.encode("idna")
        host_header = shown if port == default_port else shown + b":%d" % port
        path = _check_header_text(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if " " in path:
            raise ValueError("a URL path may not contain spaces")
        known = (_Origin(parts.scheme, host, port, host_header), path)
        if len(self._urls) >= _URLS_KEPT:
            self._urls.clear()
        self._urls[url] = known
        return known

    def _request_bytes(self, method: str, origin: _Origin, path: str, params: Optional[Mapping[str, Any]],
                       body: Optional[bytes], headers: Optional[Mapping[str, str]]) -> bytes:
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), b"Host: ", origin.host_header,
                b"\r\nAccept-Encoding: identity\r\n", self._headers]
        if headers:
            head.append(b"".join(f"{_check_header_text(k)}: {_check_header_text(v)}\r\n".encode("latin-1")
                                 for k, v in headers.items()))
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d\r\n" % len(body or b""))
        head.append(b"\r\n")
        if body:
            head.append(body)
        return b"".join(head)

    async def request(self, method: str, url: str, *, params: Optional[Mapping[str, Any]] = None,
                      body: Optional[bytes] = None, headers: Optional[Mapping[str, str]] = None,
                      timeout_s: Optional[float] = None) -> Response:
        self._bind_loop()
        origin, path = self._target(url)
        request = self._request_bytes(method, origin, path, params, body, headers)
        assert self._slots is not None
        sent = False
        conn: Optional[_Connection] = None
        try:
            async with asyncio.timeout(timeout_s if timeout_s is not None else self.timeout_s):
                async with self._slots:
                    conn = self._taken_idle(origin)
                    if conn is None:
                        conn = await self._connect(origin)
                    sent = True
                    response, reusable = await conn.exchange(request)
        except TimeoutError:
            if conn is not None:
                self._forget(conn)
            if not sent:
                raise ConnectFailed(f"no connection to {origin.host}:{origin.port} within the deadline") from None
            raise asyncio.TimeoutError() from None
        except BaseException:
            if conn is not None:
                self._forget(conn)  # broken, or cancelled mid-answer: its next bytes belong to nobody
            raise
        if reusable and not conn.closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
        else:
            self._forget(conn)
        return response
