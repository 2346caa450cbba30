"""The gateway's database thread on a real PostgreSQL: its connections skip the liveness query
before each transaction, so a connection the server closed (a restart, an idle cut) is found dead by
the transaction itself, which is then repeated once on a fresh connection: the message is stored
once, and nothing fails. Its transactions are written out by hand on autocommit connections (BEGIN
with the first statement, statements nobody reads sent with the next one or the COMMIT): all of a
transaction or none of it is stored, and no connection goes back to the pool inside a transaction."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from channels.wechat import db, windows
from channels.wechat.inbox import Inbox, _store
from channels.wechat.pipeline import prepare
from channels.wechat.models import ReplyWindow
from channels.wechat.payloads import InboundMessage
from tests.wechat.test_inbox import kf_message, rows


@pytest.fixture
def gateway_pg(postgres_db, no_redis):
    """The gateway's database threads on a fresh PostgreSQL database (its URL), closed afterwards."""
    from tests.conftest import use_database

    use_database(postgres_db)
    db.close()
    yield postgres_db
    db.close()


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
        gateway_pg, caplog):
    before = await db.run(_backend_pid)
    assert _terminate_others(gateway_pg) >= 1

    inbox = Inbox()
    row_id = await inbox.accept(*kf_message("m1"), claimed_by="worker-a")

    assert row_id is not None
    assert await rows() == [("m1", "processing", "worker-a")], "stored once"
    assert await db.run(_backend_pid) != before, "on a new connection"
    assert "transaction repeated on a new connection" in caplog.text


async def test_an_error_that_is_not_a_lost_connection_is_not_repeated(gateway_pg):
    calls = []

    def broken(conn):
        calls.append(1)
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(sa.exc.ProgrammingError):  # the error reaches the caller
        await db.run(broken)
    assert calls == [1]


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
        return [tuple(r) for r in (await s.execute(sa.select(ReplyWindow.channel, ReplyWindow.user_id).order_by(
            ReplyWindow.user_id))).all()]


async def test_statements_nobody_reads_are_committed_with_the_transaction(gateway_pg):
    await db.run(windows.open_window, "wecom_kf", "u1")  # only a deferred statement
    assert await _windows() == [("wecom_kf", "u1")]
    assert _open_transactions(gateway_pg) == 0


async def test_a_failure_after_some_statements_were_sent_stores_none_of_them(gateway_pg):
    message, conversation = kf_message("m1")
    second = kf_message("m2")

    def store_then_fail(conn):
        # two messages: stored by statements sent in an open transaction (one alone is one statement
        # that commits at once, which nothing may follow)
        _store(conn, [(message, conversation), second], [True, True], "received", None, [], prepare)
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(sa.exc.ProgrammingError):  # the error reaches the caller
        await db.run(store_then_fail)
    assert await rows() == [] and await _windows() == [], "neither the messages nor their window"
    assert _open_transactions(gateway_pg) == 0, "the connection went back to the pool rolled back"
    assert await Inbox().accept(message, conversation) is not None, "the next transaction works"


async def test_a_deferred_statement_that_fails_fails_its_whole_transaction(gateway_pg):
    message, conversation = kf_message("m1")

    def store_and_a_bad_window(conn):
        _store(conn, [(message, conversation)], [True], "received", None, [], None)
        windows.open_window(conn, None, "u1")  # NOT NULL violation, found at the COMMIT

    with pytest.raises(sa.exc.IntegrityError):  # the deferred statement's error reaches the caller
        await db.run(store_and_a_bad_window)
    assert await rows() == [] and await _windows() == []
    assert _open_transactions(gateway_pg) == 0


