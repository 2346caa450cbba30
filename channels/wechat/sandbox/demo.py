"""The sandbox's demo users as customers of the demo shop: `python -m bot run --demo --sandbox`
links the 微信客服 users wmDemoUser01…05 to demo customers C10001…C10005 (who have orders, so
"我的订单到哪了" over fake WeChat shows real demo orders, and the nudges' demo reaches them) and the
Official Account / mini-program user oDemoUser01 to C10001 (a shop links its real users the same
way, by unionid or identity.link)."""
from __future__ import annotations

from typing import Optional, Tuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from actions.db.engine import create_sync_engine
from actions.db.models import Customer, CustomerIdentity

DEMO_USERS = tuple(("wecom_kf", f"wmDemoUser0{n}", f"C1000{n}") for n in range(1, 6)) + (
    ("mp", "oDemoUser01", "C10001"), ("mini", "oDemoUser01", "C10001"))


def link_demo_users() -> Optional[Tuple[str, str]]:
    """(customer name, shop customer number) of wmDemoUser01, None if the shop has no C10001."""
    engine = create_sync_engine()
    try:
        with Session(engine) as session:
            numbers = {number for _, _, number in DEMO_USERS}
            customers = {c.external_id: c for c in session.execute(sa.select(Customer).where(
                Customer.external_id.in_(numbers))).scalars()}
            if "C10001" not in customers:
                return None
            for channel, user, number in DEMO_USERS:
                customer = customers.get(number)
                if customer is None:
                    continue
                identity = session.execute(sa.select(CustomerIdentity).where(
                    CustomerIdentity.channel == channel, CustomerIdentity.external_id == user)).scalars().first()
                if identity is None:
                    session.add(CustomerIdentity(customer_id=customer.id, channel=channel, external_id=user))
                else:
                    identity.customer_id = customer.id
            session.commit()
            return customers["C10001"].name, "C10001"
    finally:
        engine.dispose()
