"""The real product (Rasa server with the trained model, action server, demo shop) behind the
platform sandbox: WeChat users get the bot's real answers, exactly once, on every connector, and
one person on two channels is one customer."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from actions.db.models import Customer, CustomerIdentity, Order
from channels.wechat.sandbox.callbacks import CallbackSigner
from tests.wechat.sandbox_helpers import config_from_env

pytestmark = pytest.mark.model


async def call(session, method, url, **kwargs):
    async with session.request(method, url, **kwargs) as resp:
        return await resp.json()


async def replies(session, sandbox, channel, to, count=1, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = (await call(session, "GET", sandbox.url + "/sandbox/deliveries",
                            params={"channel": channel, "to": to}))["deliveries"]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {count} replies for {to} on {channel} within {timeout} s")


def demo_customer_with_orders(database_url: str, unionid: str):
    """Give a demo customer (who has orders) a unionid, as if their WeChat identity were known."""
    from actions.db.engine import create_sync_engine
    from bot.settings import Settings

    engine = create_sync_engine(Settings(DATABASE_URL=database_url))
    with Session(engine) as session:
        customer = session.execute(sa.select(Customer).join(Order).order_by(Customer.id).limit(1)).scalars().first()
        identity = customer.identities[0]
        identity.unionid = unionid
        orders = [o.order_no for o in customer.orders]
        session.commit()
        result = customer.id, orders
    engine.dispose()
    return result


def identities_of(database_url: str, customer_id: int):
    from actions.db.engine import create_sync_engine
    from bot.settings import Settings

    engine = create_sync_engine(Settings(DATABASE_URL=database_url))
    with Session(engine) as session:
        rows = session.execute(sa.select(CustomerIdentity.channel, CustomerIdentity.external_id).where(
            CustomerIdentity.customer_id == customer_id)).all()
    engine.dispose()
    return {(c, e) for c, e in rows}


async def test_my_orders_works_on_kf_and_the_official_account_for_one_customer(wechat_product):
    product, sandbox = wechat_product
    customer_id, orders = demo_customer_with_orders(product.database_url, "oUnionE2E")
    async with aiohttp.ClientSession() as http:
        for channel, user in (("kf", "wmE2EOrders"), ("mp", "oE2EOrders")):
            await call(http, "POST", sandbox.url + "/sandbox/users",
                       json={"channel": channel, "user": user, "unionid": "oUnionE2E"})
            said = await call(http, "POST", sandbox.url + "/sandbox/say",
                              json={"channel": channel, "user": user, "text": "我的订单到哪了", "wait": True})
            assert said["callback"]["delivered"]
            [reply] = await replies(http, sandbox, channel, user)
            text = reply["content"]["content"]
            assert any(order in text for order in orders), f"{channel}: the customer's own orders: {text}"
    known = identities_of(product.database_url, customer_id)
    assert {("wecom_kf", "wmE2EOrders"), ("mp", "oE2EOrders")} <= known


async def test_three_identical_deliveries_one_reply_with_the_real_model(wechat_product):
    product, sandbox = wechat_product
    config = config_from_env(product.env)
    message = {"ToUserName": config.mp_original_id, "FromUserName": "oE2EDup", "CreateTime": int(time.time()),
               "MsgType": "text", "Content": "你们支持开发票吗", "MsgId": 7000000000000000001}
    async with aiohttp.ClientSession() as http:
        # the user wrote (their window opens on the platform), the platform delivers three times
        await call(http, "POST", sandbox.url + "/sandbox/event",
                   json={"channel": "mp", "user": "oE2EDup", "event": "CLICK"})
        await asyncio.sleep(0.5)
        signed = CallbackSigner(config).account_message("mp", message)
        url = signed.url(product.wechat_url)
        statuses = []
        for _ in range(3):
            async with http.post(url, data=signed.body) as resp:
                statuses.append((resp.status, await resp.text()))
        assert statuses == [(200, "success")] * 3
        await replies(http, sandbox, "mp", "oE2EDup")
        await asyncio.sleep(3.0)  # time for any duplicate to arrive
        after = await replies(http, sandbox, "mp", "oE2EDup")
    texts = [d["content"]["content"] for d in after]
    assert len(texts) == 1 and "发票" in texts[0], texts


async def test_group_mention_is_answered_into_the_group(wechat_product):
    product, sandbox = wechat_product
    async with aiohttp.ClientSession() as http:
        said = await call(http, "POST", sandbox.url + "/sandbox/say", json={
            "channel": "group", "user": "wangwu", "chat_id": "wrSandboxDemoGroup01",
            "text": "@AI 豆\u2005退货运费谁出", "wait": True})
        assert said["callback"]["delivered"]
        [reply] = await replies(http, sandbox, "group", "wrSandboxDemoGroup01")
    assert reply["content"]["mentioned_list"] == ["wangwu"]
    assert reply["content"]["content"]


async def test_forged_callback_is_refused_by_the_product(wechat_product):
    product, sandbox = wechat_product
    async with aiohttp.ClientSession() as http:
        async with http.post(product.wechat_url + "/webhooks/wecom_kf/webhook",
                             params={"msg_signature": "0" * 40, "timestamp": str(int(time.time())), "nonce": "1"},
                             data=b"<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>") as resp:
            assert resp.status == 403


async def test_rasa_relay_answers_only_the_gateway(wechat_product):
    """The relay speaks for any WeChat customer: without the secret the gateway was started with, a
    caller who reaches the Rasa port gets 403 and no answer (no one can read a customer's orders)."""
    product, _ = wechat_product
    turn = {"conversation_id": "mp:oE2EOrders", "channel": "mp", "text": "我的订单到哪了", "message_id": "forged-1"}
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Siyu-Relay-Token": "guessed"}):
            async with http.post(product.base_url + "/webhooks/wechat_relay/webhook", json=turn,
                                 headers=headers) as resp:
                assert resp.status == 403
                assert "replies" not in await resp.text()
        # the platform's callbacks are the gateway's, not the Rasa server's
        async with http.post(product.base_url + "/webhooks/wecom_kf/webhook", data=b"<xml/>") as resp:
            assert resp.status == 404


def test_run_sandbox_mode_lets_a_newcomer_chat_over_wechat(trained_model, tmp_path):
    """`python -m bot run --demo --sandbox` as a newcomer uses it: the printed say command gets the
    demo customer's orders back over fake WeChat."""
    import re
    import signal
    import subprocess

    from tests.conftest import PYTHON, REPO, free_port, product_env
    from tests.support import stop_process_group

    env = product_env(f"sqlite:///{tmp_path / 'shop.db'}", tmp_path)
    env["SIYU_WECHAT_SANDBOX_PORT"] = str(free_port())
    for key in [k for k in env if k.startswith("SIYU_WECHAT_") and k not in ("SIYU_WECHAT_SANDBOX_PORT",
                                                                                "SIYU_WECHAT_PORT")]:
        env.pop(key)
    log = tmp_path / "run.log"
    process = subprocess.Popen([PYTHON, "-m", "bot", "run", "--demo", "--sandbox", "--no-train"], cwd=REPO, env=env,
                               stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "[siyu] ready:" not in log.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        assert "WeChat sandbox on" in text and "-m channels.wechat.sandbox say --channel kf" in text
        said = subprocess.run([PYTHON, "-m", "channels.wechat.sandbox", "say", "--channel", "kf", "--user",
                               "wmDemoUser01", "我的订单到哪了"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=60)
        assert said.returncode == 0, said.stderr
        assert re.search(r"SY\d{14}", said.stdout), said.stdout
        final = log.read_text()
        # secrets travel in query strings (corpsecret=, secret=, key=); no log line carries one
        assert not re.search(r"(corpsecret|secret|key|access_token)=[A-Za-z0-9_\-]{6,}", final)
    finally:
        stop_process_group(process, signal.SIGINT, grace_s=60)
