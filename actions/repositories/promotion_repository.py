"""Coupons and promotions that are valid right now, and whether one applies to a product."""
from __future__ import annotations

from datetime import datetime
from typing import List, Optional

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Coupon, Product

MEMBER_LEVELS_FOR_MEMBER_ONLY = ("银卡会员", "金卡会员", "黑卡会员")


async def valid_now(session: AsyncSession, now: datetime) -> List[Coupon]:
    stmt = (select(Coupon).where(Coupon.active.is_(True), Coupon.valid_from <= now, Coupon.valid_to >= now)
            .order_by(Coupon.valid_to))
    return list((await session.execute(stmt)).scalars())


def applies_to(coupon: Coupon, product: Product) -> bool:
    if coupon.scope == "all":
        return True
    if coupon.scope == "category":
        return coupon.scope_value == product.category
    if coupon.scope == "product":
        return coupon.scope_value == product.spu
    return False


def usable_by(coupon: Coupon, customer_level: Optional[str]) -> bool:
    return not coupon.member_only or (customer_level in MEMBER_LEVELS_FOR_MEMBER_ONLY)


def price_after(coupon: Coupon, price_fen: int) -> Optional[int]:
    """The price of one item after the coupon, or None when one item does not reach the threshold."""
    if coupon.kind == "threshold":
        return price_fen - coupon.amount_fen if price_fen >= coupon.threshold_fen else None
    if coupon.kind == "discount":
        return price_fen * (100 - coupon.percent_off) // 100
    if coupon.kind == "no_threshold":
        return max(price_fen - coupon.amount_fen, 0)
    return None
