"""Groups: @-mention callbacks answered into the group mentioning the asker; robot posts of every
type; mass-send tasks the owner confirms, tracked to their result; owner reminders and app messages."""
from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

import sqlalchemy as sa

from actions.db.engine import async_session
from channels.wechat.models import MassSendTask, OutboxMessage, WeChatGroup
from channels.wechat.outbound import mass_send, sender
from channels.wechat.sandbox.callbacks import CallbackSigner


async def register(h, chat_id, mode="robot", robot=True, owner="owner01"):
    group = h.platform.add_group(chat_id, f"群{chat_id}", owner, robot=robot)
    async with async_session() as session:
        session.add(WeChatGroup(chat_id=chat_id, name=group.name, owner_userid=owner, robot_key=group.robot_key,
                                delivery_mode=mode))
        await session.commit()
    return group


async def test_mention_in_group_is_answered_into_the_group_mentioning_the_asker(harness):
    h = harness
    group = h.platform.add_group("wrAsk", "福利群", "owner01")
    result = await h.say("group", "zhangsan", "@AI 豆\u2005这件外套有L码吗", chat_id="wrAsk", name="张三")
    assert result["callback"]["delivered"]
    [reply] = await h.wait_for(lambda: h.deliveries("group", "wrAsk"))
    assert reply["via"] == "robot"
    assert reply["content"]["content"] == "收到：这件外套有L码吗", "the mention is stripped before NLU"
    assert reply["content"]["mentioned_list"] == ["zhangsan"]
    message = h.agent.received[0]
    assert message.sender_id == "group:wrAsk:zhangsan" and message.input_channel == "wecom_group"
    async with async_session() as session:
        stored = await session.get(WeChatGroup, "wrAsk")
        assert stored.robot_key == group.robot_key, "the callback told us the group's webhook"


async def test_group_chatter_without_address_is_not_answered(harness):
    h = harness
    group = h.platform.add_group("wrChat", "闲聊群", "owner01")
    none = await h.say("group", "lisi", "今天天气不错", chat_id="wrChat")
    assert none["callback"] is None, "the platform only calls the robot when it is @-mentioned"
    # even a signed callback whose text does not address the bot is stored and left alone
    signed = CallbackSigner(h.platform.config).group_message("wrChat", group.robot_key, "lisi", "李四",
                                                             "@王五\u2005晚上吃什么", "msgNoAddr", h.sandbox_url)
    async with h.http.post(signed.url(h.bot_url), data=signed.body) as r:
        assert r.status == 200
    await h.quiet()
    assert h.agent.received == [] and h.deliveries("group", "wrChat") == []


async def test_robot_posts_text_markdown_image_news(harness):
    h = harness
    await register(h, "wrPost")
    raw = b"\x89PNG\r\n\x1a\n sandbox picture"
    result = await sender.send_to_group("wrPost", [
        "今晚 8 点直播，新品 8 折",
        {"msgtype": "markdown", "markdown": {"content": "## 今日上新\n> 真丝衬衫 **限时 8 折**"}},
        {"msgtype": "image", "image": {"base64": base64.b64encode(raw).decode(), "md5": hashlib.md5(raw).hexdigest()}},
        {"msgtype": "news", "news": {"articles": [{"title": "秋冬上新", "url": "https://shop.example/new",
                                                   "description": "点击查看", "picurl": "https://shop.example/a.png"}]}},
    ], mention=["@all"], runtime=h.runtime)
    assert result.accepted and result.channel == "robot" and len(result.outbox_ids) == 4
    posts = await h.wait_for(lambda: len(h.deliveries("group", "wrPost")) == 4 and h.deliveries("group", "wrPost"))
    assert [p["msgtype"] for p in posts] == ["text", "markdown", "image", "news"]
    assert posts[0]["content"]["mentioned_list"] == ["@all"]


