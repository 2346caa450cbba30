"""Database access of the WeChat gateway.

The hot path (storing a callback, opening the reply window, queueing the replies, claiming, reserving
and settling sends) runs as plain functions of a connection, each in one transaction on a database
thread (`run`): one hand-over per transaction instead of several per statement through an async
driver, which measured 5-7 times less CPU per transaction. SQLite has one such thread (it has one
writer anyway); PostgreSQL a few. The rest (sweeps, staff commands) uses async sessions (`session`).

On PostgreSQL every statement is a network round trip: a network RTT where the server is on another
host, and time a database thread waits. So the hot path's connections are in autocommit mode and the
transaction is written out by hand: BEGIN goes with the first statement, and statements whose result
nobody reads (`Precompiled.defer`: opening a reply window, saving a cursor, marking a message
answered) go with the next statement or with the COMMIT, in one simple-query message. A transaction
whose only result read is its last statement's goes as one message without BEGIN and COMMIT
(`Precompiled.execute_last`): the server runs the statements of one message as one implicit
transaction. Storing a message, queueing its reply and settling the reply are one round trip each,
the first two as one statement with data-modifying CTEs (inbox.Preparation, delivery.py): 3 round
trips per message, against 15 when every statement went on its own (docs/BENCHMARKS.md has what
each step saved). Under load the settle has no round trip of its own either: it rides in front of
whatever transaction a database thread runs next (ride()), so 2 round trips per message. The hot statements are server-side prepared (Precompiled), so the server does not
parse and plan them for every message, and planned again now and then as the tables grow
(_replan_due). On the client side those statements go straight to the DBAPI cursor
(_execute_written_out), and each database thread keeps its connection (_thread_connection).

On SQLite only one connection writes at a time and a waiting connection polls with growing sleeps
(1, 2, 5, 10 ... ms); with the connectors' short transactions arriving from many tasks at once, those
sleeps, not the work, made up the tail of the callback acknowledgement. So the hot path queues on its
single database thread, and the async sessions of one process take turns through an asyncio lock
(queueing instead of polling). On PostgreSQL both run concurrently. Never hold a session or run a
transaction across a platform API call.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import queue
import re
import threading
import time
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session, create_sync_engine
from bot.settings import get_settings

logger = logging.getLogger("channels.wechat.db")
T = TypeVar("T")
_locks: Dict[int, asyncio.Lock] = {}
_threads: Dict[str, Tuple[Engine, "DatabaseThreads"]] = {}
POSTGRES_THREADS = 4
# attribute of a Connection in a written-out transaction (PostgreSQL): statements, as (sql, DBAPI
# parameters), that go to the server with its next round trip; starts as [BEGIN]. (Not in
# Connection.info: that belongs to the DBAPI connection and is gone once the connection is invalidated.)
_PENDING = "_siyu_pending"
_BEGIN = ("BEGIN", None)
# attribute of a Connection whose written-out transaction went as one message without BEGIN and
# COMMIT (Precompiled.execute_last): the transaction has ended, nothing more may be sent in it
_ALONE = "_siyu_alone"
# the connection each PostgreSQL database thread keeps (_thread_connection), and all of them
_held = threading.local()
_held_lock = threading.Lock()
_all_held: List[Connection] = []
# names of the Precompiled statements prepared on a DBAPI connection (in its pool record's info:
# a new connection starts with none)
_PREPARED = "siyu_prepared"
_PREPARE_ON = "_siyu_prepare"  # attribute of the engine: Settings.database_prepared_statements
# transactions written out on a DBAPI connection (its pool record's info), for _replan_due
_TRANSACTIONS = "siyu_transactions"
_DEALLOCATE = ("DEALLOCATE ALL", None)
# statements waiting to ride on the next written-out transaction (ride()), and the lock the event
# loop and the database threads share them under
_riders: List["_Rider"] = []
_riders_lock = threading.Lock()
# the timer that runs a transaction for the riders if none comes (its loop, its handle)
_flush_timer: Optional[Tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle]] = None
# how long a rider waits for a transaction to carry it before one is run for it alone
RIDE_LINGER_S = 0.03
# a rider whose carriers failed this many times goes on its own (a broken rider must not fail
# every transaction that carries it)
RIDE_STRIKES = 2
_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s")


def _prepared_forms(name: str, sql: str) -> Tuple[str, str]:
    """PREPARE and EXECUTE for a statement compiled with psycopg2's %(name)s placeholders: the
    placeholders become $1, $2 ... in PREPARE, and EXECUTE passes the values in that order (still as
    %(name)s, interpolated by psycopg2 like any other parameter)."""
    if "%%" in sql:
        raise ValueError("a literal % in a precompiled statement is not supported")
    order: List[str] = []

    def number(match: "re.Match[str]") -> str:
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    prepare = f"PREPARE {name} AS {_PLACEHOLDER.sub(number, sql)}"
    execute = f"EXECUTE {name}" + (" (" + ", ".join(f"%({key})s" for key in order) + ")" if order else "")
    return prepare, execute


class DatabaseThreads:
    """The threads that run the hot path's transactions. A job goes to the thread that became idle
    last (its connection is the one in use; at low load one thread and one connection do all the
    work), or waits in a backlog while all are busy; its result comes back to the event loop with
    one call_soon_threadsafe. (concurrent.futures' ThreadPoolExecutor with run_in_executor cost
    half as much again per job: a semaphore, a condition and two chained futures; 46 against 31 µs
    of CPU per job in a micro-benchmark.)"""

    def __init__(self, count: int, name: str) -> None:
        self._count, self._name = count, name
        self._lock = threading.Lock()
        self._idle: List["queue.SimpleQueue[Any]"] = []  # the idle threads' own queues, last idle on top
        self._backlog: "collections.deque[Any]" = collections.deque()
        self._threads: List[threading.Thread] = []
        self._inboxes: List["queue.SimpleQueue[Any]"] = []

    def submit(self, fn: Callable[[], T]) -> "asyncio.Future[T]":
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = (loop, future, fn)
        with self._lock:
            if self._idle:
                inbox = self._idle.pop()
            elif len(self._threads) < self._count:
                inbox = self._start_thread()
            else:
                self._backlog.append(job)
                return future
        inbox.put(job)
        return future

    def _start_thread(self) -> "queue.SimpleQueue[Any]":
        inbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        thread = threading.Thread(target=self._work, args=(inbox,), name=f"{self._name}-{len(self._threads)}",
                                  daemon=True)
        self._threads.append(thread)
        self._inboxes.append(inbox)
        thread.start()
        return inbox

    def _work(self, inbox: "queue.SimpleQueue[Any]") -> None:
        job = inbox.get()
        while job is not None:
            loop, future, fn = job
            try:
                outcome: Tuple[Any, Optional[BaseException]] = (fn(), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
                outcome = (None, exc)
            # idle (or on to the backlog) before the result is handed back, so that the coroutine's
            # next transaction finds this thread and its connection
            with self._lock:
                job = self._backlog.popleft() if self._backlog else None
                if job is None:
                    self._idle.append(inbox)
            try:
                loop.call_soon_threadsafe(_resolve, future, *outcome)
            except RuntimeError:  # the loop was closed meanwhile: nobody waits for the result
                logger.debug("database job finished after its event loop closed")
            if job is None:
                job = inbox.get()

    def shutdown(self) -> None:
        """Lets the jobs given so far finish, then ends the threads."""
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join()


def _resolve(future: "asyncio.Future[Any]", result: Any, error: Optional[BaseException]) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _database() -> Tuple[Engine, DatabaseThreads]:
    settings = get_settings()
    url = settings.sync_database_url
    if url not in _threads:
        threads = 1 if settings.is_sqlite else POSTGRES_THREADS
        # no pre-ping: it would add a round trip to every transaction; _in_transaction retries instead
        engine = create_sync_engine(settings, pre_ping=False, autocommit=not settings.is_sqlite)
        if not settings.is_sqlite:
            sa.event.listen(engine, "before_cursor_execute", _with_pending, retval=True)
            setattr(engine, _PREPARE_ON, settings.database_prepared_statements)
        _threads[url] = (engine, DatabaseThreads(threads, "wechat-db"))
    return _threads[url]


def _with_pending(conn, cursor, statement, parameters, context, executemany):
    """Puts the transaction's pending statements in front of the one being executed (one message
    to the server; psycopg2 returns the last statement's result, which is the caller's)."""
    if getattr(conn, _ALONE, False):  # outside any transaction: it would commit on its own
        raise RuntimeError("nothing may follow execute_last in its transaction")
    pending = getattr(conn, _PENDING, None)
    if not pending:
        return statement, parameters
    head = _take_pending(cursor, pending).decode()
    if executemany:  # cannot carry other statements: sent on their own first
        cursor.execute(head)
        return statement, parameters
    # already interpolated: executed without parameters, so nothing in it is read as a placeholder
    return head + "; " + cursor.mogrify(statement, parameters or None).decode(), None


def _take_pending(cursor, pending: List[Tuple[str, Any]]) -> bytes:
    """The pending statements, interpolated and joined into one message's text; the list emptied."""
    head = b"; ".join(cursor.mogrify(sql, values) for sql, values in pending)
    pending.clear()
    return head


