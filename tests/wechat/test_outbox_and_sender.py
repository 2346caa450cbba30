"""The outbox, its sender and the one sender API against the sandbox: retries, token refresh,
restarts, windows and quotas, robot rate limit, idempotency, concurrent workers."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from actions.db.engine import async_session
from channels.wechat.models import OutboxMessage, ReplyWindow, WeChatGroup, now_utc
from channels.wechat.outbound import errcodes as E, outbox, sender, windows
from channels.wechat.outbound.outbox import OutgoingMessage
from channels.wechat.outbound.worker import OutboxWorker
from tests.wechat.harness import Harness, fresh_env


async def rows(**where):
    async with async_session() as session:
        stmt = sa.select(OutboxMessage).order_by(OutboxMessage.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(OutboxMessage, key) == value)
        return list((await session.execute(stmt)).scalars())


async def settled_rows(harness, **where):
    """The rows once none is pending or sending: a delivery reaches the sandbox before the gateway
    has the platform's answer, so its outcome is recorded a moment after."""
    async def all_settled():
        found = await rows(**where)
        return found if found and all(r.status not in outbox.ACTIVE for r in found) else None

    return await harness.wait_for(all_settled)


async def test_platform_5xx_then_success_is_sent_once(harness):
    harness.platform.add_fault("kf/send_msg", "http_500", times=2)
    await harness.say("kf", "wmRetry", "在吗")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmRetry"), timeout=20)
    await harness.quiet()
    assert len(harness.deliveries("kf", "wmRetry")) == 1
    [row] = await rows(recipient="wmRetry")
    assert row.status == "sent" and row.attempts == 3


async def test_busy_errcode_then_success_official_account(harness):
    harness.platform.add_fault("message/custom/send", "errcode", times=1, errcode=E.SYSTEM_BUSY)
    await harness.say("mp", "oBusy", "你好")
    await harness.wait_for(lambda: harness.deliveries("mp", "oBusy"), timeout=20)
    [row] = await settled_rows(harness, recipient="oBusy")
    assert row.status == "sent" and row.attempts == 2 and row.last_errcode is None


async def test_token_expiry_mid_run_is_refreshed_once(harness):
    await harness.say("kf", "wmToken", "第一条")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmToken"))
    harness.platform.expire_tokens()
    await harness.say("kf", "wmToken", "第二条")
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmToken")) == 2)
    token_calls = [r for r in harness.platform.requests if r["api"] == "gettoken"]
    expired = [r for r in harness.platform.requests if r["errcode"] == E.ACCESS_TOKEN_EXPIRED]
    assert expired, "the platform rejected the expired token"
    assert len(token_calls) == 2, "one fetch at start, one refresh after 42001"
    assert all(r.status == "sent" for r in await settled_rows(harness, recipient="wmToken"))


async def test_restart_resumes_pending_sends_exactly_once(harness):
    await harness.stop_bot()
    harness.platform.user_acted("mp", "oPending")
    await windows.user_acted("mp", "oPending")
    await outbox.enqueue([OutgoingMessage("mp", "oPending", "text", {"text": {"content": f"第{n}条"}},
                                          idempotency_key=f"pending-{n}") for n in range(3)])
    await harness.restart_bot()
    await harness.wait_for(lambda: len(harness.deliveries("mp", "oPending")) == 3)
    await harness.quiet()
    assert [d["content"]["content"] for d in harness.deliveries("mp", "oPending")] == ["第0条", "第1条", "第2条"]