@pytest.fixture
def messages_to_server(gateway_pg, monkeypatch):
    """What the gateway's database threads send to the server, one entry per round trip (written-out
    statements go through db._send, any other through SQLAlchemy's execution)."""
    sent = []
    real_send = db._send

    def send(cursor, text):
        sent.append(text.decode())
        real_send(cursor, text)

    monkeypatch.setattr(db, "_send", send)
    engine = db._database()[0]

    def executed(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    sa.event.listen(engine, "after_cursor_execute", executed)
    yield sent
    sa.event.remove(engine, "after_cursor_execute", executed)


async def test_storing_a_message_with_its_window_and_customer_takes_one_round_trip(messages_to_server):
    sent = messages_to_server
    stored = await Inbox().accept_prepared([kf_message("m1")], claimed_by="worker-a", prepare=prepare)
    first, sent[:] = list(sent), []
    await Inbox().accept_prepared([kf_message("m2")], claimed_by="worker-a", prepare=prepare)
    assert stored[0] is not None and stored[0][1].customer_id is None, "nobody known behind wmUser yet"
    # one statement, its own transaction: no BEGIN, no COMMIT; the connection's first use of it
    # prepares it in the same round trip, later uses only execute it
    assert len(first) == 1 and first[0].startswith("PREPARE siyu_") and "; EXECUTE siyu_" in first[0], first
    assert "INSERT INTO wechat_inbound" in first[0] and "INSERT INTO wechat_reply_windows" in first[0]
    assert len(sent) == 1 and sent[0].startswith("EXECUTE siyu_") and ";" not in sent[0], sent
    assert await rows() == [("m1", "processing", "worker-a"), ("m2", "processing", "worker-a")]
    assert await _windows() == [("wecom_kf", "wmUser")]


async def test_a_page_of_one_message_is_stored_with_its_cursor_in_one_round_trip(messages_to_server):
    from channels.wechat import cursors

    sent = messages_to_server
    await Inbox().accept_prepared([kf_message("m0")], claimed_by="worker-a", prepare=prepare)  # statements prepared
    sent[:] = []
    stored = await Inbox().accept_prepared([kf_message("m1")], claimed_by="worker-a", prepare=prepare,
                                           together_with=[lambda conn: cursors.save_in(conn, "wkKF", "c-1")])
    assert stored[0] is not None
    assert len(sent) == 1 and "BEGIN" not in sent[0] and sent[0].count("EXECUTE siyu_") == 2, sent
    assert await cursors.load("wkKF") == "c-1"


async def test_a_repeated_message_stored_in_one_statement_is_a_duplicate_and_leaves_its_window_alone(gateway_pg):
    from channels.wechat import identity

    customer = await identity.resolve("wecom_kf", "wmUser")
    message = InboundMessage("wecom_kf", "wmUser", "m1", "text", int(time.time()), account="wkKF", text="发货了吗")
    conversation = "wecom_kf:wkKF:wmUser"
    first = await Inbox().accept_prepared([(message, conversation)], claimed_by="worker-a", prepare=prepare)
    assert first[0][1].customer_id == customer
    assert await windows.reserve("wecom_kf", "wmUser") is None  # one of the window's 5 places used
    again = await Inbox().accept_prepared([(message, conversation)], claimed_by="worker-a", prepare=prepare)
    assert again == [None] and await rows() == [("m1", "processing", "worker-a")]

    def sent_in_window(conn):
        return conn.execute(sa.text("SELECT message_sent FROM wechat_reply_windows")).scalar()

    assert await db.run(sent_in_window) == 1, "the repeat did not open the window afresh"


async def test_a_page_of_three_messages_is_one_transaction_of_a_statement_each(messages_to_server):
    from channels.wechat import cursors

    sent = messages_to_server
    stored = await Inbox().accept_prepared(
        [kf_message("m1"), kf_message("m2", user="wmOther"), kf_message("m1")], claimed_by="worker-a",
        prepare=prepare, together_with=[lambda conn: cursors.save_in(conn, "wkKF", "c-1")], pulled=True)
    assert [s is not None for s in stored] == [True, True, False], "the page's repeat is dropped"
    # BEGIN, the cursor and the first message; the second; the third; COMMIT
    assert len(sent) == 4 and sent[0].startswith("BEGIN;") and sent[-1] == "COMMIT", sent
    assert await _windows() == [("wecom_kf", "wmOther"), ("wecom_kf", "wmUser")]
    assert await cursors.load("wkKF") == "c-1"


@pytest.mark.parametrize("page", [1, 2])
async def test_the_store_notes_when_its_commit_goes_to_the_server_and_only_then(messages_to_server, monkeypatch,
                                                                             page):
    """The CommitWatch (what lets a callback's ack go ahead of a slow flush) is filled in just before
    the message that commits: the one statement of a message stored alone, or the COMMIT of a page."""
    sent = messages_to_server
    real = db._commit_going
    watch = db.CommitWatch()

    def commit_going(**goes):
        real(**goes)
        if goes.get("sent", True):
            sent.append(("<commit goes>", watch.sent_at))

    monkeypatch.setattr(db, "_commit_going", commit_going)
    await Inbox().accept_prepared([kf_message("m0")], claimed_by="worker-a", prepare=prepare)  # not watched
    assert sent[0] == ("<commit goes>", None), "no watch: nothing noted"
    sent[:] = []
    messages = [kf_message(f"m{n}", user=f"wmUser{n}") for n in range(1, page + 1)]
    before = time.monotonic()
    stored = await Inbox().accept_prepared(messages, claimed_by="worker-a", prepare=prepare, commit_watch=watch)
    assert all(stored) and before <= watch.sent_at <= time.monotonic()
    assert sent[-2] == ("<commit goes>", watch.sent_at), sent
    assert sum(1 for entry in sent if isinstance(entry, tuple)) == 1
    assert sent[-1] == "COMMIT" if page > 1 else sent[-1].startswith("EXECUTE siyu_"), sent


async def test_on_sqlite_the_store_never_notes_a_commit_at_a_server(sqlite_db, no_redis):
    from tests.conftest import use_database

    use_database(sqlite_db)
    db.close()
    watch = db.CommitWatch()
    try:
        stored = await Inbox().accept_prepared([kf_message("m1")], claimed_by="worker-a", prepare=prepare,
                                               commit_watch=watch)
        assert stored[0] is not None and watch.sent_at is None
    finally:
        db.close()


async def test_after_a_failed_transaction_its_connection_prepares_its_statements_again(gateway_pg):
    message, conversation = kf_message("m1")
    pids = []

    def a_bad_window_and_store(conn):
        pids.append(_backend_pid(conn))
        # one message to the server: the window's PREPARE and its failing EXECUTE, then the
        # inbox insert's PREPARE and EXECUTE, which the server never gets to
        windows.open_window(conn, None, "u1")
        _store(conn, [(message, conversation)], [True], "received", None, [], None)

    def store_and_a_window(conn):
        pids.append(_backend_pid(conn))
        stored = _store(conn, [(message, conversation)], [True], "received", None, [], None)
        windows.open_window(conn, "wecom_kf", "u1")
        return stored

    with pytest.raises(sa.exc.IntegrityError):
        await db.run(a_bad_window_and_store)
    stored = await db.run(store_and_a_window)
    assert pids[0] == pids[1], "the same connection"
    assert stored[0] is not None and await rows() == [("m1", "received", None)]
    assert await _windows() == [("wecom_kf", "u1")]


async def test_prepared_statements_can_be_turned_off_for_a_transaction_pooler(messages_to_server, monkeypatch):
    from bot.settings import reset_settings_cache

    sent = messages_to_server
    monkeypatch.setenv("SIYU_DATABASE_PREPARED_STATEMENTS", "false")
    reset_settings_cache()
    db.close()  # the next engine reads the setting
    try:
        await Inbox().accept_prepared([kf_message("m1")], claimed_by="worker-a", prepare=prepare)
    finally:
        monkeypatch.delenv("SIYU_DATABASE_PREPARED_STATEMENTS")
        reset_settings_cache()
    assert len(sent) == 1 and sent[0].startswith("WITH stored AS") and "PREPARE" not in sent[0], sent
    assert await rows() == [("m1", "processing", "worker-a")]


def _connections_to(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND pid <> pg_backend_pid()")).scalar()
    finally:
        engine.dispose()


async def test_the_database_threads_keep_a_connection_each_until_close(gateway_pg):
    pids = {await db.run(_backend_pid) for _ in range(20)}
    # each thread keeps one connection: 20 transactions use at most one per thread
    assert len(pids) <= db.POSTGRES_THREADS and _connections_to(gateway_pg) == len(pids)
    assert await Inbox().accept(*kf_message("m1"), claimed_by="worker-a") is not None
    db.close()
    # a closed connection's server process ends a moment after the client let go
    for _ in range(50):
        if _connections_to(gateway_pg) == 0:
            break
        await asyncio.sleep(0.1)
    assert _connections_to(gateway_pg) == 0, "close() closes the threads' connections"


async def _outbox_rows():
    def read(conn):
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT recipient, status, attempts, claimed_by IS NOT NULL, platform_msgid "
            "FROM wechat_outbox ORDER BY id"))]
    return await db.run(read)