def _in_transaction(engine: Engine, fn: Callable[..., T], args: Tuple[Any, ...]) -> T:
    try:
        return _attempt(engine, fn, args, stale_is_retried=True)
    except _StaleConnection:
        # the connection had died (the database restarted, or an idle connection was cut); the
        # server rolled back whatever fn had done on it: once more, on a fresh connection (on
        # PostgreSQL each database thread's held connection is found dead by its own next
        # transaction and repeated the same way)
        logger.warning("database connection was closed; transaction repeated on a new connection")
        return _attempt(engine, fn, args, stale_is_retried=False)


class _StaleConnection(Exception):
    pass


def _attempt(engine: Engine, fn: Callable[..., T], args: Tuple[Any, ...], stale_is_retried: bool) -> T:
    if engine.dialect.name == "postgresql":
        return _attempt_written_out(engine, fn, args, stale_is_retried)
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


def _thread_connection(engine: Engine) -> Connection:
    """The connection this database thread keeps between its transactions (PostgreSQL): taking one
    from the pool and giving it back for every transaction was ~7 % of the gateway's CPU. A
    connection that was invalidated (lost) is replaced; close() closes them all."""
    conn = getattr(_held, "conn", None)
    if conn is not None and conn.engine is engine and not conn.closed and not conn.invalidated:
        return conn
    if conn is not None:
        _release(conn)
    conn = _held.conn = engine.connect()
    with _held_lock:
        _all_held.append(conn)
    return conn


