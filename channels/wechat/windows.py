"""Our bookkeeping of each user's reply window, so a message the platform would refuse is refused
here first, with a reason a person can read, instead of failing at the platform.

  微信客服, Official Account, mini-program: a user message opens 48 h in which 5 messages may be sent.
  Official Account: following, a menu click or a scan opens 1 minute with 3 messages.
  Mini-program: entering the customer-service session opens 1 minute with 2 messages.

Reservations are single conditional UPDATEs, so processes sharing the database never hand out more
than the platform allows. The platform keeps its own count; its refusals (45015 / 45047 / 95001)
are reported with the same reasons.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from channels.wechat.db import insert_for
from channels.wechat.models import ReplyWindow, now_utc

OUT_OF_WINDOW = "out_of_window"
OVER_QUOTA = "over_quota"
REASON_TEXT = {
    OUT_OF_WINDOW: "the user has not written within the reply window (48 h after their last message)",
    OVER_QUOTA: "the reply quota of this window is used up (5 messages per user message)",
    "out_of_window_or_over_quota": "the platform refused: reply window closed or its 5 messages used up",
    "rate_limited": "the group robot's limit of 20 messages per minute is reached; sent later",
    "no_robot": "the group has no robot webhook",
    "unknown_group": "no such group is registered",
    "unknown_customer": "no such customer",
    "no_channel": "the customer has no WeChat identity the shop can message",
    "not_configured": "the connector is not configured",
}


@dataclass(frozen=True)
class WindowRule:
    message_window: timedelta = timedelta(hours=48)
    message_quota: int = 5
    event_window: timedelta = timedelta(minutes=1)
    event_quota: int = 0


RULES = {
    "wecom_kf": WindowRule(),
    "mp": WindowRule(event_quota=3),
    "mini": WindowRule(event_quota=2),
}


def governed(channel: str) -> bool:
    return channel in RULES


async def user_acted(session: AsyncSession, channel: str, user_id: str, kind: str = "message",
                     at: Optional[datetime] = None, account: Optional[str] = None) -> None:
    """A user message (kind=message) or event (kind=event) opens a fresh window; commits. One
    statement: insert the window, or reset it if the user has one."""
    at = at or now_utc()
    values = {"message_at": at, "message_sent": 0} if kind == "message" else {"event_at": at, "event_sent": 0}
    if account:
        values["account"] = account
    upsert = insert_for(session, ReplyWindow).values(
        channel=channel, user_id=user_id, **{"message_sent": 0, "event_sent": 0, **values})
    await session.execute(upsert.on_conflict_do_update(index_elements=["channel", "user_id"], set_=values))
    await session.commit()


async def reserve(session: AsyncSession, channel: str, user_id: str, now: Optional[datetime] = None) -> Optional[str]:
    """Take one message from the user's window: None if granted, else the refusal reason. Commits."""
    return (await reserve_many(session, [(channel, user_id)], now))[0]


_W = ReplyWindow.__table__
# built once: a reservation is made for every message sent
_TAKE_MESSAGE = _W.update().where(
    _W.c.channel == sa.bindparam("ch"), _W.c.user_id == sa.bindparam("uid"), _W.c.message_at > sa.bindparam("since"),
    _W.c.message_sent < sa.bindparam("quota")).values(message_sent=_W.c.message_sent + 1)
_TAKE_EVENT = _W.update().where(
    _W.c.channel == sa.bindparam("ch"), _W.c.user_id == sa.bindparam("uid"), _W.c.event_at > sa.bindparam("since"),
    _W.c.event_sent < sa.bindparam("quota")).values(event_sent=_W.c.event_sent + 1)


async def reserve_many(session: AsyncSession, recipients: Sequence[Tuple[str, str]],
                       now: Optional[datetime] = None) -> List[Optional[str]]:
    """reserve() for several (channel, user id) pairs in one transaction; commits."""
    now = now or now_utc()
    granted: List[bool] = []
    for channel, user_id in recipients:
        rule = RULES.get(channel)
        if rule is None:
            granted.append(True)
            continue
        took = await session.execute(_TAKE_MESSAGE, {"ch": channel, "uid": user_id, "since": now - rule.message_window,
                                                     "quota": rule.message_quota})
        if took.rowcount == 0 and rule.event_quota:
            took = await session.execute(_TAKE_EVENT, {"ch": channel, "uid": user_id, "since": now - rule.event_window,
                                                       "quota": rule.event_quota})
        granted.append(bool(took.rowcount))
    await session.commit()
    reasons: List[Optional[str]] = []
    for (channel, user_id), ok in zip(recipients, granted):
        reasons.append(None if ok else await refusal(session, channel, user_id, now))
    return reasons


async def refusal(session: AsyncSession, channel: str, user_id: str, now: Optional[datetime] = None) -> Optional[str]:
    """Why a message could not be sent now (None: it could). Read-only."""
    rule = RULES.get(channel)
    if rule is None:
        return None
    now = now or now_utc()
    window = await session.get(ReplyWindow, (channel, user_id), populate_existing=True)
    if window is None:
        return OUT_OF_WINDOW
    message_open = window.message_at is not None and window.message_at > now - rule.message_window
    event_open = bool(rule.event_quota) and window.event_at is not None and window.event_at > now - rule.event_window
    if message_open and window.message_sent < rule.message_quota:
        return None
    if event_open and window.event_sent < rule.event_quota:
        return None
    return OVER_QUOTA if (message_open or event_open) else OUT_OF_WINDOW


async def release(session: AsyncSession, channel: str, user_id: str) -> None:
    """Give back a reservation whose message was not delivered (network error, platform failure)."""
    rule = RULES.get(channel)
    if rule is None:
        return
    # reserve() takes from the open message window first, so that is where to give back
    result = await session.execute(sa.update(ReplyWindow).where(
        ReplyWindow.channel == channel, ReplyWindow.user_id == user_id, ReplyWindow.message_sent > 0,
        ReplyWindow.message_at > now_utc() - rule.message_window,
    ).values(message_sent=ReplyWindow.message_sent - 1))
    if result.rowcount == 0:
        await session.execute(sa.update(ReplyWindow).where(
            ReplyWindow.channel == channel, ReplyWindow.user_id == user_id, ReplyWindow.event_sent > 0
        ).values(event_sent=ReplyWindow.event_sent - 1))
    await session.commit()
