"""The platform client (channels/wechat/outbound/platform.py) over real HTTP: against the sandbox for tokens,
retries and late answers; against raw servers for broken and oversized answers; through real
proxies for the proxy variables of the environment. What each failure tells the caller is the
point: nothing sent (retried), or maybe delivered (repeated only when the call is idempotent)."""
from __future__ import annotations

import asyncio
import gzip
import http.server
import logging
import socket
import struct
import threading
import time
from typing import Optional

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.wechat.config import AccountConfig, CallbackSecrets, KfConfig, WeChatConfig
from channels.wechat.outbound import errcodes as E
from channels.wechat.outbound.platform import MAX_ANSWER_BYTES, READ, PlatformClient, PlatformError, RetryPolicy
from channels.wechat.outbound.tokens import MemoryTokenCache
from channels.wechat.sandbox.app import PLATFORM, create_app
from channels.wechat.sandbox.config import SandboxConfig
from tests.support import free_port
from tests.wechat.http_servers import (
    ForwardProxy,
    RawServer,
    TunnelProxy,
    answering,
    json_answer,
    served,
    tls_server_context,
)
from tests.wechat.sandbox_helpers import sandbox_config

OK = json_answer(b'{"errcode": 0, "errmsg": "ok"}')
RETRY_3 = RetryPolicy(attempts=3, base_delay_s=0.01)  # not idempotent
RETRY_3_IDEMPOTENT = RetryPolicy(attempts=3, base_delay_s=0.01, idempotent=True)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def client_for(base: str, sandbox: Optional[SandboxConfig] = None, timeout_s: float = 2.0) -> PlatformClient:
    """A PlatformClient with the sandbox's credentials calling `base`."""
    c = sandbox or sandbox_config()
    config = WeChatConfig(work_api_base=base, mp_api_base=base, api_timeout_s=timeout_s,
                          kf=KfConfig(c.corp_id, c.kf_secret, CallbackSecrets(c.kf_token, c.kf_aes_key)),
                          mp=AccountConfig("mp", c.mp_app_id, c.mp_secret, CallbackSecrets(c.mp_token, None)))
    return PlatformClient(config, MemoryTokenCache())


