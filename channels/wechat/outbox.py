"""The persistent outbox: every outbound WeChat message is a row here before anything is sent.

  pending --claim--> sending --> sent | refused (window / quota) | failed (code kept for staff)
                        |--> pending again (retry with backoff, or deferred by a rate limit)
                        '--> unknown (a non-idempotent send whose fate the platform never told us)

Claiming is one conditional UPDATE (plus FOR UPDATE SKIP LOCKED on PostgreSQL), so any number of
workers in any number of processes never send a row twice. Per recipient, a row is only claimable
when every earlier row to that recipient is settled: replies arrive in the order Rasa produced
them. The idempotency key is unique: enqueueing the same logical message twice stores it once.
"""
from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import Executable

from bot.settings import get_settings
from channels.wechat import db
from channels.wechat.db import session as async_session
from channels.wechat.models import OutboxMessage, now_utc

logger = logging.getLogger("channels.wechat.outbox")

ACTIVE = ("pending", "sending")
SETTLED = ("sent", "refused", "failed", "unknown")
# a send that takes longer than this was interrupted (its process died); API calls time out far sooner
SENDING_LEASE = timedelta(seconds=90)
# 微信客服 deduplicates by msgid: repeating its send after a crash or timeout cannot double it
IDEMPOTENT_CHANNELS = frozenset({"wecom_kf"})


# the hot path's statements, built once (SQLAlchemy then reuses their compiled form without
# recomputing cache keys): the outbox is claimed and settled for every message sent
_T = OutboxMessage.__table__
_EARLIER = _T.alias("earlier")
_BLOCKED = sa.select(_EARLIER.c.id).where(
    _EARLIER.c.channel == _T.c.channel, _EARLIER.c.recipient == _T.c.recipient, _EARLIER.c.id < _T.c.id,
    _EARLIER.c.status.in_(ACTIVE)).exists()
_DUE = (sa.select(_T).where(_T.c.status == "pending", _T.c.next_attempt_at <= sa.bindparam("now"), ~_BLOCKED)
        .order_by(_T.c.id).limit(sa.bindparam("limit")))
_DUE_PG = _DUE.with_for_update(skip_locked=True, of=_T)
_CLAIM = (_T.update().where(_T.c.id.in_(sa.bindparam("ids", expanding=True)), _T.c.status == "pending")
          .values(status="sending", claimed_by=sa.bindparam("claim_id"), claimed_at=sa.bindparam("now"),
                  attempts=_T.c.attempts + 1))
_STILL_DUE = sa.select(_T.c.id).where(_T.c.status == "pending", _T.c.next_attempt_at <= sa.bindparam("now")).limit(1)
# the statements every reply runs, compiled once (db.Precompiled)
# one row sent, the common case. Looked up by its id, PostgreSQL keeps the statement's plan after its
# first five executions (_ALL_SENT, the array form, was planned again at every one: its generic plan, for
# an array of unknown length, looks costlier than the custom plan for one id, though both are the
# same primary key lookup; planning was 50 of the 90 µs of the server's work on a settle). The
# status test cannot use the status index, for the reason given at _all_sent.
_SENT = db.Precompiled(lambda dialect: _T.update().where(
    _T.c.id == sa.bindparam("row_id"), _T.c.claimed_by == sa.bindparam("claim"),
    (_T.c.status == sa.literal_column("'sending'")).is_(sa.true())).values(
        status="sent", sent_at=sa.bindparam("at"), platform_msgid=sa.bindparam("msgid"), last_errcode=None,
        last_error=None))
_ROW_KEYS = ["channel", "recipient", "account", "conversation_id", "customer_id", "msgtype", "body", "idempotency_key",
             "status", "attempts", "next_attempt_at", "created_at", "claimed_by", "claimed_at"]
# one row (_row's keys); its id: RETURNING on PostgreSQL, lastrowid on SQLite
_INSERT_ONE = db.Precompiled(lambda dialect: _T.insert().returning(_T.c.id) if dialect == "postgresql" else _T.insert(),
                             column_keys=_ROW_KEYS)


def _insert(conn: Connection, values: Dict[str, Any]) -> int:
    """Store one row (_row(), possibly claimed); its id."""
    return _INSERT_ONE.inserted_id(conn, _INSERT_ONE.execute(conn, values))


