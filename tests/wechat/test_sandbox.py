"""The platform sandbox behaves like the platform: tokens and their expiry, 微信客服 sync and send,
custom send windows and quotas, robot rate limit, mass-send tasks, app messages, callbacks."""
from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.wechat.inbound.crypto import CallbackCrypto
from channels.wechat.inbound.payloads import parse_json, parse_xml
from channels.wechat.outbound import errcodes as E
from channels.wechat.sandbox.app import PLATFORM, create_app
from channels.wechat.sandbox.callbacks import CallbackSigner
from tests.wechat.sandbox_helpers import sandbox_config


@pytest.fixture
async def sandbox():
    config = sandbox_config()
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    yield client
    await client.close()


async def get(client, path, **params):
    resp = await client.get(path, params=params)
    return await resp.json()


async def post(client, path, body, **params):
    resp = await client.post(path, params=params, json=body)
    return await resp.json()


async def kf_token(client):
    config = client.app[PLATFORM].config
    return (await get(client, "/cgi-bin/gettoken", corpid=config.corp_id, corpsecret=config.kf_secret))["access_token"]


async def test_wecom_token_issuance_and_errors(sandbox):
    config = sandbox.app[PLATFORM].config
    first = await get(sandbox, "/cgi-bin/gettoken", corpid=config.corp_id, corpsecret=config.kf_secret)
    assert first["errcode"] == 0 and first["expires_in"] > 0
    again = await get(sandbox, "/cgi-bin/gettoken", corpid=config.corp_id, corpsecret=config.kf_secret)
    assert again["access_token"] == first["access_token"], "WeCom returns the same token while it is valid"
    bad = await get(sandbox, "/cgi-bin/gettoken", corpid=config.corp_id, corpsecret="wrong")
    assert bad["errcode"] == E.INVALID_CREDENTIAL
    bad_corp = await get(sandbox, "/cgi-bin/gettoken", corpid="nope", corpsecret=config.kf_secret)
    assert bad_corp["errcode"] == E.INVALID_APPID


async def test_token_expiry_gives_42001_and_wrong_token_40014(sandbox):
    token = await kf_token(sandbox)
    body = {"cursor": "", "limit": 10, "open_kfid": sandbox.app[PLATFORM].config.open_kfid}
    assert (await post(sandbox, "/cgi-bin/kf/sync_msg", body, access_token=token))["errcode"] == 0
    sandbox.app[PLATFORM].advance(7201)
    assert (await post(sandbox, "/cgi-bin/kf/sync_msg", body, access_token=token))["errcode"] == E.ACCESS_TOKEN_EXPIRED
    answer = await post(sandbox, "/cgi-bin/kf/sync_msg", body, access_token="forged")
    assert answer["errcode"] == E.INVALID_ACCESS_TOKEN
    fresh = await kf_token(sandbox)
    assert fresh != token


async def test_official_account_token_rotates_with_overlap(sandbox):
    config = sandbox.app[PLATFORM].config
    params = {"grant_type": "client_credential", "appid": config.mp_app_id, "secret": config.mp_secret}
    first = (await get(sandbox, "/cgi-bin/token", **params))["access_token"]
    second = (await get(sandbox, "/cgi-bin/token", **params))["access_token"]
    assert first != second
    platform = sandbox.app[PLATFORM]
    assert platform.check_token(first, "mp") is None, "the previous token stays valid for the overlap"
    platform.advance(301)
    assert platform.check_token(first, "mp")["errcode"] == E.ACCESS_TOKEN_EXPIRED
    assert platform.check_token(second, "mp") is None
    wrong = await get(sandbox, "/cgi-bin/token", grant_type="client_credential", appid=config.mp_app_id, secret="x")
    assert wrong["errcode"] == E.INVALID_APPSECRET


