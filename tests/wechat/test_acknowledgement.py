"""When a callback is acknowledged, against a real PostgreSQL whose commits are made slow (or made
to fail) at COMMIT time by a deferred trigger: the ack goes only once the message is committed
(durable), within the 1 s budget or not at all (the platform then retries), and the message is
answered exactly once either way."""
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


async def test_the_ack_goes_once_the_message_is_committed(slow_pg):
    async with _started() as h:
        assert (await _callback(h, "oWarm", 5000))[:2] == (200, "success")
        slow_commits(0.4)
        status, body, seconds = await _callback(h, "oSlow", 5001)
        assert (status, body) == (200, "success")
        assert _inbound_rows("oSlow") == 1, "acknowledged before the message was committed"
        assert seconds >= 0.4
        slow_commits(0)
        await h.wait_for(lambda: h.deliveries("mp", "oSlow"))
        assert len(h.agent.turns_of("mp:oSlow")) == 1


async def test_a_store_slower_than_the_budget_is_not_acknowledged_and_the_retry_is_answered_once(slow_pg):
    async with _started() as h:
        assert (await _callback(h, "oWarm", 5100))[:2] == (200, "success")
        slow_commits(1.5)
        status, _, seconds = await _callback(h, "oLate", 5101)
        assert status == 503 and seconds < 1.4
        # the store goes on behind the 503: the platform's retry then finds the message stored
        await h.wait_for(lambda: _inbound_rows("oLate") == 1 or None)
        slow_commits(0)
        status, body, _ = await _callback(h, "oLate", 5101)
        assert (status, body) == (200, "success")
        await h.wait_for(lambda: h.deliveries("mp", "oLate"))
        assert len(h.agent.turns_of("mp:oLate")) == 1
        assert len(h.deliveries("mp", "oLate")) == 1


async def test_a_commit_that_fails_is_not_acknowledged_and_the_retry_is_answered_once(slow_pg):
    async with _started() as h:
        assert (await _callback(h, "oWarm", 5200))[:2] == (200, "success")
        slow_commits(0, failures=1)
        status, _, _ = await _callback(h, "oFail", 5201)
        assert status == 500
        assert _inbound_rows("oFail") == 0
        status, body, _ = await _callback(h, "oFail", 5201)
        assert (status, body) == (200, "success")
        await h.wait_for(lambda: h.deliveries("mp", "oFail"))
        assert len(h.agent.turns_of("mp:oFail")) == 1


async def test_a_gateway_killed_right_after_an_ack_loses_nothing(slow_pg, tmp_path):
    """An acknowledged message is stored: the gateway process killed (SIGKILL, nothing cleaned up)
    the moment after its ack leaves it in the database."""
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
            log_tail = (tmp_path / "gateway.log").read_text()[-2000:]
            assert gateway.poll() is None and time.monotonic() < deadline, log_tail
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
            slow_commits(0.3)
            status, body, _ = await deliver(http, "oKilled", 6002)
        assert (status, body) == (200, "success")
        os.killpg(gateway.pid, signal.SIGKILL)
        gateway.wait(timeout=10)
        assert _inbound_rows("oKilled") == 1
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait(timeout=10)
        log.close()
