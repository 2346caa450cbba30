"""A gateway killed (SIGKILL) after acknowledging an Official Account message it had not answered
yet: the gateway started after it answers the message within 30 s of its start, exactly once.
Real processes: the gateway as `python -m channels.wechat.gateway`, the sandbox as the platform,
the real relay channel in front of an echoing agent as Rasa, SQLite and PostgreSQL.

Two ways to be caught: the turn was already relayed to Rasa (Rasa is thinking; the dead gateway's
connection drops and the turn is relayed again by the new process: Rasa sees it twice, the
customer gets one answer), or Rasa was not ready and never saw it."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import sqlalchemy as sa

from channels.wechat.sandbox.callbacks import CallbackSigner
from tests.wechat.harness import fresh_env
from tests.wechat.processes import GatewayProcess, RelayServer, base_url, gateway_env, platform_of, start_sandbox

ANSWERED_WITHIN_S = 30.0


def _inbound(url: str, user: str):
    """(status, attempts) of the user's inbox rows."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(
                "SELECT status, attempts FROM wechat_inbound WHERE CAST(payload AS text) LIKE :u ORDER BY id"),
                {"u": f"%{user}%"})]
    finally:
        engine.dispose()


def _unsettled_replies(url: str, user: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM wechat_outbox WHERE recipient = :u AND status IN "
                                        "('pending', 'sending')"), {"u": user}).scalar()
    finally:
        engine.dispose()


async def _until(predicate, timeout: float, what: str, log=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what}: not within {timeout} s\n{tail}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("relayed", [True, False], ids=["rasa-had-the-turn", "rasa-not-ready"])
async def test_a_killed_gateways_acknowledged_message_is_answered_once_within_30_s_of_the_restart(
        wechat_db, no_redis, tmp_path, relayed):
    credentials = fresh_env()
    relay = await RelayServer().start()
    sandbox = await start_sandbox(credentials)
    platform = platform_of(sandbox)
    env = gateway_env(credentials, wechat_db, base_url(sandbox), relay.url)
    log = tmp_path / "gateway.log"
    first = GatewayProcess(env, log).start()
    second = None
    user = "oCrash"
    try:
        await first.ready()
        if relayed:
            relay.agent.delay_s = 3600  # Rasa takes the turn and is still thinking when the gateway dies
        else:
            relay.agent.ready = False  # Rasa answers 503 (loading): the turn is not seen
        platform.user_acted("mp", user)
        message = {"ToUserName": platform.config.mp_original_id, "FromUserName": user,
                   "CreateTime": int(time.time()), "MsgType": "text", "Content": "我的订单到哪了", "MsgId": 880001}
        signed = CallbackSigner(platform.config).account_message("mp", message)
        async with aiohttp.ClientSession() as http:
            async with http.post(signed.url(first.url), data=signed.body) as response:
                assert (response.status, await response.text()) == (200, "success")
        if relayed:
            await _until(lambda: relay.agent.received, 30, "the turn reached Rasa", log)
        else:
            await _until(lambda: _inbound(wechat_db, user) == [("processing", 1)], 30, "the row is claimed", log)
        assert platform.deliveries == []

        first.kill()
        relay.agent.delay_s, relay.agent.ready = 0.0, True
        second = GatewayProcess(env, log).start()
        await _until(lambda: platform.deliveries, ANSWERED_WITHIN_S - (time.monotonic() - second.started_at),
                     "the restarted gateway answered", log)
        assert time.monotonic() - second.started_at < ANSWERED_WITHIN_S

        # exactly once: the row is done, every reply settled, and nothing more arrives
        await _until(lambda: _inbound(wechat_db, user) == [("done", 2)], 30, "the row is done", log)
        await _until(lambda: _unsettled_replies(wechat_db, user) == 0, 30, "the replies are settled", log)
        await asyncio.sleep(1.0)
        assert [(d["to"], d["content"]["content"]) for d in platform.deliveries] == [(user, "收到：我的订单到哪了")]
        # the dead gateway's relay had reached Rasa: the new one relayed it again (see channels/wechat/workers.py)
        assert [m.sender_id for m in relay.agent.received] == [f"mp:{user}"] * (2 if relayed else 1)
    finally:
        first.kill()
        if second is not None:
            second.stop()
        await relay.stop()
        await sandbox.close()


async def test_a_live_gateway_keeps_its_claim_however_long_rasa_takes(wechat_db, no_redis, monkeypatch):
    """Another gateway sweeping the same database leaves a live one's claim alone while Rasa takes
    many times the staleness limit (here shortened for the test) for the turn."""
    from datetime import timedelta

    from channels.wechat import runtime as runtime_module, workers
    from channels.wechat.config import WeChatConfig
    from channels.wechat.runtime import WeChatRuntime
    from tests.wechat.harness import Harness

    monkeypatch.setattr(workers, "HEARTBEAT_EVERY_S", 0.1)
    monkeypatch.setattr(workers, "STALE_AFTER", timedelta(seconds=0.5))
    monkeypatch.setattr(runtime_module, "SWEEP_EVERY_S", 0.1)
    h = await Harness(fresh_env()).start()
    other = WeChatRuntime(WeChatConfig.from_settings())
    await other.start()
    try:
        h.agent.delay_s = 3.0
        result = await h.say("mp", "oPatient", "这件衣服什么时候发货")
        assert result["callback"]["delivered"]
        await h.wait_for(lambda: h.deliveries("mp", "oPatient"), timeout=30)
        await h.wait_for(lambda: _inbound(wechat_db, "oPatient") == [("done", 1)], timeout=30)
        await h.quiet()
        assert [m.sender_id for m in h.agent.received] == ["mp:oPatient"], "relayed once: nobody took the claim"
        assert len(h.deliveries("mp", "oPatient")) == 1
    finally:
        await other.stop()
        await h.stop()
