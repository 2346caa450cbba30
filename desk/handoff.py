"""Handing a conversation to staff: why (reason), how urgent (priority from the reason and the
customer's value), and what the customer is told (the wait inside business hours, a ticket and a
callback promise outside them). Called by the actions; a second request while queued changes
nothing but the priority, and the customer may cancel while still waiting.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from actions.identity import split_sender
from bot.settings import ShopConfig
from desk.labels import labels
from desk.models import ASSIGNED, BOT, CLOSED, QUEUED, DeskConversation, DeskEvent, StaffUser, now_utc

logger = logging.getLogger("desk.handoff")

# reason -> base priority (0 低, 1 普通, 2 高, 3 紧急)
REASONS = {
    "customer_request": 1,   # 转人工
    "misunderstood": 1,      # the bot failed twice in a row
    "unsure": 1,             # the knowledge base had something related but was not sure
    "complaint": 2,
    "dispute": 2,            # a disputed result, a platform or authority threatened
    "urgency": 2,
    "anger": 3,
    "refund_amount": 2,      # refund above the shop's amount
    "logistics_exception": 2,
}
PRIORITY_NAMES = labels("priority")


def channel_of(conversation_id: str) -> str:
    return split_sender(conversation_id)[0][:16]


def priority_for(reason: str, vip: bool) -> int:
    return min(3, REASONS.get(reason, 1) + (1 if vip else 0))


def is_vip(shop: ShopConfig, level: Optional[str]) -> bool:
    return bool(level) and level in shop.desk.vip_levels


def in_business_hours(shop: ShopConfig, at: Optional[datetime] = None) -> bool:
    local = (at or datetime.now(timezone.utc)).astimezone(ZoneInfo(shop.timezone))
    hours = shop.business_hours
    return local.isoweekday() in hours.days and hours.start <= local.time() < hours.end


@dataclass
class Handoff:
    conversation: DeskConversation
    # True when the conversation was already waiting or with a person (nothing new was queued)
    already: bool
    position: int = 0
    expected_minutes: int = 0


async def ensure_conversation(session: AsyncSession, conversation_id: str, *, customer_id: Optional[int] = None,
                              customer_name: str = "") -> DeskConversation:
    """The desk's row of a conversation, made on first sight (safe against a concurrent maker)."""
    stmt = sa.select(DeskConversation).where(DeskConversation.conversation_id == conversation_id)
    row = (await session.execute(stmt)).scalars().first()
    if row is None:
        row = DeskConversation(conversation_id=conversation_id[:255], channel=channel_of(conversation_id),
                               customer_id=customer_id, customer_name=customer_name[:64], state=BOT, priority=0,
                               episode=0)
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:
            row = (await session.execute(stmt)).scalars().one()
    if customer_id and not row.customer_id:
        row.customer_id, row.customer_name = customer_id, customer_name[:64]
    return row


async def request(session: AsyncSession, shop: ShopConfig, conversation_id: str, reason: str, text: str = "", *,
                  customer_id: Optional[int] = None, customer_name: str = "", customer_level: Optional[str] = None,
                  ticket_no: Optional[str] = None, actor: str = "bot") -> Handoff:
    """Queue the conversation for a person (in the caller's transaction)."""
    if reason not in REASONS:
        raise ValueError(f"unknown handoff reason {reason!r}")
    row = await ensure_conversation(session, conversation_id, customer_id=customer_id, customer_name=customer_name)
    priority = priority_for(reason, is_vip(shop, customer_level))
    now = now_utc()
    if row.state in (QUEUED, ASSIGNED):
        if row.state == QUEUED and priority > row.priority:
            row.priority, row.updated_at = priority, now
            session.add(DeskEvent(conversation=row.id, kind="reprioritised", actor=actor,
                                  detail={"reason": reason, "priority": priority}))
        await session.flush()
        position, minutes = await wait_estimate(session, shop, row)
        return Handoff(row, True, position, minutes)
    result = await session.execute(
        sa.update(DeskConversation)
        .where(DeskConversation.id == row.id, DeskConversation.state.in_((BOT, CLOSED)))
        .values(state=QUEUED, reason=reason, reason_text=text[:200], priority=priority, assignee=None,
                episode=DeskConversation.episode + 1, queued_at=now, assigned_at=None, first_response_at=None,
                closed_at=None, snoozed_until=None, ticket_no=ticket_no, last_customer_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    await session.refresh(row)
    if result.rowcount == 0:  # queued by a concurrent turn in the meantime
        position, minutes = await wait_estimate(session, shop, row)
        return Handoff(row, True, position, minutes)
    session.add(DeskEvent(conversation=row.id, kind="queued", actor=actor,
                          detail={"reason": reason, "priority": priority, "text": text[:200],
                                  "ticket_no": ticket_no, "episode": row.episode}))
    await session.flush()
    logger.info("conversation handed to the desk", extra={"conversation": conversation_id, "reason": reason,
                                                         "priority": priority})
    position, minutes = await wait_estimate(session, shop, row)
    return Handoff(row, False, position, minutes)


async def cancel(session: AsyncSession, conversation_id: str, actor: str = "customer") -> bool:
    """The customer no longer wants a person: back to the bot if nobody has taken it yet."""
    row = (await session.execute(sa.select(DeskConversation).where(
        DeskConversation.conversation_id == conversation_id))).scalars().first()
    if row is None:
        return False
    result = await session.execute(
        sa.update(DeskConversation).where(DeskConversation.id == row.id, DeskConversation.state == QUEUED)
        .values(state=BOT, updated_at=now_utc()).execution_options(synchronize_session=False))
    if result.rowcount:
        session.add(DeskEvent(conversation=row.id, kind="cancelled", actor=actor, detail={}))
        await session.flush()
        return True
    return False


async def state_of(session: AsyncSession, conversation_id: str) -> Optional[str]:
    return (await session.execute(sa.select(DeskConversation.state).where(
        DeskConversation.conversation_id == conversation_id))).scalar()


async def wait_estimate(session: AsyncSession, shop: ShopConfig, row: DeskConversation) -> tuple:
    """(customers ahead of this one + 1, expected minutes) from the queue and the agents online."""
    ahead = (await session.execute(sa.select(sa.func.count()).select_from(DeskConversation).where(
        DeskConversation.state == QUEUED, DeskConversation.id != row.id,
        sa.or_(DeskConversation.priority > row.priority,
               sa.and_(DeskConversation.priority == row.priority,
                       DeskConversation.queued_at <= (row.queued_at or now_utc())))))).scalar() or 0
    online = (await session.execute(sa.select(sa.func.count()).select_from(StaffUser).where(
        StaffUser.presence == "online", StaffUser.disabled.is_(False),
        StaffUser.role.in_(("agent", "supervisor"))))).scalar() or 0
    position = ahead + 1
    minutes = max(1, -(-position * shop.desk.minutes_per_customer // max(1, online)))
    return position, minutes


def next_opening(shop: ShopConfig, at: Optional[datetime] = None) -> datetime:
    """When staff are next at work (local time of the shop)."""
    tz = ZoneInfo(shop.timezone)
    local = (at or datetime.now(timezone.utc)).astimezone(tz)
    hours = shop.business_hours
    for days in range(0, 8):
        day = (local + timedelta(days=days)).date()
        start = datetime.combine(day, hours.start, tzinfo=tz)
        if day.isoweekday() in hours.days and (days > 0 or local < start):
            return start
    return local
