"""The desk's rules on the real databases (SQLite and PostgreSQL): handing a conversation on, the
customer's wait, atomic claims, who may do what, and staff accounts."""
from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from actions.db.engine import async_session, in_transaction
from bot.settings import get_settings
from desk import handoff, queue, staff
from desk.models import DeskConversation, DeskEvent
from desk.queue import Conflict, Forbidden, Staff


def new_conversation() -> str:
    return f"im:guest-{uuid.uuid4().hex[:12]}"


async def queued(conversation_id: str, reason: str = "customer_request", level=None):
    shop = get_settings().shop
    return await in_transaction(lambda s: handoff.request(s, shop, conversation_id, reason, "转人工",
                                                          customer_level=level))


async def events_of(row_id: int):
    async with async_session() as s:
        return [e.kind for e in (await s.execute(sa.select(DeskEvent).where(DeskEvent.conversation == row_id)
                                                 .order_by(DeskEvent.id))).scalars()]


async def test_a_handoff_is_queued_once_and_can_be_cancelled_while_waiting(shop_db):
    conversation = new_conversation()
    first = await queued(conversation)
    assert not first.already and first.conversation.state == "queued" and first.conversation.reason == \
        "customer_request"
    assert first.position >= 1 and first.expected_minutes >= 1
    again = await queued(conversation)
    assert again.already and again.conversation.id == first.conversation.id
    assert await in_transaction(lambda s: handoff.cancel(s, conversation)) is True
    assert await in_transaction(lambda s: handoff.cancel(s, conversation)) is False  # nothing waiting any more
    assert await events_of(first.conversation.id) == ["queued", "cancelled"]


async def test_priority_comes_from_the_reason_and_the_customers_level(shop_db):
    plain = await queued(new_conversation(), "customer_request")
    vip = await queued(new_conversation(), "customer_request", level=get_settings().shop.desk.vip_levels[0])
    angry = await queued(new_conversation(), "anger")
    assert (plain.conversation.priority, vip.conversation.priority, angry.conversation.priority) == (1, 2, 3)
    # a second, more urgent reason while waiting raises the priority
    again = await queued(plain.conversation.conversation_id, "anger")
    assert again.already and again.conversation.priority == 3


async def test_the_queue_is_sorted_by_priority_then_waiting_time(shop_db):
    first = await queued(new_conversation(), "customer_request")
    second = await queued(new_conversation(), "customer_request")
    urgent = await queued(new_conversation(), "anger")
    async with async_session() as s:
        ids = [r.id for r in await queue.listing(s, state="queued")]
    mine = [i for i in ids if i in (first.conversation.id, second.conversation.id, urgent.conversation.id)]
    assert mine == [urgent.conversation.id, first.conversation.id, second.conversation.id]


