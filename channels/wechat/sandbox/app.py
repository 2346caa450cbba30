"""The sandbox as an aiohttp app: the platform's API routes (same paths, parameters and answers as
qyapi.weixin.qq.com and api.weixin.qq.com), and a control API under /sandbox/ that plays the users
(send a message, follow, @ the robot), the group owner (confirm a mass send), the servicers in the
WeCom client (take or end a 微信客服 session) and the test harness (inject faults, expire tokens, move
the clock, read what was delivered)."""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Awaitable, Callable, Optional

from aiohttp import web

from channels.wechat.sandbox.callbacks import CallbackSender, CallbackSigner
from channels.wechat.sandbox.config import SandboxConfig
from channels.wechat.sandbox.platform import Json, KfSession, Platform

logger = logging.getLogger("channels.wechat.sandbox")

PLATFORM = web.AppKey("platform", Platform)
SENDER = web.AppKey("sender", CallbackSender)
SIGNER = web.AppKey("signer", CallbackSigner)
TASKS = web.AppKey("tasks", set)


async def _json_body(request: web.Request) -> Optional[Json]:
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _api(name: str, handler: Callable[[web.Request, Platform, Optional[Json]], Awaitable[Json]],
         token_kinds: tuple = (), needs_body: bool = True):
    """Wraps one platform API: faults, the 45009 rate limit, token check, JSON body, recording."""

    async def route(request: web.Request) -> web.Response:
        platform = request.app[PLATFORM]
        fault = platform.take_fault(name)
        if fault and fault["kind"] == "http_500":
            return web.Response(status=502 if fault.get("errcode") == 502 else 500, text="sandbox: injected error")
        if fault and fault["kind"] == "errcode":
            result = {"errcode": fault["errcode"], "errmsg": "sandbox: injected error"}
            platform.record_request(name, result)
            return web.json_response(result)
        if fault and fault["kind"] == "delay":
            await asyncio.sleep(fault["delay_s"])
        if platform.over_api_limit(name):
            result = {"errcode": 45009, "errmsg": "api freq out of limit"}
        elif token_kinds and (problem := platform.check_token(request.query.get("access_token"), *token_kinds)):
            result = problem
        else:
            body = await _json_body(request) if needs_body else None
            if needs_body and body is None:
                result = {"errcode": 47001, "errmsg": "data format error"}
            else:
                result = await handler(request, platform, body)
        platform.record_request(name, result)
        if fault and fault["kind"] == "delay_after":
            # delivered, but the answer comes too late for the caller: tests the caller's idempotency
            await asyncio.sleep(fault["delay_s"])
        return web.json_response(result, dumps=lambda d: json.dumps(d, ensure_ascii=False))

    return route