async def test_a_reply_is_queued_claimed_placed_and_its_message_answered_in_one_round_trip(messages_to_server):
    from channels.wechat import outbox
    from channels.wechat.delivery import enqueue_and_reserve

    sent = messages_to_server
    row_id = await Inbox().accept(*kf_message("m1"), claimed_by="worker-a")
    await db.run(windows.open_window, "wecom_kf", "wmUser")
    sent[:] = []
    reply = [outbox.OutgoingMessage("wecom_kf", "wmUser", "text", {"text": {"content": "亲，已发货"}}, account="wkKf")]
    claimed, refusals, held_back = await db.run(enqueue_and_reserve, reply, "worker-a:c1",
                                                [Inbox.finish_statement(row_id, "done")])
    # the message marked answered (deferred) and the reply's one statement, as one implicit transaction
    assert len(sent) == 1 and "BEGIN" not in sent[0] and "COMMIT" not in sent[0], sent
    assert [r.recipient for r in claimed] == ["wmUser"] and refusals == [None] and not held_back
    assert await _outbox_rows() == [("wmUser", "sending", 1, True, None)]
    assert await _window_counts("wecom_kf", "wmUser") == (1, 0), "one of the window's places taken"
    assert [r[1] for r in await rows()] == ["done"]
    sent[:] = []
    assert await outbox.settle_many([outbox.Settlement(claimed[0], "sent", platform_msgid="p1")]) == [True]
    assert len(sent) == 1 and not sent[0].startswith("BEGIN"), "one statement, its own transaction"
    assert await _outbox_rows() == [("wmUser", "sent", 1, True, "p1")]
    # a settlement whose claim was lost meanwhile (the row was recovered elsewhere) changes nothing
    assert await outbox.settle_many([outbox.Settlement(claimed[0], "sent", platform_msgid="p2")]) == [False]
    assert (await _outbox_rows())[0][-1] == "p1"


