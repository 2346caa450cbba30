"""The gateway's outbound HTTP, on aiohttp: the session each client owns, whether a failed request
can have reached the server, and answers read up to a size limit.

A client owns one ClientSession, made on first use inside the running event loop (a session belongs
to the loop that made it) with a bounded pool of kept-alive connections, and closed by close().

Whether a failed request may be repeated depends on whether the server can have seen it. aiohttp's
exception types do not always say: a ServerTimeoutError or a plain TimeoutError comes from the
connect as well as from waiting for the answer. So each request carries an Attempt that a trace
marks once the request has its connection (new or kept-alive): a failure before that sent nothing;
from then on the request may have been written.

Answers are read through their decompression (aiohttp's, for gzip and deflate) and refused once
they pass the caller's limit, without reading the rest.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping, Optional

import aiohttp


class AnswerTooLarge(aiohttp.ClientPayloadError):
    """The answer's body, decompressed, is larger than the caller accepts."""


class Attempt:
    """One request's progress, recorded by the session's trace: whether it got a connection."""

    __slots__ = ("connected",)

    def __init__(self) -> None:
        self.connected = False


# raised before any byte of the request can have reached the server: no connection to it (refused,
# unreachable, DNS, TLS handshake or certificate, the proxy unreachable or refusing the tunnel)
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError, aiohttp.ServerFingerprintMismatch)


def may_have_been_sent(exc: BaseException, attempt: Attempt) -> bool:
    """Whether the server can have received the request that failed with `exc`."""
    if isinstance(exc, _NOT_SENT):
        return False
    return attempt.connected


async def _connected(_session: aiohttp.ClientSession, context: Any, _params: Any) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, Attempt):
        attempt.connected = True


def _trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_connected)
    trace.on_connection_reuseconn.append(_connected)
    return trace


class Sessions:
    """The ClientSession of one client object: `limit` connections at most, an idle one kept
    `keepalive_s`, a request given up after `timeout_s` unless it passes its own ClientTimeout; with
    `trust_env` the proxy variables (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) apply. Requests pass an
    Attempt as `trace_request_ctx` to learn whether they got a connection."""

    def __init__(self, *, limit: int, keepalive_s: float, timeout_s: float, trust_env: bool,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        self.limit = limit
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.trust_env = trust_env
        self.headers = dict(headers or {})
        self._session: Optional[aiohttp.ClientSession] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed and self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError("this client's session is in use by another event loop")
            # its loop has ended (a finished asyncio.run, a test's loop): its connections went with it
            old, self._session = self._session, None
            await old.close()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=self.keepalive_s),
                headers=self.headers, trust_env=self.trust_env, trace_configs=[_trace()],
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, decompressed; AnswerTooLarge (and the connection closed) past `limit` bytes."""
    if resp.content_length is not None and resp.content_length > limit and not resp.headers.get("Content-Encoding"):
        resp.close()
        raise AnswerTooLarge(f"answer of {resp.content_length} bytes, more than {limit}")
    body = bytearray()
    while True:
        chunk = await resp.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            resp.close()
            raise AnswerTooLarge(f"answer of more than {limit} bytes")


def text_of(body: bytes, charset: Optional[str]) -> str:
    """A body as text in the charset its answer named (UTF-8 when none, or one Python does not know)."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