def insert_later(conn: Connection, message: "OutgoingMessage") -> None:
    """Store a message pending, in the caller's transaction, with its next statement or its COMMIT
    (db.Precompiled.defer; its id is not read)."""
    _INSERT_ONE.defer(conn, _row(message))


def new_key() -> str:
    return uuid.uuid4().hex  # 32 characters: also a valid kf/send_msg msgid


@dataclass
class OutgoingMessage:
    channel: str
    recipient: str
    msgtype: str
    body: Dict[str, Any]
    account: Optional[str] = None
    conversation_id: Optional[str] = None
    customer_id: Optional[int] = None
    idempotency_key: str = field(default_factory=new_key)
    not_before: Optional[datetime] = None


def _row(message: OutgoingMessage) -> Dict[str, Any]:
    now = now_utc()
    return dict(channel=message.channel, recipient=message.recipient, account=message.account,
                conversation_id=message.conversation_id, customer_id=message.customer_id, msgtype=message.msgtype,
                body=message.body, idempotency_key=message.idempotency_key[:64], status="pending", attempts=0,
                next_attempt_at=message.not_before or now, created_at=now, claimed_by=None, claimed_at=None)


async def enqueue(messages: Iterable[OutgoingMessage],
                  together_with: Sequence[Tuple[Executable, Dict[str, Any]]] = ()) -> List[int]:
    """Store messages; returns the ids of the rows (existing rows for keys already enqueued).
    `together_with`: (statement, parameters) committed in the same transaction (e.g. marking the
    inbound message answered: one commit instead of two)."""
    messages = list(messages)
    try:
        # keys are new in the common case: insert straight away, sort out repeats if that fails
        return await db.run(_insert_all, messages, together_with)
    except IntegrityError:
        # a concurrent enqueue of the same key: store the rest one by one
        ids = []
        for message in messages:
            try:
                ids.append(await db.run(_insert_or_find, message))
            except IntegrityError:  # inserted by the other side between our look and our insert
                ids.append(await db.run(_insert_or_find, message))
        if together_with:
            await db.run(db.execute_all, together_with)
        return ids


def _insert_all(conn: Connection, messages: List[OutgoingMessage],
                together_with: Sequence[Tuple[Executable, Dict[str, Any]]]) -> List[int]:
    ids = [_insert(conn, _row(message)) for message in messages]
    db.execute_all(conn, together_with)
    return ids


_ACTIVE = _T.alias("active")


def _busy(table) -> Any:
    """Whether something to the recipient (:channel, :recipient) is still pending or sending. (The
    statuses are literals, not an expanding IN parameter, which a precompiled string cannot hold;
    an IN list, unlike status = a OR status = b, is a condition of the (channel, recipient, status)
    index, so the look reads the recipient's active rows only, not every row ever sent to them.)"""
    return sa.select(table.c.id).where(
        table.c.channel == sa.bindparam("channel"), table.c.recipient == sa.bindparam("recipient"),
        table.c.status.in_([sa.literal_column(f"'{status}'") for status in ACTIVE])).exists()


_ACTIVE_TO = db.Precompiled(lambda dialect: sa.select(sa.literal(1)).where(_busy(_T)))


def claimed_values(message: OutgoingMessage, claim_id: str, now: datetime) -> Dict[str, Any]:
    """The row of a message stored already claimed by `claim_id` (claiming_insert's parameters)."""
    return dict(_row(message), status="sending", attempts=1, claimed_by=claim_id, claimed_at=now)


def claimed_record(values: Dict[str, Any], row_id: int) -> Any:
    """A row stored claimed (claimed_values), as claim() returns rows."""
    return SimpleNamespace(**dict(_EMPTY_RECORD, **values, id=row_id))