async def test_two_replies_are_queued_in_two_round_trips_the_second_behind_the_first(messages_to_server):
    from channels.wechat import outbox
    from channels.wechat.delivery import enqueue_and_reserve

    sent = messages_to_server
    row_id = await Inbox().accept(*kf_message("m1"), claimed_by="worker-a")
    await db.run(windows.open_window, "wecom_kf", "wmUser")
    sent[:] = []
    replies = [outbox.OutgoingMessage("wecom_kf", "wmUser", "text", {"text": {"content": f"第{n}条"}},
                                      account="wkKf") for n in (1, 2)]
    claimed, refusals, held_back = await db.run(enqueue_and_reserve, replies, "worker-a:c1",
                                                [Inbox.finish_statement(row_id, "done")])
    # BEGIN, the message answered, the first reply claimed with its place; the second + COMMIT
    assert len(sent) == 2 and sent[0].startswith("BEGIN;") and sent[1].endswith("COMMIT"), sent
    assert [r.recipient for r in claimed] == ["wmUser"] and refusals == [None] and held_back
    assert await _outbox_rows() == [("wmUser", "sending", 1, True, None), ("wmUser", "pending", 0, False, None)]
    assert await _window_counts("wecom_kf", "wmUser") == (1, 0), "the second takes its place when it is claimed"


async def _window_counts(channel: str, user_id: str):
    def read(conn):
        row = conn.execute(sa.text("SELECT message_sent, event_sent FROM wechat_reply_windows "
                                   "WHERE channel = :c AND user_id = :u"), {"c": channel, "u": user_id}).first()
        return tuple(row) if row else None
    return await db.run(read)