async def test_kf_sync_cursor_and_send_window(sandbox):
    platform = sandbox.app[PLATFORM]
    token = await kf_token(sandbox)
    for text in ("一", "二", "三"):
        _, msg_token = platform.kf_user_message("wmUser1", text)
    page = await post(sandbox, "/cgi-bin/kf/sync_msg", {"token": msg_token, "limit": 2,
                                                        "open_kfid": platform.config.open_kfid},
                      access_token=token)
    assert [m["text"]["content"] for m in page["msg_list"]] == ["一", "二"] and page["has_more"] == 1
    rest = await post(sandbox, "/cgi-bin/kf/sync_msg", {"token": msg_token, "cursor": page["next_cursor"]},
                      access_token=token)
    assert [m["text"]["content"] for m in rest["msg_list"]] == ["三"] and rest["has_more"] == 0
    empty = await post(sandbox, "/cgi-bin/kf/sync_msg", {"cursor": rest["next_cursor"]}, access_token=token)
    assert empty["msg_list"] == []
    assert (await post(sandbox, "/cgi-bin/kf/sync_msg", {"token": "ENCforged"}, access_token=token)
            )["errcode"] == E.KF_INVALID_MSG_TOKEN
    assert (await post(sandbox, "/cgi-bin/kf/sync_msg", {"cursor": "garbage!"}, access_token=token)
            )["errcode"] == E.INVALID_PARAMETER

    send = {"touser": "wmUser1", "open_kfid": platform.config.open_kfid, "msgtype": "text", "text": {"content": "好"}}
    for n in range(5):
        assert (await post(sandbox, "/cgi-bin/kf/send_msg", dict(send, msgid=f"m{n}"), access_token=token)
                )["errcode"] == 0
    over = await post(sandbox, "/cgi-bin/kf/send_msg", dict(send, msgid="m5"), access_token=token)
    assert over["errcode"] == E.KF_SEND_LIMIT
    # a repeated msgid is the same message: accepted, not delivered twice
    assert (await post(sandbox, "/cgi-bin/kf/send_msg", dict(send, msgid="m0"), access_token=token))["errcode"] == 0
    assert len([d for d in platform.deliveries if d["channel"] == "kf"]) == 5
    platform.kf_user_message("wmUser1", "再问一下")
    assert (await post(sandbox, "/cgi-bin/kf/send_msg", dict(send, msgid="m6"), access_token=token))["errcode"] == 0
    platform.advance(48 * 3600 + 1)
    late = await post(sandbox, "/cgi-bin/kf/send_msg", dict(send, msgid="m7"),
                      access_token=await kf_token(sandbox))
    assert late["errcode"] == E.KF_SEND_LIMIT


async def test_kf_text_limits(sandbox):
    platform = sandbox.app[PLATFORM]
    platform.kf_user_message("wmUser2", "你好")
    token = await kf_token(sandbox)
    base = {"touser": "wmUser2", "open_kfid": platform.config.open_kfid, "msgtype": "text"}
    too_long = await post(sandbox, "/cgi-bin/kf/send_msg", dict(base, text={"content": "字" * 683}),
                          access_token=token)
    assert too_long["errcode"] == E.CONTENT_TOO_LONG  # 683 x 3 bytes > 2048
    exact = await post(sandbox, "/cgi-bin/kf/send_msg", dict(base, text={"content": "字" * 682 + "ab"}),
                       access_token=token)
    assert exact["errcode"] == 0
    empty = await post(sandbox, "/cgi-bin/kf/send_msg", dict(base, text={"content": ""}), access_token=token)
    assert empty["errcode"] == E.EMPTY_CONTENT


async def test_custom_send_windows_official_account(sandbox):
    platform = sandbox.app[PLATFORM]
    config = platform.config
    token = (await get(sandbox, "/cgi-bin/token", grant_type="client_credential", appid=config.mp_app_id,
                       secret=config.mp_secret))["access_token"]
    msg = {"touser": "oUser1", "msgtype": "text", "text": {"content": "您好"}}
    assert (await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=token))["errcode"] == E.INVALID_OPENID
    platform.user_acted("mp", "oUser1", kind="event")  # followed: 3 messages within a minute
    results = [(await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=token))["errcode"]
               for _ in range(4)]
    assert results == [0, 0, 0, E.OVER_QUOTA]
    platform.advance(61)
    assert (await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=token))["errcode"] == E.OUT_OF_WINDOW
    platform.user_acted("mp", "oUser1")
    results = [(await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=token))["errcode"]
               for _ in range(6)]
    assert results == [0] * 5 + [E.OVER_QUOTA]
    platform.advance(48 * 3600 + 1)
    token = (await get(sandbox, "/cgi-bin/token", grant_type="client_credential", appid=config.mp_app_id,
                       secret=config.mp_secret))["access_token"]
    assert (await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=token))["errcode"] == E.OUT_OF_WINDOW


async def test_mini_program_cannot_use_the_official_account_token(sandbox):
    platform = sandbox.app[PLATFORM]
    platform.user_acted("mini", "oMini1")
    config = platform.config
    mini = (await get(sandbox, "/cgi-bin/token", grant_type="client_credential", appid=config.mini_app_id,
                      secret=config.mini_secret))["access_token"]
    msg = {"touser": "oMini1", "msgtype": "text", "text": {"content": "在的"}}
    assert (await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=mini))["errcode"] == 0
    assert platform.deliveries[-1]["channel"] == "mini"
    wecom = await kf_token(sandbox)
    answer = await post(sandbox, "/cgi-bin/message/custom/send", msg, access_token=wecom)
    assert answer["errcode"] == E.INVALID_CREDENTIAL


