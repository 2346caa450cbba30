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

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from channels.wechat import db
from channels.wechat.db import insert_for_dialect
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


_W = ReplyWindow.__table__
_GIVE_BACK_MESSAGE = _W.update().where(
    _W.c.channel == sa.bindparam("ch"), _W.c.user_id == sa.bindparam("uid"), _W.c.message_sent > 0,
    _W.c.message_at > sa.bindparam("since")).values(message_sent=_W.c.message_sent - 1)
_GIVE_BACK_EVENT = _W.update().where(
    _W.c.channel == sa.bindparam("ch"), _W.c.user_id == sa.bindparam("uid"), _W.c.event_sent > 0
).values(event_sent=_W.c.event_sent - 1)
_READ = sa.select(_W).where(_W.c.channel == sa.bindparam("ch"), _W.c.user_id == sa.bindparam("uid"))


# --- in the caller's transaction (a connection: channels.wechat.db.run) ----------------------------
def open_window(conn: Connection, channel: str, user_id: str, kind: str = "message",
                at: Optional[datetime] = None, account: Optional[str] = None) -> None:
    """A user message (kind=message) or event (kind=event) opens a fresh window. One statement:
    insert the window, or reset it if the user has one (sent with the transaction's next statement)."""
    _OPEN[(kind, bool(account))].defer(conn, {"ch": channel, "uid": user_id, "at": at or now_utc(),
                                                "account": account})


def _open_statement(dialect: str, kind: str, with_account: bool, after: Optional[Any] = None):
    """The upsert for a dialect / kind / account combination. `after`: a CTE; the window is opened
    only if it has a row (e.g. the message's inbox row was inserted: open_after_insert)."""
    stamp, count = ("message_at", "message_sent") if kind == "message" else ("event_at", "event_sent")
    reset = {stamp: sa.bindparam("at", type_=_W.c[stamp].type), count: 0}
    if with_account:
        reset["account"] = sa.bindparam("account", type_=_W.c.account.type)
    values = {"channel": sa.bindparam("ch", type_=_W.c.channel.type),
              "user_id": sa.bindparam("uid", type_=_W.c.user_id.type), "message_sent": 0, "event_sent": 0, **reset}
    if after is None:
        insert = insert_for_dialect(dialect, ReplyWindow).values(**values)
    else:
        # in a SELECT list a parameter's type is not taken from the column it goes to (strings to
        # VARCHAR without a length: a cast would cut a value that is too long, the insert refuses it)
        typed = [sa.cast(value, sa.String() if isinstance(value.type, sa.String) else value.type).label(key)
                 if isinstance(value, sa.sql.elements.BindParameter) else sa.literal_column(str(value)).label(key)
                 for key, value in values.items()]
        insert = insert_for_dialect(dialect, ReplyWindow).from_select(list(values), sa.select(*typed).select_from(after))
    return insert.on_conflict_do_update(index_elements=["channel", "user_id"], set_=reset)


def open_after_insert(kind: str, with_account: bool, inserted: Any) -> Any:
    """open_window's upsert (PostgreSQL) as part of a larger statement: it runs if the CTE
    `inserted` has a row; parameters :ch, :uid, :at and :account as open_window's."""
    return _open_statement("postgresql", kind, with_account, after=inserted)


# one per kind / account combination, compiled once per dialect (one runs for every message received)
_OPEN = {(kind, with_account): db.Precompiled(functools.partial(_open_statement, kind=kind, with_account=with_account))
         for kind in ("message", "event") for with_account in (False, True)}