def claiming_insert(dialect: str) -> Any:
    """One row stored claimed by :claim_id if nothing to its recipient is still pending or sending, else
    pending; its id and status. The look and the insert are one statement (one round trip less per
    reply on PostgreSQL; delivery.py makes it part of a statement that also takes the reply-window
    place)."""
    # a CTE computed once (MATERIALIZED): as a subquery PostgreSQL pulled it up into each of the four
    # CASEs below and ran the look four times
    busy = sa.select(_busy(_ACTIVE).label("busy")).cte("recipient")
    if dialect == "postgresql":
        busy = busy.prefix_with("MATERIALIZED")
    # cast: in a SELECT list a parameter's type is not taken from the column it goes to (strings to
    # VARCHAR without a length: a cast would cut a value that is too long, the insert refuses it)
    typed = {key: sa.cast(sa.bindparam(key, type_=_T.c[key].type),
                          sa.String() if isinstance(_T.c[key].type, sa.String) else _T.c[key].type)
             for key in _ROW_KEYS}
    claimed = {"status": sa.case((busy.c.busy, sa.literal_column("'pending'")), else_=sa.literal_column("'sending'")),
               "attempts": sa.case((busy.c.busy, sa.literal_column("0")), else_=sa.literal_column("1")),
               "claimed_by": sa.case((busy.c.busy, sa.null()), else_=typed["claimed_by"]),
               "claimed_at": sa.case((busy.c.busy, sa.null()), else_=typed["claimed_at"])}
    select = sa.select(*(claimed.get(key, typed[key]).label(key) for key in _ROW_KEYS)).select_from(busy)
    return _T.insert().from_select(_ROW_KEYS, select).returning(_T.c.id, _T.c.status)


_CLAIMING_INSERT = db.Precompiled(claiming_insert)


def insert_claiming_first(conn: Connection, messages: List[OutgoingMessage], claim_id: str,
                          together_with: Sequence[Tuple[Executable, Dict[str, Any]]] = ()) -> Tuple[List[Any], bool]:
    """Store messages like enqueue(), in the caller's transaction, with the first message to each
    recipient stored already claimed by `claim_id` when it may go now (nothing earlier to that
    recipient is still pending or sending, and it is not scheduled for later): its sender need not
    wait for a claim cycle. (The claimed rows as claim() returns them, whether any row was held back
    behind an earlier one.) Raises IntegrityError for a key already enqueued."""
    now = now_utc()
    claimed: List[Any] = []
    held_back = False
    tried: set = set()
    postgres = conn.dialect.name == "postgresql"
    for message in messages:
        values = _row(message)
        target = (message.channel, message.recipient)
        if target in tried or (message.not_before is not None and message.not_before > now):
            # the rest to this recipient follow once the first one is settled
            held_back = True
            _insert(conn, values)
            continue
        tried.add(target)
        claim = claimed_values(message, claim_id, now)
        if postgres:
            row_id, status = _CLAIMING_INSERT.execute(conn, claim).first()
        elif _ACTIVE_TO.execute(conn, {"channel": message.channel, "recipient": message.recipient}).first() is None:
            row_id, status = _insert(conn, claim), "sending"
        else:
            row_id, status = _insert(conn, values), "pending"
        if status == "sending":
            claimed.append(claimed_record(claim, row_id))
        else:
            held_back = True
    db.execute_all(conn, together_with)
    return claimed, held_back


_EMPTY_RECORD = {column.name: None for column in _T.columns}


def _insert_or_find(conn: Connection, message: OutgoingMessage) -> int:
    key = message.idempotency_key[:64]
    found = conn.execute(sa.select(_T.c.id).where(_T.c.idempotency_key == key)).scalar()
    return found if found is not None else _insert(conn, _row(message))


def claim_id(worker: str) -> str:
    """A claim's id: which worker, and which of its claims (a row settles only under its own claim)."""
    return f"{worker}:{uuid.uuid4().hex[:8]}"


async def claim(worker: str, limit: int = 32) -> Tuple[List[Any], bool]:
    """Take due rows for this worker (status -> sending). Each row goes to exactly one worker.
    The rows come back as plain records (the columns as attributes), already showing the claim,
    with whether more rows are due (held back behind an earlier row to their recipient, or over
    the limit), so the caller knows whether to look again at once."""
    return await db.run(_claim, claim_id(worker), limit)


