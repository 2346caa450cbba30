"""The gateway's relay client (channels/wechat/conversation/relay_client.py) over real HTTP against small local
servers: a turn Rasa has not seen is asked again while the wait lasts; a turn that went out and
was not answered properly is never repeated; proxy variables do not apply to the local relay."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.settings import get_settings
from channels.wechat.conversation.relay_client import PATH, RasaNotReady, RelayClient, RelayFailed
from channels.wechat.relay import TOKEN_HEADER
from tests.support import free_port
from tests.wechat.http_servers import ForwardProxy, RawServer, answering, served

TURN = {"conversation_id": "mp:oRelay", "channel": "mp", "text": "我的订单到哪了", "message_id": "mp-1"}
SECRET = "relay-client-secret"


def relay_client(base: str, timeout_s: float = 2.0, ready_wait_s: float = 0.6) -> RelayClient:
    settings = get_settings().model_copy(update={"wechat_relay_secret": SecretStr(SECRET),
                                                 "wechat_relay_timeout_s": timeout_s})
    client = RelayClient(settings, ready_wait_s=ready_wait_s)
    client.url = base + PATH
    return client


def relay_app(handler) -> web.Application:
    app = web.Application()
    app.router.add_post(PATH, handler)
    return app


async def test_a_relay_still_loading_is_asked_again_until_it_answers():
    seen = []

    async def loading_then_ready(request: web.Request) -> web.Response:
        seen.append((request.headers.get(TOKEN_HEADER), await request.json()))
        if len(seen) < 3:
            return web.Response(status=503, text="loading")
        return web.json_response({"replies": [{"text": "收到"}]})

    async with served(relay_app(loading_then_ready)) as port:
        client = relay_client(f"http://127.0.0.1:{port}", ready_wait_s=10.0)
        try:
            assert await client.answer(TURN) == [{"text": "收到"}]
        finally:
            await client.close()
    assert seen == [(SECRET, TURN)] * 3


async def test_an_unreachable_relay_is_tried_until_the_wait_ends():
    client = relay_client(f"http://127.0.0.1:{free_port()}", ready_wait_s=0.6)
    try:
        with pytest.raises(RasaNotReady, match="unreachable"):
            await client.answer(TURN)
    finally:
        await client.close()


@pytest.mark.parametrize("handle", [
    pytest.param(answering(b"", then_close=True), id="closed-without-an-answer"),
    pytest.param(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{\"replies\"", then_close=True),
                 id="closed-mid-body"),
])
async def test_a_turn_whose_connection_broke_after_sending_is_not_repeated(handle):
    async with RawServer(handle) as server:
        client = relay_client(server.url, ready_wait_s=10.0)
        try:
            with pytest.raises(RelayFailed):
                await client.answer(TURN)
        finally:
            await client.close()
    assert len(server.requests) == 1


async def test_a_turn_not_answered_in_time_is_not_repeated():
    async def silent(server, reader, writer):
        await server.read_request(reader)
        await reader.read()  # until the client hangs up
        server.closed_by_client.set()

    async with RawServer(silent) as server:
        client = relay_client(server.url, timeout_s=0.3, ready_wait_s=10.0)
        try:
            with pytest.raises(RelayFailed, match="TimeoutError"):
                await client.answer(TURN)
            # the late answer would belong to nobody: the connection is closed, not kept
            await asyncio.wait_for(server.closed_by_client.wait(), 5.0)
        finally:
            await client.close()
    assert len(server.requests) == 1


async def test_the_relay_is_called_directly_whatever_the_proxy_variables(monkeypatch):
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"replies": [{"text": "直连"}]})

    async with served(relay_app(answer)) as port, ForwardProxy() as proxy:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        client = relay_client(f"http://127.0.0.1:{port}")
        try:
            assert await client.answer(TURN) == [{"text": "直连"}]
        finally:
            await client.close()
    assert proxy.lines == []
