"""微信客服: a sync cursor the platform no longer accepts (40058 after a reset on its side) must not
stop the account's messages for good. The gateway drops it with a warning, pulls the account again
from the start of what the platform retains, and answers only what it had not answered (the inbox's
msgid dedup; messages older than its dedup horizon are skipped). The sandbox is the platform (its
/sandbox/kf/reset_cursors control), with the in-process gateway on SQLite and PostgreSQL."""
from __future__ import annotations

import logging

import sqlalchemy as sa

from actions.db.engine import async_session
from channels.wechat.models import InboundMessageRow

REJECTED = ("wechat kf cursor rejected by the platform; pulling the account again from the start of its "
            "retained messages")


def _texts(h, user: str):
    return [d["content"]["content"] for d in h.deliveries("kf", user)]


def _turns(h):
    return sorted(m.sender_id for m in h.agent.received)


def _warnings(caplog, message: str):
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage() == message]


async def _reset_platform_cursors(h) -> None:
    async with h.http.post(h.sandbox_url + "/sandbox/kf/reset_cursors") as r:
        assert r.status == 200 and (await r.json())["epoch"] >= 1


async def test_a_rejected_cursor_is_reset_and_the_backlog_pulled_again_without_answering_twice(harness, caplog):
    h = harness
    caplog.set_level(logging.INFO, logger="channels.wechat.inbound.kf")
    for user, text in (("wmAnn", "我的订单到哪了"), ("wmBen", "怎么退货")):
        await h.say("kf", user, text)
        await h.wait_for(lambda: h.deliveries("kf", user))
    await _reset_platform_cursors(h)
    # a message whose doorbell never came: it waits in the platform's backlog
    h.platform.kf_user_message("wmCat", "有优惠券吗")

    await h.say("kf", "wmDan", "在吗")
    await h.wait_for(lambda: h.deliveries("kf", "wmDan") and h.deliveries("kf", "wmCat"), timeout=15)
    await h.quiet()
    assert _texts(h, "wmAnn") == ["收到：我的订单到哪了"] and _texts(h, "wmBen") == ["收到：怎么退货"], "not again"
    assert _texts(h, "wmCat") == ["收到：有优惠券吗"] and _texts(h, "wmDan") == ["收到：在吗"]
    assert _turns(h) == ["wecom_kf:wmAnn", "wecom_kf:wmBen", "wecom_kf:wmCat", "wecom_kf:wmDan"]
    assert len(_warnings(caplog, REJECTED)) == 1
    rejected = [r for r in h.platform.requests if r["api"] == "kf/sync_msg" and r["errcode"] == 40058]
    assert len(rejected) == 1

    # the new cursor is the platform's again: the next message goes without another reset
    await h.say("kf", "wmEve", "谢谢")
    await h.wait_for(lambda: h.deliveries("kf", "wmEve"))
    await h.quiet()
    assert len(_warnings(caplog, REJECTED)) == 1 and _texts(h, "wmEve") == ["收到：谢谢"]
    assert len(h.agent.received) == 5


async def test_on_the_replay_messages_older_than_the_dedup_horizon_are_not_answered_again(harness, caplog):
    """The inbox forgets answered messages after SIYU_WECHAT_DEDUP_TTL_S; the platform may retain
    them longer. Such a message cannot be told from a new one, so the replay skips it."""
    h = harness
    caplog.set_level(logging.INFO, logger="channels.wechat.inbound.kf")
    h.runtime.config.dedup_ttl_s = 3600
    for user, text in (("wmOld", "上周的问题"), ("wmRecent", "刚才的问题")):
        await h.say("kf", user, text)
        await h.wait_for(lambda: h.deliveries("kf", user))
    # the first was two hours ago: the platform still has it, the inbox has let it go (prune)
    logged = next(m for m in h.platform.kf_log if m["external_userid"] == "wmOld")
    logged["send_time"] -= 2 * 3600
    async with async_session() as session:
        await session.execute(sa.delete(InboundMessageRow).where(InboundMessageRow.dedup_key == logged["msgid"]))
        await session.commit()

    await _reset_platform_cursors(h)
    await h.say("kf", "wmNew", "新问题")
    await h.wait_for(lambda: h.deliveries("kf", "wmNew"))
    await h.quiet()
    assert _texts(h, "wmOld") == ["收到：上周的问题"], "answered once, not again on the replay"
    assert _texts(h, "wmRecent") == ["收到：刚才的问题"] and _texts(h, "wmNew") == ["收到：新问题"]
    replayed = _warnings(caplog, "wechat kf account pulled again after a cursor reset")
    assert [(r.__dict__["new_messages"], r.__dict__["skipped_older_than_dedup_horizon"]) for r in replayed] == [(1, 1)]