def _claim(conn: Connection, claim_id: str, limit: int) -> Tuple[List[Any], bool]:
    now = now_utc()
    due = conn.execute(_DUE_PG if conn.dialect.name == "postgresql" else _DUE, {"now": now, "limit": limit}).all()
    if not due:
        return [], False
    ids = [row.id for row in due]
    claimed = conn.execute(_CLAIM, {"ids": ids, "claim_id": claim_id, "now": now})
    more = conn.execute(_STILL_DUE, {"now": now}).first() is not None
    if claimed.rowcount == len(ids):
        return [SimpleNamespace(**dict(row._mapping, status="sending", claimed_by=claim_id, claimed_at=now,
                                       attempts=row.attempts + 1)) for row in due], more
    # another process took some of them in between (SQLite has no row locks): ours are those with our claim
    rows = conn.execute(sa.select(_T).where(_T.c.claimed_by == claim_id, _T.c.status == "sending").order_by(_T.c.id))
    return [SimpleNamespace(**row._mapping) for row in rows.all()], more


async def settle(row: OutboxMessage, status: str, *, errcode: Optional[int] = None, error: Optional[str] = None,
                 platform_msgid: Optional[str] = None, retry_in_s: Optional[float] = None,
                 count_attempt: bool = True) -> bool:
    """Record the outcome of a claimed row; False if the claim was lost (the row was recovered by
    another worker meanwhile), in which case nothing is changed."""
    return (await settle_many([Settlement(row, status, errcode, error, platform_msgid, retry_in_s,
                                          count_attempt)]))[0]


@dataclass
class Settlement:
    row: Any  # a claimed row (claim())
    status: str  # sent | retry | failed | refused | unknown
    errcode: Optional[int] = None
    error: Optional[str] = None
    platform_msgid: Optional[str] = None
    retry_in_s: Optional[float] = None
    count_attempt: bool = True


async def settle_many(settlements: Sequence[Settlement]) -> List[bool]:
    """settle() for a batch of claimed rows in one transaction."""
    done = await db.run(_settle_all, settlements)
    for s, ok in zip(settlements, done):
        if not ok:
            logger.warning("outbox claim lost before settling", extra={"outbox_id": s.row.id})
    return done


def _all_sent(dialect: str) -> Any:
    """Rows sent, as one statement (PostgreSQL): the rows of :ids still claimed by :claims (the same
    order) become sent at :at with :msgids; the ids of those that were."""
    ids = sa.bindparam("ids", type_=ARRAY(sa.Integer))
    sent = sa.func.unnest(ids, sa.bindparam("claims", type_=ARRAY(sa.String)),
                          sa.bindparam("msgids", type_=ARRAY(sa.String))
                          ).table_valued("id", "claim", "msgid").render_derived(name="v")
    # the rows are found by id (id = ANY(:ids)), and the status test is written so that it cannot
    # use the status index ((status = 'sending') IS TRUE): the planner went through that index's
    # 'sending' entries, which it thinks are few, but every row ever sent left one there until a
    # vacuum removes it (an update that changes the status keeps the old entry), so each settle
    # read more than the one before
    still_sending = (_T.c.status == sa.literal_column("'sending'")).is_(sa.true())
    return (_T.update().where(_T.c.id == sa.any_(ids), _T.c.id == sent.c.id, _T.c.claimed_by == sent.c.claim,
                              still_sending)
            .values(status=sa.literal_column("'sent'"), sent_at=sa.bindparam("at"), platform_msgid=sent.c.msgid,
                    last_errcode=None, last_error=None).returning(_T.c.id))


_ALL_SENT = db.Precompiled(_all_sent)


def _sent_values(s: Settlement) -> Dict[str, Any]:
    return {"row_id": s.row.id, "claim": s.row.claimed_by, "at": now_utc(), "msgid": s.platform_msgid}


def _sent_statement(settlements: Sequence[Settlement]) -> Tuple[db.Precompiled, Dict[str, Any]]:
    """The statement that settles these rows as sent (PostgreSQL), with its values."""
    if len(settlements) == 1:
        return _SENT, _sent_values(settlements[0])
    return _ALL_SENT, {"ids": [s.row.id for s in settlements], "claims": [s.row.claimed_by for s in settlements],
                       "msgids": [s.platform_msgid for s in settlements], "at": now_utc()}


