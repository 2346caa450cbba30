"""微信客服 end to end through the sandbox (Rasa replaced by an echo): verification, signed and
encrypted callbacks, sync with a persisted cursor, exactly-once replies, restart behaviour."""
from __future__ import annotations

import asyncio

import aiohttp
import sqlalchemy as sa

from actions.db.engine import async_session
from actions.db.models import CustomerIdentity
from channels.wechat.models import InboundMessageRow, KfCursor, OutboxMessage
from channels.wechat.sandbox.callbacks import CallbackSigner


async def test_url_verification_returns_the_decrypted_echostr(harness):
    async with harness.http.post(harness.sandbox_url + "/sandbox/verify", json={"channel": "kf"}) as r:
        verification = await r.json()
    async with harness.http.get(harness.bot_url + "/webhooks/wecom_kf/webhook", params=verification["query"]) as r:
        assert r.status == 200
        assert await r.text() == verification["echo"]
    forged = dict(verification["query"], msg_signature="0" * 40)
    async with harness.http.get(harness.bot_url + "/webhooks/wecom_kf/webhook", params=forged) as r:
        assert r.status == 403


async def test_a_customer_message_is_answered_once_through_kf_send_msg(harness):
    result = await harness.say("kf", "wmAlice", "我的订单到哪了")
    assert result["callback"]["delivered"]
    replies = await harness.wait_for(lambda: harness.deliveries("kf", "wmAlice"))
    await harness.quiet()
    assert [d["content"]["content"] for d in harness.deliveries("kf", "wmAlice")] == ["收到：我的订单到哪了"]
    assert replies[0]["msgid"], "sent with an idempotency msgid"
    received = harness.agent.received[0]
    assert received.sender_id == "wecom_kf:wmAlice"
    assert received.input_channel == "wecom_kf"
    async with async_session() as session:
        cursor = await session.get(KfCursor, harness.platform.config.open_kfid)
        assert cursor and cursor.cursor
        identity = (await session.execute(sa.select(CustomerIdentity).where(
            CustomerIdentity.channel == "wecom_kf", CustomerIdentity.external_id == "wmAlice"))).scalars().one()
        assert identity.unionid, "the unionid was asked of the platform for a new user"


async def test_callback_delivered_three_times_gives_one_reply(harness):
    platform = harness.platform
    _, msg_token = platform.kf_user_message("wmBob", "退货怎么办")
    signed = CallbackSigner(platform.config).kf_event(msg_token)
    for _ in range(3):
        async with harness.http.post(signed.url(harness.bot_url), data=signed.body) as r:
            assert r.status == 200 and await r.text() == "success"
    await harness.wait_for(lambda: harness.deliveries("kf", "wmBob"))
    await harness.quiet()
    assert len(harness.deliveries("kf", "wmBob")) == 1
    assert len(harness.agent.received) == 1


async def test_forged_and_stale_callbacks_are_rejected_and_never_reach_rasa(harness):
    platform = harness.platform
    _, msg_token = platform.kf_user_message("wmEve", "hi")
    signer = CallbackSigner(platform.config)
    signed = signer.kf_event(msg_token)
    forged = dict(signed.query, msg_signature="f" * 40)
    url = harness.bot_url + signed.path
    async with harness.http.post(url, params=forged, data=signed.body) as r:
        assert r.status == 403
    stale = signer.kf_event(msg_token, timestamp=1_600_000_000)
    async with harness.http.post(stale.url(harness.bot_url), data=stale.body) as r:
        assert r.status == 403
    async with harness.http.post(url, params=signed.query, data=b"<xml><Encrypt>broken") as r:
        assert r.status == 400
    async with harness.http.post(url, params=signed.query, data=b"") as r:
        assert r.status == 400
    await harness.quiet()
    assert harness.agent.received == []
    assert harness.deliveries("kf") == []


async def test_restart_neither_skips_nor_repeats(harness):
    await harness.say("kf", "wmCarol", "第一条")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmCarol"))
    await harness.stop_bot()
    # while the bot is down: the platform takes messages but cannot call back
    for text in ("第二条", "第三条"):
        harness.platform.kf_user_message("wmCarol", text)
    await harness.restart_bot()
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmCarol")) >= 3, timeout=15)
    await harness.quiet()
    texts = [d["content"]["content"] for d in harness.deliveries("kf", "wmCarol")]
    assert texts == ["收到：第一条", "收到：第二条", "收到：第三条"]
    async with async_session() as session:
        done = (await session.execute(sa.select(sa.func.count()).select_from(InboundMessageRow).where(
            InboundMessageRow.status == "done"))).scalar()
        sent = (await session.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.status == "sent"))).scalar()
    assert done == 3 and sent == 3


async def test_non_text_message_and_empty_text_reach_rasa_as_empty_message(harness):
    harness.platform.kf_user_message("wmDan", "", msgtype="image")
    await harness.say("kf", "wmDan", "   ")
    await harness.wait_for(lambda: len(harness.agent.received) >= 2)
    assert {m.text for m in harness.agent.received} == {"/empty_message"}


async def test_a_new_users_messages_on_one_page_make_one_customer_and_one_unionid_lookup(harness):
    # two messages before the doorbell: one sync_msg page carries both
    harness.platform.kf_user_message("wmErin", "你好")
    await harness.say("kf", "wmErin", "怎么开发票")
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmErin")) >= 2)
    await harness.quiet()
    assert [d["content"]["content"] for d in harness.deliveries("kf", "wmErin")] == ["收到：你好", "收到：怎么开发票"]
    lookups = [r for r in harness.platform.requests if r["api"] == "kf/customer/batchget"]
    assert len(lookups) == 1
    async with async_session() as session:
        identities = (await session.execute(sa.select(CustomerIdentity).where(
            CustomerIdentity.external_id == "wmErin"))).scalars().all()
        customers = {row.customer_id for row in (await session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.recipient == "wmErin"))).scalars()}
    assert len(identities) == 1 and customers == {identities[0].customer_id}


async def test_doorbells_ringing_while_an_account_is_pulled_are_served_in_order_by_few_pulls(harness):
    def pulls():
        return [r for r in harness.platform.requests if r["api"] == "kf/sync_msg"]

    await harness.say("kf", "wmGus0", "你好")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmGus0"))
    before = len(pulls())
    # five customers write at once: the doorbells that ring while a pull waits share it
    await asyncio.gather(*(harness.say("kf", f"wmGus{n}", f"第{n}条") for n in range(1, 6)))
    await harness.wait_for(lambda: all(harness.deliveries("kf", f"wmGus{n}") for n in range(1, 6)))
    assert len(pulls()) - before < 5
    assert sorted(d["content"]["content"] for n in range(1, 6) for d in harness.deliveries("kf", f"wmGus{n}")) == [
        f"收到：第{n}条" for n in range(1, 6)]


async def test_a_doorbell_with_nothing_new_stores_nothing(harness):
    signed = CallbackSigner(harness.platform.config).kf_event("ENC_nothing_new")
    async with harness.http.post(signed.url(harness.bot_url), data=signed.body) as r:
        assert r.status == 200 and await r.text() == "success"
    await harness.wait_for(lambda: [r for r in harness.platform.requests if r["api"] == "kf/sync_msg"])
    async with async_session() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(InboundMessageRow))).scalar() == 0


async def test_not_configured_connector_answers_503(harness):
    harness.runtime.config.mini = None
    async with aiohttp.ClientSession() as http:
        async with http.post(harness.bot_url + "/webhooks/wechat_mini/webhook", data=b"{}") as r:
            assert r.status == 503
