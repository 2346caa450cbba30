"""The durable inbox: a message is stored before its callback is acknowledged, and answered from
here. Duplicates (the platform's retries, replays, two processes syncing the same 微信客服 page) are
recognised by the message id: in Redis (SET NX with a TTL) when REDIS_URL is set, and always by the
inbox's unique (channel, dedup_key), so the database alone is enough without Redis.

Rows are claimed atomically (received -> processing) before Rasa sees them, so each message is
handled by one process once; a row left in "processing" by a process that died is taken up again
once its heartbeat is stale (channels/wechat/workers.py; its replies carry the same outbox keys, so
nothing is sent twice).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Awaitable, Callable, Collection, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from channels.wechat import db, workers
from channels.wechat.db import session as async_session
from channels.wechat.inbound.payloads import InboundMessage
from channels.wechat.models import InboundMessageRow, now_utc

logger = logging.getLogger("channels.wechat.inbound.inbox")
# a row stored unclaimed is left to the process that stored it for this long
MISSED_AFTER = timedelta(seconds=15)


class RedisDedup:
    def __init__(self, redis, ttl_s: int, prefix: str = "siyu:") -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.prefix = prefix

    def _key(self, channel: str, dedup_key: str) -> str:
        return f"{self.prefix}wechat:dedup:{channel}:{dedup_key}"

    async def first_time(self, channel: str, dedup_key: str) -> Optional[bool]:
        """True the first time, False for a duplicate, None when Redis cannot answer (the database decides)."""
        try:
            return bool(await self.redis.set(self._key(channel, dedup_key), b"1", nx=True, ex=self.ttl_s))
        except Exception as exc:  # noqa: BLE001 - Redis down must not lose the message
            logger.warning("redis dedup unavailable, using the database", extra={"error": type(exc).__name__})
            return None

    async def forget(self, channel: str, dedup_key: str) -> None:
        try:
            await self.redis.delete(self._key(channel, dedup_key))
        except Exception:  # noqa: BLE001
            logger.warning("redis dedup key could not be removed", extra={"channel": channel})


Work = Callable[[AsyncSession, List[Optional[int]]], Awaitable[Any]]


async def store(s: AsyncSession, items: Sequence[Tuple[InboundMessage, str]], status: str = "received",
                claimed_by: Optional[str] = None) -> List[Optional[int]]:
    """Insert the messages in the caller's transaction: each new row's id, None for a message
    stored before (the unique (channel, dedup_key) drops it without failing the others).
    `claimed_by`: new rows are stored already claimed by this worker, which answers them next."""
    now = now_utc()
    ids: List[Optional[int]] = []
    for message, conversation_id in items:
        key = message.dedup_key[:160]
        values = dict(channel=message.channel, dedup_key=key, conversation_id=conversation_id,
                      payload=message.to_json(), status=status, attempts=0, received_at=now)
        if claimed_by and status == "received":
            values.update(status="processing", claimed_by=claimed_by, claimed_at=now, attempts=1)
        inserted = await s.execute(db.insert(s, InboundMessageRow).values(**values).on_conflict_do_nothing(
            index_elements=["channel", "dedup_key"]))
        if inserted.rowcount != 1:
            logger.info("duplicate message ignored", extra={"channel": message.channel, "by": "database"})
            ids.append(None)
            continue
        ids.append((await s.execute(sa.select(InboundMessageRow.id).where(
            InboundMessageRow.channel == message.channel, InboundMessageRow.dedup_key == key))).scalar_one())
    return ids


async def finish_in(s: AsyncSession, row_id: int, status: str, error: Optional[str] = None) -> None:
    """Record how a row ended, in the caller's transaction (e.g. with the replies it produced)."""
    await s.execute(sa.update(InboundMessageRow).where(InboundMessageRow.id == row_id).values(
        status=status, processed_at=now_utc(), error=(error or None) and error[:256]))