def _set_window(channel: str, user_id: str, message_hours_ago, message_sent: int, event_minutes_ago, event_sent: int):
    def write(conn):
        now = windows.now_utc()
        conn.execute(sa.text(
            "INSERT INTO wechat_reply_windows (channel, user_id, message_at, message_sent, event_at, event_sent) "
            "VALUES (:c, :u, :m, :ms, :e, :es)"), {
                "c": channel, "u": user_id, "ms": message_sent, "es": event_sent,
                "m": None if message_hours_ago is None else now - timedelta(hours=message_hours_ago),
                "e": None if event_minutes_ago is None else now - timedelta(minutes=event_minutes_ago)})
    return write


@pytest.mark.parametrize("channel, window, refusal, counts_after", [
    ("mp", None, "out_of_window", None),
    ("mp", (1, 0, None, 0), None, (1, 0)),
    ("mp", (1, 5, None, 0), "over_quota", (5, 0)),
    ("mp", (49, 0, None, 0), "out_of_window", (0, 0)),
    # a follow or menu click opens 1 minute for 3 messages; the message window comes first
    ("mp", (None, 0, 0.5, 0), None, (0, 1)),
    ("mp", (1, 5, 0.5, 2), None, (5, 3)),
    ("mp", (None, 0, 0.5, 3), "over_quota", (0, 3)),
    ("mp", (None, 0, 2, 0), "out_of_window", (0, 0)),
    ("wecom_kf", (None, 0, 0.5, 0), "out_of_window", (0, 0)),  # 微信客服 has no event window
])
async def test_the_reply_statement_takes_a_place_or_refuses_as_the_window_rules_say(gateway_pg, channel, window,
                                                                                     refusal, counts_after):
    """The one-statement path (PostgreSQL) against the same rules as windows.take_places."""
    from channels.wechat import outbox
    from channels.wechat.delivery import enqueue_and_reserve

    if window is not None:
        await db.run(_set_window(channel, "u1", *window))
    reply = [outbox.OutgoingMessage(channel, "u1", "text", {"text": {"content": "您好"}})]
    claimed, refusals, held_back = await db.run(enqueue_and_reserve, reply, "w:c1")
    assert len(claimed) == 1 and refusals == [refusal] and not held_back
    assert await _window_counts(channel, "u1") == counts_after
    if refusal is not None:  # nothing taken: the general path, reading the window, says the same
        assert await db.run(windows.refusal, channel, "u1") == refusal


async def test_a_reply_to_someone_with_a_reply_still_pending_waits_behind_it(gateway_pg):
    from channels.wechat import outbox
    from channels.wechat.delivery import enqueue_and_reserve

    first = [outbox.OutgoingMessage("mp", "oUser", "text", {"text": {"content": "一"}})]
    later = [outbox.OutgoingMessage("mp", "oUser", "text", {"text": {"content": "二"}})]
    await db.run(windows.open_window, "mp", "oUser")
    claimed, _, _ = await db.run(enqueue_and_reserve, first, "w:c1")
    claimed_later, _, held_back = await db.run(enqueue_and_reserve, later, "w:c2")
    assert len(claimed) == 1 and claimed_later == [] and held_back
    assert [r[:3] for r in await _outbox_rows()] == [("oUser", "sending", 1), ("oUser", "pending", 0)]


async def test_nothing_may_follow_a_statement_that_is_its_own_transaction(gateway_pg):
    from channels.wechat import identity, outbox

    nothing_sent = {"ids": [], "claims": [], "msgids": [], "at": None}

    def then_deferred(conn):
        outbox._ALL_SENT.execute_last(conn, nothing_sent)
        windows.open_window(conn, "wecom_kf", "u1")  # would never reach the server

    def then_executed(conn):
        outbox._ALL_SENT.execute_last(conn, nothing_sent)
        identity.customer_of(conn, "wecom_kf", "u1")  # would run outside any transaction

    for fn in (then_deferred, then_executed):
        with pytest.raises(RuntimeError, match="nothing may follow execute_last"):
            await db.run(fn)
    assert await _windows() == []
    assert _open_transactions(gateway_pg) == 0


