"""The gateway's database thread on a real PostgreSQL: its connections skip the liveness query
before each transaction, so a connection the server closed (a restart, an idle cut) is found dead by
the transaction itself, which is then repeated once on a fresh connection: the message is stored
once, and nothing fails. Its transactions are written out by hand on autocommit connections (BEGIN
with the first statement, statements nobody reads sent with the next one or the COMMIT): all of a
transaction or none of it is stored, and no connection goes back to the pool inside a transaction."""
from __future__ import annotations

import sqlalchemy as sa

from channels.wechat import db, windows
from channels.wechat.inbox import Inbox
from channels.wechat.pipeline import prepare
from channels.wechat.models import ReplyWindow
from tests.wechat.test_inbox import kf_message, rows


def _backend_pid(conn) -> int:
    return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()


def _terminate_others(url: str) -> int:
    """What a server restart does to the gateway's pooled connections."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all())
    finally:
        engine.dispose()


async def test_a_transaction_on_a_connection_the_server_closed_is_repeated_on_a_fresh_one(
        postgres_db, no_redis, caplog):
    from tests.conftest import use_database

    use_database(postgres_db)
    db.close()
    before = await db.run(_backend_pid)
    assert _terminate_others(postgres_db) >= 1

    inbox = Inbox()
    row_id = await inbox.accept(*kf_message("m1"), claimed_by="worker-a")

    assert row_id is not None
    assert await rows() == [("m1", "processing", "worker-a")], "stored once"
    assert await db.run(_backend_pid) != before, "on a new connection"
    assert "transaction repeated on a new connection" in caplog.text
    db.close()


async def test_an_error_that_is_not_a_lost_connection_is_not_repeated(postgres_db, no_redis):
    from tests.conftest import use_database

    use_database(postgres_db)
    calls = []

    def broken(conn):
        calls.append(1)
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    try:
        await db.run(broken)
    except sa.exc.ProgrammingError:
        pass
    else:
        raise AssertionError("the error reaches the caller")
    assert calls == [1]
    db.close()


def _open_transactions(url: str) -> int:
    """Connections of this database left inside a transaction."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            return conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'")).scalar()
    finally:
        engine.dispose()


async def _windows():
    from channels.wechat.db import session

    async with session() as s:
        return [tuple(r) for r in (await s.execute(sa.select(ReplyWindow.channel, ReplyWindow.user_id))).all()]


async def test_statements_nobody_reads_are_committed_with_the_transaction(postgres_db, no_redis):
    from tests.conftest import use_database

    use_database(postgres_db)
    db.close()
    await db.run(windows.open_window, "wecom_kf", "u1")  # only a deferred statement
    assert await _windows() == [("wecom_kf", "u1")]
    assert _open_transactions(postgres_db) == 0
    db.close()


async def test_a_failure_after_some_statements_were_sent_stores_none_of_them(postgres_db, no_redis):
    from tests.conftest import use_database
    from channels.wechat.inbox import _store

    use_database(postgres_db)
    db.close()
    message, conversation = kf_message("m1")

    def store_then_fail(conn):
        _store(conn, [(message, conversation)], [True], "received", None, [], prepare)  # sent and deferred
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    try:
        await db.run(store_then_fail)
    except sa.exc.ProgrammingError:
        pass
    else:
        raise AssertionError("the error reaches the caller")
    assert await rows() == [] and await _windows() == [], "neither the message nor its window"
    assert _open_transactions(postgres_db) == 0, "the connection went back to the pool rolled back"
    assert await Inbox().accept(message, conversation) is not None, "the next transaction works"
    db.close()


async def test_a_deferred_statement_that_fails_fails_its_whole_transaction(postgres_db, no_redis):
    from tests.conftest import use_database
    from channels.wechat.inbox import _store

    use_database(postgres_db)
    db.close()
    message, conversation = kf_message("m1")

    def store_and_a_bad_window(conn):
        _store(conn, [(message, conversation)], [True], "received", None, [], None)
        windows.open_window(conn, None, "u1")  # NOT NULL violation, found at the COMMIT

    try:
        await db.run(store_and_a_bad_window)
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("the deferred statement's error reaches the caller")
    assert await rows() == [] and await _windows() == []
    assert _open_transactions(postgres_db) == 0
    db.close()


async def test_storing_a_message_with_its_window_and_customer_takes_three_round_trips(postgres_db, no_redis):
    from tests.conftest import use_database

    use_database(postgres_db)
    db.close()
    await db.run(_backend_pid)  # the engine exists
    sent = []
    engine = db._database()[0]

    def count(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    sa.event.listen(engine, "after_cursor_execute", count)
    try:
        stored = await Inbox().accept_prepared([kf_message("m1")], claimed_by="worker-a", prepare=prepare)
    finally:
        sa.event.remove(engine, "after_cursor_execute", count)
    assert stored[0] is not None
    assert len(sent) == 3, sent  # BEGIN + the message; the window + the customer; COMMIT
    assert sent[0].startswith("BEGIN; INSERT INTO wechat_inbound") and sent[-1] == "COMMIT"
    assert await rows() == [("m1", "processing", "worker-a")] and await _windows() == [("wecom_kf", "wmUser")]
    db.close()