async def test_interrupted_sends_after_a_crash(harness):
    """A row left in 'sending' by a dead process: 微信客服 repeats it with the same msgid (the
    platform drops the repeat), a custom send is marked unknown for staff instead of risking a
    duplicate."""
    await harness.say("kf", "wmCrash", "你好")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmCrash"))
    [sent] = await rows(recipient="wmCrash")
    harness.platform.user_acted("mp", "oCrash")
    await windows.user_acted("mp", "oCrash")
    async with async_session() as session:
        long_ago = now_utc() - timedelta(minutes=5)
        # the kf reply was accepted by the platform, then "the process died" before it was marked sent
        await session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == sent.id).values(
            status="sending", claimed_at=long_ago, claimed_by="dead-process"))
        session.add(OutboxMessage(channel="mp", recipient="oCrash", msgtype="text", body={"text": {"content": "x"}},
                                  idempotency_key="crash-mp", status="sending", attempts=1, claimed_at=long_ago,
                                  claimed_by="dead-process", next_attempt_at=long_ago, created_at=long_ago))
        await session.commit()
    assert await outbox.recover_interrupted() == {"resent": 1, "unknown": 1}
    harness.runtime.worker.wake()
    await harness.wait_for(lambda: [r for r in harness.platform.requests if r["api"] == "kf/send_msg"][1:])
    await harness.quiet()
    assert len(harness.deliveries("kf", "wmCrash")) == 1
    assert harness.deliveries("mp", "oCrash") == []
    [unknown] = await rows(recipient="oCrash")
    assert unknown.status == "unknown" and "may have delivered" in unknown.last_error


async def test_long_reply_is_split_at_the_byte_limit_in_order(harness):
    harness.agent.delay_s = 0
    sentence = "这是一段很长的回答，用来确认按句子切分。"
    await harness.say("kf", "wmLong", sentence * 100)
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmLong")) >= 2)
    await harness.quiet()
    parts = [d["content"]["content"] for d in harness.deliveries("kf", "wmLong")]
    assert all(len(p.encode()) <= 2048 for p in parts)
    assert "".join(parts) == "收到：" + sentence * 100
    assert all(p.endswith("。") for p in parts[:-1]), "cuts fall on sentence ends"


async def test_send_to_customer_out_of_window_and_over_quota(harness):
    await harness.say("kf", "wmWin", "你好")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmWin"))
    result = await sender.send_to_customer("wecom_kf:wmWin", ["您的包裹已发出"], runtime=harness.runtime)
    assert result.accepted and result.channel == "wecom_kf"
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmWin")) == 2)
    # 2 sent so far (reply + this one): 3 left in the window
    refused = await sender.send_to_customer("wecom_kf:wmWin", ["一", "二", "三", "四"], runtime=harness.runtime)
    assert not refused.accepted and refused.reason == "over_quota"
    async with async_session() as session:
        await session.execute(sa.update(ReplyWindow).where(ReplyWindow.user_id == "wmWin").values(
            message_at=now_utc() - timedelta(hours=49)))
        await session.commit()
    late = await sender.send_to_customer("wecom_kf:wmWin", ["还在吗"], runtime=harness.runtime)
    assert not late.accepted and late.reason == "out_of_window" and "48 h" in late.detail
    unknown = await sender.send_to_customer(987654, ["hi"], runtime=harness.runtime)
    assert not unknown.accepted and unknown.reason == "no_channel"


async def test_platform_refusal_is_recorded_when_our_count_is_wrong(harness):
    """Our bookkeeping thinks the window is open, the platform knows better: 45015 -> refused."""
    harness.platform.user_acted("mp", "oDrift")
    await windows.user_acted("mp", "oDrift")
    harness.platform.advance(49 * 3600)
    result = await sender.send_to_customer("mp:oDrift", ["晚了"], runtime=harness.runtime)
    assert result.accepted
    await harness.wait_for(lambda: [r for r in harness.platform.requests if r["errcode"] == E.OUT_OF_WINDOW])
    await asyncio.sleep(0.3)
    [row] = await rows(recipient="oDrift")
    assert row.status == "refused" and row.last_errcode == E.OUT_OF_WINDOW and row.last_error == "out_of_window"


async def test_same_key_is_sent_once(harness):
    await harness.say("mini", "oKey", "在吗")
    await harness.wait_for(lambda: harness.deliveries("mini", "oKey"))
    first = await sender.send_to_customer("mini:oKey", ["优惠券到账了"], key="coupon-42", runtime=harness.runtime)
    again = await sender.send_to_customer("mini:oKey", ["优惠券到账了"], key="coupon-42", runtime=harness.runtime)
    assert first.outbox_ids == again.outbox_ids
    await harness.wait_for(lambda: len(harness.deliveries("mini", "oKey")) == 2)
    await harness.quiet()
    assert len(harness.deliveries("mini", "oKey")) == 2