def _scans_of(plan: dict, table: str) -> list:
    """The plan's nodes that read `table` (EXPLAIN FORMAT JSON), however deep."""
    found = [plan] if plan.get("Relation Name") == table and "Scan" in plan["Node Type"] else []
    for child in plan.get("Plans", []):
        found += _scans_of(child, table)
    return found


async def test_the_look_for_earlier_replies_reads_only_a_recipients_active_rows_and_once(gateway_pg):
    """However many replies a loyal customer has had, storing the next one looks up only those still
    pending or sending, and once (the look had been run once per CASE of the statement, each time
    reading every row ever sent to the recipient)."""
    from channels.wechat import outbox

    def history(conn):
        conn.execute(sa.text(
            "INSERT INTO wechat_outbox (channel, recipient, msgtype, body, idempotency_key, status, attempts, "
            "next_attempt_at, created_at) SELECT 'mp', CASE WHEN n <= 300 THEN 'oLoyal' ELSE 'o' || mod(n, 100) END, "
            "'text', '{}', 'old' || n, 'sent', 1, now(), now() FROM generate_series(1, 3000) AS n"))

    await db.run(history)
    engine = sa.create_engine(gateway_pg)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE wechat_outbox")  # what autovacuum keeps up to date
            message = outbox.OutgoingMessage("mp", "oLoyal", "text", {"text": {"content": "您好"}})
            values = dict(outbox._row(message), status="sending", attempts=1, claimed_by="w:c1",
                          claimed_at=outbox.now_utc())
            transaction = conn.begin()
            # the index's use is what is checked (a small table may be read whole either way)
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            sql, parameters = outbox._CLAIMING_INSERT._sql_and_values(conn, values)
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, parameters).scalar()[0]["Plan"]
            transaction.rollback()
    finally:
        engine.dispose()
    scans = _scans_of(plan, "wechat_outbox")
    assert len(scans) == 1, scans
    assert scans[0].get("Rows Removed by Filter", 0) == 0, json.dumps(scans[0])


async def test_settling_a_reply_reads_it_by_its_id_however_many_were_sent_before(gateway_pg):
    """Every sent reply leaves a 'sending' entry in the status index until a vacuum; the settle's
    prepared (generic) plan had gone through all of them to find the one row it settles."""
    from channels.wechat import outbox

    def history(conn):
        conn.execute(sa.text(
            "INSERT INTO wechat_outbox (channel, recipient, msgtype, body, idempotency_key, status, attempts, "
            "next_attempt_at, created_at, claimed_by) SELECT 'mp', 'o' || mod(n, 100), 'text', '{}', 'old' || n, "
            "'sending', 1, now(), now(), 'w:old' FROM generate_series(1, 3000) AS n"))
        conn.execute(sa.text("UPDATE wechat_outbox SET status = 'sent'"))  # what 3000 settles leave behind

    await db.run(history)
    replies = [outbox.OutgoingMessage("mp", "oNew", "text", {"text": {"content": "您好"}})]
    await db.run(windows.open_window, "mp", "oNew")
    from channels.wechat.delivery import enqueue_and_reserve

    (row,), _, _ = await db.run(enqueue_and_reserve, replies, "w:c1")
    engine = sa.create_engine(gateway_pg)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE wechat_outbox")
            values = {"ids": [row.id], "claims": [row.claimed_by], "msgids": [None], "at": outbox.now_utc()}
            compiled = outbox._ALL_SENT._for(conn.dialect)
            prepare_sql, execute_sql = outbox._ALL_SENT._prepared_sql
            transaction = conn.begin()
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")  # as a prepared statement runs
            conn.exec_driver_sql(prepare_sql)
            params = compiled[0].construct_params(values)
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + execute_sql,
                                        params).scalar()[0]["Plan"]
            transaction.rollback()
    finally:
        engine.dispose()
    scans = _scans_of(plan, "wechat_outbox")
    assert len(scans) == 1 and scans[0].get("Index Name") == "pk_wechat_outbox", json.dumps(scans)
    # (the update's own writes, a new entry in each index, are the same either way)
    assert plan["Actual Rows"] == 1 and scans[0]["Shared Hit Blocks"] <= 5, json.dumps(scans[0])


