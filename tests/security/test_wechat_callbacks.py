"""Forged Official Account / mini-program callbacks (the sandbox as the platform, the real gateway,
SQLite and PostgreSQL).

The plain `signature` covers token, timestamp and nonce, not the body. An outsider who holds the
query string of one callback (e.g. their own) could, within the 300 s window, post any body under
it, say as another openid: "取消订单", then "是的，确认取消". So: with an EncodingAESKey configured
only encrypted bodies under a msg_signature count, and in plaintext mode a (timestamp, nonce) is
good for one body only, in the database (across restarts and gateway processes)."""
from __future__ import annotations

import json
import logging
import time
from typing import Dict

import pytest
import sqlalchemy as sa

from channels.wechat.inbound.crypto import sha1_signature
from channels.wechat.sandbox.callbacks import CallbackSigner, SignedRequest, xml_document
from tests.wechat.harness import Harness, fresh_env
from tests.wechat.processes import GatewayProcess, gateway_env

PLAINTEXT = {"SIYU_WECHAT_MP_AES_KEY": "", "SIYU_WECHAT_MINI_AES_KEY": ""}


@pytest.fixture
async def plaintext_harness(wechat_db, no_redis):
    h = await Harness(fresh_env(**PLAINTEXT)).start()
    yield h
    await h.stop()


def _message(h: Harness, channel: str, user: str, text: str, msg_id: int) -> Dict:
    original = h.platform.config.mp_original_id if channel == "mp" else h.platform.config.mini_original_id
    return {"ToUserName": original, "FromUserName": user, "CreateTime": int(time.time()), "MsgType": "text",
            "Content": text, "MsgId": msg_id}


def _plain_body(h: Harness, channel: str, message: Dict) -> bytes:
    if channel == "mini" and h.platform.config.mini_format == "json":
        return json.dumps(message, ensure_ascii=False).encode()
    return xml_document(message).encode()


async def _post(h: Harness, url: str, signed: SignedRequest, query: Dict, body: bytes):
    async with h.http.post(url.rstrip("/") + signed.path, params=query, data=body) as response:
        return response.status, await response.text()


def _stored_for(user: str) -> int:
    from bot.settings import get_settings

    engine = sa.create_engine(get_settings().sync_database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM wechat_inbound WHERE CAST(payload AS text) LIKE :u"),
                                {"u": f"%{user}%"}).scalar()
    finally:
        engine.dispose()


def _token(h: Harness, channel: str) -> str:
    return h.platform.config.mp_token if channel == "mp" else h.platform.config.mini_token


def _aes_key(h: Harness, channel: str) -> str:
    return h.platform.config.mp_aes_key if channel == "mp" else h.platform.config.mini_aes_key


def _turns_of(h: Harness, channel: str, user: str):
    return [m.text for m in h.agent.received if m.sender_id == f"{channel}:{user}"]


def _texts_to(h: Harness, channel: str, user: str):
    return [d["content"]["content"] for d in h.deliveries(channel, user)]


def _rejections(caplog, status: int):
    return [r for r in caplog.records
            if r.getMessage() == "wechat callback rejected" and r.__dict__.get("status") == status]


@pytest.mark.parametrize("channel", ["mp", "mini"])
async def test_a_plaintext_callback_is_refused_while_an_encoding_aes_key_is_configured(harness, channel, caplog):
    h = harness
    caplog.set_level(logging.WARNING, logger="channels.wechat")
    signer = CallbackSigner(h.platform.config)
    assert _aes_key(h, channel), "safe mode: the shop configured an EncodingAESKey"

    # the outsider's own, genuine callback: they hold its query string
    h.platform.user_acted(channel, "oOutsider")
    own = signer.account_message(channel, _message(h, channel, "oOutsider", "在吗", 7001))
    assert own.query["encrypt_type"] == "aes" and own.query["signature"]
    assert await _post(h, h.bot_url, own, own.query, own.body) == (200, "success")
    await h.wait_for(lambda: h.deliveries(channel, "oOutsider"))

    # the same query string over plain bodies as another customer
    plain_query = {key: own.query[key] for key in ("signature", "timestamp", "nonce")}
    plain_query["openid"] = "oVictim"
    attempts = [
        (plain_query, _message(h, channel, "oVictim", "取消订单 DD20240601001", 7002)),
        # keeping encrypt_type=aes and the msg_signature, but a body that is not encrypted
        (dict(own.query, openid="oVictim"), _message(h, channel, "oVictim", "是的，确认取消", 7003)),
    ]
    # and a plain signature that is valid in its own right (it covers token, timestamp and nonce only)
    ts, nonce = str(int(time.time())), "424242"
    fresh = {"signature": sha1_signature(_token(h, channel), ts, nonce), "timestamp": ts, "nonce": nonce,
             "openid": "oVictim"}
    attempts.append((fresh, _message(h, channel, "oVictim", "是的，确认取消", 7004)))
    for query, message in attempts:
        status, _ = await _post(h, h.bot_url, own, query, _plain_body(h, channel, message))
        assert status == 403, message["Content"]

    await h.quiet()
    assert _stored_for("oVictim") == 0, "nothing of a refused callback is stored"
    assert _turns_of(h, channel, "oVictim") == [] and h.deliveries(channel, "oVictim") == []
    assert len(_rejections(caplog, 403)) == len(attempts), "each refusal is logged"
    assert _texts_to(h, channel, "oOutsider") == ["收到：在吗"]