async def test_group_without_robot_or_unknown_is_refused_with_a_reason(harness):
    h = harness
    await register(h, "wrNoBot", robot=False)
    assert (await sender.send_to_group("wrNoBot", ["hi"], runtime=h.runtime)).reason == "no_robot"
    assert (await sender.send_to_group("wrNobody", ["hi"], runtime=h.runtime)).reason == "unknown_group"


async def test_mass_send_task_is_created_confirmed_and_tracked(harness):
    h = harness
    await register(h, "wrMassA", mode="mass_send", robot=False)
    await register(h, "wrMassB", mode="mass_send", robot=False)
    result = await sender.send_mass("owner01", ["wrMassA", "wrMassB"], "双十一预售开始啦", key="sop-7-day-1",
                                    runtime=h.runtime)
    assert result.accepted and result.channel == "mass_send"
    again = await sender.send_mass("owner01", ["wrMassA", "wrMassB"], "双十一预售开始啦", key="sop-7-day-1",
                                   runtime=h.runtime)
    assert again.outbox_ids == result.outbox_ids, "the same SOP step is one task"

    async def task_row():
        async with async_session() as session:
            return (await session.execute(sa.select(MassSendTask))).scalars().first()

    async def created():
        row = await task_row()
        return row if row and row.msgid else None

    row = await h.wait_for(created, timeout=5.0)
    assert row is not None and row.status == "created" and row.chat_ids == ["wrMassA", "wrMassB"]
    assert h.deliveries("group") == [], "nothing reaches the groups before the owner confirms"
    assert (await mass_send.refresh(h.runtime.client, row.msgid)).status == "created"
    assert [await mass_send.remind_owner(h.runtime.client, row.msgid) for _ in range(4)] == \
        ["reminded"] * 3 + ["limit"]
    # the second group has had its monthly quota of mass messages
    month = datetime.fromtimestamp(h.platform.now(), timezone.utc).strftime("%Y-%m")
    h.platform.group_mass_sends[("wrMassB", month)] = 31
    assert h.platform.owner_confirms(row.msgid)["errcode"] == 0
    refreshed = await mass_send.refresh(h.runtime.client, row.msgid)
    assert refreshed.status == "partly_sent" and refreshed.results == {"wrMassA": 1, "wrMassB": 3}
    assert [d["to"] for d in h.deliveries("group")] == ["wrMassA"]


async def test_group_in_mass_send_mode_goes_through_send_to_group(harness):
    h = harness
    await register(h, "wrViaMode", mode="mass_send", robot=False)
    result = await sender.send_to_group("wrViaMode", ["周末福利"], runtime=h.runtime)
    assert result.accepted and result.channel == "mass_send" and "confirm" in result.detail


async def test_owner_reminder_mode_sends_an_app_message_to_the_owner(harness):
    h = harness
    await register(h, "wrRemind", mode="owner_reminder", robot=False, owner="owner02")
    result = await sender.send_to_group("wrRemind", ["今晚 8 点直播"], runtime=h.runtime)
    assert result.accepted and result.channel == "app"
    [message] = await h.wait_for(lambda: h.deliveries("staff", "owner02"))
    assert "今晚 8 点直播" in message["content"]["content"] and "群wrRemind" in message["content"]["content"]


async def test_notify_staff_and_unknown_staff(harness):
    h = harness
    result = await sender.notify_staff(["staff01"], "顾客投诉待处理：工单 TK001", runtime=h.runtime)
    assert result.accepted
    await h.wait_for(lambda: h.deliveries("staff", "staff01"))
    bad = await sender.notify_staff(["ghost"], "hello", runtime=h.runtime)
    assert bad.accepted  # stored; the platform's answer decides

    async def failed():
        async with async_session() as session:
            row = await session.get(OutboxMessage, bad.outbox_ids[0])
            return row.status == "failed" and row

    row = await h.wait_for(failed, timeout=5.0)
    assert row and row.last_errcode == 81013, "visible to staff with the platform's code"
