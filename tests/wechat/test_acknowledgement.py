"""When a callback is acknowledged, against a real PostgreSQL whose commits are made slow (or made
to fail) at COMMIT time by a deferred trigger, as a disk's flush stall makes them slow: the ack goes
once the COMMIT is at the server and the flush wait is over, the message is answered exactly once,
a commit that fails after its ack is stored again by the gateway, and the bounds hold."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

import pytest
import sqlalchemy as sa

from channels.wechat.sandbox.callbacks import CallbackSigner
from tests.conftest import use_database
from tests.wechat.harness import Harness, fresh_env

# run at COMMIT (a deferred constraint trigger): sleeps as the settings row says, and fails the
# commit the first `failures` times (a sequence: its count survives the rolled-back transaction)
_SLOW_COMMITS = [
    "CREATE TABLE test_slow_commit (seconds float NOT NULL, failures int NOT NULL)",
    "INSERT INTO test_slow_commit VALUES (0, 0)",
    "CREATE SEQUENCE test_commit_failures",
    """CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE s float; f int;
       BEGIN
         SELECT seconds, failures INTO s, f FROM test_slow_commit;
         PERFORM pg_sleep(s);
         IF f > 0 AND nextval('test_commit_failures') <= f THEN
           RAISE EXCEPTION 'commit failed (test)';
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT ON wechat_inbound
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit()""",
]


def _sql(statements, **values) -> None:
    from bot.settings import get_settings

    engine = sa.create_engine(get_settings().sync_database_url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), values)
    finally:
        engine.dispose()


def slow_commits(seconds: float, failures: int = 0) -> None:
    _sql(["UPDATE test_slow_commit SET seconds = :seconds, failures = :failures"], seconds=seconds, failures=failures)


def _inbound_rows(user: str) -> int:
    from bot.settings import get_settings

    engine = sa.create_engine(get_settings().sync_database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM wechat_inbound WHERE CAST(payload AS text) LIKE :user"),
                                {"user": f"%{user}%"}).scalar()
    finally:
        engine.dispose()


@pytest.fixture
def slow_pg(postgres_db, no_redis):
    use_database(postgres_db)
    _sql(_SLOW_COMMITS)
    yield postgres_db


@contextlib.asynccontextmanager
async def _started(**env) -> AsyncIterator[Harness]:
    h = await Harness(fresh_env(**env)).start()
    try:
        yield h
    finally:
        await h.stop()


async def _callback(h: Harness, user: str, msg_id: int, text: str = "发货了吗"):
    """Delivers a signed Official Account message as the platform does; (status, body, seconds)."""
    h.platform.user_acted("mp", user)
    message = {"ToUserName": "gh_x", "FromUserName": user, "CreateTime": int(h.platform.now()),
               "MsgType": "text", "Content": text, "MsgId": msg_id}
    signed = CallbackSigner(h.platform.config).account_message("mp", message)
    started = time.perf_counter()
    async with h.http.post(signed.url(h.bot_url), data=signed.body) as response:
        return response.status, await response.text(), time.perf_counter() - started


async def _acks(h: Harness) -> dict:
    async with h.http.get(h.bot_url + "/health") as response:
        return (await response.json())["acks"]


async def _warmed(h: Harness, msg_id: int) -> dict:
    """One message first (connections opened, statements prepared: that commit may itself be slow
    enough to be acknowledged early); the ack counts once it is committed."""
    status, body, _ = await _callback(h, "oWarm", msg_id)
    assert (status, body) == (200, "success")
    return await h.wait_for(lambda: _settled_acks(h))


async def _settled_acks(h: Harness):
    acks = await _acks(h)
    return acks if acks["unflushed"] == 0 else None


def _added(after: dict, before: dict) -> dict:
    return {key: after[key] - before[key] for key in ("before_flush", "stored_again")}


async def test_a_slow_flush_does_not_hold_the_ack_and_the_message_is_answered_once(slow_pg):
    async with _started() as h:
        before = await _warmed(h, 1001)
        slow_commits(0.8)
        status, body, seconds = await _callback(h, "oStall", 1002)
        assert (status, body) == (200, "success")
        assert seconds < 0.5, "acknowledged once the COMMIT was at the server, not after the 0.8 s flush"
        assert _added(await _acks(h), before)["before_flush"] == 1
        assert _inbound_rows("oStall") == 0, "acknowledged while the commit was still going"
        await h.wait_for(lambda: h.deliveries("mp", "oStall"))
        await h.settle(0.5)
        assert [d["content"]["content"] for d in h.deliveries("mp", "oStall")] == ["收到：发货了吗"]
        assert _inbound_rows("oStall") == 1
        after = await _acks(h)
        assert _added(after, before) == {"before_flush": 1, "stored_again": 0} and after["unflushed"] == 0


async def test_a_commit_within_the_flush_wait_is_acknowledged_after_it(slow_pg):
    # a wait longer than this disk's stalls (up to ~115 ms measured), so that one cannot make an ack early
    async with _started(SIYU_WECHAT_ACK_FLUSH_WAIT_MS="500") as h:
        slow_commits(0.05)
        for n in range(5):
            status, body, _ = await _callback(h, f"oFast{n}", 2000 + n)
            assert (status, body) == (200, "success")
            assert _inbound_rows(f"oFast{n}") == 1, "stored before the ack"
        assert (await _acks(h))["before_flush"] == 0


async def test_with_no_unflushed_acks_allowed_the_ack_waits_for_the_flush(slow_pg):
    async with _started(SIYU_WECHAT_ACK_UNFLUSHED_MAX="0") as h:
        await _warmed(h, 3001)
        slow_commits(0.6)
        status, body, seconds = await _callback(h, "oDurable", 3002)
        assert (status, body) == (200, "success")
        assert seconds >= 0.6
        assert _inbound_rows("oDurable") == 1
        assert (await _acks(h))["before_flush"] == 0


async def test_at_most_the_bound_of_acks_go_before_their_flush(slow_pg):
    async with _started(SIYU_WECHAT_ACK_UNFLUSHED_MAX="1") as h:
        before = await _warmed(h, 4001)
        slow_commits(0.6)
        first = asyncio.ensure_future(_callback(h, "oFirst", 4002))
        await asyncio.sleep(0.15)  # the first is acknowledged and still committing
        second = await _callback(h, "oSecond", 4003)
        assert (await first)[2] < 0.4
        assert second[:2] == (200, "success") and second[2] >= 0.4, "no room ahead of the flush: it waited"
        await h.wait_for(lambda: h.deliveries("mp", "oFirst") and h.deliveries("mp", "oSecond"))
        assert _added(await _acks(h), before)["before_flush"] == 1


async def test_a_commit_that_fails_after_its_ack_is_stored_again_and_answered_once(slow_pg, monkeypatch):
    from channels.wechat import acknowledgement

    monkeypatch.setattr(acknowledgement, "STORE_AGAIN_FIRST_S", 0.1)
    async with _started() as h:
        before = await _warmed(h, 5001)
        slow_commits(0.3, failures=2)  # the acknowledged commit fails, and so does the first retry
        status, body, seconds = await _callback(h, "oFails", 5002, "我的订单")
        assert (status, body, seconds < 0.25) == (200, "success", True)
        await h.wait_for(lambda: h.deliveries("mp", "oFails"), timeout=15)
        await h.settle(0.8)
        assert [d["content"]["content"] for d in h.deliveries("mp", "oFails")] == ["收到：我的订单"]
        assert len([m for m in h.agent.received if m.sender_id == "mp:oFails"]) == 1
        assert _inbound_rows("oFails") == 1
        after = await _acks(h)
        assert _added(after, before) == {"before_flush": 1, "stored_again": 1} and after["unflushed"] == 0


async def test_a_gateway_killed_right_after_an_early_ack_loses_nothing(slow_pg, tmp_path):
    """The claim an early ack rests on: once the COMMIT is at the server, the server finishes it even
    if the gateway process dies (SIGKILL, nothing cleaned up) before the flush is done."""
    import os
    import signal
    import subprocess

    import aiohttp

    from tests.conftest import PYTHON, REPO, free_port, port_open
    from tests.wechat.sandbox_helpers import config_from_env

    port = free_port()
    env = dict(os.environ, **fresh_env(), DATABASE_URL=slow_pg, SIYU_WECHAT_PORT=str(port),
               # nothing answers there: storing needs neither the platform nor Rasa
               SIYU_WECHAT_MP_API_BASE="http://127.0.0.1:9", SIYU_WECHAT_WORK_API_BASE="http://127.0.0.1:9",
               SIYU_WECHAT_RASA_URL="http://127.0.0.1:9", SIYU_WECHAT_RELAY_SECRET="kill-test")
    env.pop("REDIS_URL", None)
    gateway_url = f"http://127.0.0.1:{port}"
    signer = CallbackSigner(config_from_env(env, bot_url=gateway_url))
    log = open(tmp_path / "gateway.log", "wb")
    gateway = subprocess.Popen([PYTHON, "-m", "channels.wechat.gateway", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert gateway.poll() is None and time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-2000:]
            await asyncio.sleep(0.2)

        async def deliver(http, user: str, msg_id: int):
            message = {"ToUserName": "gh_x", "FromUserName": user, "CreateTime": int(time.time()),
                       "MsgType": "text", "Content": "还没发货", "MsgId": msg_id}
            signed = signer.account_message("mp", message)
            started = time.perf_counter()
            async with http.post(signed.url(gateway_url), data=signed.body) as response:
                return response.status, await response.text(), time.perf_counter() - started

        async with aiohttp.ClientSession() as http:
            assert (await deliver(http, "oWarm", 6001))[:2] == (200, "success")
            slow_commits(1.5)
            status, body, seconds = await deliver(http, "oKilled", 6002)
        assert (status, body) == (200, "success") and seconds < 0.8
        os.killpg(gateway.pid, signal.SIGKILL)
        gateway.wait(timeout=10)
        assert _inbound_rows("oKilled") == 0, "the commit was still going when the gateway died"
        deadline = time.monotonic() + 10
        while _inbound_rows("oKilled") == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _inbound_rows("oKilled") == 1, "the server finished the commit of the dead gateway"
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait(timeout=10)
        log.close()