async def test_robot_rate_limit_and_content_checks(sandbox):
    platform = sandbox.app[PLATFORM]
    group = platform.add_group("wrG1", "群", "owner01")
    text = {"msgtype": "text", "text": {"content": "大家好", "mentioned_list": ["zhangsan"]}}
    codes = [(await post(sandbox, "/cgi-bin/webhook/send", text, key=group.robot_key))["errcode"] for _ in range(21)]
    assert codes == [0] * 20 + [E.ROBOT_RATE_LIMIT]
    platform.advance(61)
    assert (await post(sandbox, "/cgi-bin/webhook/send", text, key=group.robot_key))["errcode"] == 0
    assert (await post(sandbox, "/cgi-bin/webhook/send", text, key="nokey"))["errcode"] == E.INVALID_WEBHOOK_KEY
    md = {"msgtype": "markdown", "markdown": {"content": "#" * 4097}}
    assert (await post(sandbox, "/cgi-bin/webhook/send", md, key=group.robot_key))["errcode"] == E.CONTENT_TOO_LONG
    raw = b"\x89PNG fake image bytes"
    image = {"msgtype": "image", "image": {"base64": base64.b64encode(raw).decode(), "md5": "0" * 32}}
    assert (await post(sandbox, "/cgi-bin/webhook/send", image, key=group.robot_key))["errcode"] == E.INVALID_PARAMETER
    image["image"]["md5"] = hashlib.md5(raw).hexdigest()
    assert (await post(sandbox, "/cgi-bin/webhook/send", image, key=group.robot_key))["errcode"] == 0
    news = {"msgtype": "news", "news": {"articles": [{"title": "上新", "url": "https://example.com"}]}}
    assert (await post(sandbox, "/cgi-bin/webhook/send", news, key=group.robot_key))["errcode"] == 0


async def test_mass_send_task_lifecycle_and_monthly_quota(sandbox):
    platform = sandbox.app[PLATFORM]
    config = platform.config
    platform.add_group("wrA", "A群", "owner01", robot=False)
    token = (await get(sandbox, "/cgi-bin/gettoken", corpid=config.corp_id, corpsecret=config.contact_secret)
             )["access_token"]
    body = {"chat_type": "group", "sender": "owner01", "chat_id_list": ["wrA"], "text": {"content": "今晚8点秒杀"}}
    created = await post(sandbox, "/cgi-bin/externalcontact/add_msg_template", body, access_token=token)
    assert created["errcode"] == 0
    msgid = created["msgid"]
    task = await post(sandbox, "/cgi-bin/externalcontact/get_groupmsg_task", {"msgid": msgid}, access_token=token)
    assert task["task_list"][0]["status"] == 0, "not sent until the owner confirms"
    for _ in range(3):
        assert (await post(sandbox, "/cgi-bin/externalcontact/remind_groupmsg_send", {"msgid": msgid},
                           access_token=token))["errcode"] == 0
    assert (await post(sandbox, "/cgi-bin/externalcontact/remind_groupmsg_send", {"msgid": msgid},
                       access_token=token))["errcode"] == E.API_FREQ_LIMIT
    assert platform.owner_confirms(msgid)["errcode"] == 0
    result = await post(sandbox, "/cgi-bin/externalcontact/get_groupmsg_send_result",
                        {"msgid": msgid, "userid": "owner01"}, access_token=token)
    assert result["send_list"][0]["status"] == 1
    # the group has had as many mass messages this month as the month has days
    for key in list(platform.group_mass_sends):
        platform.group_mass_sends[key] = 31
    second = (await post(sandbox, "/cgi-bin/externalcontact/add_msg_template", body, access_token=token))["msgid"]
    platform.owner_confirms(second)
    result = await post(sandbox, "/cgi-bin/externalcontact/get_groupmsg_send_result",
                        {"msgid": second, "userid": "owner01"}, access_token=token)
    assert result["send_list"][0]["status"] == 3
    wrong_owner = dict(body, sender="owner02")
    assert (await post(sandbox, "/cgi-bin/externalcontact/add_msg_template", wrong_owner, access_token=token)
            )["errcode"] == E.INVALID_PARAMETER