def _release(conn: Connection) -> None:
    with _held_lock:
        if conn in _all_held:
            _all_held.remove(conn)
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a lost connection may fail to close; it is gone either way
        logger.debug("held connection could not be closed cleanly")


def _attempt_written_out(engine: Engine, fn: Callable[..., T], args: Tuple[Any, ...], stale_is_retried: bool) -> T:
    """_attempt on an autocommit connection, BEGIN and COMMIT sent by hand with other statements."""
    conn = _thread_connection(engine)
    pending = [_BEGIN]
    if _replan_due(conn):
        pending.append(_DEALLOCATE)  # goes with the transaction's first statement
    setattr(conn, _PENDING, pending)
    riders = _take_riders()
    try:
        try:
            try:
                for rider in riders:
                    rider.statement.defer(conn, rider.params)
                carried = len(pending)
                result = fn(conn, *args)
                if getattr(conn, _ALONE, False):
                    if pending:  # a statement deferred after it would never be sent
                        raise RuntimeError("nothing may follow execute_last in its transaction")
                    _riders_done(riders)
                    return result  # its one statement was its own transaction: nothing to commit
                if pending == [_BEGIN]:  # fn did nothing: no transaction to open or commit
                    return result
                if riders and pending and pending[0] is _BEGIN and len(pending) == carried:
                    # fn did nothing, the riders are all there is: one implicit transaction (they
                    # may run twice)
                    del pending[0]
                    _send_pending(conn)
                    _riders_done(riders)
                    return result
                if pending and pending[0] is _BEGIN:
                    # fn only deferred statements: they go now, before the COMMIT, so that a dead
                    # connection is still found where nothing can have been committed
                    _send_pending(conn)
            except DBAPIError as exc:
                if exc.connection_invalidated and stale_is_retried:
                    raise _StaleConnection() from exc
                raise
            # a connection lost during COMMIT is not retried: the commit may have happened
            _commit_going()
            _execute_written_out(conn, "COMMIT", None)
            _riders_done(riders)
            return result
        except BaseException as exc:
            _commit_going(sent=False)  # whether the commit reached the server is not known: say it did not
            pending.clear()
            setattr(conn, _ALONE, False)  # what follows (ROLLBACK, DEALLOCATE) is not the transaction's
            _roll_back(conn)
            _forget_prepared(conn)
            _riders_failed(riders, exc)
            raise
    finally:
        setattr(conn, _PENDING, None)
        setattr(conn, _ALONE, False)
        if conn.invalidated:
            _release(conn)  # lost: the next transaction takes a new one
        elif conn.in_transaction():
            # SQLAlchemy's own bookkeeping of a statement run through it (no server round trip on
            # an autocommit connection); ended as the pool's check-in would have ended it
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the transaction's own outcome is what the caller sees
                logger.warning("held connection could not be reset; it is replaced")
                _release(conn)


