"""Looking up demo-shop rows the tests talk about (sync, against the current DATABASE_URL)."""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from actions.db.engine import create_sync_engine
from actions.db.models import (
    AuditEvent,
    Customer,
    CustomerIdentity,
    Order,
    OrderVerification,
    Product,
    Ticket,
    VerificationGuard,
    utcnow,
)


def session() -> Session:
    return Session(create_sync_engine(), expire_on_commit=False)


def order_in(status: str, *, returnable: Optional[bool] = None, exclude_customer: Optional[int] = None) -> Order:
    with session() as s:
        stmt = (select(Order).options(selectinload(Order.items), selectinload(Order.logistics))
                .where(Order.status == status).order_by(Order.id))
        for order in s.execute(stmt).scalars():
            if exclude_customer is not None and order.customer_id == exclude_customer:
                continue
            if returnable is not None:
                inside = order.delivered_at and utcnow() - order.delivered_at <= timedelta(days=7)
                if bool(inside) != returnable:
                    continue
            if status == "shipped" and not order.logistics:
                continue
            return order
    raise LookupError(f"no demo order in state {status}")


def wrong_tail(order: Order) -> str:
    """Four digits that are not the order's receiver phone's last four."""
    return "0000" if not order.receiver_phone.endswith("0000") else "1111"


def reset_verification() -> None:
    """Forget every verification guess, proof, lock and audit row (tests share the demo shop)."""
    with session() as s:
        for model in (VerificationGuard, OrderVerification, AuditEvent):
            s.query(model).delete()
        s.commit()


def sender_of(order: Order) -> str:
    with session() as s:
        identity = s.execute(select(CustomerIdentity).where(CustomerIdentity.customer_id == order.customer_id,
                                                            CustomerIdentity.channel == "im")).scalars().first()
        return f"im:{identity.external_id}"


def reload_order(order_no: str) -> Order:
    with session() as s:
        return s.execute(select(Order).where(Order.order_no == order_no)).scalars().one()


def tickets_of(order_no: str):
    with session() as s:
        order = s.execute(select(Order).where(Order.order_no == order_no)).scalars().one()
        return list(s.execute(select(Ticket).where(Ticket.order_id == order.id)).scalars())


def product(spu: str) -> Product:
    with session() as s:
        return s.execute(select(Product).options(selectinload(Product.variants))
                         .where(Product.spu == spu)).scalars().one()


def set_price(spu: str, yuan: int) -> None:
    with session() as s:
        p = s.execute(select(Product).options(selectinload(Product.variants)).where(Product.spu == spu)).scalars().one()
        for v in p.variants:
            v.price_fen = yuan * 100
        s.commit()


def customer(external_id: str) -> Customer:
    with session() as s:
        return s.execute(select(Customer).where(Customer.external_id == external_id)).scalars().one()