async def test_two_agents_claiming_at_once_get_one_winner(shop_db):
    for _ in range(5):
        row = (await queued(new_conversation())).conversation
        outcomes = await asyncio.gather(
            in_transaction(lambda s: queue.claim(s, row.id, Staff("agent1", "agent"))),
            in_transaction(lambda s: queue.claim(s, row.id, Staff("agent2", "agent"))),
            return_exceptions=True)
        winners = [o for o in outcomes if isinstance(o, DeskConversation)]
        losers = [o for o in outcomes if isinstance(o, Conflict)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        async with async_session() as s:
            stored = await s.get(DeskConversation, row.id)
        assert stored.state == "assigned" and stored.assignee == winners[0].assignee


async def test_only_the_holder_or_a_supervisor_hands_back_and_moderators_cannot_claim(shop_db):
    row = (await queued(new_conversation())).conversation
    with pytest.raises(Forbidden):
        await in_transaction(lambda s: queue.claim(s, row.id, Staff("moderator", "moderator")))
    await in_transaction(lambda s: queue.claim(s, row.id, Staff("agent1", "agent")))
    with pytest.raises(Forbidden):
        await in_transaction(lambda s: queue.handback(s, row.id, Staff("agent2", "agent")))
    back = await in_transaction(lambda s: queue.handback(s, row.id, Staff("lead", "supervisor")))
    assert back.state == "bot" and back.assignee is None
    with pytest.raises(Conflict):  # nothing to hand back any more
        await in_transaction(lambda s: queue.handback(s, row.id, Staff("agent1", "agent")))
    assert await events_of(row.id) == ["queued", "claimed", "handed_back"]


async def test_a_supervisor_assigns_and_an_agent_transfers_only_what_they_hold(shop_db):
    suffix = uuid.uuid4().hex[:6]
    for name in ("a", "b"):
        await in_transaction(lambda s, n=name: staff.add(s, f"{n}{suffix}", "a-long-password", "agent"))
    row = (await queued(new_conversation())).conversation
    with pytest.raises(Forbidden):
        await in_transaction(lambda s: queue.assign(s, row.id, f"a{suffix}", Staff(f"b{suffix}", "agent")))
    given = await in_transaction(lambda s: queue.assign(s, row.id, f"a{suffix}", Staff("lead", "supervisor")))
    assert given.assignee == f"a{suffix}"
    moved = await in_transaction(lambda s: queue.assign(s, row.id, f"b{suffix}", Staff(f"a{suffix}", "agent")))
    assert moved.assignee == f"b{suffix}" and moved.state == "assigned"
    assert await events_of(row.id) == ["queued", "assigned", "transferred"]


async def test_staff_passwords_are_argon2_and_disabling_ends_sessions(shop_db):
    name = f"agent-{uuid.uuid4().hex[:6]}"
    user = await in_transaction(lambda s: staff.add(s, name, "一个很长的中文密码口令", "agent"))
    assert user.password_hash.startswith("$argon2id$")
    assert await in_transaction(lambda s: staff.authenticate(s, name, "wrong password")) is None
    found = await in_transaction(lambda s: staff.authenticate(s, name, "一个很长的中文密码口令"))
    assert found is not None and found.session_epoch == 0
    disabled = await in_transaction(lambda s: staff.set_disabled(s, name, True, "staff:lead"))
    assert disabled.session_epoch == 1
    assert await in_transaction(lambda s: staff.authenticate(s, name, "一个很长的中文密码口令")) is None
    with pytest.raises(staff.StaffError):
        await in_transaction(lambda s: staff.add(s, name, "another-password", "agent"))
    with pytest.raises(staff.StaffError):
        await in_transaction(lambda s: staff.add(s, "x" + name, "short", "agent"))


def test_service_time_counts_business_hours_only():
    from datetime import datetime

    from bot.settings import ShopConfig
    from desk.sla import business_seconds

    shop = ShopConfig.model_validate({**get_settings().shop.model_dump(),
                                      "business_hours": {"start": "09:00", "end": "18:00", "days": [1, 2, 3, 4, 5]}})
    # Friday 17:30 to Monday 09:30 Shanghai time (UTC+8): 30 + 30 business minutes
    assert business_seconds(shop, datetime(2026, 12, 4, 9, 30), datetime(2026, 12, 7, 1, 30)) == 3600
    assert business_seconds(shop, datetime(2026, 12, 5, 2, 0), datetime(2026, 12, 5, 3, 0)) == 0  # Saturday


async def test_a_missed_target_is_recorded_once_and_counted_in_the_day(shop_db, open_hours):
    from datetime import timedelta

    from desk import sla, stats
    from desk.service import summary

    shop = get_settings().shop
    row = (await queued(new_conversation())).conversation
    late = row.queued_at + timedelta(minutes=shop.desk.targets.first_response_minutes + 1)
    assert sla.status(shop, row, row.queued_at)["first_response"]["state"] == "ok"
    assert sla.status(shop, row, late)["first_response"]["state"] == "missed"
    first = await in_transaction(lambda s: sla.record_breaches(s, shop, late))
    assert any(e.conversation == row.id and e.detail["kind"] == "first_response" for e in first)
    again = await in_transaction(lambda s: sla.record_breaches(s, shop, late))
    assert not any(e.conversation == row.id for e in again)
    # a reply stops the first-response clock; the day's numbers count the handoff and its reply
    await in_transaction(lambda s: queue.claim(s, row.id, Staff("agent1", "agent")))

    async def reply(s):
        current = await queue.get(s, row.id)
        current.first_response_at = current.last_agent_at = late
        queue.record(s, current, "replied", "staff:agent1", audit=False)
    await in_transaction(reply)
    async with async_session() as s:
        current = await queue.get(s, row.id)
        assert summary(current, late)["sla"]["first_response"]["running"] is False
        numbers = await stats.daily(s, shop)
    assert numbers["handoffs"] >= 1 and numbers["first_response_s"]["answered"] >= 1
    assert numbers["sla_breaches_by_kind"].get("first_response", 0) >= 1


def test_migration_0006_matches_the_desk_models(shop_db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import desk.models  # noqa: F401
    from actions.db.engine import create_sync_engine
    from actions.db.models import Base

    engine = create_sync_engine()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, Base.metadata) if "desk_" in str(d) or "staff_users" in str(d)]
    engine.dispose()
    assert diff == []