def _replan_due(conn: Connection) -> bool:
    """Whether this connection's prepared statements are to be planned again: after its 64th,
    128th, 256th ... transaction, then every 65536th. PostgreSQL keeps the generic plan it made for
    a prepared statement after its first executions, and plans made while a table was still small
    read it whole (a sequential scan is cheapest for a few pages): on a new database every settle
    had gone through every row ever sent. Autovacuum's ANALYZE would make it plan again, where
    autovacuum runs and keeps up. Then the statements are prepared again at their next use."""
    info = conn.connection.info
    count = info[_TRANSACTIONS] = info.get(_TRANSACTIONS, 0) + 1
    if count < 64 or (count & (count - 1) and count % 65536) or not info.get(_PREPARED):
        return False
    info.pop(_PREPARED)
    return True


def _forget_prepared(conn: Connection) -> None:
    """After a failure: whether the statements marked prepared on this connection really were is
    unknown (a failed message stops at its failing statement), so none are (see Precompiled). Also
    when none are marked: a DEALLOCATE ALL of _replan_due may not have reached the server."""
    if conn.invalidated or not getattr(conn.engine, _PREPARE_ON, False):
        return
    conn.connection.info.pop(_PREPARED, None)
    try:
        conn.exec_driver_sql("DEALLOCATE ALL")
    except Exception:  # noqa: BLE001 - the original error is what the caller must see
        logger.warning("could not deallocate prepared statements; the connection is discarded")
        if not conn.invalidated:
            conn.invalidate()


def _send_pending(conn: Connection) -> None:
    sql, values = getattr(conn, _PENDING).pop()
    _execute_written_out(conn, sql, values)


class _Rows:
    """What the callers of a Precompiled statement read of its result."""

    __slots__ = ("rowcount", "_rows")

    def __init__(self, rowcount: int, rows: List[tuple]) -> None:
        self.rowcount, self._rows = rowcount, rows

    def all(self) -> List[tuple]:
        return self._rows

    def first(self) -> Optional[tuple]:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