async def test_robot_posts_respect_20_per_minute(harness):
    group = harness.platform.add_group("wrRate", "限流群", "owner01")
    async with async_session() as session:
        session.add(WeChatGroup(chat_id="wrRate", name="限流群", owner_userid="owner01", robot_key=group.robot_key))
        await session.commit()
    result = await sender.send_to_group("wrRate", [f"第{n}条" for n in range(25)], runtime=harness.runtime)
    assert result.accepted and result.reason == "rate_limited" and len(result.outbox_ids) == 25
    await harness.wait_for(lambda: len(harness.deliveries("group", "wrRate")) == 20)

    async def next_one_deferred():
        waiting = await rows(recipient="wrRate", status="pending")
        return waiting if waiting and waiting[0].last_error == "rate_limited" else None

    await harness.wait_for(next_one_deferred)
    assert len(harness.deliveries("group", "wrRate")) == 20
    assert not [r for r in harness.platform.requests if r["errcode"] == E.ROBOT_RATE_LIMIT], \
        "our own budget keeps us under the platform's limit"
    waiting = await rows(recipient="wrRate", status="pending")
    # the next in line waits for the minute to pass; the rest queue behind it, in order
    assert len(waiting) == 5 and waiting[0].next_attempt_at > now_utc() + timedelta(seconds=30)
    assert waiting[0].last_error == "rate_limited" and waiting[0].attempts == 0


async def test_robot_rate_limit_from_the_platform_defers_the_post(harness):
    group = harness.platform.add_group("wrBusy", "别处也在发", "owner01")
    async with async_session() as session:
        session.add(WeChatGroup(chat_id="wrBusy", name="", owner_userid="owner01", robot_key=group.robot_key))
        await session.commit()
    now = harness.platform.now()
    harness.platform.robot_sends[group.robot_key].extend([now] * 20)  # another tool used the robot
    await sender.send_to_group("wrBusy", ["今晚直播"], runtime=harness.runtime)
    await harness.wait_for(lambda: [r for r in harness.platform.requests if r["errcode"] == E.ROBOT_RATE_LIMIT])
    await asyncio.sleep(0.3)
    [row] = await rows(recipient="wrBusy")
    assert row.status == "pending" and row.last_errcode == E.ROBOT_RATE_LIMIT
    assert row.next_attempt_at > now_utc() + timedelta(seconds=50)


async def test_concurrent_workers_send_each_row_once_in_order(harness):
    await harness.runtime.worker.stop()
    users = [f"oConc{n}" for n in range(8)]
    for user in users:
        harness.platform.user_acted("mp", user)
        await windows.user_acted("mp", user)
    await outbox.enqueue([OutgoingMessage("mp", user, "text", {"text": {"content": f"{user}-{n}"}})
                          for n in range(5) for user in users])
    workers = [OutboxWorker(harness.runtime.client) for _ in range(4)]

    async def drain(worker):
        idle = 0
        while idle < 5:
            idle = 0 if await worker.run_once() else idle + 1
            await asyncio.sleep(0.01)

    await asyncio.gather(*(drain(w) for w in workers))
    for user in users:
        assert [d["content"]["content"] for d in harness.deliveries("mp", user)] == [f"{user}-{n}" for n in range(5)]
    assert sum(w.sent for w in workers) == 40
    assert all(r.status == "sent" for r in await rows(channel="mp"))


@pytest.mark.parametrize("channel", ["kf", "mp"])
async def test_answer_lost_after_delivery(wechat_db, no_redis, channel):
    """The platform delivered but its answer timed out: 微信客服 retries with the same msgid (one
    delivery); a custom send is not repeated and marked unknown."""
    h = await Harness(fresh_env(SIYU_WECHAT_API_TIMEOUT_S="1")).start()
    try:
        api = "kf/send_msg" if channel == "kf" else "message/custom/send"
        h.platform.add_fault(api, "delay_after", delay_s=1.5)
        user = "wmLost" if channel == "kf" else "oLost"
        await h.say(channel, user, "在吗")
        await h.wait_for(lambda: h.deliveries(channel, user))
        await asyncio.sleep(4.0)
        assert len(h.deliveries(channel, user)) == 1
        [row] = await rows(recipient=user)
        assert row.status == ("sent" if channel == "kf" else "unknown")
    finally:
        await h.stop()


