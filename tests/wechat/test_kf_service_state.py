"""微信客服 session states (kf/service_state/get and trans) and the 95018 "session state does not allow
sending" error: the sandbox's state machine, the product's platform client against it, and what the
outbox does with a reply the platform refuses because a servicer has taken the session."""
from __future__ import annotations

from typing import Dict, Tuple

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from actions.db.engine import async_session
from channels.wechat.config import CallbackSecrets, KfConfig, WeChatConfig
from channels.wechat.models import OutboxMessage, ReplyWindow
from channels.wechat.outbound import errcodes as E, outbox, sender
from channels.wechat.outbound.platform import PlatformClient, PlatformError
from channels.wechat.outbound.tokens import MemoryTokenCache
from channels.wechat.sandbox.app import PLATFORM, create_app
from tests.wechat.sandbox_helpers import sandbox_config

# the moves the platform allows (WeCom's 分配客服会话 document), written out here independently of the sandbox
ALLOWED = {(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 2), (3, 3), (3, 4)}


@pytest.fixture
async def sandbox():
    client = TestClient(TestServer(create_app(sandbox_config())))
    await client.start_server()
    yield client
    await client.close()


async def post(client, path, body, **params) -> Dict:
    async with client.post(path, params=params, json=body) as resp:
        return await resp.json()


async def kf_token(client) -> str:
    config = client.app[PLATFORM].config
    async with client.get("/cgi-bin/gettoken", params={"corpid": config.corp_id,
                                                       "corpsecret": config.kf_secret}) as resp:
        return (await resp.json())["access_token"]


class Kf:
    """The 微信客服 APIs of a sandbox, called over HTTP with a valid token."""

    def __init__(self, client, token: str) -> None:
        self.client, self.token = client, token
        self.open_kfid = client.app[PLATFORM].config.open_kfid

    async def get(self, user: str) -> Dict:
        return await post(self.client, "/cgi-bin/kf/service_state/get",
                          {"open_kfid": self.open_kfid, "external_userid": user}, access_token=self.token)

    async def trans(self, user: str, state, servicer: str = "") -> Dict:
        body = {"open_kfid": self.open_kfid, "external_userid": user, "service_state": state}
        if servicer:
            body["servicer_userid"] = servicer
        return await post(self.client, "/cgi-bin/kf/service_state/trans", body, access_token=self.token)

    async def send(self, user: str, text: str, msgid: str) -> Dict:
        return await post(self.client, "/cgi-bin/kf/send_msg",
                          {"touser": user, "open_kfid": self.open_kfid, "msgid": msgid, "msgtype": "text",
                           "text": {"content": text}}, access_token=self.token)

    async def state(self, user: str) -> Tuple[int, str]:
        answer = await self.get(user)
        assert answer["errcode"] == 0, answer
        return answer["service_state"], answer.get("servicer_userid", "")


async def control(client, user: str, state: int, servicer: str = "") -> Tuple[int, Dict]:
    """A servicer acts in the WeCom client (the sandbox's control API): the HTTP status and answer."""
    async with client.post("/sandbox/kf/service_state",
                           json={"user": user, "service_state": state, "servicer_userid": servicer}) as resp:
        return resp.status, await resp.json()


# --- the sandbox's state machine ----------------------------------------------------------------------------
async def test_the_customers_message_opens_a_session_and_the_bots_reply_takes_it(sandbox):
    platform = sandbox.app[PLATFORM]
    kf = Kf(sandbox, await kf_token(sandbox))
    assert (await kf.get("wmNobody"))["errcode"] == E.INVALID_PARAMETER
    platform.kf_enter_session("wmS1")
    assert await kf.state("wmS1") == (4, ""), "entered but not written yet: not started"
    platform.kf_user_message("wmS1", "你好")
    assert await kf.state("wmS1") == (0, "")
    assert (await kf.send("wmS1", "您好，请问有什么可以帮您", "r1"))["errcode"] == 0
    assert await kf.state("wmS1") == (1, "")
    platform.kf_user_message("wmS1", "查订单")
    assert await kf.state("wmS1") == (1, ""), "a message in an open session keeps its state"


