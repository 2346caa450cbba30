"""Who is talking: conversation ids are "<channel>:<user id on that channel>" (set by our connectors),
and the customer behind them is looked up in customer_identities."""
from __future__ import annotations

from typing import Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Customer
from actions.repositories import customer_repository


def split_sender(sender_id: str) -> Tuple[str, str]:
    channel, sep, user = (sender_id or "").partition(":")
    if not sep:
        return "unknown", sender_id or ""
    return channel, user


async def customer_for(session: AsyncSession, sender_id: str) -> Optional[Customer]:
    channel, user = split_sender(sender_id)
    if not user:
        return None
    return await customer_repository.find_by_identity(session, channel, user)