async def test_a_reply_waits_behind_an_earlier_message_to_the_same_user(harness):
    await harness.runtime.worker.stop()
    harness.platform.user_acted("mp", "oQueue")
    await windows.user_acted("mp", "oQueue")
    await outbox.enqueue([OutgoingMessage("mp", "oQueue", "text", {"text": {"content": "您的订单已发货"}})])
    await harness.say("mp", "oQueue", "好的")

    async def reply_queued():
        return len(await rows(recipient="oQueue", status="pending")) == 2

    await harness.wait_for(reply_queued)
    assert not harness.deliveries("mp", "oQueue")
    harness.runtime.worker.start()
    await harness.wait_for(lambda: len(harness.deliveries("mp", "oQueue")) == 2)
    assert [d["content"]["content"] for d in harness.deliveries("mp", "oQueue")] == ["您的订单已发货", "收到：好的"]


async def test_replies_queued_twice_after_a_crash_are_sent_once(harness):
    harness.platform.user_acted("mp", "oTwice")
    await windows.user_acted("mp", "oTwice")
    replies = [OutgoingMessage("mp", "oTwice", "text", {"text": {"content": f"第{n}段"}},
                               idempotency_key=f"wxin-twice-{n}") for n in range(2)]
    first = await outbox.enqueue(replies)
    again = await outbox.enqueue(replies)  # the same inbox row answered again
    assert first == again
    harness.runtime.worker.wake()
    await harness.wait_for(lambda: len(harness.deliveries("mp", "oTwice")) == 2)
    await harness.quiet()
    assert [d["content"]["content"] for d in harness.deliveries("mp", "oTwice")] == ["第0段", "第1段"]
    assert [r.status for r in await rows(recipient="oTwice")] == ["sent", "sent"]


async def test_customer_posts_choose_like_customer_post_and_count_each_other(harness):
    """The batch form (a nudge round) reads everything at once and decides as the single form does;
    two messages to one user in a batch share its window; buttons make a menu message on 微信客服
    unless the text is too long for a menu's head."""
    from actions.db.engine import in_transaction
    from actions.db.models import Customer, CustomerIdentity

    async def customers(s):
        ids = []
        for n, user in enumerate(("wmBatch1", "wmBatch2", "wmNoWindow")):
            customer = Customer(external_id=f"B{n}", name="顾客")
            s.add(customer)
            await s.flush()
            s.add(CustomerIdentity(customer_id=customer.id, channel="wecom_kf", external_id=user))
            ids.append(customer.id)
        return ids
    first, second, closed = await in_transaction(customers)
    for user in ("wmBatch1", "wmBatch2"):
        await harness.say("kf", user, "你好")
        await harness.wait_for(lambda: harness.deliveries("kf", user))
    async with async_session() as s:
        single = await sender.customer_post(s, first, ["提醒"], key="single", runtime=harness.runtime)
        batch = await sender.customer_posts(s, [
            sender.CustomerMessage(first, ["提醒"], "b1"),
            sender.CustomerMessage(first, ["二", "三", "四", "五"], "b2"),      # 4 left after the echo: 1 + 4 > 4
            sender.CustomerMessage(second, ["点下面的按钮"], "b3", buttons=[("unsubscribe", "退订")]),
            sender.CustomerMessage(second, ["长" * 400], "b4", buttons=[("unsubscribe", "退订")]),
            sender.CustomerMessage(closed, ["提醒"], "b5")], runtime=harness.runtime)
    assert single[1] is None and batch[0][1] is None
    assert (single[0][0].channel, single[0][0].recipient) == (batch[0][0][0].channel, batch[0][0][0].recipient)
    assert batch[1][0] == [] and batch[1][1].reason == "over_quota"
    assert batch[2][0][0].msgtype == "msgmenu"
    assert batch[2][0][0].body["msgmenu"]["list"] == [{"type": "click", "click": {"id": "unsubscribe",
                                                                                   "content": "退订"}}]
    assert batch[3][0][0].msgtype == "text"                               # 1,200 bytes: no menu head
    assert batch[4][1].reason == "out_of_window"
