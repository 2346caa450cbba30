"""Counters of failed order verifications (per order number, per client address), their locks, and
the proofs visitors gave (actions/order_verification.py decides with them)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import OrderVerification, VerificationGuard

_G = VerificationGuard


def _insert_ignoring_duplicates(session: AsyncSession):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(_G).on_conflict_do_nothing(index_elements=["key"])


async def count_failure(session: AsyncSession, key: str, window: timedelta, now: datetime) -> VerificationGuard:
    """Count one failure for `key` in the caller's transaction and return the guard as it is now.

    The UPDATE comes before the read, so it holds the row (PostgreSQL) or the database (SQLite)
    until the caller commits: concurrent guesses are counted one after the other. A window that
    has run out starts again at this failure."""
    await session.execute(_insert_ignoring_duplicates(session).values(
        key=key, failures=0, window_started_at=now, updated_at=now))
    expired = _G.window_started_at < now - window
    await session.execute(
        sa.update(_G).where(_G.key == key).values(
            failures=sa.case((expired, 1), else_=_G.failures + 1),
            window_started_at=sa.case((expired, now), else_=_G.window_started_at),
            updated_at=now).execution_options(synchronize_session=False))
    return await get(session, key)


async def uncount_failure(session: AsyncSession, key: str, now: datetime) -> None:
    """Take back a failure counted before the answer turned out right."""
    await session.execute(
        sa.update(_G).where(_G.key == key, _G.failures > 0).values(failures=_G.failures - 1, updated_at=now)
        .execution_options(synchronize_session=False))


async def get(session: AsyncSession, key: str) -> Optional[VerificationGuard]:
    stmt = sa.select(_G).where(_G.key == key).execution_options(populate_existing=True)
    return (await session.execute(stmt)).scalars().first()


async def guards(session: AsyncSession, keys: Sequence[str]) -> List[VerificationGuard]:
    stmt = sa.select(_G).where(_G.key.in_(list(keys))).execution_options(populate_existing=True)
    return list((await session.execute(stmt)).scalars())


async def locked(session: AsyncSession, now: datetime) -> List[VerificationGuard]:
    """Every lock in force, newest first (for staff)."""
    stmt = (sa.select(_G).where(_G.locked_at.isnot(None), sa.or_(_G.locked_until.is_(None), _G.locked_until > now))
            .order_by(_G.locked_at.desc()))
    return list((await session.execute(stmt)).scalars())


def add_proof(session: AsyncSession, order_no: str, conversation_id: str, client: Optional[str],
              now: datetime) -> None:
    session.add(OrderVerification(order_no=order_no, conversation_id=conversation_id, client=client,
                                  verified_at=now))


async def proven_since(session: AsyncSession, order_no: str, conversation_id: str, since: datetime) -> bool:
    """Whether this conversation proved the order at `since` or later."""
    stmt = sa.select(OrderVerification.id).where(
        OrderVerification.order_no == order_no, OrderVerification.conversation_id == conversation_id,
        OrderVerification.verified_at >= since).limit(1)
    return (await session.execute(stmt)).first() is not None