@pytest.fixture
async def sandbox():
    server = TestServer(create_app(sandbox_config()))
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def no_proxy_variables(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def base_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def requests_to(server: TestServer, api: str):
    return [r for r in server.app[PLATFORM].requests if r["api"] == api]


async def robot_send(client: PlatformClient, policy: RetryPolicy):
    """A call without a token (the robot's key is in the URL): only the call under test reaches the server."""
    return await client.robot_send("robot-key", "text", {"content": "在吗"}, policy=policy)


# --- the sandbox: tokens, retries, late answers --------------------------------------------------
async def test_a_rejected_token_is_refreshed_once_per_rejection(sandbox):
    platform = sandbox.app[PLATFORM]
    client = client_for(base_of(sandbox), platform.config)
    try:
        open_kfid = platform.config.open_kfid
        assert (await client.kf_sync_msg(open_kfid, "", None))["errcode"] == 0
        platform.expire_tokens()
        assert (await client.kf_sync_msg(open_kfid, "", None))["errcode"] == 0
        assert len(requests_to(sandbox, "gettoken")) == 2, "one fetch, one refresh after 42001"
        platform.add_fault("kf/sync_msg", "errcode", times=2, errcode=E.INVALID_ACCESS_TOKEN)
        with pytest.raises(PlatformError) as rejected:
            await client.kf_sync_msg(open_kfid, "", None)
        assert rejected.value.kind == "token" and rejected.value.errcode == E.INVALID_ACCESS_TOKEN
        assert len(requests_to(sandbox, "gettoken")) == 3, "the refreshed token rejected too: raised, not looped"
    finally:
        await client.close()


async def test_5xx_is_retried_within_the_policy(sandbox):
    platform = sandbox.app[PLATFORM]
    client = client_for(base_of(sandbox), platform.config)
    try:
        platform.add_fault("kf/sync_msg", "http_500", times=2)
        assert (await client.kf_sync_msg(platform.config.open_kfid, "", None))["errcode"] == 0
        platform.add_fault("kf/sync_msg", "http_500", times=3)
        with pytest.raises(PlatformError) as failed:
            await client.kf_sync_msg(platform.config.open_kfid, "", None)
        assert failed.value.kind == "transient" and failed.value.errmsg == "HTTP 500"
        assert not failed.value.maybe_delivered
        assert all(f["times"] == 0 for f in platform.faults), f"{READ.attempts} attempts each"
    finally:
        await client.close()


async def test_an_answer_later_than_the_timeout_may_have_delivered_the_call(sandbox):
    platform = sandbox.app[PLATFORM]
    client = client_for(base_of(sandbox), platform.config, timeout_s=0.3)
    try:
        platform.user_acted("mp", "oLate")
        await client.tokens.get(client.source("mp"))
        platform.add_fault("message/custom/send", "delay_after", delay_s=1.0)
        started = time.monotonic()
        with pytest.raises(PlatformError) as late:
            await client.custom_send("mp", "oLate", "text", {"content": "到了吗"}, policy=RETRY_3)
        assert time.monotonic() - started < 0.9, "given up at the timeout, not at the answer"
        assert late.value.kind == "network" and late.value.maybe_delivered
        assert len(platform.deliveries) == 1 and len(requests_to(sandbox, "message/custom/send")) == 1, \
            "a send that may have been delivered is not repeated"

        # an idempotent call is repeated: the second attempt is answered in time
        platform.add_fault("kf/sync_msg", "delay_after", delay_s=1.0)
        assert (await client.kf_sync_msg(platform.config.open_kfid, "", None))["errcode"] == 0
        assert len(requests_to(sandbox, "kf/sync_msg")) == 2
    finally:
        await client.close()


# --- nothing sent: retried, whatever the call -------------------------------------------------------
async def test_a_refused_connection_was_not_sent_and_is_retried(no_proxy_variables, caplog):
    client = client_for(f"http://127.0.0.1:{free_port()}")
    try:
        with caplog.at_level(logging.WARNING, logger="channels.wechat.outbound.platform"):
            with pytest.raises(PlatformError) as refused:
                await robot_send(client, RETRY_3)
        assert refused.value.kind == "network" and not refused.value.maybe_delivered
        assert refused.value.errmsg == "ClientConnectorError"
        assert [r.getMessage() for r in caplog.records] == ["platform unreachable"] * 3
    finally:
        await client.close()


async def test_an_unreachable_proxy_means_not_sent(no_proxy_variables, caplog):
    no_proxy_variables.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    async with RawServer(answering(OK)) as platform:
        client = client_for(platform.url)
        try:
            with caplog.at_level(logging.WARNING, logger="channels.wechat.outbound.platform"):
                with pytest.raises(PlatformError) as refused:
                    await robot_send(client, RETRY_3)
        finally:
            await client.close()
    assert refused.value.errmsg == "ClientProxyConnectionError" and not refused.value.maybe_delivered
    assert len(caplog.records) == 3 and platform.requests == []


async def test_a_proxy_that_never_opens_the_tunnel_times_out_as_not_sent(no_proxy_variables, caplog):
    # the TCP connection to the proxy is made, the one to the platform never is
    async with TunnelProxy(silent=True) as proxy:
        no_proxy_variables.setenv("HTTPS_PROXY", proxy.url)
        client = client_for("https://qyapi.example.invalid", timeout_s=0.3)
        try:
            with caplog.at_level(logging.WARNING, logger="channels.wechat.outbound.platform"):
                with pytest.raises(PlatformError) as hung:
                    await robot_send(client, RETRY_3)
        finally:
            await client.close()
    assert hung.value.kind == "network" and not hung.value.maybe_delivered
    assert proxy.lines == ["CONNECT qyapi.example.invalid:443 HTTP/1.1"] * 3


# --- maybe delivered: repeated only when idempotent -----------------------------------------------
async def _reset_after_the_request(server, reader, writer):
    await server.read_request(reader)
    # SO_LINGER 0: the close is a reset, not an orderly end
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _stall_in_the_body(server, reader, writer):
    await server.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"errcode\":")
    await reader.read()


