"""The durable inbox on each real database: a 微信客服 page and its cursor stored in one transaction,
repeats skipped without failing the rest of the page, rows stored already claimed by the process that
answers them, and claims handed back at shutdown."""
from __future__ import annotations

import sqlalchemy as sa

from channels.wechat.db import session as async_session
from channels.wechat.inbound import cursors
from channels.wechat.inbound.inbox import Inbox, RedisDedup
from channels.wechat.inbound.payloads import InboundMessage
from channels.wechat.models import InboundMessageRow


def kf_message(msgid: str, user: str = "wmUser", text: str = "发货了吗") -> tuple:
    message = InboundMessage("wecom_kf", user, msgid, "text", 1_700_000_000, account="wkKF", text=text)
    return message, f"wecom_kf:wkKF:{user}"


async def accept_one(inbox: Inbox, message: InboundMessage, conversation_id: str, **options):
    return (await inbox.accept([(message, conversation_id)], **options))[0][0]


async def accept_page(inbox: Inbox, items, **options):
    return (await inbox.accept(items, **options))[0]


def saving_cursor(cursor: str):
    async def also(session, _ids):
        await cursors.save_in(session, "wkKF", cursor)
    return also


async def rows():
    async with async_session() as session:
        result = await session.execute(sa.select(InboundMessageRow.dedup_key, InboundMessageRow.status,
                                                 InboundMessageRow.claimed_by).order_by(InboundMessageRow.id))
        return [tuple(r) for r in result.all()]


async def test_a_page_and_its_cursor_are_stored_together_and_repeats_are_skipped(wechat_db, no_redis):
    inbox = Inbox()
    first = await accept_page(inbox, [kf_message("m1"), kf_message("m2")], claimed_by="worker-a",
                              also=saving_cursor("c1"))
    assert all(first) and first[0] != first[1]
    assert await cursors.load("wkKF") == "c1"

    # the page again (a crash before the cursor moved, or another process), plus one new message
    again = await accept_page(inbox, [kf_message("m1"), kf_message("m2"), kf_message("m3")],
                              claimed_by="worker-b", also=saving_cursor("c2"))
    assert again[:2] == [None, None] and again[2] is not None
    assert await cursors.load("wkKF") == "c2"
    assert await rows() == [("m1", "processing", "worker-a"), ("m2", "processing", "worker-a"),
                            ("m3", "processing", "worker-b")]


async def test_unclaimed_rows_wait_for_claim_and_ignored_rows_are_never_claimed(wechat_db, no_redis):
    inbox = Inbox()
    row_id = await accept_one(inbox, *kf_message("m1"))
    ignored = await accept_one(inbox, *kf_message("e1"), status="ignored", claimed_by="worker-a")
    assert await rows() == [("m1", "received", None), ("e1", "ignored", None)]
    message = await inbox.claim(row_id, "worker-a")
    assert message is not None and message.text == "发货了吗"
    assert await inbox.claim(row_id, "worker-b") is None, "one process answers it"
    assert await inbox.claim(ignored, "worker-b") is None


async def test_shutdown_hands_back_only_its_own_unfinished_claims(wechat_db, no_redis):
    inbox = Inbox()
    mine = await accept_one(inbox, *kf_message("m1"), claimed_by="worker-a")
    await accept_one(inbox, *kf_message("m2"), claimed_by="worker-a")
    await accept_one(inbox, *kf_message("m3"), claimed_by="worker-b")
    await inbox.finish(mine, "done")
    assert await inbox.release_claims("worker-a") == 1
    assert await rows() == [("m1", "done", "worker-a"), ("m2", "received", "worker-a"),
                            ("m3", "processing", "worker-b")]


async def test_a_row_not_claimed_is_missed_only_after_a_while_and_reads_back_whole(wechat_db, no_redis):
    from datetime import timedelta

    from channels.wechat.inbound import inbox as inbox_module
    from channels.wechat.models import now_utc

    inbox = Inbox()
    row_id = await accept_one(inbox, *kf_message("m1", text="发货了吗？ 'x'); --"))
    assert await inbox.missed() == [], "received just now: not missed yet"
    async with async_session() as session:
        row = await session.get(InboundMessageRow, row_id)
        assert abs(row.received_at - now_utc()) < timedelta(seconds=5)
        assert row.payload["text"] == "发货了吗？ 'x'); --"
        await session.execute(sa.update(InboundMessageRow).values(
            received_at=row.received_at - inbox_module.MISSED_AFTER - timedelta(seconds=1)))
        await session.commit()
    assert [r for r, _ in await inbox.missed()] == [row_id]