def _take(claimed: Optional[Any] = None) -> Any:
    """Take a place for one recipient (:ch, :uid): in the message window, else in the event window,
    in one UPDATE; parameters from take_parameters(). `claimed`: a CTE; the place is taken only if
    it has a row whose status is 'sending' (PostgreSQL), and a row is RETURNED if it was."""
    message_open = sa.and_(_W.c.message_at > sa.bindparam("message_since", type_=_W.c.message_at.type),
                           _W.c.message_sent < sa.bindparam("message_quota", type_=sa.Integer))
    event_open = sa.and_(_W.c.event_at > sa.bindparam("event_since", type_=_W.c.event_at.type),
                         _W.c.event_sent < sa.bindparam("event_quota", type_=sa.Integer))
    conditions = [_W.c.channel == sa.bindparam("ch", type_=_W.c.channel.type),
                  _W.c.user_id == sa.bindparam("uid", type_=_W.c.user_id.type), sa.or_(message_open, event_open)]
    if claimed is not None:
        conditions.append(sa.select(sa.literal_column("1")).select_from(claimed).where(
            claimed.c.status == sa.literal_column("'sending'")).exists())
    take = _W.update().where(*conditions).values(
        message_sent=_W.c.message_sent + sa.case((message_open, _ONE), else_=_ZERO),
        event_sent=_W.c.event_sent + sa.case((message_open, _ZERO), (event_open, _ONE), else_=_ZERO))
    return take if claimed is None else take.returning(_ONE.label("taken"))


# literals, not parameters: a prepared statement's parameter in a CASE would have no type
_ONE, _ZERO = sa.literal_column("1", sa.Integer), sa.literal_column("0", sa.Integer)
# compiled once (db.Precompiled): a place is taken for every reply sent
_TAKE = db.Precompiled(lambda dialect: _take())


def take_places(conn: Connection, recipients: Sequence[Tuple[str, str]],
                now: Optional[datetime] = None) -> List[Optional[str]]:
    """Take one message from each (channel, user id)'s window: None where granted (or the channel
    has no window), else the refusal reason."""
    now = now or now_utc()
    reasons: List[Optional[str]] = []
    for channel, user_id in recipients:
        if channel not in RULES:
            reasons.append(None)
            continue
        took = _TAKE.execute(conn, take_parameters(channel, user_id, now))
        reasons.append(None if took.rowcount else refusal(conn, channel, user_id, now))
    return reasons


def take_if_claimed(claimed: Any) -> Any:
    """take_places' UPDATE for one recipient (PostgreSQL) as part of a larger statement: taken if
    the CTE `claimed` has a row whose status is 'sending'; RETURNING a row if taken."""
    return _take(claimed)


def take_parameters(channel: str, user_id: str, now: datetime) -> dict:
    """The parameters of take_places' UPDATE (and take_if_claimed's) for a governed channel."""
    rule = RULES[channel]
    return {"ch": channel, "uid": user_id, "message_since": now - rule.message_window,
            "message_quota": rule.message_quota, "event_since": now - rule.event_window,
            "event_quota": rule.event_quota}


def refusal(conn: Connection, channel: str, user_id: str, now: Optional[datetime] = None) -> Optional[str]:
    """Why a message could not be sent now (None: it could). Read-only."""
    rule = RULES.get(channel)
    if rule is None:
        return None
    now = now or now_utc()
    return why_not(rule, conn.execute(_READ, {"ch": channel, "uid": user_id}).first(), now)


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


def give_back(conn: Connection, channel: str, user_id: str) -> None:
    """Return a place whose message was not delivered (network error, platform failure)."""
    rule = RULES.get(channel)
    if rule is None:
        return
    # places are taken from the open message window first, so that is where to give back
    result = conn.execute(_GIVE_BACK_MESSAGE, {"ch": channel, "uid": user_id, "since": now_utc() - rule.message_window})
    if result.rowcount == 0:
        conn.execute(_GIVE_BACK_EVENT, {"ch": channel, "uid": user_id})


# --- each in a transaction of its own --------------------------------------------------------------
async def user_acted(channel: str, user_id: str, kind: str = "message", at: Optional[datetime] = None,
                     account: Optional[str] = None) -> None:
    await db.run(open_window, channel, user_id, kind, at, account)


async def reserve(channel: str, user_id: str, now: Optional[datetime] = None) -> Optional[str]:
    """Take one message from the user's window: None if granted, else the refusal reason."""
    return (await db.run(take_places, [(channel, user_id)], now))[0]


async def release(channel: str, user_id: str) -> None:
    await db.run(give_back, channel, user_id)