def ride_sent(settlements: Sequence[Settlement]) -> "Optional[asyncio.Future[None]]":
    """Rows sent, settled with the gateway's next transaction (db.ride; PostgreSQL, every row
    sent): the future resolves when that commits. None where the settle cannot ride (settle_many
    then). Unlike settle_many it does not tell whether a row's claim was lost meanwhile."""
    if not settlements or any(s.status != "sent" for s in settlements) or get_settings().is_sqlite:
        return None
    return db.ride(*_sent_statement(settlements))


def _settle_all(conn: Connection, settlements: Sequence[Settlement]) -> List[bool]:
    if conn.dialect.name == "postgresql" and all(s.status == "sent" for s in settlements):
        # the common case in one round trip: its own transaction, safe to repeat (a row already
        # settled is not claimed any more: a repeat changes nothing)
        statement, values = _sent_statement(settlements)
        result = statement.execute_last(conn, values)
        if statement is _SENT:  # one row, no RETURNING
            return [result.rowcount == 1]
        updated = {row[0] for row in result.all()}
        return [s.row.id in updated for s in settlements]
    done: List[bool] = []
    for s in settlements:
        if s.status == "sent":
            result = _SENT.execute(conn, _sent_values(s))
            done.append(result.rowcount == 1)
            continue
        values: Dict[str, Any] = {"last_errcode": s.errcode, "last_error": (s.error or None) and s.error[:256]}
        if s.status == "retry":
            values.update(status="pending", claimed_by=None,
                          next_attempt_at=now_utc() + timedelta(seconds=s.retry_in_s or 1.0))
            if not s.count_attempt:
                values["attempts"] = _T.c.attempts - 1
        else:
            values.update(status=s.status)
        result = conn.execute(_T.update().where(_T.c.id == s.row.id, _T.c.claimed_by == s.row.claimed_by,
                                                _T.c.status == "sending").values(**values))
        done.append(result.rowcount == 1)
    return done


def backoff_s(attempts: int) -> float:
    return min(300.0, 2.0 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.2)


async def recover_interrupted() -> Dict[str, int]:
    """Rows left in "sending" by a process that died: idempotent channels are sent again; for the
    others the platform may or may not have delivered, so they become "unknown" for staff rather
    than risking a duplicate."""
    cutoff = now_utc() - SENDING_LEASE
    async with async_session() as session:
        retried = await session.execute(sa.update(OutboxMessage).where(
            OutboxMessage.status == "sending", OutboxMessage.claimed_at < cutoff,
            OutboxMessage.channel.in_(IDEMPOTENT_CHANNELS)).values(status="pending", claimed_by=None))
        unknown = await session.execute(sa.update(OutboxMessage).where(
            OutboxMessage.status == "sending", OutboxMessage.claimed_at < cutoff,
            OutboxMessage.channel.notin_(IDEMPOTENT_CHANNELS)).values(
                status="unknown", last_error="interrupted while sending; the platform may have delivered it"))
        await session.commit()
    counts = {"resent": retried.rowcount or 0, "unknown": unknown.rowcount or 0}
    if any(counts.values()):
        logger.warning("outbox rows recovered after an interrupted send", extra=counts)
    return counts


async def problems(limit: int = 100) -> List[OutboxMessage]:
    """What staff should look at: failed, refused and unknown messages, newest first."""
    async with async_session() as session:
        rows = await session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.status.in_(("failed", "refused", "unknown"))).order_by(OutboxMessage.id.desc()).limit(limit))
        return list(rows.scalars())


async def requeue(outbox_id: int) -> bool:
    """Staff decided to try a failed / unknown message again."""
    async with async_session() as session:
        result = await session.execute(sa.update(OutboxMessage).where(
            OutboxMessage.id == outbox_id, OutboxMessage.status.in_(("failed", "unknown", "refused"))).values(
                status="pending", claimed_by=None, next_attempt_at=now_utc(), attempts=0))
        await session.commit()
        return bool(result.rowcount)


async def mark_failed_by_msgid(channel: str, msgid: str, reason: str) -> bool:
    """The platform reported later that a message it had accepted was not delivered (微信客服 msg_send_fail)."""
    async with async_session() as session:
        result = await session.execute(sa.update(OutboxMessage).where(
            OutboxMessage.channel == channel, OutboxMessage.platform_msgid == msgid).values(
                status="failed", last_error=reason[:256]))
        await session.commit()
        return bool(result.rowcount)
