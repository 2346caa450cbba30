"""Database sessions of the WeChat connectors.

On SQLite only one connection writes at a time and a waiting connection polls with growing sleeps
(1, 2, 5, 10 ... ms); with the connectors' short transactions arriving from many tasks at once, those
sleeps, not the work, made up the tail of the callback acknowledgement. The connectors' sessions of
one process therefore take turns through an asyncio lock on SQLite (queueing instead of polling).
PostgreSQL sessions run concurrently. Never hold a session across a platform API call.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Dict

from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session
from bot.settings import get_settings

_locks: Dict[int, asyncio.Lock] = {}


def _sqlite_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(id(loop))
    if lock is None:
        lock = _locks[id(loop)] = asyncio.Lock()
    return lock


def insert_for(session: AsyncSession, table):
    """The dialect's INSERT (with ON CONFLICT clauses) for the session's database."""
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[AsyncSession]:
    if get_settings().is_sqlite:
        async with _sqlite_lock():
            async with async_session() as s:
                yield s
    else:
        async with async_session() as s:
            yield s
