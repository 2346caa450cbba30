"""Official Account and mini-program customer service: plaintext and secure modes, XML and JSON,
events, verification, and what is rejected."""
from __future__ import annotations

import time

import pytest

from channels.wechat.inbound.crypto import sha1_signature
from channels.wechat.sandbox.callbacks import CallbackSigner
from tests.wechat.harness import Harness, fresh_env


@pytest.fixture(params=["secure", "plaintext"])
async def account_harness(request, wechat_db, no_redis):
    overrides = {} if request.param == "secure" else {"SIYU_WECHAT_MP_AES_KEY": "", "SIYU_WECHAT_MINI_AES_KEY": ""}
    h = await Harness(fresh_env(**overrides)).start()
    h.mode = request.param
    yield h
    await h.stop()


@pytest.mark.parametrize("channel", ["mp", "mini"])
async def test_message_is_answered_through_custom_send(account_harness, channel):
    h = account_harness
    user = f"o{channel}{h.mode}"
    result = await h.say(channel, user, "这个有优惠吗")
    attempts = result["callback"]["attempts"]
    assert result["callback"]["delivered"] and attempts[0]["body"] == "success"
    await h.wait_for(lambda: h.deliveries(channel, user))
    await h.quiet()
    assert [d["content"]["content"] for d in h.deliveries(channel, user)] == ["收到：这个有优惠吗"]
    assert h.agent.received[0].sender_id == f"{channel}:{user}"


async def test_mini_program_xml_format(wechat_db, no_redis):
    h = await Harness(fresh_env(), sandbox_overrides={"mini_format": "xml"}).start()
    try:
        await h.say("mini", "oMiniXml", "在吗")
        await h.wait_for(lambda: h.deliveries("mini", "oMiniXml"))
    finally:
        await h.stop()


async def test_get_verification_returns_echostr_as_is(account_harness):
    h = account_harness
    for channel, path in (("mp", "wechat_mp"), ("mini", "wechat_mini")):
        async with h.http.post(h.sandbox_url + "/sandbox/verify", json={"channel": channel}) as r:
            verification = await r.json()
        async with h.http.get(f"{h.bot_url}/webhooks/{path}/webhook", params=verification["query"]) as r:
            assert r.status == 200 and await r.text() == verification["echo"]
        bad = dict(verification["query"], signature="1" * 40)
        async with h.http.get(f"{h.bot_url}/webhooks/{path}/webhook", params=bad) as r:
            assert r.status == 403


async def test_follow_event_greets_within_the_event_window(account_harness):
    h = account_harness
    async with h.http.post(h.sandbox_url + "/sandbox/event",
                           json={"channel": "mp", "user": "oFollower", "event": "subscribe", "wait": True}) as r:
        assert (await r.json())["callback"]["delivered"]
    await h.wait_for(lambda: h.deliveries("mp", "oFollower"))
    assert h.agent.received[0].text == "/greet"


async def test_mini_enter_session_opens_the_window_without_a_reply(account_harness):
    h = account_harness
    async with h.http.post(h.sandbox_url + "/sandbox/event", json={
            "channel": "mini", "user": "oEnter", "event": "user_enter_tempsession", "wait": True}) as r:
        assert (await r.json())["callback"]["delivered"]
    await h.quiet()
    assert h.agent.received == [] and h.deliveries("mini", "oEnter") == []
    from channels.wechat.outbound import sender

    result = await sender.send_to_customer("mini:oEnter", ["欢迎光临，有什么可以帮您？"], runtime=h.runtime)
    assert result.accepted, "entering the session allows 2 messages within a minute"
    await h.wait_for(lambda: h.deliveries("mini", "oEnter"))


async def test_duplicate_event_is_handled_once(account_harness):
    h = account_harness
    now = int(time.time())
    event = {"ToUserName": "gh_x", "FromUserName": "oTwice", "CreateTime": now, "MsgType": "event",
             "Event": "subscribe"}
    h.platform.user_acted("mp", "oTwice", kind="event")
    signed = CallbackSigner(h.platform.config).account_message("mp", event)
    for _ in range(3):
        async with h.http.post(signed.url(h.bot_url), data=signed.body) as r:
            assert r.status == 200
    await h.wait_for(lambda: h.deliveries("mp", "oTwice"))
    await h.quiet()
    assert len(h.agent.received) == 1 and len(h.deliveries("mp", "oTwice")) == 1


async def test_replayed_message_is_not_answered_again(account_harness):
    h = account_harness
    result = await h.say("mp", "oReplay", "查物流")
    await h.wait_for(lambda: h.deliveries("mp", "oReplay"))
    msg_id = result["msg_id"]
    message = {"ToUserName": "gh_x", "FromUserName": "oReplay", "CreateTime": int(time.time()), "MsgType": "text",
               "Content": "查物流", "MsgId": int(msg_id)}
    replay = CallbackSigner(h.platform.config).account_message("mp", message)
    async with h.http.post(replay.url(h.bot_url), data=replay.body) as r:
        assert r.status == 200
    await h.quiet()
    assert len(h.deliveries("mp", "oReplay")) == 1


async def test_forged_stale_and_malformed_are_rejected(account_harness):
    h = account_harness
    config = h.platform.config
    signer = CallbackSigner(config)
    now = int(time.time())
    message = {"ToUserName": "gh_x", "FromUserName": "oBad", "CreateTime": now, "MsgType": "text",
               "Content": "hi", "MsgId": 1}
    good = signer.account_message("mini", message)
    forged = dict(good.query, signature="0" * 40, msg_signature="0" * 40)
    async with h.http.post(h.bot_url + good.path, params=forged, data=good.body) as r:
        assert r.status == 403
    stale = signer.account_message("mini", dict(message, MsgId=2), timestamp=now - 3600)
    async with h.http.post(stale.url(h.bot_url), data=stale.body) as r:
        assert r.status == 403
    # correctly signed, but the content is not a message (each body under its own nonce: a plain
    # signature is good for one body only, tests/security/test_wechat_callbacks.py)
    ts = str(now)
    for n, body in enumerate((b"{not json", b"[]", b'{"FromUserName": "oBad"}', b"<xml><MsgType>text</MsgType></xml>")):
        nonce = str(5 + n)
        plain_query = {"signature": sha1_signature(config.mini_token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if h.mode == "plaintext":
            async with h.http.post(h.bot_url + good.path, params=plain_query, data=body) as r:
                assert r.status == 400, body
    async with h.http.post(h.bot_url + good.path, params=dict(good.query), data=b"x" * 100_000) as r:
        assert r.status == 400
    await h.quiet()
    assert h.agent.received == []