async def test_app_messages_over_the_member_limit_are_silently_dropped(sandbox):
    platform = sandbox.app[PLATFORM]
    config = platform.config
    token = (await get(sandbox, "/cgi-bin/gettoken", corpid=config.corp_id, corpsecret=config.app_secret)
             )["access_token"]
    msg = {"touser": "owner01|ghost", "msgtype": "text", "agentid": config.app_agent_id, "text": {"content": "提醒"}}
    answers = [await post(sandbox, "/cgi-bin/message/send", msg, access_token=token) for _ in range(31)]
    assert all(a["errcode"] == 0 for a in answers) and answers[0]["invaliduser"] == "ghost"
    delivered = [d for d in platform.deliveries if d["to"] == "owner01"]
    assert sum(not d["dropped"] for d in delivered) == 30 and delivered[-1]["dropped"]
    assert (await post(sandbox, "/cgi-bin/message/send", dict(msg, agentid=1), access_token=token)
            )["errcode"] == E.INVALID_AGENTID


async def test_api_rate_limit_45009_and_injected_faults(sandbox):
    platform = sandbox.app[PLATFORM]
    platform.config.api_limit_per_minute = 2
    token = await kf_token(sandbox)
    body = {"cursor": ""}
    codes = [(await post(sandbox, "/cgi-bin/kf/sync_msg", body, access_token=token))["errcode"] for _ in range(3)]
    assert codes == [0, 0, E.API_FREQ_LIMIT]
    platform.config.api_limit_per_minute = 0
    platform.add_fault("kf/sync_msg", "http_500")
    resp = await sandbox.post("/cgi-bin/kf/sync_msg", params={"access_token": token}, json=body)
    assert resp.status == 500
    assert (await post(sandbox, "/cgi-bin/kf/sync_msg", body, access_token=token))["errcode"] == 0
    assert (await sandbox.post("/cgi-bin/kf/sync_msg", params={"access_token": token}, data=b"{broken")
            ).status == 200  # the platform answers malformed JSON with an errcode, not an HTTP error


async def test_signed_callbacks_are_what_the_connectors_verify(sandbox):
    config = sandbox.app[PLATFORM].config
    signer = CallbackSigner(config)
    kf = signer.kf_event("ENCtoken123")
    envelope = parse_xml(kf.body)
    plain = CallbackCrypto(config.kf_token, config.kf_aes_key, config.corp_id).verify_and_decrypt(
        kf.query["msg_signature"], kf.query["timestamp"], kf.query["nonce"], envelope["Encrypt"])
    assert parse_xml(plain.encode())["Token"] == "ENCtoken123"
    mini = signer.account_message("mini", {"ToUserName": "gh_x", "FromUserName": "oMini", "CreateTime": 1,
                                           "MsgType": "text", "Content": "在吗", "MsgId": 7})
    outer = parse_json(mini.body)
    inner = CallbackCrypto(config.mini_token, config.mini_aes_key, config.mini_app_id, max_age_s=10**10,
                           corp=False).verify_and_decrypt(mini.query["msg_signature"], mini.query["timestamp"],
                                                         mini.query["nonce"], outer["Encrypt"], now=1)
    assert parse_json(inner.encode())["Content"] == "在吗"


async def test_callbacks_are_retried_when_the_bot_does_not_answer_in_time():
    hits = []

    async def slow_then_ok(request):
        hits.append(await request.read())
        if len(hits) < 3:
            await asyncio.sleep(0.5)
        return web.Response(text="success")

    bot = web.Application()
    bot.router.add_post("/webhooks/wechat_mp/webhook", slow_then_ok)
    bot_server = TestServer(bot)
    await bot_server.start_server()
    config = sandbox_config(bot_url=str(bot_server.make_url("")), callback_timeout_s=0.2)
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    try:
        answer = await post(client, "/sandbox/say", {"channel": "mp", "user": "oUserR", "text": "在吗", "wait": True})
        attempts = answer["callback"]["attempts"]
        assert [a.get("error") for a in attempts] == ["timeout", "timeout", None]
        assert answer["callback"]["delivered"]
        assert len(set(hits)) == 1, "a retry repeats the same request byte for byte"
    finally:
        await client.close()
        await bot_server.close()


def test_product_code_never_imports_the_sandbox():
    """The sandbox fakes the platform for tests and `run --sandbox` only: the run command may start
    it, nothing else of the product may depend on it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    importers = []
    for folder in ("actions", "bot", "channels", "knowledge"):
        for path in (root / folder).rglob("*.py"):
            if "sandbox" in path.parts or path == root / "bot" / "__main__.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                if any(name.startswith("channels.wechat.sandbox") for name in names):
                    importers.append(str(path.relative_to(root)))
    assert importers == []
