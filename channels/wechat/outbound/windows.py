"""Our bookkeeping of each user's reply window, so a message the platform would refuse is refused
here first, with a reason a person can read, instead of failing at the platform.

  微信客服, Official Account, mini-program: a user message opens 48 h in which 5 messages may be sent.
  Official Account: following, a menu click or a scan opens 1 minute with 3 messages.
  Mini-program: entering the customer-service session opens 1 minute with 2 messages.

Reservations are conditional UPDATEs, so processes sharing the database never hand out more
than the platform allows. The platform keeps its own count; its refusals (45015 / 45047 / 95001)
are reported with the same reasons.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from channels.wechat import db
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
    "with_staff": "a person is handling this customer at the desk: no proactive messages meanwhile",
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


_W = ReplyWindow.__table__
# literals: a CASE whose branches are all parameters has no type PostgreSQL can infer
_ONE, _ZERO = sa.literal_column("1", sa.Integer), sa.literal_column("0", sa.Integer)


# --- in the caller's transaction ----------------------------------------------------------------------
async def open_window(s: AsyncSession, channel: str, user_id: str, kind: str = "message",
                      at: Optional[datetime] = None, account: Optional[str] = None) -> None:
    """A user message (kind=message) or event (kind=event) opens a fresh window: the user's window
    is inserted, or reset if they have one."""
    stamp, count = ("message_at", "message_sent") if kind == "message" else ("event_at", "event_sent")
    reset: Dict[str, Any] = {stamp: at or now_utc(), count: 0}
    if account:
        reset["account"] = account
    values = {"channel": channel, "user_id": user_id, "message_sent": 0, "event_sent": 0, **reset}
    await s.execute(db.insert(s, ReplyWindow).values(**values).on_conflict_do_update(
        index_elements=["channel", "user_id"], set_=reset))


async def take_places(s: AsyncSession, recipients: Sequence[Tuple[str, str]],
                      now: Optional[datetime] = None) -> List[Optional[str]]:
    """Take one message from each (channel, user id)'s window: None where granted (or the channel
    has no window), else the refusal reason. Each place is one conditional UPDATE: processes
    sharing the database never hand out more than the platform allows."""
    now = now or now_utc()
    reasons: List[Optional[str]] = []
    for channel, user_id in recipients:
        rule = RULES.get(channel)
        if rule is None:
            reasons.append(None)
            continue
        message_open = sa.and_(_W.c.message_at > now - rule.message_window, _W.c.message_sent < rule.message_quota)
        event_open = sa.and_(_W.c.event_at > now - rule.event_window, _W.c.event_sent < rule.event_quota)
        took = await s.execute(_W.update().where(
            _W.c.channel == channel, _W.c.user_id == user_id, sa.or_(message_open, event_open)).values(
                message_sent=_W.c.message_sent + sa.case((message_open, _ONE), else_=_ZERO),
                event_sent=_W.c.event_sent + sa.case((message_open, _ZERO), (event_open, _ONE), else_=_ZERO)))
        reasons.append(None if took.rowcount else await refusal(s, channel, user_id, now))
    return reasons


async def refusal(s: AsyncSession, channel: str, user_id: str, now: Optional[datetime] = None) -> Optional[str]:
    """Why a message could not be sent now (None: it could). Read-only."""
    rule = RULES.get(channel)
    if rule is None:
        return None
    window = (await s.execute(sa.select(_W).where(_W.c.channel == channel, _W.c.user_id == user_id))).first()
    return why_not(rule, window, now or now_utc())


def why_not(rule: WindowRule, window: Any, now: datetime) -> Optional[str]:
    """refusal() for a window as read (None: the user has none)."""
    if window is None:
        return OUT_OF_WINDOW
    message_open = window.message_at is not None and window.message_at > now - rule.message_window
    event_open = bool(rule.event_quota) and window.event_at is not None and window.event_at > now - rule.event_window
    if message_open and window.message_sent < rule.message_quota:
        return None
    if event_open and window.event_sent < rule.event_quota:
        return None
    return OVER_QUOTA if (message_open or event_open) else OUT_OF_WINDOW


async def give_back(s: AsyncSession, channel: str, user_id: str) -> None:
    """Return a place whose message was not delivered (network error, platform failure)."""
    rule = RULES.get(channel)
    if rule is None:
        return
    # places are taken from the open message window first, so that is where to give back
    mine = sa.and_(_W.c.channel == channel, _W.c.user_id == user_id)
    result = await s.execute(_W.update().where(
        mine, _W.c.message_sent > 0, _W.c.message_at > now_utc() - rule.message_window).values(
            message_sent=_W.c.message_sent - 1))
    if result.rowcount == 0:
        await s.execute(_W.update().where(mine, _W.c.event_sent > 0).values(event_sent=_W.c.event_sent - 1))


# --- each in a transaction of its own -----------------------------------------------------------------
async def user_acted(channel: str, user_id: str, kind: str = "message", at: Optional[datetime] = None,
                     account: Optional[str] = None) -> None:
    async with db.transaction() as s:
        await open_window(s, channel, user_id, kind, at, account)


async def reserve(channel: str, user_id: str, now: Optional[datetime] = None) -> Optional[str]:
    """Take one message from the user's window: None if granted, else the refusal reason."""
    async with db.transaction() as s:
        return (await take_places(s, [(channel, user_id)], now))[0]


async def release(channel: str, user_id: str) -> None:
    async with db.transaction() as s:
        await give_back(s, channel, user_id)
