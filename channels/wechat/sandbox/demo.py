"""The sandbox's demo users as customers of the demo shop: `python -m bot run --demo --sandbox`
links them to a demo customer who has orders, so "我的订单到哪了" over fake WeChat shows real
demo orders (a shop links its real users the same way, by unionid or identity.link)."""
from __future__ import annotations

from typing import Optional, Tuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from actions.db.engine import create_sync_engine
from actions.db.models import Customer, CustomerIdentity, Order

DEMO_USERS = (("wecom_kf", "wmDemoUser01"), ("mp", "oDemoUser01"), ("mini", "oDemoUser01"))


def link_demo_users() -> Optional[Tuple[str, str]]:
    """(customer name, shop customer number) the demo users now are, None if the shop has no orders."""
    engine = create_sync_engine()
    try:
        with Session(engine) as session:
            customer = session.execute(sa.select(Customer).join(Order).order_by(Customer.id).limit(1)).scalars().first()
            if customer is None:
                return None
            for channel, user in DEMO_USERS:
                identity = session.execute(sa.select(CustomerIdentity).where(
                    CustomerIdentity.channel == channel, CustomerIdentity.external_id == user)).scalars().first()
                if identity is None:
                    session.add(CustomerIdentity(customer_id=customer.id, channel=channel, external_id=user))
                else:
                    identity.customer_id = customer.id
            session.commit()
            return customer.name, customer.external_id
    finally:
        engine.dispose()
