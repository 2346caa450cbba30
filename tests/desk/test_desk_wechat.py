"""The desk on WeChat, against the whole product behind the platform sandbox: while a person holds a
微信客服 or Official Account conversation the bot sends nothing, the customer's messages reach the
transcript, staff replies leave through the customer's own channel (the outbox: exactly once) with
their delivery shown, proactive messages are refused, and after the hand back the bot answers."""
from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest

from tests.desk.test_console_api import StaffClient, until

pytestmark = pytest.mark.model


async def call(http, method, url, **kwargs):
    async with http.request(method, url, **kwargs) as resp:
        return await resp.json()


async def deliveries(http, sandbox, channel, user):
    return (await call(http, "GET", sandbox.url + "/sandbox/deliveries",
                       params={"channel": channel, "to": user}))["deliveries"]


async def say(http, sandbox, channel, user, text):
    said = await call(http, "POST", sandbox.url + "/sandbox/say",
                      json={"channel": channel, "user": user, "text": text, "wait": True})
    assert said["callback"]["delivered"], said


async def conversation_of(agent: StaffClient, conversation_id: str, state: str):
    async def find():
        status, listed = await agent.get(f"/api/desk/conversations?state={state}")
        return next((c for c in listed["conversations"] if c["conversation_id"] == conversation_id), None)
    return await until(find, 30, f"{conversation_id} {state}")


@pytest.mark.parametrize("channel,prefix", [("kf", "wecom_kf"), ("mp", "mp")])
async def test_a_person_takes_over_a_wechat_conversation_and_hands_it_back(wechat_product, channel, prefix):
    product, sandbox = wechat_product
    user = f"desk{channel}{uuid.uuid4().hex[:8]}"
    agent = StaffClient(product.console_url)
    try:
        assert await agent.login("agent1") == 200
        async with aiohttp.ClientSession() as http:
            await say(http, sandbox, channel, user, "转人工")
            await until(lambda: deliveries(http, sandbox, channel, user), 60, "the handoff answer")
            item = await conversation_of(agent, f"{prefix}:{user}", "queued")
            assert item["channel"] == prefix
            assert (await agent.post(f"/api/desk/conversations/{item['id']}/claim"))[0] == 200
            before = len(await deliveries(http, sandbox, channel, user))

            await say(http, sandbox, channel, user, "你好，我想问下我的退款")

            async def in_transcript():
                status, detail = await agent.get(f"/api/desk/conversations/{item['id']}")
                return detail if any("我想问下我的退款" in m["text"] for m in detail["messages"]) else None
            detail = await until(in_transcript, 30, "the customer's message in the transcript")
            assert detail["window"]["limited"] and detail["window"]["open"] and detail["window"]["remaining"] >= 1
            # nothing from the bot while the person holds it
            assert len(await deliveries(http, sandbox, channel, user)) == before

            status, sent = await agent.post(f"/api/desk/conversations/{item['id']}/reply",
                                            {"text": "您好，我是人工客服，退款我来帮您查"})
            assert status == 202 and sent["delivery"] == "queued"
            found = await until(lambda: _texts_with(http, sandbox, channel, user, "退款我来帮您查"), 30,
                                "the staff reply at the platform")
            assert len(found) == 1

            async def delivered():
                status, detail = await agent.get(f"/api/desk/conversations/{item['id']}")
                return any(m["from"] == "agent" and m.get("delivery") == "delivered" for m in detail["messages"])
            await until(delivered, 30, "the reply shown as delivered")

            status, back = await agent.post(f"/api/desk/conversations/{item['id']}/handback")
            assert status == 200 and back["state"] == "bot"
            count = len(await deliveries(http, sandbox, channel, user))
            await say(http, sandbox, channel, user, "退货运费谁出")
            await until(lambda: _more(http, sandbox, channel, user, count), 60, "the bot's answer after the hand back")
    finally:
        await agent.close()


async def _texts_with(http, sandbox, channel, user, needle):
    found = [d for d in await deliveries(http, sandbox, channel, user)
             if needle in ((d.get("content") or {}).get("content") or "")]
    return found or None


async def _more(http, sandbox, channel, user, count):
    return len(await deliveries(http, sandbox, channel, user)) > count


