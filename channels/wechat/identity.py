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

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Customer, CustomerIdentity
from channels.wechat import db

logger = logging.getLogger("channels.wechat.identity")
NEW_CUSTOMER_NAME = "微信用户"


async def find(session: AsyncSession, channel: str, external_id: str) -> Optional[CustomerIdentity]:
    stmt = select(CustomerIdentity).where(CustomerIdentity.channel == channel,
                                          CustomerIdentity.external_id == external_id)
    return (await session.execute(stmt)).scalars().first()


_I = CustomerIdentity.__table__


def customer_query() -> Select:
    """The customer id behind (:channel, :external_id): no row for someone not seen yet."""
    return select(_I.c.customer_id).where(
        _I.c.channel == bindparam("channel"), _I.c.external_id == bindparam("external_id")).limit(1)


# compiled once (db.Precompiled): it runs for every message received
_CUSTOMER_OF = db.Precompiled(lambda dialect: customer_query())
# (an UPDATE's WHERE parameters must not be named like its table's columns)
_SET_UNIONID = _I.update().where(_I.c.channel == bindparam("w_channel"), _I.c.external_id == bindparam("w_external_id"),
                                 _I.c.unionid.is_(None)).values(unionid=bindparam("new_unionid"))
_BY_UNIONID = (select(_I.c.customer_id).where(_I.c.unionid == bindparam("unionid")).order_by(_I.c.id).limit(1))
_NEW_CUSTOMER = Customer.__table__.insert().values(external_id=bindparam("external_id"), name=bindparam("name"))
_NEW_IDENTITY = _I.insert().values(customer_id=bindparam("customer_id"), channel=bindparam("channel"),
                                   external_id=bindparam("external_id"), unionid=bindparam("unionid"))


def customer_of(conn: Connection, channel: str, external_id: str) -> Optional[int]:
    """The customer id behind a channel identity, None for someone not seen yet (every message asks)."""
    return _CUSTOMER_OF.execute(conn, {"channel": channel, "external_id": external_id}).scalar()


def customer_by_unionid(conn: Connection, unionid: str) -> Optional[int]:
    return conn.execute(_BY_UNIONID, {"unionid": unionid}).scalar()


async def resolve(channel: str, external_id: str, unionid: Optional[str] = None) -> int:
    """The customer id behind (channel, external_id), linking or creating as described above."""
    try:
        customer_id, created, linked = await db.run(_resolve, channel, external_id, unionid)
    except IntegrityError:
        # the same user's first two messages raced: the other one created the identity
        customer_id = await db.run(customer_of, channel, external_id)
        if customer_id is None:
            raise
        return customer_id
    if created:
        logger.info("wechat identity recorded", extra={"channel": channel, "customer_id": customer_id,
                                                       "linked_by_unionid": linked})
    return customer_id


def _resolve(conn: Connection, channel: str, external_id: str, unionid: Optional[str]) -> Tuple[int, bool, bool]:
    """(customer id, whether the identity is new, whether it was linked by unionid)."""
    customer_id = customer_of(conn, channel, external_id)
    if customer_id is not None:
        if unionid:
            # learnt the unionid only now: later channels can link to this customer
            conn.execute(_SET_UNIONID, {"w_channel": channel, "w_external_id": external_id, "new_unionid": unionid})
        return customer_id, False, False
    customer_id = customer_by_unionid(conn, unionid) if unionid else None
    linked = customer_id is not None
    if customer_id is None:
        created = conn.execute(_NEW_CUSTOMER, {"external_id": f"wx-{uuid.uuid4().hex[:20]}", "name": NEW_CUSTOMER_NAME})
        customer_id = created.inserted_primary_key[0]
    conn.execute(_NEW_IDENTITY, {"customer_id": customer_id, "channel": channel, "external_id": external_id,
                                 "unionid": unionid})
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
