"""Tickets (服务即工单): numbered records of after-sales requests, complaints and changes."""
from __future__ import annotations

import secrets
from datetime import datetime
from typing import List, Optional

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from actions.db.models import Ticket, TicketStatus, utcnow

OPEN_STATUSES = (TicketStatus.open.value, TicketStatus.processing.value)


def _new_ticket_no(now: datetime) -> str:
    # date + 6 random digits: unguessable enough that one customer cannot walk through others' tickets
    return f"T{now:%Y%m%d}{secrets.randbelow(10**6):06d}"


async def create(session: AsyncSession, *, kind: str, customer_id: Optional[int], order_id: Optional[int],
                 conversation_id: str, reason: str = "", detail: str = "") -> Ticket:
    """A new ticket, committed."""
    ticket = await create_in(session, kind=kind, customer_id=customer_id, order_id=order_id,
                             conversation_id=conversation_id, reason=reason, detail=detail)
    await session.commit()
    return ticket


async def create_in(session: AsyncSession, *, kind: str, customer_id: Optional[int], order_id: Optional[int],
                    conversation_id: str, reason: str = "", detail: str = "") -> Ticket:
    """A new ticket in the caller's transaction (committed with it)."""
    for _ in range(5):
        ticket = Ticket(ticket_no=_new_ticket_no(utcnow()), kind=kind, customer_id=customer_id,
                        order_id=order_id, conversation_id=conversation_id, reason=reason[:256],
                        detail=detail, status=TicketStatus.open.value)
        try:
            async with session.begin_nested():
                session.add(ticket)
            return ticket
        except IntegrityError:  # ticket number collision: draw again
            continue
    raise RuntimeError("could not allocate a ticket number")


async def get_by_no(session: AsyncSession, ticket_no: str) -> Optional[Ticket]:
    stmt = select(Ticket).options(selectinload(Ticket.order)).where(Ticket.ticket_no == ticket_no.upper())
    return (await session.execute(stmt)).scalars().first()


async def for_order(session: AsyncSession, order_id: int, kinds: Optional[List[str]] = None) -> List[Ticket]:
    stmt = select(Ticket).where(Ticket.order_id == order_id)
    if kinds:
        stmt = stmt.where(Ticket.kind.in_(kinds))
    return list((await session.execute(stmt.order_by(Ticket.created_at.desc()))).scalars())


async def recent_for_customer(session: AsyncSession, customer_id: Optional[int], conversation_id: str,
                              kinds: Optional[List[str]] = None, limit: int = 3) -> List[Ticket]:
    """Tickets of an identified customer, or of this conversation for an anonymous visitor."""
    stmt = select(Ticket).options(selectinload(Ticket.order))
    if customer_id is not None:
        stmt = stmt.where(Ticket.customer_id == customer_id)
    else:
        stmt = stmt.where(Ticket.conversation_id == conversation_id)
    if kinds:
        stmt = stmt.where(Ticket.kind.in_(kinds))
    stmt = stmt.order_by(Ticket.created_at.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())
