"""Customers, their channel identities, marketing consent and daily check-ins."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Optional

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Checkin, ConsentEvent, Customer, CustomerIdentity, utcnow


async def find_by_identity(session: AsyncSession, channel: str, external_id: str) -> Optional[Customer]:
    stmt = (select(Customer).join(CustomerIdentity)
            .where(CustomerIdentity.channel == channel, CustomerIdentity.external_id == external_id))
    return (await session.execute(stmt)).scalars().first()


async def get(session: AsyncSession, customer_id: int) -> Optional[Customer]:
    return await session.get(Customer, customer_id)


async def record_marketing_opt_out(session: AsyncSession, customer: Optional[Customer], conversation_id: str,
                                   source: str) -> None:
    """Append the refusal to the consent log and flag the customer (idempotent for the flag)."""
    if customer is not None:
        customer.marketing_opt_out = True
        customer.opt_out_at = utcnow()
        customer.opt_out_source = source
    session.add(ConsentEvent(customer_id=customer.id if customer else None, conversation_id=conversation_id,
                             granted=False, category="marketing", source=source))
    await session.commit()


async def record_marketing_opt_in(session: AsyncSession, customer: Customer, conversation_id: str,
                                  source: str) -> None:
    """The customer takes back a refusal of marketing messages (re-subscribe): logged and unflagged."""
    customer.marketing_opt_out = False
    session.add(ConsentEvent(customer_id=customer.id, conversation_id=conversation_id, granted=True,
                             category="marketing", source=source))
    await session.commit()


@dataclass
class CheckinResult:
    already: bool
    points: int
    streak: int
    total_points: int


async def check_in(session: AsyncSession, customer: Customer, today: date, points_per_day: int,
                   bonus_every: int, bonus_points: int) -> CheckinResult:
    """One check-in per customer and local day; the unique constraint settles concurrent attempts."""
    existing = (await session.execute(
        select(Checkin).where(Checkin.customer_id == customer.id, Checkin.day == today))).scalars().first()
    streak = await _streak(session, customer.id, today - timedelta(days=1))
    if existing is not None:
        return CheckinResult(True, existing.points, streak + 1, customer.points)
    streak += 1
    points = points_per_day + (bonus_points if bonus_every and streak % bonus_every == 0 else 0)
    session.add(Checkin(customer_id=customer.id, day=today, points=points))
    customer.points = (customer.points or 0) + points
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        await session.refresh(customer)
        return CheckinResult(True, points_per_day, streak - 1, customer.points)
    return CheckinResult(False, points, streak, customer.points)


async def _streak(session: AsyncSession, customer_id: int, last_day: date) -> int:
    days = set((await session.execute(
        select(Checkin.day).where(Checkin.customer_id == customer_id, Checkin.day <= last_day,
                                  Checkin.day > last_day - timedelta(days=366)))).scalars())
    streak, day = 0, last_day
    while day in days:
        streak += 1
        day -= timedelta(days=1)
    return streak