def _execute_written_out(conn: Connection, sql: str, values: Any) -> _Rows:
    """One statement of a written-out transaction, with the pending ones in front of it, straight on
    the DBAPI cursor: SQLAlchemy's execution context and result objects were most of the gateway's
    time in its database thread, for statements whose SQL and parameters are ready. Errors are
    turned into SQLAlchemy's exceptions as exec_driver_sql would (a lost connection invalidated)."""
    if getattr(conn, _ALONE, False):  # outside any transaction: it would commit on its own
        raise RuntimeError("nothing may follow execute_last in its transaction")
    pending = getattr(conn, _PENDING)
    cursor = conn.connection.dbapi_connection.cursor()
    text = None
    try:
        text = cursor.mogrify(sql, values)
        if pending:
            text = _take_pending(cursor, pending) + b"; " + text
        _send(cursor, text)
        return _Rows(cursor.rowcount, cursor.fetchall() if cursor.description is not None else [])
    except Exception as exc:  # noqa: BLE001 - re-raised, wrapped like SQLAlchemy's own executions
        conn._handle_dbapi_exception(exc, text.decode() if isinstance(text, bytes) else sql, None, cursor, None)
        raise  # (_handle_dbapi_exception always raises)
    finally:
        cursor.close()


def _send(cursor, text: bytes) -> None:
    """One message to the server (every statement of a written-out transaction that goes through
    Precompiled or its COMMIT: tests count round trips here)."""
    cursor.execute(text)


def _roll_back(conn: Connection) -> None:
    """Ends the server's transaction if one is open (the pool's own rollback on return does
    nothing on an autocommit connection); a connection that cannot is discarded."""
    if conn.invalidated:
        return
    try:
        status = conn.connection.dbapi_connection.info.transaction_status
        if status != 0:  # not idle: in a transaction, failed in one, or unknown (broken)
            conn.exec_driver_sql("ROLLBACK")
    except Exception:  # noqa: BLE001 - the original error is what the caller must see
        logger.warning("could not roll back; the connection is discarded")
        if not conn.invalidated:
            conn.invalidate()


class CommitWatch:
    """Filled in on a database thread (run()): when the message that commits the transaction went
    to the PostgreSQL server (time.monotonic()), None until then. From then on the server finishes
    the commit even if this process dies; what is left is its flush to disk. Never on SQLite, whose
    commit is in this process. A plain attribute, read by the event loop when it looks: telling the
    loop at once would wake it once more for every message."""

    __slots__ = ("sent_at",)

    def __init__(self) -> None:
        self.sent_at: Optional[float] = None


async def run(fn: Callable[..., T], *args: Any, commit_watch: Optional[CommitWatch] = None) -> T:
    """fn(connection, *args) in one transaction on a database thread; committed when fn returns,
    rolled back if it raises. fn must not do anything but database work. `commit_watch`: see
    CommitWatch."""
    engine, threads = _database()
    job = functools.partial(_in_transaction, engine, fn, args)
    if commit_watch is not None:
        job = functools.partial(_watched, commit_watch, job)
    return await threads.submit(job)


def _watched(commit_watch: CommitWatch, job: Callable[[], T]) -> T:
    _held.commit_watch = commit_watch
    try:
        return job()
    finally:
        _held.commit_watch = None


def _commit_going(sent: bool = True) -> None:
    """On a database thread, just before the message that commits its transaction is sent (or,
    `sent` False, when an attempt failed: a repeated attempt has sent nothing yet): the job's
    CommitWatch."""
    watch = getattr(_held, "commit_watch", None)
    if watch is not None:
        watch.sent_at = time.monotonic() if sent else None


class _Rider:
    __slots__ = ("statement", "params", "loop", "future", "strikes")

    def __init__(self, statement: "Precompiled", params: Dict[str, Any], loop, future) -> None:
        self.statement, self.params, self.loop, self.future, self.strikes = statement, params, loop, future, 0