async def test_a_connections_statements_are_planned_again_as_the_tables_grow(gateway_pg):
    """PostgreSQL keeps the generic plan it made for a prepared statement after its first five
    executions. Made on a new database's nearly empty outbox, the settle's plan read the whole
    table, and went on doing so as the table grew; each connection plans its statements again after
    64, 128, 256 ... transactions (autovacuum's ANALYZE would, where it runs and keeps up)."""
    from channels.wechat import outbox

    nothing_sent = {"ids": [], "claims": [], "msgids": [], "at": outbox.now_utc()}

    def settle_nothing(conn):
        outbox._ALL_SENT.execute_last(conn, nothing_sent)

    def plan(conn):
        sql, values = outbox._ALL_SENT._sql_and_values(conn, nothing_sent)  # (prepared again first if need be)
        found = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, values).scalar()[0]["Plan"]
        return [scan.get("Index Name", scan["Node Type"]) for scan in _scans_of(found, "wechat_outbox")]

    def history(conn):
        conn.execute(sa.text(
            "INSERT INTO wechat_outbox (channel, recipient, msgtype, body, idempotency_key, status, attempts, "
            "next_attempt_at, created_at) SELECT 'mp', 'o' || mod(n, 100), 'text', '{}', 'old' || n, 'sent', 1, "
            "now(), now() FROM generate_series(1, 3000) AS n"))

    for _ in range(10):
        await db.run(settle_nothing)
    await db.run(history)
    assert await db.run(plan) == ["Seq Scan"], "planned on an empty table, kept"
    for _ in range(64 + 10):  # the 64th transaction plans again, five more make the generic plan
        await db.run(settle_nothing)
    assert await db.run(plan) == ["pk_wechat_outbox"]