async def test_every_transition_is_allowed_or_refused_as_on_the_platform(sandbox):
    platform = sandbox.app[PLATFORM]
    kf = Kf(sandbox, await kf_token(sandbox))
    outcomes, states, codes = {}, {}, {}
    for start in range(5):
        for target in range(5):
            user = f"wmMove{start}{target}"
            platform.kf_user_message(user, "在吗")
            assert (await control(sandbox, user, start, "staff01" if start == 3 else ""))[0] == 200
            answer = await kf.trans(user, target, "owner01" if target == 3 else "")
            outcomes[(start, target)] = answer["errcode"]
            codes[(start, target)] = "msg_code" in answer
            states[(start, target)] = (await kf.state(user))[0]
    assert outcomes == {move: 0 if move in ALLOWED else E.KF_INVALID_STATE_TRANSITION for move in outcomes}
    assert states == {(a, b): b if (a, b) in ALLOWED else a for a, b in states}
    assert codes == {(a, b): (a, b) in ALLOWED and b in (3, 4) for a, b in codes}, "msg_code on moves to 3 or 4"


async def test_a_human_servicer_is_named_and_checked(sandbox):
    platform = sandbox.app[PLATFORM]
    kf = Kf(sandbox, await kf_token(sandbox))
    platform.kf_user_message("wmS2", "转人工")
    assert (await kf.trans("wmS2", 3))["errcode"] == E.INVALID_PARAMETER, "state 3 needs servicer_userid"
    assert (await kf.trans("wmS2", 3, "stranger"))["errcode"] == E.INVALID_PARAMETER
    assert (await kf.trans("wmS2", 3, "staff01"))["errcode"] == 0
    assert await kf.state("wmS2") == (3, "staff01")
    assert (await kf.trans("wmS2", 3, "staff01"))["errcode"] == E.KF_INVALID_STATE_TRANSITION, \
        "3 -> 3 hands the session to another servicer"
    assert (await kf.trans("wmS2", 3, "owner01"))["errcode"] == 0
    assert await kf.state("wmS2") == (3, "owner01")
    assert (await kf.trans("wmS2", 2))["errcode"] == 0
    assert await kf.state("wmS2") == (2, ""), "servicer_userid only in state 3"
    for bad in (7, -1, "3", None):
        assert (await kf.trans("wmS2", bad))["errcode"] == E.INVALID_PARAMETER
    wrong_account = dict(open_kfid="wkSomeoneElse", external_userid="wmS2", service_state=4)
    assert (await post(sandbox, "/cgi-bin/kf/service_state/trans", wrong_account, access_token=kf.token)
            )["errcode"] == E.KF_INVALID_OPEN_KFID


async def test_sends_outside_states_0_and_1_are_refused_with_95018_and_use_no_quota(sandbox):
    platform = sandbox.app[PLATFORM]
    kf = Kf(sandbox, await kf_token(sandbox))
    platform.kf_user_message("wmS3", "你好")
    assert (await kf.send("wmS3", "您好", "q0"))["errcode"] == 0
    for n, state in enumerate((2, 3, 4)):
        assert (await control(sandbox, "wmS3", state, "staff01" if state == 3 else ""))[0] == 200
        refused = await kf.send("wmS3", "机器人还在吗", f"x{n}")
        assert refused["errcode"] == E.KF_SESSION_STATE_INVALID, state
    assert len([d for d in platform.deliveries if d["to"] == "wmS3"]) == 1
    # back with the assistant: the window still has its 4 remaining messages, then the window rule answers
    assert (await control(sandbox, "wmS3", 1))[0] == 200
    assert [(await kf.send("wmS3", "好的", f"q{n}"))["errcode"] for n in range(1, 6)] == [0, 0, 0, 0, E.KF_SEND_LIMIT]


async def test_an_ended_session_restarts_at_0_on_the_customers_next_message(sandbox):
    platform = sandbox.app[PLATFORM]
    kf = Kf(sandbox, await kf_token(sandbox))
    platform.kf_user_message("wmS4", "谢谢")
    ended = await kf.trans("wmS4", 4)
    assert ended["errcode"] == 0 and ended["msg_code"]
    assert await kf.state("wmS4") == (4, "")
    assert (await kf.send("wmS4", "再见", "e1"))["errcode"] == E.KF_SESSION_STATE_INVALID
    assert (await kf.trans("wmS4", 1))["errcode"] == E.KF_INVALID_STATE_TRANSITION, "an ended session stays ended"
    platform.kf_user_message("wmS4", "还有个问题")
    assert await kf.state("wmS4") == (0, "")
    assert (await kf.send("wmS4", "请说", "e2"))["errcode"] == 0
    assert await kf.state("wmS4") == (1, "")