def ride(statement: "Precompiled", params: Dict[str, Any]) -> "asyncio.Future[None]":
    """PostgreSQL: `statement` goes to the server in front of the next transaction any database
    thread runs, committed with it; the future resolves when it is. For bookkeeping that is safe to
    run twice, whose result nobody reads and whose commit nothing on the hot path waits for (an
    outbox row settled as sent): under load it costs no round trip of its own (a one-row settle as
    its own round trip measured ~0.4 ms of the server's CPU and ~0.25 ms of the gateway's). If
    no transaction comes within RIDE_LINGER_S, one is run for the riders alone. A rider whose
    carriers failed RIDE_STRIKES times fails (its future), so the caller can run it on its own."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    with _riders_lock:
        _riders.append(_Rider(statement, params, loop, future))
    _schedule_flush()
    return future


def _flush_riders() -> None:
    global _flush_timer
    _flush_timer = None
    with _riders_lock:
        waiting = bool(_riders)
    if waiting:
        future = asyncio.ensure_future(run(_carry_riders))
        future.add_done_callback(_flush_outcome)


def _carry_riders(conn: Connection) -> None:
    """A transaction of its own for the riders (see _attempt_written_out)."""


def _flush_outcome(future: "asyncio.Future[None]") -> None:
    if not future.cancelled() and future.exception() is not None:
        # the riders went back for the next transaction (_riders_failed)
        logger.warning("riders' transaction failed", extra={"error": type(future.exception()).__name__})


def _take_riders() -> List[_Rider]:
    if not _riders:
        return []
    with _riders_lock:
        taken = _riders[:]
        _riders.clear()
    return taken


def _riders_done(riders: List[_Rider]) -> None:
    for rider in riders:
        _hand_back(rider, None)
    riders.clear()  # a failure after this point (none expected) must not put them back


def _riders_failed(riders: List[_Rider], error: BaseException) -> None:
    """The carrier failed: the riders wait for the next transaction, or fail after RIDE_STRIKES."""
    again = []
    for rider in riders:
        rider.strikes += 1
        if rider.strikes >= RIDE_STRIKES:
            _hand_back(rider, error)
        else:
            again.append(rider)
    if again:
        with _riders_lock:
            _riders[:0] = again
        _call(again[0].loop, _schedule_flush)  # in case no transaction comes


def _schedule_flush() -> None:
    global _flush_timer
    loop = asyncio.get_running_loop()
    if _flush_timer is None or _flush_timer[0] is not loop:  # (a timer of a loop that ended never fires)
        _flush_timer = (loop, loop.call_later(RIDE_LINGER_S, _flush_riders))


def _hand_back(rider: _Rider, error: Optional[BaseException]) -> None:
    _call(rider.loop, _resolve, rider.future, None, error)


def _call(loop, fn, *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop was closed meanwhile: nobody waits any more
        logger.debug("rider finished after its event loop closed")


async def flush_riders() -> None:
    """Commit the riders waiting now (at shutdown, before the connections close)."""
    while _riders:
        await run(_carry_riders)


def close() -> None:
    """Stop the database threads and close their connections (at shutdown; tests switch databases)."""
    global _flush_timer
    if _flush_timer is not None:
        _flush_timer[1].cancel()
        _flush_timer = None
    with _riders_lock:
        if _riders:
            logger.warning("database closed with statements still waiting to ride", extra={"riders": len(_riders)})
        _riders.clear()
    for engine, threads in _threads.values():
        threads.shutdown()
        with _held_lock:
            held = [conn for conn in _all_held if conn.engine is engine]
        for conn in held:  # their threads have ended
            _release(conn)
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


def execute_all(conn: Connection, statements: Sequence[Tuple[Any, Dict[str, Any]]]) -> None:
    """(statement, parameters) pairs in the caller's transaction; Precompiled ones are deferred."""
    for statement, parameters in statements:
        if isinstance(statement, Precompiled):
            statement.defer(conn, parameters)
        else:
            conn.execute(statement, parameters)


