"""The gateway asks the Rasa server over the relay channel: only with the shared secret, never with a
malformed turn, and without losing or repeating a message when Rasa is still loading, unreachable
or too slow."""
from __future__ import annotations

import sqlalchemy as sa
from pydantic import SecretStr

from bot.settings import get_settings
from channels.wechat.conversation.relay_client import RelayClient
from channels.wechat.db import session as async_session
from channels.wechat.models import InboundMessageRow
from channels.wechat.relay import TOKEN_HEADER
from tests.conftest import free_port
from tests.wechat.harness import RELAY_SECRET

RELAY = "/webhooks/wechat_relay/webhook"
TURN = {"conversation_id": "mp:oRelay", "channel": "mp", "text": "我的订单到哪了", "message_id": "mp-1"}


async def inbound(user: str):
    async with async_session() as session:
        rows = await session.execute(sa.select(InboundMessageRow.id, InboundMessageRow.status, InboundMessageRow.error)
                                     .where(InboundMessageRow.conversation_id == f"mp:{user}"))
        return [tuple(r) for r in rows.all()]


async def test_relay_refuses_callers_without_the_secret(harness):
    h = harness
    for headers in ({}, {TOKEN_HEADER: "wrong"}, {TOKEN_HEADER: RELAY_SECRET + "x"}):
        async with h.http.post(h.bot_url + RELAY, json=TURN, headers=headers) as r:
            assert r.status == 403
    assert h.agent.received == []


async def test_relay_rejects_malformed_turns_with_a_reason(harness):
    h = harness
    auth = {TOKEN_HEADER: RELAY_SECRET}
    bad = [b"not json", b"[]", b'{"conversation_id": "mp:x"}',
           b'{"conversation_id": "mp:x", "channel": "sms", "text": "hi", "message_id": "1"}',
           b'{"conversation_id": "mp:x", "channel": "mp", "text": "", "message_id": "1"}',
           b'{"conversation_id": "mp:x", "channel": "mp", "text": "hi", "message_id": "1", "metadata": [1]}']
    for body in bad:
        headers = dict(auth, **{"Content-Type": "application/json"})
        async with h.http.post(h.bot_url + RELAY, data=body, headers=headers) as r:
            assert r.status == 400, body
            assert (await r.json())["error"]
    assert h.agent.received == []
    async with h.http.post(h.bot_url + RELAY, json=TURN, headers=auth) as r:
        assert r.status == 200
        assert (await r.json())["replies"] == [{"text": "收到：我的订单到哪了"}]
    [message] = h.agent.received
    assert message.sender_id == "mp:oRelay" and message.input_channel == "wechat_mp"


async def test_a_message_waits_while_rasa_loads_and_is_answered_once_it_is_ready(harness):
    h = harness
    h.agent.ready = False
    h.runtime.relay.ready_wait_s = 0.6
    await h.say("mp", "oLoading", "发货要多久")
    [(row_id, status, error)] = await h.wait_for(
        lambda: _when(inbound("oLoading"), lambda rows: rows and rows[0][1] == "received" and rows[0][2]))
    assert "not ready" in error and h.deliveries("mp", "oLoading") == []
    # the sweeper offers it again (here directly): the model is loaded by now
    h.agent.ready = True
    await h.runtime.pipeline.process(row_id)
    await h.wait_for(lambda: h.deliveries("mp", "oLoading"))
    await h.quiet()
    assert len(h.deliveries("mp", "oLoading")) == 1 and (await inbound("oLoading"))[0][1] == "done"


async def test_rasa_unreachable_keeps_the_message_for_later(harness):
    h = harness
    h.runtime.relay.url = f"http://127.0.0.1:{free_port()}{RELAY}"
    h.runtime.relay.ready_wait_s = 0.6
    await h.say("mp", "oNoRasa", "发货要多久")
    rows = await h.wait_for(lambda: _when(inbound("oNoRasa"), lambda rows: rows and rows[0][1] == "received"
                                          and rows[0][2]))
    assert "unreachable" in rows[0][2] and h.agent.received == []


async def test_a_turn_rasa_took_but_did_not_answer_in_time_is_not_repeated(harness):
    h = harness
    h.agent.delay_s = 1.5
    h.runtime.relay.timeout_s = 0.5
    await h.say("mp", "oSlow", "发货要多久")
    rows = await h.wait_for(lambda: _when(inbound("oSlow"), lambda rows: rows and rows[0][1] == "failed"), timeout=5)
    assert "TimeoutError" in rows[0][2]
    await h.quiet()
    assert len(h.agent.received) == 1 and h.deliveries("mp", "oSlow") == []


async def _when(rows_coro, condition):
    rows = await rows_coro
    return rows if condition(rows) else None


async def test_a_gateway_with_the_wrong_secret_keeps_messages_until_the_setup_is_fixed(harness):
    h = harness
    right = h.runtime.relay
    wrong = get_settings().model_copy(update={"wechat_relay_secret": SecretStr("not-the-secret")})
    h.runtime.relay = RelayClient(wrong, ready_wait_s=0.6)
    await h.say("mp", "oWrongSecret", "发货要多久")
    [(row_id, _, error)] = await h.wait_for(
        lambda: _when(inbound("oWrongSecret"), lambda rows: rows and rows[0][1] == "received" and rows[0][2]))
    assert "403" in error and h.agent.received == [] and h.deliveries("mp", "oWrongSecret") == []
    # fixed (here: the right secret); the sweeper offers the message again
    await h.runtime.relay.close()
    h.runtime.relay = right
    await h.runtime.pipeline.process(row_id)
    await h.wait_for(lambda: h.deliveries("mp", "oWrongSecret"))