@pytest.mark.parametrize("handle", [
    pytest.param(answering(b"", then_close=True), id="closed-without-an-answer"),
    pytest.param(_reset_after_the_request, id="reset-after-the-request"),
    pytest.param(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"errcode\"", then_close=True),
                 id="closed-mid-body"),
    pytest.param(answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"err\r\n", then_close=True),
                 id="closed-mid-chunked-body"),
    pytest.param(answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", then_close=True), id="not-http"),
    pytest.param(answering(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nplain"),
                 id="gzip-that-is-not"),
    pytest.param(_stall_in_the_body, id="body-stalls-past-the-timeout"),
])
@pytest.mark.parametrize("policy", [RETRY_3, RETRY_3_IDEMPOTENT], ids=["send", "idempotent"])
async def test_a_call_broken_after_it_was_sent_may_have_been_delivered(no_proxy_variables, handle, policy):
    async with RawServer(handle) as server:
        client = client_for(server.url, timeout_s=0.5)
        try:
            with pytest.raises(PlatformError) as broken:
                await robot_send(client, policy)
        finally:
            await client.close()
    assert broken.value.kind == "network" and broken.value.maybe_delivered, broken.value.errmsg
    assert len(server.requests) == (3 if policy.idempotent else 1)


async def test_a_redirect_is_not_followed(no_proxy_variables):
    async with RawServer(answering(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\n"
                                   b"Content-Length: 0\r\n\r\n")) as server:
        client = client_for(server.url)
        try:
            with pytest.raises(PlatformError) as redirected:
                await robot_send(client, RETRY_3)
        finally:
            await client.close()
    assert (redirected.value.kind, redirected.value.errmsg) == ("permanent", "HTTP 307")
    assert len(server.requests) == 1


# --- the answer's size, counted after decompression -------------------------------------------------
def padded_answer(size: int) -> bytes:
    """A platform answer of exactly `size` bytes."""
    head = b'{"errcode": 0, "errmsg": "ok", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "identity"])
async def test_an_answer_over_the_limit_is_refused_and_one_at_the_limit_is_read(no_proxy_variables, compressed):
    async def handler(request: web.Request) -> web.Response:
        body = padded_answer(int(request.query["size"]))
        if compressed:
            return web.Response(body=gzip.compress(body), headers={"Content-Type": "application/json",
                                                                   "Content-Encoding": "gzip"})
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/cgi-bin/webhook/send", handler)
    async with served(app) as port:
        client = client_for(f"http://127.0.0.1:{port}")
        try:
            at_limit = await client.call("webhook/send", "POST", client.config.work_api_base + "/cgi-bin/webhook/send",
                                         params={"size": MAX_ANSWER_BYTES}, body={}, policy=RETRY_3)
            with pytest.raises(PlatformError) as over:
                await client.call("webhook/send", "POST", client.config.work_api_base + "/cgi-bin/webhook/send",
                                  params={"size": MAX_ANSWER_BYTES + 1}, body={}, policy=RETRY_3)
        finally:
            await client.close()
    assert at_limit["errcode"] == 0 and len(at_limit["pad"]) > MAX_ANSWER_BYTES - 100
    assert over.value.errmsg == "AnswerTooLarge" and over.value.kind == "network" and over.value.maybe_delivered
    if compressed:
        assert len(gzip.compress(padded_answer(MAX_ANSWER_BYTES + 1))) < 10_000, "the limit is on the decompressed size"