class Inbox:
    def __init__(self, redis_dedup: Optional[RedisDedup] = None) -> None:
        self.redis_dedup = redis_dedup

    async def accept(self, items: Sequence[Tuple[InboundMessage, str]], status: str = "received",
                     claimed_by: Optional[str] = None, also: Optional[Work] = None,
                     pulled: bool = False) -> Tuple[List[Optional[int]], Any]:
        """Store (message, conversation id) pairs in one transaction: the new rows' ids (None for
        each duplicate), and what `also(session, ids)` returned, run in the same transaction (e.g.
        opening the senders' reply windows, or saving a 微信客服 page's cursor). Raises if nothing
        could be stored (the callback then fails and the platform retries).

        Platform retries are first recognised in Redis when it is configured. `pulled`: the
        messages come from a page we pulled (微信客服 sync_msg), which the platform does not deliver
        again: the database's unique key alone drops a repeated page."""
        fresh: List[bool] = []
        for message, _ in items:
            first = None
            if self.redis_dedup is not None and not pulled:
                first = await self.redis_dedup.first_time(message.channel, message.dedup_key)
                if first is False:
                    logger.info("duplicate message ignored", extra={"channel": message.channel, "by": "redis"})
            fresh.append(first is not False)
        new_items = [item for item, new in zip(items, fresh) if new]
        try:
            async with db.transaction() as s:
                stored = iter(await store(s, new_items, status, claimed_by))
                ids = [next(stored) if new else None for new in fresh]
                extra = await also(s, ids) if also is not None else None
        except BaseException:  # also cancelled (shutdown): the database keeps deduplicating what was stored
            # not stored: let the platform's retry through Redis next time
            if self.redis_dedup is not None and not pulled:
                for (message, _), new in zip(items, fresh):
                    if new:
                        await self.redis_dedup.forget(message.channel, message.dedup_key)
            raise
        return ids, extra

    async def claim(self, row_id: int, worker: str, message: Optional[InboundMessage] = None
                    ) -> Optional[InboundMessage]:
        """Take the row (received -> processing); its message (read back unless the caller has it),
        or None if another task or process has it or it is done."""
        async with async_session() as session:
            result = await session.execute(
                sa.update(InboundMessageRow)
                .where(InboundMessageRow.id == row_id, InboundMessageRow.status == "received")
                .values(status="processing", claimed_by=worker, claimed_at=now_utc(),
                        attempts=InboundMessageRow.attempts + 1))
            await session.commit()
            if result.rowcount != 1:
                return None
            if message is None:
                payload = (await session.execute(sa.select(InboundMessageRow.payload).where(
                    InboundMessageRow.id == row_id))).scalar_one()
                message = InboundMessage.from_json(payload)
            return message

    async def finish(self, row_id: int, status: str, error: Optional[str] = None) -> None:
        async with db.transaction() as s:
            await finish_in(s, row_id, status, error)

    async def release_claims(self, worker: str) -> int:
        """At shutdown: rows this worker claimed but did not finish go back to "received", so the next
        start (or another process) answers them at once instead of once this worker looks stale."""
        async with async_session() as session:
            result = await session.execute(sa.update(InboundMessageRow).where(
                InboundMessageRow.status == "processing", InboundMessageRow.claimed_by == worker).values(
                    status="received"))
            await session.commit()
            return result.rowcount or 0

    async def missed(self, worker: Optional[str] = None, working: Collection[int] = (),
                     limit: int = 50) -> List[Tuple[int, str]]:
        """Rows nobody is working on, to answer now. Claims nobody holds go back to "received" first:
        those of a worker whose heartbeat is stale (its process died: workers.py), and this
        `worker`'s own that none of its tasks holds (`working`: e.g. its task failed before it could
        record the outcome, or a store that failed after its commit had happened after all); a
        claim younger than workers.STALE_AFTER is left alone (its process may not have beaten
        yet, or not handed it to its task yet). Then: received rows claimed before (handed
        back, taken over, or Rasa was not ready), and those stored unclaimed over MISSED_AFTER ago."""
        now = now_utc()
        old_claim = sa.and_(InboundMessageRow.status == "processing",
                            InboundMessageRow.claimed_at < now - workers.STALE_AFTER)
        of_others = InboundMessageRow.claimed_by.notin_(workers.alive_names(now))
        if worker is not None:
            of_others = sa.and_(of_others, InboundMessageRow.claimed_by != worker)
        async with async_session() as session:
            taken = await session.execute(sa.update(InboundMessageRow).where(old_claim, of_others).values(
                status="received").execution_options(synchronize_session=False))
            orphans = []
            if worker is not None:
                mine = await session.execute(sa.select(InboundMessageRow.id).where(
                    old_claim, InboundMessageRow.claimed_by == worker))
                orphans = [row_id for row_id in mine.scalars() if row_id not in working]
                if orphans:
                    await session.execute(sa.update(InboundMessageRow).where(
                        InboundMessageRow.id.in_(orphans), InboundMessageRow.status == "processing",
                        InboundMessageRow.claimed_by == worker).values(status="received")
                        .execution_options(synchronize_session=False))
            await session.commit()
            if taken.rowcount or orphans:
                logger.warning("wechat inbox claims taken over", extra={
                    "of_stopped_workers": taken.rowcount or 0, "own_unheld": len(orphans)})
            rows = await session.execute(
                sa.select(InboundMessageRow.id, InboundMessageRow.conversation_id)
                .where(InboundMessageRow.status == "received",
                       sa.or_(InboundMessageRow.claimed_by.isnot(None),
                              InboundMessageRow.received_at < now - MISSED_AFTER))
                .order_by(InboundMessageRow.id).limit(limit))
            return [(row_id, conversation) for row_id, conversation in rows.all()]

    async def prune(self, keep: timedelta) -> int:
        """Forget answered messages older than the dedup horizon (stale replays are refused by the
        callback's timestamp window long before). The newest row stays: SQLite gives a new row
        max(id) + 1, and replies are keyed by the row id (outbox rows are kept), so a message stored
        after an emptied inbox would take the first message's id and its replies would be dropped
        as that one's."""
        newest = sa.select(sa.func.max(InboundMessageRow.id)).scalar_subquery()
        async with async_session() as session:
            result = await session.execute(sa.delete(InboundMessageRow).where(
                InboundMessageRow.status.in_(("done", "ignored", "failed")),
                InboundMessageRow.received_at < now_utc() - keep, InboundMessageRow.id < newest
            ).execution_options(synchronize_session=False))
            await session.commit()
            return result.rowcount or 0