async def test_settling_one_reply_runs_on_a_plan_made_once_not_planned_at_each_execution(gateway_pg):
    """The settle of several rows (id = ANY(:ids)) was planned again at every execution: PostgreSQL
    thinks its generic plan, for an array of unknown length, costlier than the custom plan for one
    id, though both are the same primary key lookup. One reply, the common case, is settled by its
    id: after the five custom plans PostgreSQL always makes first, the plan is kept."""
    from channels.wechat import outbox

    (row,) = await _queued_and_claimed("wmPlan", "plan1")
    sent = [outbox.Settlement(row, "sent", platform_msgid="p1")]

    def plans(conn):
        return conn.exec_driver_sql("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                                    "WHERE name = %(name)s", {"name": outbox._SENT._name}).first()

    assert await db.run(outbox._settle_all, sent) == [True]
    for _ in range(19):
        assert await db.run(outbox._settle_all, sent) == [False], "settled already: a repeat changes nothing"
    assert tuple(await db.run(plans)) == (15, 5)
    assert await _outbox_rows() == [("wmPlan", "sent", 1, True, "p1")]


def _statuses(url: str):
    """The outbox's statuses, read outside the gateway's database threads (a transaction of theirs
    would carry the statements waiting to ride)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT status FROM wechat_outbox ORDER BY id"))]
    finally:
        engine.dispose()


async def _queued_and_claimed(user: str, key: str):
    from channels.wechat import outbox
    from channels.wechat.delivery import enqueue_and_reserve

    await db.run(windows.open_window, "wecom_kf", user)
    reply = [outbox.OutgoingMessage("wecom_kf", user, "text", {"text": {"content": "亲，已发货"}}, account="wkKf",
                                    idempotency_key=key)]
    claimed, _, _ = await db.run(enqueue_and_reserve, reply, "worker-a:c1", [])
    return claimed


async def test_a_sent_reply_is_settled_with_the_next_transaction_without_a_round_trip_of_its_own(
        messages_to_server, monkeypatch):
    from channels.wechat import outbox

    monkeypatch.setattr(db, "RIDE_LINGER_S", 30.0)  # nothing but the next transaction carries it
    sent = messages_to_server
    (row,) = await _queued_and_claimed("wmUser", "k1")
    sent[:] = []
    riding = outbox.ride_sent([outbox.Settlement(row, "sent", platform_msgid="p1")])
    assert sent == [] and not riding.done(), "waits for a transaction to carry it"
    await Inbox().accept_prepared([kf_message("m2")], claimed_by="worker-a", prepare=prepare)
    await asyncio.wait_for(riding, 5)
    assert len(sent) == 1 and "BEGIN" not in sent[0], "in front of the store's one statement, one round trip"
    assert await _outbox_rows() == [("wmUser", "sent", 1, True, "p1")]
    assert [r[0] for r in await rows()] == ["m2"]


async def test_a_reply_settled_when_no_transaction_comes_goes_alone_in_one_round_trip(messages_to_server, monkeypatch):
    from channels.wechat import outbox

    monkeypatch.setattr(db, "RIDE_LINGER_S", 0.05)
    sent = messages_to_server
    rows_claimed = [(await _queued_and_claimed(f"wmUser{n}", f"k{n}"))[0] for n in range(2)]
    sent[:] = []
    ridings = [outbox.ride_sent([outbox.Settlement(row, "sent", platform_msgid=f"p{row.id}")]) for row in rows_claimed]
    await asyncio.wait_for(asyncio.gather(*ridings), 5)
    assert len(sent) == 1 and "BEGIN" not in sent[0] and "COMMIT" not in sent[0], sent
    assert [(r[0], r[1]) for r in await _outbox_rows()] == [("wmUser0", "sent"), ("wmUser1", "sent")]


async def test_a_settle_riding_on_a_transaction_that_fails_waits_for_the_next_one(gateway_pg, monkeypatch):
    from channels.wechat import outbox

    monkeypatch.setattr(db, "RIDE_LINGER_S", 30.0)
    (row,) = await _queued_and_claimed("wmUser", "k1")
    riding = outbox.ride_sent([outbox.Settlement(row, "sent", platform_msgid="p1")])

    def broken(conn):
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    with pytest.raises(sa.exc.ProgrammingError):
        await db.run(broken)
    assert _statuses(gateway_pg) == ["sending"], "rolled back with its carrier"
    assert not riding.done()
    await Inbox().accept(*kf_message("m2"), claimed_by="worker-a")
    await asyncio.wait_for(riding, 5)
    assert (await _outbox_rows())[0][1:] == ("sent", 1, True, "p1")


async def test_a_settle_whose_carriers_keep_failing_fails_so_that_it_can_go_alone(gateway_pg, monkeypatch):
    from channels.wechat import outbox

    monkeypatch.setattr(db, "RIDE_LINGER_S", 30.0)
    (row,) = await _queued_and_claimed("wmUser", "k1")
    riding = outbox.ride_sent([outbox.Settlement(row, "sent", platform_msgid="p1")])

    def broken(conn):
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    for _ in range(db.RIDE_STRIKES):
        with pytest.raises(sa.exc.ProgrammingError):
            await db.run(broken)
    with pytest.raises(sa.exc.ProgrammingError):
        await asyncio.wait_for(riding, 5)
    await Inbox().accept(*kf_message("m2"), claimed_by="worker-a")
    assert _statuses(gateway_pg) == ["sending"], "no longer riding"
    assert await outbox.settle_many([outbox.Settlement(row, "sent", platform_msgid="p1")]) == [True]


async def test_stopping_the_outbox_worker_records_the_settles_still_waiting(gateway_pg, monkeypatch):
    from channels.wechat import outbox
    from channels.wechat.worker import OutboxWorker

    monkeypatch.setattr(db, "RIDE_LINGER_S", 30.0)
    (row,) = await _queued_and_claimed("wmUser", "k1")
    riding = outbox.ride_sent([outbox.Settlement(row, "sent", platform_msgid="p1")])
    await OutboxWorker(client=None).stop()
    assert riding.done() and (await _outbox_rows())[0][1] == "sent"
