"""Orders with their items and logistics, and the changes a customer may make to them."""
from __future__ import annotations

from typing import List, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from actions.db.models import Order, OrderStatus, utcnow

_WITH_DETAILS = (selectinload(Order.items), selectinload(Order.logistics))


async def get_by_order_no(session: AsyncSession, order_no: str) -> Optional[Order]:
    stmt = select(Order).options(*_WITH_DETAILS).where(Order.order_no == order_no)
    return (await session.execute(stmt)).scalars().first()


async def recent_for_customer(session: AsyncSession, customer_id: int, statuses: Optional[Sequence[str]] = None,
                              limit: int = 5) -> List[Order]:
    stmt = select(Order).options(*_WITH_DETAILS).where(Order.customer_id == customer_id)
    if statuses:
        stmt = stmt.where(Order.status.in_(list(statuses)))
    stmt = stmt.order_by(Order.created_at.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def cancel(session: AsyncSession, order: Order) -> None:
    order.status = OrderStatus.cancelled.value
    order.cancelled_at = utcnow()
    await session.commit()


async def change_address(session: AsyncSession, order: Order, receiver_name: Optional[str],
                         receiver_phone: Optional[str], address: str) -> None:
    if receiver_name:
        order.receiver_name = receiver_name
    if receiver_phone:
        order.receiver_phone = receiver_phone
    order.address = address
    await session.commit()


async def mark_refunding(session: AsyncSession, order: Order) -> None:
    order.status = OrderStatus.refunding.value
    await session.commit()