async def test_an_endless_answer_is_refused_at_the_limit_not_read_to_its_end(no_proxy_variables):
    async def endless(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        while True:  # until the client hangs up
            writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await writer.drain()

    async with RawServer(endless) as server:
        client = client_for(server.url, timeout_s=10.0)
        started = time.monotonic()
        try:
            with pytest.raises(PlatformError) as endless_answer:
                await robot_send(client, RETRY_3)
        finally:
            await client.close()
    assert endless_answer.value.errmsg == "AnswerTooLarge" and endless_answer.value.maybe_delivered
    assert time.monotonic() - started < 5.0, "refused at the limit, not read on until the timeout"


# --- connections --------------------------------------------------------------------------------------
async def test_calls_share_a_kept_alive_connection_and_close_ends_it(no_proxy_variables):
    async with RawServer(answering(OK)) as server:
        client = client_for(server.url)
        for _ in range(5):
            assert (await robot_send(client, RETRY_3))["errcode"] == 0
        assert server.connections == 1
        await client.close()
        await asyncio.wait_for(server.closed_by_client.wait(), 2.0)
        assert (await robot_send(client, RETRY_3))["errcode"] == 0, "a closed client opens a new session when used"
        await client.close()
    assert server.connections == 2 and len(server.requests) == 6


def test_the_client_works_from_one_event_loop_after_another(no_proxy_variables):
    connections = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"errcode": 0}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = client_for(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        # the first loop ends with its session open: the next loop makes its own
        assert asyncio.run(robot_send(client, RETRY_3))["errcode"] == 0

        async def twice_then_close():
            await robot_send(client, RETRY_3)
            await robot_send(client, RETRY_3)
            await client.close()
        asyncio.run(twice_then_close())
    finally:
        server.shutdown()
        server.server_close()
    assert len(connections) == 2, "each loop opens its own connection and keeps it alive"


# --- the proxy of the environment ----------------------------------------------------------------------
async def test_platform_calls_go_through_the_configured_http_proxy(sandbox, no_proxy_variables):
    platform = sandbox.app[PLATFORM]
    async with ForwardProxy() as proxy:
        no_proxy_variables.setenv("HTTP_PROXY", proxy.url)
        client = client_for(base_of(sandbox), platform.config)
        try:
            answer = await client.kf_sync_msg(platform.config.open_kfid, "", None)
        finally:
            await client.close()
    assert answer["errcode"] == 0
    origin = base_of(sandbox)
    assert [line.split("?")[0] for line in proxy.lines] == [f"GET {origin}/cgi-bin/gettoken",
                                                            f"POST {origin}/cgi-bin/kf/sync_msg"]
    assert len(requests_to(sandbox, "kf/sync_msg")) == 1


async def test_no_proxy_exempts_a_host(sandbox, no_proxy_variables):
    platform = sandbox.app[PLATFORM]
    async with ForwardProxy() as proxy:
        no_proxy_variables.setenv("HTTP_PROXY", proxy.url)
        no_proxy_variables.setenv("NO_PROXY", "127.0.0.1")
        client = client_for(base_of(sandbox), platform.config)
        try:
            assert (await client.kf_sync_msg(platform.config.open_kfid, "", None))["errcode"] == 0
        finally:
            await client.close()
    assert proxy.lines == []


async def test_https_calls_tunnel_through_the_configured_proxy_and_verify_the_platform(no_proxy_variables, tmp_path):
    """HTTPS_PROXY: the proxy only opens a tunnel; TLS runs end to end with the platform, whose
    certificate must be trusted (this one is self-signed: refused, and nothing was sent)."""
    seen = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"errcode": 0})

    app = web.Application()
    app.router.add_post("/cgi-bin/webhook/send", handler)
    async with served(app, ssl_context=tls_server_context(tmp_path)) as port, TunnelProxy() as proxy:
        no_proxy_variables.setenv("HTTPS_PROXY", proxy.url)
        client = client_for(f"https://localhost:{port}")
        try:
            with pytest.raises(PlatformError) as untrusted:
                await robot_send(client, RetryPolicy(attempts=1))
        finally:
            await client.close()
    assert proxy.lines == [f"CONNECT localhost:{port} HTTP/1.1"]
    assert untrusted.value.errmsg == "ClientConnectorCertificateError" and not untrusted.value.maybe_delivered
    assert seen == []
