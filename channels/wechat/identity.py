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
from typing import Optional

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Customer, CustomerIdentity

logger = logging.getLogger("channels.wechat.identity")
NEW_CUSTOMER_NAME = "微信用户"


async def find(session: AsyncSession, channel: str, external_id: str) -> Optional[CustomerIdentity]:
    stmt = select(CustomerIdentity).where(CustomerIdentity.channel == channel,
                                          CustomerIdentity.external_id == external_id)
    return (await session.execute(stmt)).scalars().first()


_CUSTOMER_OF = (select(CustomerIdentity.__table__.c.customer_id)
                .where(CustomerIdentity.__table__.c.channel == bindparam("channel"),
                       CustomerIdentity.__table__.c.external_id == bindparam("external_id")).limit(1))


async def customer_of(session: AsyncSession, channel: str, external_id: str) -> Optional[int]:
    """The customer id behind a channel identity, None for someone not seen yet (every message asks)."""
    return (await session.execute(_CUSTOMER_OF, {"channel": channel, "external_id": external_id})).scalar()


async def customer_by_unionid(session: AsyncSession, unionid: str) -> Optional[int]:
    stmt = (select(CustomerIdentity.customer_id).where(CustomerIdentity.unionid == unionid)
            .order_by(CustomerIdentity.id).limit(1))
    return (await session.execute(stmt)).scalar()


async def resolve(session: AsyncSession, channel: str, external_id: str, unionid: Optional[str] = None) -> int:
    """The customer id behind (channel, external_id), linking or creating as described above. Commits."""
    identity = await find(session, channel, external_id)
    if identity is not None:
        if unionid and not identity.unionid:
            identity.unionid = unionid
            await session.commit()
        return identity.customer_id
    customer_id = await customer_by_unionid(session, unionid) if unionid else None
    linked = customer_id is not None
    if customer_id is None:
        customer = Customer(external_id=f"wx-{uuid.uuid4().hex[:20]}", name=NEW_CUSTOMER_NAME)
        session.add(customer)
        await session.flush()
        customer_id = customer.id
    session.add(CustomerIdentity(customer_id=customer_id, channel=channel, external_id=external_id, unionid=unionid))
    try:
        await session.commit()
    except IntegrityError:
        # the same user's first two messages raced: the other one created the identity
        await session.rollback()
        identity = await find(session, channel, external_id)
        if identity is None:
            raise
        return identity.customer_id
    logger.info("wechat identity recorded", extra={"channel": channel, "customer_id": customer_id,
                                                   "linked_by_unionid": linked})
    return customer_id


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