async def test_no_proactive_message_reaches_a_customer_a_person_is_handling(wechat_product):
    from channels.wechat.outbound.sender import OutboxOnly, send_to_customer
    from tests.conftest import use_database

    product, sandbox = wechat_product
    user = f"deskpro{uuid.uuid4().hex[:8]}"
    agent = StaffClient(product.console_url)
    try:
        assert await agent.login("agent2") == 200
        async with aiohttp.ClientSession() as http:
            await say(http, sandbox, "kf", user, "转人工")
            item = await conversation_of(agent, f"wecom_kf:{user}", "queued")
        use_database(product.database_url)
        from bot.settings import Settings
        from channels.wechat.config import WeChatConfig

        wechat_env = {k: v for k, v in product.env.items() if k.startswith("SIYU_WECHAT_")}
        runtime = OutboxOnly(WeChatConfig.from_settings(Settings(**{
            k.removeprefix("SIYU_").lower(): v for k, v in wechat_env.items()})))
        refused = await send_to_customer(f"wecom_kf:{user}", ["双十二大促开始啦"], proactive=True, runtime=runtime)
        assert not refused.accepted and refused.reason == "with_staff"
        assert (await agent.post(f"/api/desk/conversations/{item['id']}/claim"))[0] == 200
        assert (await agent.post(f"/api/desk/conversations/{item['id']}/end"))[0] == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            allowed = await send_to_customer(f"wecom_kf:{user}", ["双十二大促开始啦"], proactive=True,
                                             runtime=runtime, key=f"promo-{user}")
            if allowed.accepted:
                break
            await asyncio.sleep(0.2)
        assert allowed.accepted, allowed
    finally:
        await agent.close()


async def test_ending_a_kf_conversation_ends_the_wecom_session_after_the_last_reply(wechat_product):
    product, sandbox = wechat_product
    user = f"deskend{uuid.uuid4().hex[:8]}"
    agent = StaffClient(product.console_url)
    try:
        assert await agent.login("agent1") == 200
        async with aiohttp.ClientSession() as http:
            await say(http, sandbox, "kf", user, "转人工")
            item = await conversation_of(agent, f"wecom_kf:{user}", "queued")
            assert (await agent.post(f"/api/desk/conversations/{item['id']}/claim"))[0] == 200
            reply = await agent.post(f"/api/desk/conversations/{item['id']}/reply", {"text": "问题已解决，再见"})
            assert reply[0] == 202
            status, ended = await agent.post(f"/api/desk/conversations/{item['id']}/end")
            assert status == 200 and ended["state"] == "closed"

            async def session_ended():
                state = await call(http, "GET", sandbox.url + "/sandbox/kf/service_state", params={"user": user})
                return state.get("service_state") == 4
            await until(session_ended, 30, "the WeCom session to end")
            # the goodbye went out before the session ended
            assert await _texts_with(http, sandbox, "kf", user, "问题已解决")
            count = len(await deliveries(http, sandbox, "kf", user))
            await say(http, sandbox, "kf", user, "怎么开发票")
            await until(lambda: _more(http, sandbox, "kf", user, count), 60, "the bot's answer in a new session")
    finally:
        await agent.close()


async def test_a_group_member_handed_to_a_person_gets_no_bot_answer_in_the_group(wechat_product):
    product, sandbox = wechat_product
    member, group = f"member{uuid.uuid4().hex[:6]}", "wrSandboxDemoGroup01"
    agent = StaffClient(product.console_url)

    async def mention(http, text):
        said = await call(http, "POST", sandbox.url + "/sandbox/say", json={
            "channel": "group", "user": member, "chat_id": group, "text": f"@AI 豆\u2005{text}", "wait": True})
        assert said["callback"]["delivered"]

    async def to_member(http):
        return [d for d in await deliveries(http, sandbox, "group", group)
                if member in ((d.get("content") or {}).get("mentioned_list") or [])]

    try:
        assert await agent.login("agent2") == 200
        async with aiohttp.ClientSession() as http:
            await mention(http, "转人工")
            item = await conversation_of(agent, f"group:{group}:{member}", "queued")
            await until(lambda: to_member(http), 60, "the handoff answer in the group")
            assert (await agent.post(f"/api/desk/conversations/{item['id']}/claim"))[0] == 200
            before = len(await to_member(http))
            await mention(http, "退货运费谁出")

            async def in_transcript():
                status, detail = await agent.get(f"/api/desk/conversations/{item['id']}")
                return any("退货运费谁出" in m["text"] for m in detail["messages"] if m["from"] == "customer")
            await until(in_transcript, 30, "the member's message in the transcript")
            assert len(await to_member(http)) == before, "the bot stays silent in the group"
            status, sent = await agent.post(f"/api/desk/conversations/{item['id']}/reply",
                                            {"text": "运费由我们承担，您放心"})
            assert status == 202, sent

            async def staff_reply():
                return [d for d in await to_member(http) if "运费由我们承担" in d["content"]["content"]]
            await until(staff_reply, 30, "the staff reply in the group, mentioning the member")
    finally:
        await agent.close()