async def test_pulled_pages_are_deduplicated_by_the_database_and_callbacks_by_redis(wechat_db, no_redis, redis_client):
    client, prefix = redis_client
    inbox = Inbox(RedisDedup(client, ttl_s=60, prefix=prefix))
    first = await accept_page(inbox, [kf_message("m1")], claimed_by="worker-a", pulled=True)
    again = await accept_page(inbox, [kf_message("m1"), kf_message("m2")], claimed_by="worker-b", pulled=True)
    assert first[0] is not None and again[0] is None and again[1] is not None, "the page's repeat dropped once"
    assert [k async for k in client.scan_iter(match=prefix + "*")] == [], "a pulled page asks nothing of Redis"

    # a pushed message (a callback the platform may retry) is checked in Redis first
    pushed = InboundMessage("mp", "oUser", "998877", "text", 1_700_000_000, account="gh_x", text="在吗")
    assert await accept_one(inbox, pushed, "mp:gh_x:oUser") is not None
    assert await accept_one(inbox, pushed, "mp:gh_x:oUser") is None
    assert await client.exists(f"{prefix}wechat:dedup:mp:998877")
    assert [key for key, _, _ in await rows()] == ["m1", "m2", "998877"]


# --- claims of workers that died, of workers that live, and this worker's own -------------------------
async def _age(row_id: int, seconds: float) -> None:
    """The row was claimed `seconds` ago."""
    from datetime import timedelta

    from channels.wechat.models import now_utc

    async with async_session() as session:
        await session.execute(sa.update(InboundMessageRow).where(InboundMessageRow.id == row_id).values(
            claimed_at=now_utc() - timedelta(seconds=seconds), received_at=now_utc() - timedelta(seconds=seconds)))
        await session.commit()


async def _last_seen(worker: str, seconds: float) -> None:
    from datetime import timedelta

    from channels.wechat import workers
    from channels.wechat.models import GatewayWorker, now_utc

    await workers.beat(worker)
    async with async_session() as session:
        await session.execute(sa.update(GatewayWorker).where(GatewayWorker.name == worker).values(
            seen_at=now_utc() - timedelta(seconds=seconds)))
        await session.commit()


async def test_a_dead_workers_claims_are_taken_over_and_a_live_ones_are_kept_however_old(wechat_db, no_redis):
    from channels.wechat import workers

    stale = workers.STALE_AFTER.total_seconds()
    inbox = Inbox()
    slow = await accept_one(inbox, *kf_message("m1", user="u1"), claimed_by="live")
    dead = await accept_one(inbox, *kf_message("m2", user="u2"), claimed_by="dead")
    vanished = await accept_one(inbox, *kf_message("m3", user="u3"), claimed_by="never-seen")
    young = await accept_one(inbox, *kf_message("m4", user="u4"), claimed_by="just-started")
    for row_id in (slow, dead, vanished):
        await _age(row_id, 10 * stale)  # claimed long ago: a slow turn, or the process died
    await _last_seen("live", 1)
    await _last_seen("dead", stale + 1)

    found = await inbox.missed("sweeper")
    assert sorted(row_id for row_id, _ in found) == sorted([dead, vanished])
    assert {key: status for key, status, _ in await rows()} == {
        "m1": "processing", "m2": "received", "m3": "received", "m4": "processing"}
    # the next claim is the new owner's, and answers it once
    assert await inbox.claim(dead, "sweeper") is not None and await inbox.claim(dead, "other") is None
    assert await inbox.missed("sweeper") == [(vanished, "wecom_kf:wkKF:u3")], (
        f"row {young}: claimed moments ago by a worker not seen yet (its first beat may be under way)")


async def test_this_workers_claims_held_by_no_task_are_handed_back(wechat_db, no_redis):
    from channels.wechat import workers

    inbox = Inbox()
    await workers.beat("me")
    answering = await accept_one(inbox, *kf_message("m1", user="u1"), claimed_by="me")
    dropped = await accept_one(inbox, *kf_message("m2", user="u2"), claimed_by="me")
    for row_id in (answering, dropped):
        await _age(row_id, workers.STALE_AFTER.total_seconds() + 5)
    assert await inbox.missed("me", working={answering}) == [(dropped, "wecom_kf:wkKF:u2")]
    assert await inbox.missed("someone-else") == [(dropped, "wecom_kf:wkKF:u2")], "me is alive: answering stays"


async def test_pruning_never_lets_a_new_message_take_an_answered_ones_row_id(wechat_db, no_redis):
    """Replies are keyed by the inbox row id (wxin<id>-n) and outbox rows are kept: SQLite gives a
    new row max(id) + 1, so a prune that emptied the inbox (a shop quiet for a day) would hand the
    next message the id of the first one, and its reply would be taken for that one's, not sent."""
    from datetime import timedelta

    from channels.wechat.models import now_utc

    inbox = Inbox()
    first = await accept_one(inbox, *kf_message("m1"), claimed_by="worker-a")
    await inbox.finish(first, "done")
    async with async_session() as session:
        await session.execute(sa.update(InboundMessageRow).values(received_at=now_utc() - timedelta(days=2)))
        await session.commit()
    await inbox.prune(timedelta(days=1))
    second = await accept_one(inbox, *kf_message("m2"), claimed_by="worker-a")
    assert second > first
