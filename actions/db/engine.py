"""Engines and sessions: one async engine per process for actions and channels, a sync engine for
migrations, the importer and Rasa's tracker store."""
from __future__ import annotations

import asyncio
import contextlib
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import sessionmaker

from bot.settings import Settings, get_settings

_async_engines: dict = {}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the Rasa server, the action server and the importer use one file concurrently;
    # busy_timeout turns "database is locked" into a short wait.
    # synchronous=NORMAL is the durable setting for WAL (no corruption; only an OS crash or power
    # cut can lose the last commits) and saves an fsync per commit.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite") and ":memory:" not in url:
        path = url.split(":///", 1)[-1]
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def create_sync_engine(settings: Optional[Settings] = None) -> Engine:
    settings = settings or get_settings()
    url = settings.sync_database_url
    _ensure_sqlite_dir(url)
    kwargs = {"future": True}
    if url.startswith("postgresql"):
        kwargs.update(pool_pre_ping=True, connect_args={"connect_timeout": 5})
    if url.startswith("sqlite"):
        from sqlalchemy.pool import QueuePool

        kwargs.update(poolclass=QueuePool, pool_size=5, max_overflow=5, connect_args={"check_same_thread": False})
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def get_async_engine(settings: Optional[Settings] = None) -> AsyncEngine:
    """One engine per (URL, event loop): asyncpg connections cannot cross event loops."""
    settings = settings or get_settings()
    url = settings.async_database_url
    try:
        loop_id = id(asyncio.get_running_loop())
    except RuntimeError:
        loop_id = 0
    key = (url, loop_id)
    engine = _async_engines.get(key)
    if engine is None:
        _ensure_sqlite_dir(url)
        kwargs = {"future": True}
        # pools large enough for a busy WeChat gateway (up to 64 messages at once): past the pool
        # size each extra connection is opened and closed again per checkout
        if url.startswith("postgresql"):
            kwargs.update(pool_size=20, max_overflow=10, pool_pre_ping=True,
                          connect_args={"timeout": settings.action_io_timeout,
                                        "command_timeout": settings.action_io_timeout})
        else:
            from sqlalchemy.pool import AsyncAdaptedQueuePool

            # SQLAlchemy's default for SQLite files is no pool: a new connection, worker thread and
            # PRAGMAs for every session (~1 ms each). Pooled connections are threads too: the
            # servers dispose their engines on shutdown (dispose_async_engines).
            # no rollback when a connection goes back to the pool: a session has already ended its
            # transaction (commit, or rollback on close), so it would be one more trip through the
            # driver's thread per session for nothing
            kwargs.update(poolclass=AsyncAdaptedQueuePool, pool_size=10, max_overflow=10, pool_reset_on_return=None,
                          connect_args={"timeout": settings.action_io_timeout})
        engine = create_async_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        _async_engines[key] = engine
    return engine


async def dispose_async_engines() -> None:
    engines = list(_async_engines.values())
    _async_engines.clear()
    for engine in engines:
        with contextlib.suppress(Exception):
            await engine.dispose()


@contextlib.asynccontextmanager
async def async_session(settings: Optional[Settings] = None) -> AsyncIterator[AsyncSession]:
    factory = sessionmaker(get_async_engine(settings), class_=AsyncSession, expire_on_commit=False)
    async with factory() as session:
        yield session


_sqlite_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()
T = TypeVar("T")


@contextlib.asynccontextmanager
async def transaction(settings: Optional[Settings] = None) -> AsyncIterator[AsyncSession]:
    """A session in a transaction: committed when the block ends, rolled back if it raises.

    SQLite has one writer at a time and makes the others poll with growing sleeps: this process's
    transactions queue for it (an asyncio lock per event loop) instead of polling."""
    settings = settings or get_settings()
    if settings.is_sqlite:
        lock: Any = _sqlite_writers.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    else:
        lock = contextlib.nullcontext()
    async with lock:
        async with async_session(settings) as s:
            async with s.begin():
                yield s


async def in_transaction(work: Callable[[AsyncSession], Awaitable[T]], attempts: int = 3) -> T:
    """`work` in a transaction, run again when SQLite reports the database locked by another
    process (a read-then-write transaction whose snapshot another process's commit made stale)."""
    for attempt in range(1, attempts + 1):
        try:
            async with transaction() as s:
                return await work(s)
        except OperationalError as exc:
            if attempt == attempts or "locked" not in str(exc):
                raise
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")
