"""One person, one customer, whichever WeChat door they came through.

A WeChat user is known per channel by an id of that channel (微信客服 external_userid, Official
Account openid, mini-program openid). When the platform tells us their unionid (the same for all
of a company's WeChat apps bound to one open-platform account), an identity on a new channel is
linked to the customer that already has an identity with that unionid. A user nobody knows yet
becomes a new customer record ("微信用户"), so later channels can link to it.

Identities are written as CustomerIdentity(channel, external_id, unionid) rows with the channel
name of the conversation ids ("wecom_kf", "mp", "mini"), which is what actions/identity.py looks up.
"""
from __future__ import annotations

import logging
import uuid
from typing import Optional, Tuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Customer, CustomerIdentity
from channels.wechat import db

logger = logging.getLogger("channels.wechat.conversation.identity")
NEW_CUSTOMER_NAME = "微信用户"


async def find(session: AsyncSession, channel: str, external_id: str) -> Optional[CustomerIdentity]:
    stmt = select(CustomerIdentity).where(CustomerIdentity.channel == channel,
                                          CustomerIdentity.external_id == external_id)
    return (await session.execute(stmt)).scalars().first()


_I = CustomerIdentity.__table__


async def customer_of(s: AsyncSession, channel: str, external_id: str) -> Optional[int]:
    """The customer id behind a channel identity, None for someone not seen yet."""
    return (await s.execute(select(_I.c.customer_id).where(
        _I.c.channel == channel, _I.c.external_id == external_id).limit(1))).scalar()


async def resolve(channel: str, external_id: str, unionid: Optional[str] = None) -> int:
    """The customer id behind (channel, external_id), linking or creating as described above."""
    try:
        async with db.transaction() as s:
            customer_id, created, linked = await _resolve(s, channel, external_id, unionid)
    except IntegrityError:
        # the same user's first two messages raced: the other one created the identity
        async with db.session() as s:
            customer_id = await customer_of(s, channel, external_id)
        if customer_id is None:
            raise
        return customer_id
    if created:
        logger.info("wechat identity recorded", extra={"channel": channel, "customer_id": customer_id,
                                                       "linked_by_unionid": linked})
    return customer_id


async def _resolve(s: AsyncSession, channel: str, external_id: str, unionid: Optional[str]) -> Tuple[int, bool, bool]:
    """(customer id, whether the identity is new, whether it was linked by unionid)."""
    customer_id = await customer_of(s, channel, external_id)
    if customer_id is not None:
        if unionid:
            # learnt the unionid only now: later channels can link to this customer
            await s.execute(_I.update().where(_I.c.channel == channel, _I.c.external_id == external_id,
                                              _I.c.unionid.is_(None)).values(unionid=unionid))
        return customer_id, False, False
    customer_id = None
    if unionid:
        customer_id = (await s.execute(select(_I.c.customer_id).where(_I.c.unionid == unionid)
                                       .order_by(_I.c.id).limit(1))).scalar()
    linked = customer_id is not None
    if customer_id is None:
        customer = Customer(external_id=f"wx-{uuid.uuid4().hex[:20]}", name=NEW_CUSTOMER_NAME)
        s.add(customer)
        await s.flush()
        customer_id = customer.id
    s.add(CustomerIdentity(customer_id=customer_id, channel=channel, external_id=external_id, unionid=unionid))
    await s.flush()
    return customer_id, True, linked


async def link(session: AsyncSession, customer_id: int, channel: str, external_id: str,
               unionid: Optional[str] = None) -> None:
    """Attach a channel identity to a known customer (e.g. the mini-program's login told the shop who
    the openid is). An identity that already points at another customer is moved. Commits."""
    identity = await find(session, channel, external_id)
    if identity is None:
        session.add(CustomerIdentity(customer_id=customer_id, channel=channel, external_id=external_id,
                                     unionid=unionid))
    else:
        identity.customer_id = customer_id
        if unionid:
            identity.unionid = unionid
    await session.commit()
