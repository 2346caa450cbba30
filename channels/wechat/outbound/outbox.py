"""The persistent outbox: every outbound WeChat message is a row here before anything is sent.

  pending --claim--> sending --> sent | refused (window / quota) | failed (code kept for staff)
                        |--> pending again (retry with backoff, or deferred by a rate limit)
                        '--> unknown (a non-idempotent send whose fate the platform never told us)

Claiming is a conditional UPDATE (plus FOR UPDATE SKIP LOCKED on PostgreSQL), so any number of
workers in any number of processes never send a row twice. Per recipient, a row is only claimable
when every earlier row to that recipient is settled: replies arrive in the order Rasa produced
them. The idempotency key is unique: enqueueing the same logical message twice stores it once.
"""
from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from channels.wechat import db
from channels.wechat.db import session as async_session
from channels.wechat.models import OutboxMessage, now_utc

logger = logging.getLogger("channels.wechat.outbound.outbox")

ACTIVE = ("pending", "sending")
SETTLED = ("sent", "refused", "failed", "unknown")
# a send that takes longer than this was interrupted (its process died); API calls time out far sooner
SENDING_LEASE = timedelta(seconds=90)
# 微信客服 deduplicates by msgid: repeating its send after a crash or timeout cannot double it
IDEMPOTENT_CHANNELS = frozenset({"wecom_kf"})
# rows per INSERT statement (12 parameters each: far below SQLite's and PostgreSQL's limits)
INSERT_BATCH = 200


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


async def enqueue_in(s: AsyncSession, messages: Iterable[OutgoingMessage]) -> List[int]:
    """Store messages pending in the caller's transaction; the ids of their rows (the existing row
    for a key enqueued before: the same logical message is stored once)."""
    now = now_utc()
    rows = [dict(channel=m.channel, recipient=m.recipient, account=m.account, conversation_id=m.conversation_id,
                 customer_id=m.customer_id, msgtype=m.msgtype, body=m.body, idempotency_key=m.idempotency_key[:64],
                 status="pending", attempts=0, next_attempt_at=m.not_before or now, created_at=now)
            for m in messages]
    # many rows per statement (a firing stores a thousand posts); ids follow the order given
    for start in range(0, len(rows), INSERT_BATCH):
        await s.execute(db.insert(s, OutboxMessage).values(rows[start:start + INSERT_BATCH]).on_conflict_do_nothing(
            index_elements=["idempotency_key"]))
    keys = [row["idempotency_key"] for row in rows]
    found: Dict[str, int] = {}
    for start in range(0, len(keys), 500):
        part = keys[start:start + 500]
        found.update((k, i) for i, k in (await s.execute(sa.select(OutboxMessage.id, OutboxMessage.idempotency_key)
                                                         .where(OutboxMessage.idempotency_key.in_(part)))).all())
    return [found[k] for k in keys]


async def enqueue(messages: Iterable[OutgoingMessage]) -> List[int]:
    """enqueue_in() in a transaction of its own."""
    async with db.transaction() as s:
        return await enqueue_in(s, messages)


def claim_id(worker: str) -> str:
    """A claim's id: which worker, and which of its claims (a row settles only under its own claim)."""
    return f"{worker}:{uuid.uuid4().hex[:8]}"


_EARLIER = aliased(OutboxMessage)
# something earlier to the same recipient is still pending or sending: replies go out in order (and
# a 微信客服 session is moved, channel kf_state, only after the replies queued before the move)
_BLOCKED = sa.select(_EARLIER.id).where(
    sa.or_(_EARLIER.channel == OutboxMessage.channel,
           sa.and_(OutboxMessage.channel == "kf_state", _EARLIER.channel == "wecom_kf")),
    _EARLIER.recipient == OutboxMessage.recipient, _EARLIER.id < OutboxMessage.id,
    _EARLIER.status.in_(ACTIVE)).exists()


async def claim(worker: str, limit: int = 32) -> Tuple[List[OutboxMessage], bool]:
    """Take due rows for this worker (pending -> sending): each row goes to exactly one worker (a
    conditional UPDATE; on PostgreSQL the candidates are also locked, skipping those another
    worker is taking). The claimed rows, and whether more rows are due (so the caller looks again
    at once)."""
    claim = claim_id(worker)
    now = now_utc()
    async with db.transaction() as s:
        due = list((await s.execute(
            sa.select(OutboxMessage.id).where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now,
                                              ~_BLOCKED)
            .order_by(OutboxMessage.id).limit(limit).with_for_update(skip_locked=True, of=OutboxMessage))).scalars())
        if not due:
            return [], False
        await s.execute(sa.update(OutboxMessage).where(OutboxMessage.id.in_(due), OutboxMessage.status == "pending")
                        .values(status="sending", claimed_by=claim, claimed_at=now,
                                attempts=OutboxMessage.attempts + 1).execution_options(synchronize_session=False))
        rows = list((await s.execute(sa.select(OutboxMessage).where(
            OutboxMessage.claimed_by == claim, OutboxMessage.status == "sending").order_by(OutboxMessage.id)
            .execution_options(populate_existing=True))).scalars())
        more = (await s.execute(sa.select(OutboxMessage.id).where(
            OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now).limit(1))).first() is not None
    return rows, more


@dataclass
class Settlement:
    row: Any  # a claimed row (claim())
    status: str  # sent | retry | failed | refused | unknown
    errcode: Optional[int] = None
    error: Optional[str] = None
    platform_msgid: Optional[str] = None
    retry_in_s: Optional[float] = None
    count_attempt: bool = True


async def settle(row: OutboxMessage, status: str, *, errcode: Optional[int] = None, error: Optional[str] = None,
                 platform_msgid: Optional[str] = None, retry_in_s: Optional[float] = None,
                 count_attempt: bool = True) -> bool:
    """Record the outcome of a claimed row; False if the claim was lost (the row was recovered by
    another worker meanwhile), in which case nothing is changed."""
    return (await settle_many([Settlement(row, status, errcode, error, platform_msgid, retry_in_s,
                                          count_attempt)]))[0]


async def settle_many(settlements: Sequence[Settlement]) -> List[bool]:
    """settle() for a batch of claimed rows, in one transaction."""
    done: List[bool] = []
    now = now_utc()
    async with db.transaction() as s:
        for settlement in settlements:
            values = _outcome(settlement, now)
            result = await s.execute(sa.update(OutboxMessage).where(
                OutboxMessage.id == settlement.row.id, OutboxMessage.claimed_by == settlement.row.claimed_by,
                OutboxMessage.status == "sending").values(**values).execution_options(synchronize_session=False))
            done.append(result.rowcount == 1)
    for settlement, ok in zip(settlements, done):
        if not ok:
            logger.warning("outbox claim lost before settling", extra={"outbox_id": settlement.row.id})
    return done


def _outcome(settlement: Settlement, now: datetime) -> Dict[str, Any]:
    """The row's new values for a settlement."""
    if settlement.status == "sent":
        return dict(status="sent", sent_at=now, platform_msgid=settlement.platform_msgid, last_errcode=None,
                    last_error=None)
    values: Dict[str, Any] = {"last_errcode": settlement.errcode,
                              "last_error": (settlement.error or None) and settlement.error[:256]}
    if settlement.status == "retry":
        values.update(status="pending", claimed_by=None,
                      next_attempt_at=now + timedelta(seconds=settlement.retry_in_s or 1.0))
        if not settlement.count_attempt:
            values["attempts"] = OutboxMessage.attempts - 1
    else:
        values["status"] = settlement.status
    return values


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