async def test_the_state_apis_check_the_token_like_the_other_kf_apis(sandbox):
    platform = sandbox.app[PLATFORM]
    platform.kf_user_message("wmS5", "你好")
    body = {"open_kfid": platform.config.open_kfid, "external_userid": "wmS5"}
    config = platform.config
    async with sandbox.get("/cgi-bin/gettoken", params={"corpid": config.corp_id,
                                                       "corpsecret": config.contact_secret}) as resp:
        contact_token = (await resp.json())["access_token"]
    token = await kf_token(sandbox)
    for api, extra in (("get", {}), ("trans", {"service_state": 2})):
        path = f"/cgi-bin/kf/service_state/{api}"
        assert (await post(sandbox, path, dict(body, **extra)))["errcode"] == E.INVALID_ACCESS_TOKEN
        assert (await post(sandbox, path, dict(body, **extra), access_token=contact_token)
                )["errcode"] == E.INVALID_ACCESS_TOKEN, "a token of another secret"
    platform.advance(7201)
    assert (await post(sandbox, "/cgi-bin/kf/service_state/get", body, access_token=token)
            )["errcode"] == E.ACCESS_TOKEN_EXPIRED
    assert await Kf(sandbox, await kf_token(sandbox)).state("wmS5") == (0, ""), "refused calls changed nothing"


async def test_the_control_api_plays_the_servicer_in_the_wecom_client(sandbox):
    platform = sandbox.app[PLATFORM]
    kf = Kf(sandbox, await kf_token(sandbox))
    platform.kf_user_message("wmS6", "人工")
    status, taken = await control(sandbox, "wmS6", 3, "staff01")
    assert status == 200 and taken["service_state"] == 3
    assert await kf.state("wmS6") == (3, "staff01")
    async with sandbox.get("/sandbox/kf/service_state", params={"user": "wmS6"}) as resp:
        assert (await resp.json())["servicer_userid"] == "staff01"
    # a servicer answering an ended session in the client reopens it: not possible through the API
    assert (await control(sandbox, "wmS6", 4))[0] == 200
    assert (await control(sandbox, "wmS6", 3, "owner01"))[0] == 200
    assert await kf.state("wmS6") == (3, "owner01")
    for user, state, servicer in (("wmUnknown", 1, ""), ("wmS6", 9, ""), ("wmS6", 3, ""), ("wmS6", 3, "nobody")):
        assert (await control(sandbox, user, state, servicer))[0] == 400
    async with sandbox.get("/sandbox/kf/service_state", params={"user": "wmUnknown"}) as resp:
        assert resp.status == 404
    assert await kf.state("wmS6") == (3, "owner01"), "refused control calls changed nothing"


# --- the product's platform client against the sandbox ------------------------------------------------------
def client_for(server: TestServer) -> PlatformClient:
    c = server.app[PLATFORM].config
    base = str(server.make_url("")).rstrip("/")
    config = WeChatConfig(work_api_base=base, mp_api_base=base, api_timeout_s=2.0,
                          kf=KfConfig(c.corp_id, c.kf_secret, CallbackSecrets(c.kf_token, c.kf_aes_key)))
    return PlatformClient(config, MemoryTokenCache())


