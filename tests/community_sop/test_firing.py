"""Firing plans against the WeChat sandbox through the real outbox, on SQLite and PostgreSQL: each
group gets its post once however often the due time is fired; the execution log says sent, failed
(with the platform's reason) or skipped (paused, dissolved, unknown, too late); every delivery
mode; prices read when the post goes out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from actions.db.engine import async_session, in_transaction
from actions.db.models import Product, ProductVariant
from channels.wechat.models import MassSendTask, OutboxMessage, WeChatGroup
from channels.wechat.outbound import mass_send
from community_sop import firing, plans, runlog
from community_sop.models import SopRun
from tests.community_sop.conftest import add_groups, utc_minute


def plan_body(chat_ids, text="早上好 {群名}", delivery="robot", **extra):
    at = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
    body = {"name": "早安", "targets": {"chat_ids": chat_ids}, "schedule": {"kind": "once", "at": at},
            "content": [{"type": "text", "text": text}], "delivery": delivery, "active": True}
    body.update(extra)
    return body


async def make_plan(body) -> int:
    data = plans.check(body)
    plan = await in_transaction(lambda s: plans.create(s, data, "moderator"))
    return plan.id


async def runs_of(plan_id):
    async with async_session() as s:
        return {r.chat_id: r for r in (await s.execute(sa.select(SopRun).where(SopRun.plan_id == plan_id))).scalars()}


async def settled(h, plan_id, count):
    async def done():
        await runlog.settle()
        found = await runs_of(plan_id)
        return found if len(found) == count and all(r.status != "pending" for r in found.values()) else None
    return await h.wait_for(done, timeout=20)


async def test_a_due_time_reaches_each_group_once_however_often_it_fires(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrA"}, {"chat_id": "wrB"}])
    plan_id = await make_plan(plan_body(["wrA", "wrB"]))
    due = utc_minute()
    first = await firing.fire(plan_id, due, runtime=h.runtime)
    again = await firing.fire(plan_id, due, runtime=h.runtime)
    assert (first.handed, again.handed, again.existing) == (2, 0, 2)
    for chat in ("wrA", "wrB"):
        [post] = await h.wait_for(lambda c=chat: h.deliveries("group", c))
        assert post["content"]["content"] == f"早上好 群{chat}"
    found = await settled(h, plan_id, 2)
    assert {r.status for r in found.values()} == {"sent"}
    assert all(r.sent_at and r.sent_at >= due for r in found.values())
    async with async_session() as s:
        rows = (await s.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.channel == "robot"))).scalar()
    assert rows == 2
    await h.quiet()
    assert len(h.deliveries("group", "wrA")) == 1 and len(h.deliveries("group", "wrB")) == 1


async def test_groups_that_cannot_get_the_post_are_logged_with_the_reason(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrLive"}, {"chat_id": "wrGone"}, {"chat_id": "wrNoBot", "robot": False}])
    async with async_session() as s:
        (await s.get(WeChatGroup, "wrGone")).dissolved_at = datetime.utcnow()
        await s.commit()
    plan_id = await make_plan(plan_body(["wrLive", "wrGone", "wrNoBot", "wrUnknown"]))
    result = await firing.fire(plan_id, utc_minute(), runtime=h.runtime)
    assert (result.handed, result.skipped, result.failed) == (1, 2, 1)
    found = await settled(h, plan_id, 4)
    assert found["wrLive"].status == "sent"
    assert (found["wrGone"].status, found["wrGone"].reason) == ("skipped", "群已解散")
    assert found["wrUnknown"].status == "skipped" and "不存在" in found["wrUnknown"].reason
    assert (found["wrNoBot"].status, found["wrNoBot"].reason) == ("failed", "群未配置机器人 webhook")


async def test_paused_plans_and_posts_past_the_grace_period_are_skipped(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrP"}])
    paused = await make_plan(plan_body(["wrP"], active=False))
    await firing.fire(paused, utc_minute(), runtime=h.runtime)
    live = await make_plan(plan_body(["wrP"]))
    due = utc_minute(-15 * 60)
    await firing.fire(live, due, runtime=h.runtime, grace=timedelta(minutes=10))
    inside = utc_minute(-5 * 60)
    await firing.fire(live, inside, runtime=h.runtime, grace=timedelta(minutes=10))
    assert (await runs_of(paused))["wrP"].reason == "计划已暂停"
    async with async_session() as s:
        rows = {r.due_at: r for r in (await s.execute(sa.select(SopRun).where(SopRun.plan_id == live))).scalars()}
    assert rows[due].status == "skipped" and "宽限期" in rows[due].reason
    assert rows[inside].status == "pending" and rows[inside].handed_at is not None
    await h.wait_for(lambda: h.deliveries("group", "wrP"))
    await h.quiet()
    assert len(h.deliveries("group", "wrP")) == 1, "only the post inside the grace period went out"


async def test_a_platform_failure_is_logged_with_its_reason_and_can_be_retried(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrF"}])
    h.platform.add_fault("webhook/send", "errcode", times=1, errcode=93000)
    plan_id = await make_plan(plan_body(["wrF"]))
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)
    found = await settled(h, plan_id, 1)
    assert found["wrF"].status == "failed" and "93000" in found["wrF"].reason
    retried = await firing.retry(found["wrF"].id, "moderator", runtime=h.runtime)
    assert retried.status == "pending" and retried.attempts == 2
    found = await settled(h, plan_id, 1)
    assert found["wrF"].status == "sent"
    assert len(h.deliveries("group", "wrF")) == 1


async def test_variants_by_tag_and_the_live_price_at_send_time(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrMom", "tags": ["宝妈群"]}, {"chat_id": "wrGym", "tags": ["健身群"]}])
    async with async_session() as s:
        product = Product(spu="SOP001", name="云朵睡衣", category="服装", aliases="", description="", specs={})
        product.variants = [ProductVariant(sku="SOP001-M", price_fen=19900, stock=50)]
        s.add(product)
        await s.commit()
    body = plan_body(["wrMom", "wrGym"],
                     content=[{"type": "text", "text": "今日好物"}, {"type": "product", "spu": "SOP001"}],
                     variants=[{"group_tag": "宝妈群", "content": [{"type": "text", "text": "宝妈专享"},
                                                                  {"type": "product", "spu": "SOP001"}]}])
    plan_id = await make_plan(body)
    async with async_session() as s:  # the price changes after the plan was saved
        variant = (await s.execute(sa.select(ProductVariant).where(ProductVariant.sku == "SOP001-M"))).scalar_one()
        variant.price_fen = 15900
        await s.commit()
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)
    [mom] = await h.wait_for(lambda: h.deliveries("group", "wrMom"))
    [gym] = await h.wait_for(lambda: h.deliveries("group", "wrGym"))
    assert mom["content"]["content"].startswith("宝妈专享") and gym["content"]["content"].startswith("今日好物")
    for post in (mom, gym):
        assert "¥159" in post["content"]["content"] and "¥199" not in post["content"]["content"]


async def test_mass_send_waits_for_the_owner_then_reports_each_group(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrM1"}])
    plan_id = await make_plan(plan_body(["wrM1"], delivery="mass_send"))
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)

    async def waiting():
        await runlog.settle()
        run = (await runs_of(plan_id))["wrM1"]
        return run if run.reason == runlog.WAITING_FOR_OWNER else None
    run = await h.wait_for(waiting, timeout=20)
    assert run.status == "pending" and run.message_id
    assert h.deliveries("group", "wrM1") == [], "nothing reaches the group before the owner confirms"
    h.platform.owner_confirms(run.message_id)
    await mass_send.refresh(h.runtime.client, run.message_id)
    found = await settled(h, plan_id, 1)
    assert found["wrM1"].status == "sent" and found["wrM1"].message_id == run.message_id
    assert len(h.deliveries("group", "wrM1")) == 1
    async with async_session() as s:
        task = (await s.execute(sa.select(MassSendTask))).scalar_one()
    assert task.status == "sent"


async def test_a_group_over_its_monthly_mass_send_quota_is_failed_with_the_reason(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrQ"}])
    moment = datetime.fromtimestamp(h.platform.now(), timezone.utc)
    import calendar

    h.platform.group_mass_sends[("wrQ", moment.strftime("%Y-%m"))] = calendar.monthrange(moment.year, moment.month)[1]
    plan_id = await make_plan(plan_body(["wrQ"], delivery="mass_send"))
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)

    async def msgid():
        await runlog.settle()
        return (await runs_of(plan_id))["wrQ"].message_id
    confirmed = await h.wait_for(msgid, timeout=20)
    h.platform.owner_confirms(confirmed)
    await mass_send.refresh(h.runtime.client, confirmed)
    found = await settled(h, plan_id, 1)
    assert found["wrQ"].status == "failed" and found["wrQ"].reason == "该群本月收到的群发已达上限"


async def test_owner_reminder_sends_the_ready_text_to_the_owner(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrR", "owner": "owner02"}])
    plan_id = await make_plan(plan_body(["wrR"], text="今晚秒杀 {群名}", delivery="owner_reminder"))
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)
    [note] = await h.wait_for(lambda: h.deliveries("staff", "owner02"))
    assert "群wrR" in note["content"]["content"] and "今晚秒杀 群wrR" in note["content"]["content"]
    found = await settled(h, plan_id, 1)
    assert found["wrR"].status == "sent" and found["wrR"].message_id
    assert h.deliveries("group", "wrR") == []


async def test_group_created_n_days_ago_gets_its_day_n_post(harness):
    h = harness
    now = datetime.utcnow()
    await add_groups(h, [{"chat_id": "wrNew", "tags": ["新人群"], "created": now - timedelta(days=3)},
                         {"chat_id": "wrOld", "tags": ["新人群"], "created": now - timedelta(days=30)}])
    body = plan_body([], schedule={"kind": "after_group_created", "days": 3, "time": "10:00"},
                     targets={"group_tag": "新人群"})
    plan_id = await make_plan(body)
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)
    found = await runs_of(plan_id)
    assert list(found) == ["wrNew"]


async def test_a_busy_robot_paces_the_post_and_the_log_says_when_it_goes(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrBusy"}])
    robot = h.platform.groups["wrBusy"].robot_key
    h.platform.robot_sends[robot].extend([h.platform.now()] * 20)  # another tool used this minute's 20
    plan_id = await make_plan(plan_body(["wrBusy"]))
    await firing.fire(plan_id, utc_minute(), runtime=h.runtime)

    async def deferred():
        await runlog.settle()
        run = (await runs_of(plan_id))["wrBusy"]
        return run if run.reason and run.reason.startswith(runlog.RATE_LIMITED) else None
    run = await h.wait_for(deferred, timeout=20)
    assert run.status == "pending" and "自动发出" in run.reason
    assert h.deliveries("group", "wrBusy") == []
