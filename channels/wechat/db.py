"""Database access of the WeChat gateway.

The hot path (storing a callback, opening the reply window, queueing the replies, claiming, reserving
and settling sends) runs as plain functions of a connection, each in one transaction on a database
thread (`run`): one hand-over per transaction instead of several per statement through an async
driver, which measured 5-7 times less CPU per transaction. SQLite has one such thread (it has one
writer anyway); PostgreSQL a few. The rest (sweeps, staff commands) uses async sessions (`session`).

On SQLite only one connection writes at a time and a waiting connection polls with growing sleeps
(1, 2, 5, 10 ... ms); with the connectors' short transactions arriving from many tasks at once, those
sleeps, not the work, made up the tail of the callback acknowledgement. So the hot path queues on its
single database thread, and the async sessions of one process take turns through an asyncio lock
(queueing instead of polling). On PostgreSQL both run concurrently. Never hold a session or run a
transaction across a platform API call.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session, create_sync_engine
from bot.settings import get_settings

logger = logging.getLogger("channels.wechat.db")
T = TypeVar("T")
_locks: Dict[int, asyncio.Lock] = {}
_threads: Dict[str, Tuple[Engine, ThreadPoolExecutor]] = {}
POSTGRES_THREADS = 4


def _database() -> Tuple[Engine, ThreadPoolExecutor]:
    settings = get_settings()
    url = settings.sync_database_url
    if url not in _threads:
        threads = 1 if settings.is_sqlite else POSTGRES_THREADS
        # no pre-ping: it would add a round trip to every transaction; _in_transaction retries instead
        _threads[url] = (create_sync_engine(settings, pre_ping=False),
                         ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wechat-db"))
    return _threads[url]


def _in_transaction(engine: Engine, fn: Callable[..., T], args: Tuple[Any, ...]) -> T:
    try:
        return _attempt(engine, fn, args, stale_is_retried=True)
    except _StaleConnection:
        # the pooled connection had died (the database restarted, or an idle connection was cut);
        # the server rolled back whatever fn had done on it, and SQLAlchemy has discarded the pool's
        # other old connections: once more, on a fresh connection
        logger.warning("database connection was closed; transaction repeated on a new connection")
        return _attempt(engine, fn, args, stale_is_retried=False)


class _StaleConnection(Exception):
    pass


def _attempt(engine: Engine, fn: Callable[..., T], args: Tuple[Any, ...], stale_is_retried: bool) -> T:
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            result = fn(conn, *args)
        except DBAPIError as exc:
            if exc.connection_invalidated and stale_is_retried:
                raise _StaleConnection() from exc
            raise
        # a connection lost during COMMIT is not retried: the commit may have happened
        transaction.commit()
        return result


async def run(fn: Callable[..., T], *args: Any) -> T:
    """fn(connection, *args) in one transaction on a database thread; committed when fn returns,
    rolled back if it raises. fn must not do anything but database work."""
    engine, executor = _database()
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(_in_transaction, engine, fn, args))


def close() -> None:
    """Stop the database threads and close their connections (at shutdown; tests switch databases)."""
    for engine, executor in _threads.values():
        executor.shutdown(wait=True)
        engine.dispose()
    _threads.clear()


def _sqlite_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(id(loop))
    if lock is None:
        lock = _locks[id(loop)] = asyncio.Lock()
    return lock


def insert_for_dialect(dialect: str, table):
    """The INSERT (with ON CONFLICT clauses) of the dialect named "postgresql" or "sqlite"."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def execute_all(conn: Connection, statements: Sequence[Tuple[Executable, Dict[str, Any]]]) -> None:
    """(statement, parameters) pairs in the caller's transaction."""
    for statement, parameters in statements:
        conn.execute(statement, parameters)


class Precompiled:
    """A hot-path statement that SQLAlchemy 1.4 would compile again on every execution (it cannot
    cache the dialects' INSERT .. ON CONFLICT, which measured ~7 % of the gateway's CPU), compiled
    once per dialect instead and run with exec_driver_sql; its parameters go through the columns'
    types exactly as SQLAlchemy would send them."""

    def __init__(self, build: Callable[[str], Executable], column_keys: Optional[Sequence[str]] = None) -> None:
        self._build = build  # dialect name -> statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: Dict[str, Tuple[Any, str, Optional[List[str]], Dict[str, Callable]]] = {}

    def _for(self, dialect) -> Tuple[Any, str, Optional[List[str]], Dict[str, Callable]]:
        entry = self._compiled.get(dialect.name)
        if entry is None:
            compiled = self._build(dialect.name).compile(dialect=dialect, column_keys=self._column_keys)
            if compiled.insert_prefetch or compiled.update_prefetch:
                # column defaults computed in Python are filled in by SQLAlchemy's execution, not here
                raise ValueError("a precompiled statement must be given every column that has a Python default")
            processors = {name: processor for name, processor in (
                (name, bind.type.bind_processor(dialect)) for bind, name in compiled.bind_names.items())
                if processor is not None}
            order = list(compiled.positiontup) if compiled.positional else None
            entry = self._compiled[dialect.name] = (compiled, compiled.string, order, processors)
        return entry

    def execute(self, conn: Connection, params: Dict[str, Any]):
        compiled, sql, order, processors = self._for(conn.dialect)
        values = compiled.construct_params(params)
        for name, processor in processors.items():
            values[name] = processor(values[name])
        return conn.exec_driver_sql(sql, tuple(values[name] for name in order) if order is not None else values)

    def inserted_id(self, conn: Connection, result) -> Optional[int]:
        """The primary key an INSERT of one row created (None if it inserted nothing)."""
        if result.rowcount != 1:
            return None
        if self._for(conn.dialect)[0].returning:
            return result.scalar()
        return result.lastrowid


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[AsyncSession]:
    if get_settings().is_sqlite:
        async with _sqlite_lock():
            async with async_session() as s:
                yield s
    else:
        async with async_session() as s:
            yield s
