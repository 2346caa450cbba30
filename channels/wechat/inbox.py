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
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from channels.wechat import db, workers
from channels.wechat.db import insert_for_dialect, session as async_session
from channels.wechat.models import InboundMessageRow, now_utc
from channels.wechat.payloads import InboundMessage

logger = logging.getLogger("channels.wechat.inbox")
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


_T = InboundMessageRow.__table__
_STORED_COLUMNS = ["channel", "dedup_key", "conversation_id", "payload", "status", "attempts", "received_at",
                   "claimed_by", "claimed_at"]
# INSERT that skips a row whose (channel, dedup_key) is already stored, without an error that would
# end the transaction of the other messages (every message received is one)
def _insert_new(dialect: str) -> Any:
    return insert_for_dialect(dialect, InboundMessageRow).values(
        {key: sa.bindparam(key, type_=_T.c[key].type) for key in _STORED_COLUMNS}).on_conflict_do_nothing(
            index_elements=["channel", "dedup_key"])


_INSERT_NEW = db.Precompiled(_insert_new)


def insert_new_returning_id() -> Any:
    """_INSERT_NEW (PostgreSQL) RETURNING the new row's id (no row for a duplicate): for a statement
    that also does a Preparation's work."""
    return _insert_new("postgresql").returning(_T.c.id)


class Preparation:
    """What the transaction that stores a new message also does for it (Inbox.accept_prepared)."""

    def __call__(self, conn: Connection, message: InboundMessage) -> Any:
        """Run after the message's row is inserted, in the same transaction; what the caller gets
        with the row id."""
        raise NotImplementedError

    def one_statement(self, message: InboundMessage
                      ) -> Optional[Callable[[Connection, Dict[str, Any], bool], Optional[Tuple[int, Any]]]]:
        """PostgreSQL: a function of (connection, the inbox row's values, whether it is the
        transaction's last statement) that inserts the row and does this preparation in one
        statement, the last one run with db.Precompiled.execute_last (a message stored on its own
        is one round trip); it returns (row id, what __call__ would have) or None for a duplicate.
        None: not offered for this message."""
        return None


# deferred with the transaction that queues the replies (nothing reads its result)
_FINISH = db.Precompiled(lambda dialect: _T.update().where(_T.c.id == sa.bindparam("row_id")).values(
    status=sa.bindparam("new_status"), processed_at=sa.bindparam("at"), error=sa.bindparam("why")))


def _store(conn: Connection, items: List[Tuple[InboundMessage, str]], fresh: List[bool], status: str,
           claimed_by: Optional[str], together_with: List[Callable[[Connection], None]],
           prepare: Optional[Preparation]) -> List[Optional[Tuple[int, Any]]]:
    now = now_utc()
    rows: List[Optional[Dict[str, Any]]] = []
    for (message, conversation_id), new in zip(items, fresh):
        values = None
        if new:
            values = dict(channel=message.channel, dedup_key=message.dedup_key[:160], conversation_id=conversation_id,
                          payload=message.to_json(), status=status, attempts=0, received_at=now, claimed_by=None,
                          claimed_at=None)
            if claimed_by and status == "received":
                values.update(status="processing", claimed_by=claimed_by, claimed_at=now, attempts=1)
        rows.append(values)
    new_ones = [n for n, values in enumerate(rows) if values is not None]
    in_one = [prepare.one_statement(items[n][0]) for n in new_ones] if (
        prepare is not None and conn.dialect.name == "postgresql") else []
    if in_one and all(one is not None for one in in_one):
        # one statement per message: a message alone is the whole transaction in one round trip.
        # What goes with it (a 微信客服 page's cursor) is deferred, so it is sent in front
        for step in together_with:
            step(conn)
        stored: List[Optional[Tuple[int, Any]]] = [None] * len(items)
        for k, (n, one) in enumerate(zip(new_ones, in_one)):
            stored[n] = one(conn, rows[n], k == len(new_ones) - 1)
            if stored[n] is None:
                logger.info("duplicate message ignored", extra={"channel": items[n][0].channel, "by": "database"})
        return stored
    stored = []
    for (message, _), values in zip(items, rows):
        if values is None:
            stored.append(None)
            continue
        row_id = _INSERT_NEW.inserted_id(conn, _INSERT_NEW.execute(conn, values))
        if row_id is None:
            logger.info("duplicate message ignored", extra={"channel": message.channel, "by": "database"})
            stored.append(None)
            continue
        stored.append((row_id, prepare(conn, message) if prepare else None))
    for step in together_with:
        step(conn)
    return stored


