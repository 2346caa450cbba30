"""Demo customers the browser chat page lets a newcomer act as (demo mode only)."""
from __future__ import annotations

from typing import Dict, List

from sqlalchemy import func, select

from actions.db.engine import async_session
from actions.db.models import Customer, CustomerIdentity, Order

DEMO_CUSTOMERS = 8


async def demo_customers() -> List[Dict]:
    async with async_session() as session:
        order_count = func.count(Order.id).label("orders")
        stmt = (select(CustomerIdentity.external_id, Customer.name, Customer.level, order_count)
                .join(Customer, Customer.id == CustomerIdentity.customer_id)
                .join(Order, Order.customer_id == Customer.id)
                .where(CustomerIdentity.channel == "im")
                .group_by(CustomerIdentity.external_id, Customer.name, Customer.level, Customer.id)
                .order_by(Customer.id).limit(DEMO_CUSTOMERS))
        rows = (await session.execute(stmt)).all()
    return [{"sender": r.external_id, "name": r.name, "level": r.level, "orders": r.orders} for r in rows]
