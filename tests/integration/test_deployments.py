"""Deployment variants of the real product: PostgreSQL + Redis with two Rasa workers, and the web
IM channel's push (callback) mode."""
from __future__ import annotations

import asyncio
import threading
import uuid

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import (
    Product,
    _create_pg_database,
    _drop_pg_database,
    free_port,
    port_open,
    product_env,
    seed,
    unavailable,
)
from tests.support import signed

pytestmark = pytest.mark.model


class CallbackReceiver:
    """The shop's endpoint that receives pushed replies (runs in its own thread and loop)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        async def handler(request):
            self.received.extend(await request.json())
            return web.json_response({"ok": True})

        async def main():
            app = web.Application()
            app.router.add_post("/callback", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            while True:
                await asyncio.sleep(3600)

        asyncio.run(main())

    def start(self) -> "CallbackReceiver":
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"


async def post(base_url, body):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/webhooks/im/webhook", json={**body, **signed(body["sender"])},
                             timeout=aiohttp.ClientTimeout(total=30)) as resp:
            return resp.status, await resp.json()


@pytest.fixture(scope="module")
def scaled_product(trained_model, tmp_path_factory):
    if not port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    if not port_open("127.0.0.1", 6379):
        unavailable("Redis is not reachable on 127.0.0.1:6379")
    receiver = CallbackReceiver().start()
    url = _create_pg_database()
    var_dir = tmp_path_factory.mktemp("scaled")
    try:
        seed(url)
        env = product_env(url, var_dir, redis_url="redis://127.0.0.1:6379/13", workers=2)
        env["SIYU_IM_CALLBACK_URL"] = receiver.url
        product = Product(env, var_dir / "product.log")
        product.start()
        product.receiver = receiver
        try:
            yield product
        finally:
            assert product.stop() == 0, "the product did not stop cleanly on Ctrl-C"
    finally:
        _drop_pg_database(url)


async def test_two_workers_on_postgres_and_redis_keep_one_conversation_consistent(scaled_product):
    for _ in range(120):  # the second worker may still be loading the model when the first answers
        log = scaled_product.log.read_text(errors="replace")
        if log.count("redis lock store on redis://127.0.0.1:6379/13") >= 2:  # one per worker
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("two Rasa workers with the Redis lock store did not both start")
    sender = f"w{uuid.uuid4().hex[:6]}"
    # concurrent messages of one conversation land on both workers; the Redis lock serialises them
    results = await asyncio.gather(*(post(scaled_product.base_url, {"sender": sender, "message": m})
                                      for m in ("你好", "能开专票吗", "新疆包邮吗", "你是机器人吗")))
    assert all(status == 200 and messages for status, messages in results)
    from sqlalchemy import create_engine, text

    engine = create_engine(scaled_product.database_url, future=True)
    with engine.connect() as c:
        users = c.execute(text("select count(*) from events where sender_id = :s and type_name = 'user'"),
                          {"s": f"im:{sender}"}).scalar_one()
        starts = c.execute(text("select count(*) from events where sender_id = :s and type_name = 'session_started'"),
                           {"s": f"im:{sender}"}).scalar_one()
    engine.dispose()
    assert users == 4 and starts == 1


async def test_callback_mode_pushes_the_replies(scaled_product):
    sender = f"cb{uuid.uuid4().hex[:6]}"
    status, body = await post(scaled_product.base_url, {"sender": sender, "message": "能开专票吗", "mode": "callback"})
    assert status == 202 and body == {"status": "accepted"}
    for _ in range(100):
        pushed = [m for m in scaled_product.receiver.received if m.get("recipient_id") == sender]
        if pushed:
            break
        await asyncio.sleep(0.1)
    assert pushed and "专用发票" in pushed[0]["text"]
