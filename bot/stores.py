"""Rasa stores chosen by the settings: the SQL tracker store on the shop's database (its blocking
queries moved off the event loop), and a lock store that is Redis when REDIS_URL is set (which
also lets Rasa run several Sanic workers) and in-memory otherwise."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any, Iterable, Optional, Text
from urllib.parse import urlsplit

import sqlalchemy as sa
from rasa.core.lock_store import LOCK_LIFETIME, InMemoryLockStore, LockStore, RedisLockStore
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

from bot.settings import get_settings, masked_url

logger = logging.getLogger(__name__)


class SiyuTrackerStore(SQLTrackerStore):
    """SQLTrackerStore on DATABASE_URL whose database work runs in a thread, so one slow query does
    not stall every other conversation served by the same event loop."""

    def __init__(self, domain=None, host: Optional[str] = None, event_broker=None, **kwargs: Any) -> None:
        from actions.db.engine import _ensure_sqlite_dir, _sqlite_pragmas

        settings = get_settings()
        url = settings.sync_database_url
        _ensure_sqlite_dir(url)
        logger.info("tracker store on %s", masked_url(url))
        super().__init__(domain=domain, host=url, event_broker=event_broker)
        self._write_lock: Optional[asyncio.Lock] = None
        if self.engine.dialect.name == "sqlite":
            self._write_lock = asyncio.Lock()
            # Rasa's engine uses SQLite's NullPool (a new connection per query); ours pools them
            from sqlalchemy.pool import QueuePool

            self.engine.dispose()
            self.engine = sa.create_engine(url, poolclass=QueuePool, pool_size=5, max_overflow=5,
                                           connect_args={"check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    async def keys(self) -> Iterable[Text]:
        return await asyncio.to_thread(self._keys_sync)

    def _keys_sync(self):
        with self.session_scope() as session:
            return [sender_id for (sender_id,) in session.query(self.SQLEvent.sender_id).distinct().all()]

    async def _retrieve(self, sender_id: Text, fetch_events_from_all_sessions: bool) -> Optional[DialogueStateTracker]:
        events = await asyncio.to_thread(self._events_sync, sender_id, fetch_events_from_all_sessions)
        if self.domain and events:
            return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)
        return None

    def _events_sync(self, sender_id: Text, all_sessions: bool):
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, fetch_events_from_all_sessions=all_sessions).all()
            return [json.loads(row.data) for row in rows]

    async def save(self, tracker: DialogueStateTracker) -> None:
        await self.stream_events(tracker)
        if self._write_lock is None:
            await asyncio.to_thread(self._save_sync, tracker)
            return
        # SQLite has one writer at a time and makes the others poll with growing sleeps; queueing
        # the writers here instead keeps them from sleeping past the moment the file is free
        async with self._write_lock:
            await asyncio.to_thread(self._save_sync, tracker)

    def _save_sync(self, tracker: DialogueStateTracker) -> None:
        with self.session_scope() as session:
            stored = self._event_query(session, tracker.sender_id, fetch_events_from_all_sessions=False).count()
            for event in itertools.islice(tracker.events, stored, len(tracker.events)):
                data = event.as_dict()
                session.add(self.SQLEvent(
                    sender_id=tracker.sender_id, type_name=event.type_name, timestamp=data.get("timestamp"),
                    intent_name=data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                    action_name=data.get("name"), data=json.dumps(data)))
            session.commit()


def create_tracker_tables() -> None:
    """Create the tracker store's tables (if missing) before Rasa forks its workers. Each worker's
    SQLTrackerStore creates them as it starts; on a new PostgreSQL database two workers doing so at
    once collide (a duplicate in pg_class), and Rasa makes the loser sleep 5 s before it tries
    again. If this fails, the workers still create the tables themselves."""
    from actions.db.engine import create_sync_engine

    engine = create_sync_engine()  # the tracker store's database (a SQLite file's folder made)
    try:
        SQLTrackerStore.Base.metadata.create_all(engine)
    except sa.exc.SQLAlchemyError as exc:
        logger.warning("tracker store tables not created before the workers start: %s", type(exc).__name__)
    finally:
        engine.dispose()  # no connection may cross the fork


# how often a turn waiting for its conversation's lock looks again (Rasa's default: every second,
# so a burst of n messages from one sender took n seconds and more to drain)
LOCK_RETRY_S = 0.05


class PromptRetry:
    """Mixin for Rasa lock stores: waiters re-check the lock every LOCK_RETRY_S."""

    def lock(self, conversation_id: Text, lock_lifetime: float = LOCK_LIFETIME,
             wait_time_in_seconds: float = LOCK_RETRY_S):
        return super().lock(conversation_id, lock_lifetime, wait_time_in_seconds)


class SiyuInMemoryLockStore(PromptRetry, InMemoryLockStore):
    """Rasa's in-memory lock store (one Rasa worker) with prompt re-checks."""


class SiyuLockStore:
    """Not a lock store itself: constructing it returns the lock store the settings ask for.

    Rasa only accepts a class path in endpoints.yml; `__new__` lets one path mean "Redis when
    configured, in-memory otherwise"."""

    def __new__(cls, endpoint_config=None) -> LockStore:  # type: ignore[misc]
        settings = get_settings()
        if not settings.redis_url:
            return SiyuInMemoryLockStore()
        parts = urlsplit(settings.redis_url)
        db = int(parts.path.lstrip("/") or 0)
        logger.info("redis lock store on %s", masked_url(settings.redis_url))
        return AtomicRedisLockStore(host=parts.hostname or "localhost", port=parts.port or 6379, db=db,
                                    password=parts.password, use_ssl=parts.scheme == "rediss",
                                    key_prefix="siyu", socket_timeout=5)


class AtomicRedisLockStore(PromptRetry, RedisLockStore):
    """Rasa's Redis lock store reads a conversation's ticket lock, changes it and writes it back.
    Two workers doing that at once could both draw the first ticket and answer one conversation
    side by side (seen as two session starts for one new conversation). Here every such
    read-modify-write holds a short per-conversation Redis mutex (SET NX with an expiry)."""

    def _mutex(self, conversation_id: Text):
        # held for a few Redis round trips only; the expiry frees it if a worker dies holding it
        return self.red.lock(f"{self.key_prefix}mutex:{conversation_id}", timeout=5, sleep=0.001,
                             blocking_timeout=5)

    def issue_ticket(self, conversation_id: Text, lock_lifetime: float = LOCK_LIFETIME) -> int:
        with self._mutex(conversation_id):
            return super().issue_ticket(conversation_id, lock_lifetime)

    def update_lock(self, conversation_id: Text) -> None:
        with self._mutex(conversation_id):
            super().update_lock(conversation_id)

    def finish_serving(self, conversation_id: Text, ticket_number: int) -> None:
        with self._mutex(conversation_id):
            super().finish_serving(conversation_id, ticket_number)

    def cleanup(self, conversation_id: Text, ticket_number: int) -> None:
        # finish serving and delete the lock if nobody waits, as one step (the mutex is not re-entrant)
        with self._mutex(conversation_id):
            LockStore.finish_serving(self, conversation_id, ticket_number)
            if not self.is_someone_waiting(conversation_id):
                self.delete_lock(conversation_id)