@pytest.mark.parametrize("channel", ["mp", "mini"])
async def test_url_verification_in_safe_mode_still_answers_the_platforms_plain_signed_get(harness, channel):
    """The platform verifies the URL with the plain signature and a plain echostr in every mode."""
    h = harness
    path = {"mp": "wechat_mp", "mini": "wechat_mini"}[channel]
    async with h.http.post(h.sandbox_url + "/sandbox/verify", json={"channel": channel}) as r:
        verification = await r.json()
    async with h.http.get(f"{h.bot_url}/webhooks/{path}/webhook", params=verification["query"]) as r:
        assert (r.status, await r.text()) == (200, verification["echo"])


@pytest.mark.parametrize("channel", ["mp", "mini"])
async def test_plaintext_mode_a_seen_timestamp_and_nonce_are_good_for_their_own_body_only(plaintext_harness, channel,
                                                                                          caplog):
    h = plaintext_harness
    caplog.set_level(logging.WARNING, logger="channels.wechat")
    signer = CallbackSigner(h.platform.config)
    assert not _aes_key(h, channel), "plaintext mode: no EncodingAESKey"
    h.platform.user_acted(channel, "oCustomer")
    genuine = signer.account_message(channel, _message(h, channel, "oCustomer", "查一下物流", 8001))
    assert "encrypt_type" not in genuine.query
    assert await _post(h, h.bot_url, genuine, genuine.query, genuine.body) == (200, "success")
    await h.wait_for(lambda: h.deliveries(channel, "oCustomer"))

    # another body under the same query string: refused, nothing stored
    forged = _plain_body(h, channel, _message(h, channel, "oVictim", "取消订单 DD20240601001", 8002))
    assert (await _post(h, h.bot_url, genuine, dict(genuine.query, openid="oVictim"), forged))[0] == 403
    # the same body again is the platform's retry: accepted, and not answered a second time
    assert await _post(h, h.bot_url, genuine, genuine.query, genuine.body) == (200, "success")

    await h.quiet()
    assert _stored_for("oVictim") == 0 and _turns_of(h, channel, "oVictim") == []
    assert _texts_to(h, channel, "oCustomer") == ["收到：查一下物流"]
    assert _turns_of(h, channel, "oCustomer") == ["查一下物流"]
    assert [r.__dict__.get("reason") for r in _rejections(caplog, 403)] == [
        "signature already used with another body (same timestamp and nonce)"]


async def test_plaintext_mode_a_seen_nonce_stays_refused_across_a_restart_and_in_another_gateway_process(
        plaintext_harness, wechat_db, tmp_path):
    h = plaintext_harness
    signer = CallbackSigner(h.platform.config)
    h.platform.user_acted("mp", "oCustomer")
    genuine = signer.account_message("mp", _message(h, "mp", "oCustomer", "发票怎么开", 9001))
    assert await _post(h, h.bot_url, genuine, genuine.query, genuine.body) == (200, "success")
    await h.wait_for(lambda: h.deliveries("mp", "oCustomer"))
    forged_query = dict(genuine.query, openid="oVictim")
    forged = _plain_body(h, "mp", _message(h, "mp", "oVictim", "是的，确认取消", 9002))

    # a second gateway process on the same database
    env = gateway_env(h.env, wechat_db, h.sandbox_url, h.bot_url)
    other = GatewayProcess(env, tmp_path / "gateway.log").start()
    restarted = None
    try:
        await other.ready()
        assert (await _post(h, other.url, genuine, forged_query, forged))[0] == 403
        # the platform's retry may reach either process
        assert await _post(h, other.url, genuine, genuine.query, genuine.body) == (200, "success")
        other.kill()
        restarted = GatewayProcess(env, tmp_path / "gateway.log").start()
        await restarted.ready()
        assert (await _post(h, restarted.url, genuine, forged_query, forged))[0] == 403
    finally:
        other.kill()
        if restarted is not None:
            restarted.stop()
    await h.restart_bot()
    assert (await _post(h, h.bot_url, genuine, forged_query, forged))[0] == 403

    await h.quiet()
    assert _stored_for("oVictim") == 0 and h.deliveries("mp", "oVictim") == []
    assert _texts_to(h, "mp", "oCustomer") == ["收到：发票怎么开"]


async def test_expired_nonces_are_forgotten(wechat_db, no_redis):
    from channels.wechat.inbound import replays
    from channels.wechat.inbound.crypto import SignatureReused

    now = int(time.time())
    await replays.first_use_or_retry("wechat_mp", now - 3600, "1", b"<xml>old</xml>", 300)
    await replays.first_use_or_retry("wechat_mp", now, "1", b"<xml>new</xml>", 300)
    await replays.first_use_or_retry("wechat_mp", now, "1", b"<xml>new</xml>", 300)  # a retry
    await replays.first_use_or_retry("wechat_mini", now, "1", b"<xml>other connector</xml>", 300)
    with pytest.raises(SignatureReused):
        await replays.first_use_or_retry("wechat_mp", now, "1", b"<xml>forged</xml>", 300)
    assert await replays.prune() == 1, "only the one whose timestamp is long out of the window"
    with pytest.raises(SignatureReused):
        await replays.first_use_or_retry("wechat_mp", now, "1", b"<xml>forged</xml>", 300)