class Precompiled:
    """A hot-path statement that SQLAlchemy 1.4 would compile again on every execution (it cannot
    cache the dialects' INSERT .. ON CONFLICT, which measured ~7 % of the gateway's CPU), compiled
    once per dialect instead and run with exec_driver_sql; its parameters go through the columns'
    types exactly as SQLAlchemy would send them.

    In a written-out PostgreSQL transaction the statement is a server-side prepared statement: the
    first use on a connection sends PREPARE ahead of it (in the same round trip), later uses send
    EXECUTE with the values, so the server parses and plans it once per connection instead of for
    every message (a third of the server's time on the gateway's statements was parsing and
    planning). A prepared statement outlives a rolled-back transaction, but one that failed may not
    have been prepared at all: after any failure the connection forgets them all (DEALLOCATE ALL)."""

    _names = itertools.count(1)

    def __init__(self, build: Callable[[str], Executable], column_keys: Optional[Sequence[str]] = None) -> None:
        self._build = build  # dialect name -> statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: Dict[str, Tuple[Any, str, Optional[List[str]], Dict[str, Callable]]] = {}
        self._name = f"siyu_{next(self._names)}"
        self._prepared_sql: Optional[Tuple[str, str]] = None  # (PREPARE, EXECUTE) on PostgreSQL

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
            if dialect.name == "postgresql":
                self._prepared_sql = _prepared_forms(self._name, compiled.string)
            entry = self._compiled[dialect.name] = (compiled, compiled.string, order, processors)
        return entry

    def _sql_and_values(self, conn: Connection, params: Dict[str, Any]) -> Tuple[str, Any]:
        compiled, sql, order, processors = self._for(conn.dialect)
        values = compiled.construct_params(params)
        for name, processor in processors.items():
            values[name] = processor(values[name])
        pending = getattr(conn, _PENDING, None)
        if pending is not None and self._prepared_sql is not None and getattr(conn.engine, _PREPARE_ON, False):
            prepared = conn.connection.info.setdefault(_PREPARED, set())
            if self._name not in prepared:
                pending.append((self._prepared_sql[0], None))
                prepared.add(self._name)
            return self._prepared_sql[1], values
        return sql, tuple(values[name] for name in order) if order is not None else values

    def execute(self, conn: Connection, params: Dict[str, Any]):
        sql, values = self._sql_and_values(conn, params)
        if getattr(conn, _PENDING, None) is not None:
            return _execute_written_out(conn, sql, values)
        return conn.exec_driver_sql(sql, values)

    def execute_last(self, conn: Connection, params: Dict[str, Any]):
        """execute() for the last statement of a transaction, nothing may follow it. On PostgreSQL,
        if nothing of the transaction has gone to the server yet, it goes without BEGIN and COMMIT,
        with the statements deferred so far in front of it, in one message: the server runs them as
        one implicit transaction, committed if all succeed, else none of it (one round trip for the
        whole transaction). Once an earlier statement has opened the transaction, this is an
        ordinary statement and the COMMIT follows it.

        Only for a transaction that may run twice: if the connection turns out to be lost, the
        transaction is repeated on a new one like any other, although the server may have
        committed it just before (an INSERT .. ON CONFLICT DO NOTHING then finds its row stored;
        a settle finds its row no longer claimed)."""
        pending = getattr(conn, _PENDING, None)
        if pending is None or not pending or pending[0] is not _BEGIN:
            return self.execute(conn, params)
        del pending[0]
        _commit_going()
        result = self.execute(conn, params)
        setattr(conn, _ALONE, True)
        return result

    def defer(self, conn: Connection, params: Dict[str, Any]) -> None:
        """execute() for a statement whose result nobody reads: on PostgreSQL it goes to the server
        with the transaction's next statement or its COMMIT (an error in it fails the transaction
        there); elsewhere it runs now."""
        pending = getattr(conn, _PENDING, None)
        if pending is None:
            self.execute(conn, params)
        else:
            pending.append(self._sql_and_values(conn, params))

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
