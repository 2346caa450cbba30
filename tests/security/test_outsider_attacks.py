"""An outsider against the running product (Rasa server, action server, demo shop on SQLite) over
HTTP: what the hostile test of the demo did, and what happens now."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from actions.db.models import AuditEvent, Customer, CustomerIdentity, Order
from tests.support import signed

pytestmark = pytest.mark.model


def shop(product):
    return Session(create_engine(product.database_url, future=True))


async def post(product, path, body, raw=False):
    data = body if raw else json.dumps(body)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{product.base_url}{path}", data=data,
                             timeout=aiohttp.ClientTimeout(total=60)) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text.startswith(("[", "{")) else text), resp.headers


async def say(product, sender, message, identity=None):
    status, replies, _ = await post(product, "/webhooks/im/webhook", {**(identity or {"sender": sender}),
                                                                     "message": message})
    assert status == 200, replies
    return "\n".join(m.get("text", "") for m in replies)


def victim_order(product, status="paid"):
    """The newest order in `status` (older ones are what the other tests talk about)."""
    with shop(product) as s:
        return s.execute(select(Order).where(Order.status == status).order_by(Order.id.desc())).scalars().first()


async def test_the_bare_rest_channel_is_off(product_server):
    status, _, _ = await post(product_server, "/webhooks/rest/webhook", {"sender": "im:u10002", "message": "我的订单"})
    assert status == 404


async def test_an_unsigned_sender_id_is_an_anonymous_visitor(product_server):
    with shop(product_server) as s:
        customer, im_user = s.execute(select(Customer, CustomerIdentity.external_id).join(CustomerIdentity).where(
            CustomerIdentity.channel == "im").order_by(Customer.id)).first()
        numbers = [o.order_no for o in s.execute(select(Order).where(Order.customer_id == customer.id)).scalars()]
    reply = await say(product_server, im_user, "我的订单到哪了")
    assert not any(number in reply for number in numbers)
    assert "订单号" in reply


async def test_unknown_and_unproven_orders_get_the_same_answers(product_server):
    real = victim_order(product_server, "shipped").order_no
    fake = real[:-6] + "999999"
    answers = []
    for number in (real, fake):
        sender = f"probe{uuid.uuid4().hex[:6]}"
        asked = await say(product_server, sender, f"帮我查下订单{number}到哪了")
        wrong = await say(product_server, sender, "0000")
        answers.append((asked.replace(number, "<no>"), wrong.replace(number, "<no>")))
    assert answers[0] == answers[1]
    assert "后 4 位" in answers[0][0]


async def test_guessing_the_phone_digits_from_new_senders_locks_the_order(product_server):
    order = victim_order(product_server, "paid")
    wrong = "0000" if not order.receiver_phone.endswith("0000") else "1111"
    answers = []
    for n in range(5):
        sender = f"bf{n}{uuid.uuid4().hex[:6]}"
        asked = await say(product_server, sender, f"取消订单 {order.order_no}")
        answers.append((asked, await say(product_server, sender, wrong)))
    assert all("后 4 位" in asked for asked, _ in answers)
    assert not any("锁定" in answer for _, answer in answers[:4])
    assert "锁定" in answers[4][1]
    # the right digits from yet another sender no longer open it, and nothing about the order leaks
    sender = f"bfok{uuid.uuid4().hex[:6]}"
    first = await say(product_server, sender, f"取消订单 {order.order_no}")
    assert "锁定" in first
    after = await say(product_server, sender, order.receiver_phone[-4:])
    assert order.receiver_name not in first + after and "已取消" not in after
    with shop(product_server) as s:
        assert s.get(Order, order.id).status == "paid"
        subjects = s.execute(select(AuditEvent.subject).where(AuditEvent.action == "verification_locked")).scalars()
        assert f"order:{order.order_no}" in list(subjects)


async def test_malformed_input_gets_a_400_or_a_normal_reply(product_server):
    deep = b'{"sender": "deep", "message": "hi", "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001
    status, body, _ = await post(product_server, "/webhooks/im/webhook", deep, raw=True)
    assert status == 400 and "nested" in body["error"]
    status, body, _ = await post(product_server, "/webhooks/im/webhook", b'{"sender": "s", "message": "\\ud800"}',
                                 raw=True)
    assert status == 200 and body and body[0]["text"]
    reply = await say(product_server, f"s{uuid.uuid4().hex[:6]}", "退货运费谁出\ud800")
    assert "运费" in reply


async def test_a_burst_from_one_sender_is_bounded_and_over_in_seconds(product_server):
    identity = signed(f"burst{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    results = await asyncio.gather(*(post(product_server, "/webhooks/im/webhook", {**identity, "message": f"你好{n}"})
                                     for n in range(30)))
    elapsed = time.monotonic() - started
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 429}, statuses
    # a few are answered, the rest turned away at once instead of queueing behind them
    assert statuses.count(200) >= 1 and statuses.count(429) >= 15, statuses
    assert all(headers.get("Retry-After") for status, _, headers in results if status == 429)
    assert all(body for status, body, _ in results if status == 200)
    print(f"burst of 30: {statuses.count(200)} answered, {statuses.count(429)} turned away, {elapsed:.1f} s")
    assert elapsed < 20, f"a burst of 30 took {elapsed:.1f} s"