async def test_platform_client_reads_and_moves_the_session(sandbox):
    platform = sandbox.app[PLATFORM]
    open_kfid = platform.config.open_kfid
    client = client_for(sandbox.server)
    try:
        platform.kf_user_message("wmApi", "你好")
        assert (await client.kf_service_state_get(open_kfid, "wmApi"))["service_state"] == 0
        await client.kf_send_msg("wmApi", open_kfid, "api1", "text", {"content": "您好"})
        assert (await client.kf_service_state_get(open_kfid, "wmApi"))["service_state"] == 1

        moved = await client.kf_service_state_trans(open_kfid, "wmApi", 3, "staff01")
        assert moved["errcode"] == 0 and moved["msg_code"]
        state = await client.kf_service_state_get(open_kfid, "wmApi")
        assert (state["service_state"], state["servicer_userid"]) == (3, "staff01")

        with pytest.raises(PlatformError) as refused:
            await client.kf_send_msg("wmApi", open_kfid, "api2", "text", {"content": "机器人插话"})
        assert refused.value.kind == "permanent" and refused.value.errcode == E.KF_SESSION_STATE_INVALID
        assert "会话状态不允许发送" in refused.value.failure_reason

        assert (await client.kf_service_state_trans(open_kfid, "wmApi", 4))["msg_code"]
        with pytest.raises(PlatformError) as invalid:
            await client.kf_service_state_trans(open_kfid, "wmApi", 1)
        assert invalid.value.kind == "permanent" and invalid.value.errcode == E.KF_INVALID_STATE_TRANSITION
        transitions = [r for r in platform.requests if r["api"] == "kf/service_state/trans"]
        assert len(transitions) == 3, "a refused move is not repeated"

        platform.expire_tokens()
        assert (await client.kf_service_state_get(open_kfid, "wmApi"))["service_state"] == 4
        assert len([r for r in platform.requests if r["api"] == "gettoken"]) == 2, "refreshed once after 42001"
    finally:
        await client.close()


# --- the outbox (the real gateway against the sandbox) -------------------------------------------------------
async def kf_rows(user: str):
    async with async_session() as session:
        return list((await session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.recipient == user).order_by(OutboxMessage.id))).scalars())


async def settled(harness, user: str, count: int):
    async def done():
        found = await kf_rows(user)
        return found if len(found) == count and all(r.status not in outbox.ACTIVE for r in found) else None

    return await harness.wait_for(done)


async def test_replies_in_states_0_and_1_are_sent_and_take_the_session(harness):
    platform = harness.platform
    await harness.say("kf", "wmFlow", "你好")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmFlow"))
    assert platform.kf_sessions[(platform.config.open_kfid, "wmFlow")].state == 1
    await harness.say("kf", "wmFlow", "查一下订单")
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmFlow")) == 2)
    rows = await settled(harness, "wmFlow", 2)
    assert [r.status for r in rows] == ["sent", "sent"]
    assert platform.kf_sessions[(platform.config.open_kfid, "wmFlow")].state == 1


async def test_a_send_while_a_servicer_has_the_session_fails_with_95018_and_is_not_retried(harness):
    await harness.say("kf", "wmHuman", "我要找人工")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmHuman"))
    await settled(harness, "wmHuman", 1)
    async with harness.http.post(harness.sandbox_url + "/sandbox/kf/service_state",
                                 json={"user": "wmHuman", "service_state": 3, "servicer_userid": "staff01"}) as r:
        assert r.status == 200

    result = await sender.send_to_customer("wecom_kf:wmHuman", ["您的退款已到账"], runtime=harness.runtime)
    assert result.accepted, "our own bookkeeping sees an open window"
    _, row = await settled(harness, "wmHuman", 2)
    assert row.status == "failed" and row.last_errcode == E.KF_SESSION_STATE_INVALID
    assert row.last_error.startswith("会话状态不允许发送（客服已在企业微信中接待或会话已结束）")
    assert row.attempts == 1
    await harness.quiet()
    refusals = [r for r in harness.platform.requests if r["errcode"] == E.KF_SESSION_STATE_INVALID]
    assert len(refusals) == 1, "not retried"
    assert len(harness.deliveries("kf", "wmHuman")) == 1
    async with async_session() as session:
        window = await session.get(ReplyWindow, ("wecom_kf", "wmHuman"))
        assert window.message_sent == 1, "the refused message gave its place in the window back"


async def test_after_the_session_is_ended_the_customers_next_message_is_answered(harness):
    open_kfid = harness.platform.config.open_kfid
    client = harness.runtime.client
    await harness.say("kf", "wmEnd", "谢谢")
    await harness.wait_for(lambda: harness.deliveries("kf", "wmEnd"))
    assert (await client.kf_service_state_trans(open_kfid, "wmEnd", 4))["msg_code"]
    assert (await client.kf_service_state_get(open_kfid, "wmEnd"))["service_state"] == 4
    await harness.say("kf", "wmEnd", "还有个问题")
    await harness.wait_for(lambda: len(harness.deliveries("kf", "wmEnd")) == 2)
    assert [r.status for r in await settled(harness, "wmEnd", 2)] == ["sent", "sent"]
    assert (await client.kf_service_state_get(open_kfid, "wmEnd"))["service_state"] == 1
