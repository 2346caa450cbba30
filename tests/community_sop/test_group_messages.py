"""Group messages through the real gateway (sandbox callbacks, inbox, pipeline, outbox): check-in
once a day with the customer's own points, keyword replies with a cooldown, moderation hits with
the owner alerted and nothing said in the group, members counted as active."""
from __future__ import annotations

import sqlalchemy as sa

from actions.db.engine import async_session, in_transaction
from actions.db.models import Customer, CustomerIdentity
from channels.wechat.sandbox.callbacks import CallbackSigner
from community_sop import keyword_replies
from community_sop.models import SopGroupActivity, SopGroupCheckin, SopModerationHit
from tests.community_sop.conftest import add_groups

BOT = "@AI 豆\u2005"


async def unaddressed(h, chat_id: str, user: str, text: str, msg_id: str) -> None:
    """A group message that does not @ the robot, as a transport that delivers every message would."""
    group = h.platform.groups[chat_id]
    signed = CallbackSigner(h.platform.config).group_message(chat_id, group.robot_key, user, "成员", text, msg_id,
                                                             h.sandbox_url)
    async with h.http.post(signed.url(h.bot_url), data=signed.body) as r:
        assert r.status == 200


async def test_check_in_once_a_day_with_the_points_of_the_customer(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrC"}])
    async with async_session() as s:  # the member is a known 微信客服 customer with points
        customer = Customer(external_id="C900", name="王女士", points=100)
        s.add(customer)
        await s.flush()
        s.add(CustomerIdentity(customer_id=customer.id, channel="wecom_kf", external_id="wmMember1"))
        await s.commit()
        customer_id = customer.id
    await h.say("group", "wmMember1", BOT + "签到", chat_id="wrC")
    [done] = await h.wait_for(lambda: h.deliveries("group", "wrC"))
    assert done["content"]["content"].startswith("签到成功") and done["content"]["mentioned_list"] == ["wmMember1"]
    assert "当前积分 105" in done["content"]["content"]
    await h.say("group", "wmMember1", BOT + "签到", chat_id="wrC")
    replies = await h.wait_for(lambda: h.deliveries("group", "wrC") if len(h.deliveries("group", "wrC")) == 2
                               else None)
    assert replies[1]["content"]["content"].startswith("今天已经签到过啦")
    async with async_session() as s:
        assert (await s.get(Customer, customer_id)).points == 105
        checkins = (await s.execute(sa.select(SopGroupCheckin))).scalars().all()
    assert [(c.chat_id, c.member, c.customer_id) for c in checkins] == [("wrC", "wmMember1", customer_id)]
    assert h.agent.received == [], "the bot was not asked"


async def test_keyword_reply_then_cooldown(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrK", "tags": ["宝妈群"]}, {"chat_id": "wrK2", "tags": ["健身群"]}])
    data = keyword_replies.check({"group_tag": "宝妈群", "keyword": "团购", "reply": "每周三晚 8 点开团",
                                  "cooldown_s": 600})
    await in_transaction(lambda s: keyword_replies.create(s, data, "moderator"))
    await h.say("group", "wmA", BOT + "团购什么时候开", chat_id="wrK")
    [first] = await h.wait_for(lambda: h.deliveries("group", "wrK"))
    assert first["content"]["content"] == "每周三晚 8 点开团"
    await unaddressed(h, "wrK", "wmB", "团购团购", "kw-2")
    await h.say("group", "wmC", BOT + "团购几点", chat_id="wrK")
    second = await h.wait_for(lambda: h.deliveries("group", "wrK")[1:])
    assert second[0]["content"]["content"] == "收到：团购几点", \
        "within the cooldown an addressed question goes to the bot"
    await h.quiet()
    assert len(h.deliveries("group", "wrK")) == 2, "the bare keyword in the cooldown got nothing"
    await h.say("group", "wmA", BOT + "团购", chat_id="wrK2")
    [other] = await h.wait_for(lambda: h.deliveries("group", "wrK2"))
    assert other["content"]["content"] == "收到：团购", "a reply for another tag does not apply"


async def test_spam_is_flagged_the_owner_alerted_and_nothing_said_in_the_group(harness):
    h = harness
    await add_groups(h, [{"chat_id": "wrM", "owner": "owner02"}])
    await unaddressed(h, "wrM", "wmSpam", "想要正品代购的加我 13912345678 微信同号", "spam-1")
    await unaddressed(h, "wrM", "wmFine", "今天的早安福利好实在", "fine-1")
    [alert] = await h.wait_for(lambda: h.deliveries("staff", "owner02"))
    assert "13912345678" in alert["content"]["content"] and "机器人无法移出成员" in alert["content"]["content"]
    await h.quiet()
    assert h.deliveries("group", "wrM") == [] and h.agent.received == []
    async with async_session() as s:
        hits = (await s.execute(sa.select(SopModerationHit))).scalars().all()
        active = (await s.execute(sa.select(SopGroupActivity.member))).scalars().all()
    assert [(hit.member, hit.kind, hit.owner_alerted, hit.status) for hit in hits] == [
        ("wmSpam", "daigou_phone", True, "open")]
    assert sorted(active) == ["wmFine", "wmSpam"]
