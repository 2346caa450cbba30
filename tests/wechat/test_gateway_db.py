"""The gateway's database thread on a real PostgreSQL: its connections skip the liveness query
before each transaction, so a connection the server closed (a restart, an idle cut) is found dead by
the transaction itself, which is then repeated once on a fresh connection: the message is stored
once, and nothing fails."""
from __future__ import annotations

import sqlalchemy as sa

from channels.wechat import db
from channels.wechat.inbox import Inbox
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