class Inbox:
    def __init__(self, redis_dedup: Optional[RedisDedup] = None) -> None:
        self.redis_dedup = redis_dedup

    async def accept(self, message: InboundMessage, conversation_id: str, status: str = "received",
                     claimed_by: Optional[str] = None) -> Optional[int]:
        """The inbox row id of a new message, None for a duplicate. Raises if it could not be stored
        (the callback then fails and the platform retries). `claimed_by`: the row is stored already
        claimed by this worker (it answers the message right away: one transaction less)."""
        return (await self.accept_many([(message, conversation_id)], status, claimed_by))[0]

    async def accept_many(self, items: Sequence[Tuple[InboundMessage, str]], status: str = "received",
                          claimed_by: Optional[str] = None,
                          together_with: Sequence[Callable[[Connection], None]] = (),
                          pulled: bool = False) -> List[Optional[int]]:
        """accept() for several messages (a 微信客服 page) in one transaction, committed with
        `together_with` (functions of the connection, e.g. saving the page's cursor); None for each
        duplicate."""
        stored = await self.accept_prepared(items, status, claimed_by, together_with, pulled=pulled)
        return [s[0] if s else None for s in stored]

    async def accept_prepared(self, items: Sequence[Tuple[InboundMessage, str]], status: str = "received",
                              claimed_by: Optional[str] = None,
                              together_with: Sequence[Callable[[Connection], None]] = (),
                              prepare: Optional[Preparation] = None, pulled: bool = False,
                              commit_watch: Optional[db.CommitWatch] = None
                              ) -> List[Optional[Tuple[int, Any]]]:
        """accept_many(), also running prepare(connection, message) for each new message in the same
        transaction (e.g. opening the sender's reply window: one commit instead of two); (row id,
        what prepare returned) for each new message, None for each duplicate. On PostgreSQL a
        message stored on its own goes in one statement where `prepare` offers one.

        `pulled`: the messages come from a page we pulled (微信客服 sync_msg), not from a callback
        the platform may deliver again: no Redis check. Its only repeats (a page pulled again after
        a crash, or by a second process) are rare, and the inbox's unique key drops them in this
        same transaction; asking Redis first would cost a round trip per message for nothing.

        `commit_watch`: see db.CommitWatch (the callback's acknowledgement may go before the flush)."""
        if not items:
            return []
        fresh: List[bool] = []
        for message, _ in items:
            first = None
            if self.redis_dedup is not None and not pulled:
                first = await self.redis_dedup.first_time(message.channel, message.dedup_key)
                if first is False:
                    logger.info("duplicate message ignored", extra={"channel": message.channel, "by": "redis"})
            fresh.append(first is not False)
        try:
            return await db.run(_store, list(items), fresh, status, claimed_by, list(together_with), prepare,
                                commit_watch=commit_watch)
        except BaseException:  # also cancelled (shutdown): the database keeps deduplicating what was stored
            # not stored: let the platform's retry through Redis next time
            if self.redis_dedup is not None and not pulled:
                for (message, _), new in zip(items, fresh):
                    if new:
                        await self.redis_dedup.forget(message.channel, message.dedup_key)
            raise

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

    @staticmethod
    def finish_statement(row_id: int, status: str, error: Optional[str] = None) -> Tuple[db.Precompiled, Dict[str, Any]]:
        """The statement (and its parameters) that records how a row ended."""
        return _FINISH, {"row_id": row_id, "new_status": status, "at": now_utc(),
                         "why": (error or None) and error[:256]}

    async def finish(self, row_id: int, status: str, error: Optional[str] = None) -> None:
        await db.run(db.execute_all, [self.finish_statement(row_id, status, error)])

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