def create_app(config: SandboxConfig) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    platform = Platform(config)
    app[PLATFORM] = platform
    app[SENDER] = CallbackSender(config)
    app[SIGNER] = CallbackSigner(config)
    app[TASKS] = set()

    async def close_sender(app_: web.Application) -> None:
        for task in list(app_[TASKS]):
            task.cancel()
        await app_[SENDER].close()

    app.on_cleanup.append(close_sender)

    # --- platform APIs --------------------------------------------------------------------------
    async def gettoken(request, p, _body):
        return p.wecom_gettoken(request.query.get("corpid"), request.query.get("corpsecret"))

    async def mp_token(request, p, _body):
        return p.mp_token(request.query.get("grant_type"), request.query.get("appid"), request.query.get("secret"))

    async def kf_sync(request, p, body):
        return p.kf_sync_msg(body)

    async def kf_send(request, p, body):
        return p.kf_send_msg(body)

    async def kf_batchget(request, p, body):
        return p.kf_customer_batchget(body)

    async def kf_state_get(request, p, body):
        return p.kf_service_state_get(body)

    async def kf_state_trans(request, p, body):
        return p.kf_service_state_trans(body)

    async def custom_send(request, p, body):
        token = p.tokens[request.query["access_token"]]
        return p.custom_send(token.kind, body)

    async def template_send(request, p, body):
        return p.template_send(body)

    async def user_info(request, p, _body):
        return p.mp_user_info(request.query.get("openid"))

    async def robot(request, p, body):
        return p.robot_send(request.query.get("key"), body)

    async def add_template(request, p, body):
        return p.add_msg_template(body)

    async def get_task(request, p, body):
        return p.get_groupmsg_task(body)

    async def get_result(request, p, body):
        return p.get_groupmsg_send_result(body)

    async def remind(request, p, body):
        return p.remind_groupmsg_send(body)

    async def cancel(request, p, body):
        return p.cancel_groupmsg_send(body)

    async def app_send(request, p, body):
        return p.app_message_send(body)

    r = app.router
    r.add_get("/cgi-bin/gettoken", _api("gettoken", gettoken, needs_body=False))
    r.add_get("/cgi-bin/token", _api("token", mp_token, needs_body=False))
    r.add_post("/cgi-bin/kf/sync_msg", _api("kf/sync_msg", kf_sync, ("kf",)))
    r.add_post("/cgi-bin/kf/send_msg", _api("kf/send_msg", kf_send, ("kf",)))
    r.add_post("/cgi-bin/kf/customer/batchget", _api("kf/customer/batchget", kf_batchget, ("kf",)))
    r.add_post("/cgi-bin/kf/service_state/get", _api("kf/service_state/get", kf_state_get, ("kf",)))
    r.add_post("/cgi-bin/kf/service_state/trans", _api("kf/service_state/trans", kf_state_trans, ("kf",)))
    r.add_post("/cgi-bin/message/custom/send", _api("message/custom/send", custom_send, ("mp", "mini")))
    r.add_post("/cgi-bin/message/template/send", _api("message/template/send", template_send, ("mp",)))
    r.add_get("/cgi-bin/user/info", _api("user/info", user_info, ("mp",), needs_body=False))
    r.add_post("/cgi-bin/webhook/send", _api("webhook/send", robot))
    r.add_post("/cgi-bin/externalcontact/add_msg_template",
               _api("externalcontact/add_msg_template", add_template, ("contact",)))
    r.add_post("/cgi-bin/externalcontact/get_groupmsg_task",
               _api("externalcontact/get_groupmsg_task", get_task, ("contact",)))
    r.add_post("/cgi-bin/externalcontact/get_groupmsg_send_result",
               _api("externalcontact/get_groupmsg_send_result", get_result, ("contact",)))
    r.add_post("/cgi-bin/externalcontact/remind_groupmsg_send",
               _api("externalcontact/remind_groupmsg_send", remind, ("contact",)))
    r.add_post("/cgi-bin/externalcontact/cancel_groupmsg_send",
               _api("externalcontact/cancel_groupmsg_send", cancel, ("contact",)))
    r.add_post("/cgi-bin/message/send", _api("message/send", app_send, ("app",)))

    # --- control API ----------------------------------------------------------------------------
    def schedule(request: web.Request, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
        return task

    async def say(request: web.Request) -> web.Response:
        """A user writes: {"channel": kf|mp|mini|group, "user": id, "text": ..., "chat_id": for groups,
        "wait": true to answer after the bot acknowledged the callback}."""
        body = await _json_body(request) or {}
        channel, user, text = body.get("channel"), body.get("user"), body.get("text")
        if channel not in ("kf", "mp", "mini", "group") or not isinstance(user, str) or not user \
                or not isinstance(text, str):
            return web.json_response({"error": "need channel (kf/mp/mini/group), user and text"}, status=400)
        signer, now = request.app[SIGNER], int(platform.now())
        if channel == "kf":
            message, msg_token = platform.kf_user_message(user, text)
            signed, key = signer.kf_event(msg_token, now), message["msgid"]
        elif channel == "group":
            group = platform.groups.get(body.get("chat_id") or "")
            if group is None or not group.robot_key:
                return web.json_response({"error": "unknown chat_id or the group has no robot"}, status=400)
            key = "sbxgrp" + secrets.token_hex(10)
            if f"@{config.robot_name}" not in text:
                # the robot's callback only fires when the robot is @-mentioned
                return web.json_response({"msg_id": key, "callback": None})
            signed = signer.group_message(group.chat_id, group.robot_key, user, body.get("name") or user, text,
                                          key, f"{request.scheme}://{request.host}", now)
        else:
            platform.user_acted(channel, user)
            original = config.mp_original_id if channel == "mp" else config.mini_original_id
            key = str(secrets.randbelow(9 * 10**18) + 10**18)
            message = {"ToUserName": original, "FromUserName": user, "CreateTime": now, "MsgType": "text",
                       "Content": text, "MsgId": int(key)}
            signed = signer.account_message(channel, message, now)
        task = schedule(request, request.app[SENDER].deliver(signed, body.get("bot_url")))
        if body.get("wait"):
            return web.json_response({"msg_id": key, "callback": await task})
        return web.json_response({"msg_id": key, "callback": "scheduled"})

    async def event(request: web.Request) -> web.Response:
        """{"channel": mp|mini|kf, "user": id, "event": subscribe|CLICK|user_enter_tempsession|enter_session}"""
        body = await _json_body(request) or {}
        channel, user, name = body.get("channel"), body.get("user"), body.get("event")
        if channel not in ("kf", "mp", "mini") or not isinstance(user, str) or not user or not name:
            return web.json_response({"error": "need channel, user and event"}, status=400)
        signer, now = request.app[SIGNER], int(platform.now())
        if channel == "kf":
            message, msg_token = platform.kf_enter_session(user)
            signed = signer.kf_event(msg_token, now)
        else:
            platform.user_acted(channel, user, kind="event")
            original = config.mp_original_id if channel == "mp" else config.mini_original_id
            message = {"ToUserName": original, "FromUserName": user, "CreateTime": now, "MsgType": "event",
                       "Event": name}
            if name == "user_enter_tempsession":
                message["SessionFrom"] = body.get("session_from", "")
            signed = signer.account_message(channel, message, now)
        task = schedule(request, request.app[SENDER].deliver(signed, body.get("bot_url")))
        return web.json_response({"callback": await task if body.get("wait") else "scheduled"})

    async def deliveries(request: web.Request) -> web.Response:
        items = platform.deliveries
        for field in ("channel", "to", "msgtype"):
            if request.query.get(field):
                items = [d for d in items if str(d.get(field)) == request.query[field]]
        return web.json_response({"deliveries": items}, dumps=lambda d: json.dumps(d, ensure_ascii=False))

    async def callbacks_log(request: web.Request) -> web.Response:
        return web.json_response({"callbacks": request.app[SENDER].log})

    async def requests_log(request: web.Request) -> web.Response:
        return web.json_response({"requests": platform.requests})

    async def faults(request: web.Request) -> web.Response:
        if request.method == "DELETE":
            platform.faults.clear()
            return web.json_response({"faults": []})
        body = await _json_body(request) or {}
        try:
            platform.add_fault(str(body.get("api")), str(body.get("kind")), int(body.get("times", 1)),
                               int(body.get("errcode", -1)), float(body.get("delay_s", 0)))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"faults": platform.faults})

    async def expire_tokens(request: web.Request) -> web.Response:
        return web.json_response({"expired": platform.expire_tokens()})

    async def clock(request: web.Request) -> web.Response:
        body = await _json_body(request) or {}
        platform.advance(float(body.get("advance_s", 0)))
        return web.json_response({"now": platform.now()})

    async def groups(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"groups": [vars(g) for g in platform.groups.values()]})
        body = await _json_body(request) or {}
        if not body.get("chat_id") or not body.get("owner"):
            return web.json_response({"error": "need chat_id and owner"}, status=400)
        group = platform.add_group(body["chat_id"], body.get("name", body["chat_id"]), body["owner"],
                                   robot=bool(body.get("robot", True)), members=body.get("members"),
                                   robot_key=body.get("robot_key"))
        return web.json_response(vars(group))

    async def users(request: web.Request) -> web.Response:
        """{"channel": kf|mp|mini, "user": id, "unionid": ...}: the same person on several channels
        (one open-platform account) has one unionid."""
        body = await _json_body(request) or {}
        if body.get("channel") not in ("kf", "mp", "mini") or not body.get("user") or not body.get("unionid"):
            return web.json_response({"error": "need channel, user and unionid"}, status=400)
        platform.user(body["channel"], body["user"])["unionid"] = str(body["unionid"])
        return web.json_response({"ok": True})

    async def confirm_mass(request: web.Request) -> web.Response:
        body = await _json_body(request) or {}
        return web.json_response(platform.owner_confirms(str(body.get("msgid"))))

    async def verify(request: web.Request) -> web.Response:
        """The GET verification the platform sends when the callback URL is saved."""
        body = await _json_body(request) or {}
        channel = body.get("channel")
        if channel not in ("kf", "mp", "mini", "group"):
            return web.json_response({"error": "need channel"}, status=400)
        echo = str(secrets.randbelow(10**18))
        return web.json_response({"query": request.app[SIGNER].verification(channel, echo), "echo": echo})

    async def reset_kf_cursors(request: web.Request) -> web.Response:
        """The platform forgets the 微信客服 cursors it issued (as after a reset on its side)."""
        return web.json_response({"epoch": platform.reset_kf_cursors()})

    async def kf_service_state(request: web.Request) -> web.Response:
        """A servicer acts in the WeCom client (any state, without the API's transition rules):
        POST {"user": external_userid, "service_state": 0-4, "servicer_userid": staff userid for 3};
        GET ?user= reads the state."""
        if request.method == "GET":
            user = request.query.get("user") or ""
            if ("kf", user) not in platform.users:
                return web.json_response({"error": "unknown 微信客服 customer"}, status=404)
            session = platform.kf_sessions.get((config.open_kfid, user)) or KfSession()
        else:
            body = await _json_body(request) or {}
            try:
                session = platform.set_kf_state(str(body.get("user") or ""), int(body.get("service_state")),
                                                str(body.get("servicer_userid") or ""))
            except (TypeError, ValueError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            user = str(body["user"])
        return web.json_response({"open_kfid": config.open_kfid, "external_userid": user,
                                  "service_state": session.state, "servicer_userid": session.servicer_userid})

    async def reset(request: web.Request) -> web.Response:
        platform.deliveries.clear()
        platform.requests.clear()
        platform.faults.clear()
        request.app[SENDER].log.clear()
        return web.json_response({"reset": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "open_kfid": config.open_kfid})

    r.add_post("/sandbox/say", say)
    r.add_post("/sandbox/event", event)
    r.add_get("/sandbox/deliveries", deliveries)
    r.add_get("/sandbox/callbacks", callbacks_log)
    r.add_get("/sandbox/requests", requests_log)
    r.add_route("*", "/sandbox/faults", faults)
    r.add_post("/sandbox/tokens/expire", expire_tokens)
    r.add_post("/sandbox/clock", clock)
    r.add_route("*", "/sandbox/groups", groups)
    r.add_post("/sandbox/users", users)
    r.add_post("/sandbox/mass/confirm", confirm_mass)
    r.add_post("/sandbox/verify", verify)
    r.add_post("/sandbox/kf/reset_cursors", reset_kf_cursors)
    r.add_route("*", "/sandbox/kf/service_state", kf_service_state)
    r.add_post("/sandbox/reset", reset)
    r.add_get("/sandbox/health", health)
    return app
