"""Async client of the platform's HTTP APIs (WeCom: qyapi.weixin.qq.com, Official Account and
mini-program: api.weixin.qq.com; both bases configurable so they can point at the sandbox).

Every call has a timeout and a retry policy. A rejected access_token (40001 / 40014 / 42001) is
refreshed through the token cache and the call repeated once; -1, 45009, HTTP 5xx and network
errors are retried with exponential backoff as the policy allows. What is left is raised as a
PlatformError whose `kind` tells the caller what to do with it.

A call that failed before it had a connection (refused, unreachable, TLS, the proxy) was not seen
by the platform and is retried. One that failed after (the connection broke, the answer timed out,
was cut or too large) may have been executed by the platform: it is only repeated when the call is
idempotent (kf/send_msg with its msgid, reads); otherwise the error says `maybe_delivered`.

The calls share one aiohttp session per client (channels/wechat/outbound/http.py) that honours
HTTPS_PROXY / HTTP_PROXY / NO_PROXY: the platforms accept calls only from whitelisted addresses,
which often means a proxy with a fixed egress IP.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import aiohttp

from channels.wechat.config import WeChatConfig
from channels.wechat.outbound import errcodes as E
from channels.wechat.outbound.http import Attempt, Sessions, may_have_been_sent, read_limited, text_of
from channels.wechat.outbound.tokens import TokenCache, TokenSource

logger = logging.getLogger("channels.wechat.outbound.platform")
Json = Dict[str, Any]


class PlatformError(Exception):
    """kind: token (credentials wrong), transient (retry later), refused (the platform will not deliver
    to this recipient now), rate_limited, permanent (the request itself is wrong), network."""

    def __init__(self, api: str, kind: str, errcode: Optional[int] = None, errmsg: str = "",
                 maybe_delivered: bool = False) -> None:
        super().__init__(f"{api}: {kind} {errcode if errcode is not None else ''} {errmsg}".strip())
        self.api = api
        self.kind = kind
        self.errcode = errcode
        self.errmsg = errmsg
        self.maybe_delivered = maybe_delivered

    @property
    def refusal_reason(self) -> Optional[str]:
        return E.REFUSAL_REASONS.get(self.errcode) if self.errcode is not None else None

    @property
    def failure_reason(self) -> Optional[str]:
        """The text for staff of a known permanent failure (E.FAILURE_REASONS), else None."""
        return E.FAILURE_REASONS.get(self.errcode) if self.errcode is not None else None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    # the same request may be repeated after a timeout (the platform deduplicates it, or it only reads)
    idempotent: bool = False

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** attempt) * random.uniform(0.8, 1.2)


READ = RetryPolicy(attempts=3, idempotent=True)
# the outbox retries persistently itself: one attempt per claim (plus the token refresh)
ONE_SHOT = RetryPolicy(attempts=1)
ONE_SHOT_IDEMPOTENT = RetryPolicy(attempts=1, idempotent=True)


# 微信客服 session states (kf/service_state): new (the customer wrote), the API's assistant, waiting in the
# pool, a servicer in the WeCom client (servicer_userid), ended. kf/send_msg works in NEW and BOT only.
KF_NEW, KF_BOT, KF_POOL, KF_HUMAN, KF_ENDED = 0, 1, 2, 3, 4
KF_SENDABLE_STATES = frozenset({KF_NEW, KF_BOT})

_JSON_CONTENT = {"Content-Type": "application/json"}
# the platform's answers are small JSON documents; a larger one (after decompression) is refused
MAX_ANSWER_BYTES = 1024 * 1024
CONNECTIONS = 100
KEEPALIVE_S = 15.0


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class PlatformClient:
    def __init__(self, config: WeChatConfig, tokens: TokenCache) -> None:
        self.config = config
        self.tokens = tokens
        self._sessions = Sessions(limit=CONNECTIONS, keepalive_s=KEEPALIVE_S, timeout_s=config.api_timeout_s,
                                  trust_env=True)
        self.sources: Dict[str, TokenSource] = {}
        self._register_sources()

    # --- lifecycle ------------------------------------------------------------------------------
    async def close(self) -> None:
        await self._sessions.close()

    # --- tokens ---------------------------------------------------------------------------------
    def _register_sources(self) -> None:
        c = self.config
        wecom = {"kf": c.kf and (c.kf.corp_id, c.kf.secret),
                 "contact": c.contact and (c.contact.corp_id, c.contact.secret),
                 "app": c.app and (c.app.corp_id, c.app.secret)}
        for kind, creds in wecom.items():
            if creds:
                corp, secret = creds
                self.sources[kind] = TokenSource(f"wecom:{corp}:{kind}", self._wecom_fetcher(kind, corp, secret))
        for account in (c.mp, c.mini):
            if account:
                self.sources[account.kind] = TokenSource(f"{account.kind}:{account.app_id}",
                                                         self._account_fetcher(account.kind, account.app_id,
                                                                               account.secret))

    def _wecom_fetcher(self, kind: str, corp_id: str, secret: str):
        async def fetch() -> Tuple[str, int]:
            data = await self._request("gettoken", "GET", self.config.work_api_base + "/cgi-bin/gettoken",
                                       {"corpid": corp_id, "corpsecret": secret}, None, READ, token_call=True)
            return data["access_token"], int(data.get("expires_in") or 7200)

        return fetch

    def _account_fetcher(self, kind: str, app_id: str, secret: str):
        async def fetch() -> Tuple[str, int]:
            data = await self._request("token", "GET", self.config.mp_api_base + "/cgi-bin/token",
                                       {"grant_type": "client_credential", "appid": app_id, "secret": secret},
                                       None, READ, token_call=True)
            return data["access_token"], int(data.get("expires_in") or 7200)

        return fetch

    def source(self, kind: str) -> TokenSource:
        try:
            return self.sources[kind]
        except KeyError:
            raise PlatformError(kind, "token", errmsg=f"connector '{kind}' is not configured")

    # --- the call -------------------------------------------------------------------------------
    async def call(self, api: str, method: str, url: str, *, kind: Optional[str] = None,
                   params: Optional[Json] = None, body: Optional[Json] = None,
                   policy: RetryPolicy = READ) -> Json:
        """A platform API call with the access_token of `kind` (None: the URL carries its own key)."""
        source = self.source(kind) if kind else None
        token = await self.tokens.get(source) if source else None
        refreshed = False
        while True:
            query = dict(params or {})
            if token:
                query["access_token"] = token
            try:
                return await self._request(api, method, url, query, body, policy)
            except PlatformError as exc:
                if source and token and exc.kind == "token" and not refreshed:
                    logger.info("access_token rejected, refreshing", extra={"api": api, "errcode": exc.errcode})
                    token = await self.tokens.refresh(source, token)
                    refreshed = True
                    continue
                raise

    async def _request(self, api: str, method: str, url: str, query: Json, body: Optional[Json],
                       policy: RetryPolicy, token_call: bool = False) -> Json:
        last: Optional[PlatformError] = None
        for attempt in range(policy.attempts):
            if attempt:
                await asyncio.sleep(policy.delay(attempt - 1))
            progress = Attempt()
            try:
                status, text = await self._exchange(method, url, query, body, progress)
            except aiohttp.InvalidURL:
                raise  # a configuration mistake (the API base), not the network
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # only the exception's type is kept: its text can hold the URL, with the access_token
                if not may_have_been_sent(exc, progress):
                    # no connection was made: the platform cannot have seen the request
                    last = PlatformError(api, "network", errmsg=type(exc).__name__)
                    logger.warning("platform unreachable", extra={"api": api, "attempt": attempt + 1,
                                                                  "error": type(exc).__name__})
                    continue
                last = PlatformError(api, "network", errmsg=type(exc).__name__, maybe_delivered=True)
                logger.warning("platform call failed mid-request", extra={"api": api, "attempt": attempt + 1,
                                                                         "error": type(exc).__name__})
                if not policy.idempotent:
                    raise last
                continue
            if status >= 500:
                last = PlatformError(api, "transient", errmsg=f"HTTP {status}")
                logger.warning("platform HTTP error", extra={"api": api, "status": status, "attempt": attempt + 1})
                continue
            if status != 200:
                raise PlatformError(api, "permanent", errmsg=f"HTTP {status}")
            try:
                payload = json.loads(text)
            except ValueError:
                last = PlatformError(api, "transient", errmsg="answer is not JSON")
                continue
            if not isinstance(payload, dict):
                raise PlatformError(api, "permanent", errmsg="answer is not a JSON object")
            errcode = payload.get("errcode", 0)
            try:
                errcode = int(errcode)
            except (TypeError, ValueError):
                raise PlatformError(api, "permanent", errmsg=f"errcode {errcode!r}")
            if errcode == E.OK:
                return payload
            errmsg = _shorten(str(payload.get("errmsg", "")))
            if errcode in E.TOKEN_ERRORS:
                # on the token endpoint itself 40001 means a wrong secret: nothing to refresh
                raise PlatformError(api, "permanent" if token_call else "token", errcode, errmsg)
            if errcode in E.TRANSIENT_ERRORS:
                last = PlatformError(api, "transient", errcode, errmsg)
                logger.warning("platform busy", extra={"api": api, "errcode": errcode, "attempt": attempt + 1})
                continue
            if errcode == E.ROBOT_RATE_LIMIT:
                raise PlatformError(api, "rate_limited", errcode, errmsg)
            if errcode in E.REFUSAL_REASONS:
                raise PlatformError(api, "refused", errcode, errmsg)
            raise PlatformError(api, "permanent", errcode, errmsg)
        assert last is not None
        raise last

    async def _exchange(self, method: str, url: str, query: Json, body: Optional[Json],
                        progress: Attempt) -> Tuple[int, str]:
        """One HTTP request: the answer's status and text (aiohttp's exceptions as they come)."""
        session = await self._sessions.get()
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
        async with session.request(method, url, params=query, data=data,
                                   headers=_JSON_CONTENT if data is not None else None,
                                   timeout=aiohttp.ClientTimeout(total=self.config.api_timeout_s),
                                   allow_redirects=False, trace_request_ctx=progress) as resp:
            raw = await read_limited(resp, MAX_ANSWER_BYTES)
            return resp.status, text_of(raw, resp.charset)

    # --- 微信客服 ---------------------------------------------------------------------------------
    async def kf_sync_msg(self, open_kfid: str, cursor: str, token: Optional[str], limit: int = 1000) -> Json:
        body: Json = {"cursor": cursor, "limit": limit, "open_kfid": open_kfid}
        if token:
            body["token"] = token
        return await self.call("kf/sync_msg", "POST", self.config.work_api_base + "/cgi-bin/kf/sync_msg",
                               kind="kf", body=body, policy=READ)

    async def kf_send_msg(self, touser: str, open_kfid: str, msgid: str, msgtype: str, content: Json,
                          policy: RetryPolicy = ONE_SHOT_IDEMPOTENT) -> Json:
        body = {"touser": touser, "open_kfid": open_kfid, "msgid": msgid, "msgtype": msgtype, msgtype: content}
        return await self.call("kf/send_msg", "POST", self.config.work_api_base + "/cgi-bin/kf/send_msg",
                               kind="kf", body=body, policy=policy)

    async def kf_customer_unionids(self, external_userids: List[str]) -> Dict[str, str]:
        data = await self.call("kf/customer/batchget", "POST",
                               self.config.work_api_base + "/cgi-bin/kf/customer/batchget", kind="kf",
                               body={"external_userid_list": external_userids, "need_enter_session_context": 0})
        return {c["external_userid"]: c["unionid"] for c in data.get("customer_list", []) if c.get("unionid")}

    async def kf_service_state_get(self, open_kfid: str, external_userid: str) -> Json:
        """The session's state: {"service_state": 0-4, "servicer_userid": in state 3}."""
        return await self.call("kf/service_state/get", "POST",
                               self.config.work_api_base + "/cgi-bin/kf/service_state/get", kind="kf",
                               body={"open_kfid": open_kfid, "external_userid": external_userid}, policy=READ)

    async def kf_service_state_trans(self, open_kfid: str, external_userid: str, service_state: int,
                                     servicer_userid: Optional[str] = None, policy: RetryPolicy = ONE_SHOT) -> Json:
        """Move the session (servicer_userid required for state 3); the answer carries `msg_code` when
        moving to 3 or 4. Not repeated by default: a repeated move can fail (4 -> 4) although the first
        one happened; after an error kf_service_state_get tells where the session is."""
        body: Json = {"open_kfid": open_kfid, "external_userid": external_userid, "service_state": service_state}
        if servicer_userid:
            body["servicer_userid"] = servicer_userid
        return await self.call("kf/service_state/trans", "POST",
                               self.config.work_api_base + "/cgi-bin/kf/service_state/trans", kind="kf",
                               body=body, policy=policy)

    # --- Official Account / mini-program --------------------------------------------------------------
    async def custom_send(self, kind: str, touser: str, msgtype: str, content: Json,
                          policy: RetryPolicy = ONE_SHOT) -> Json:
        return await self.call("message/custom/send", "POST", self.config.mp_api_base + "/cgi-bin/message/custom/send",
                               kind=kind, body={"touser": touser, "msgtype": msgtype, msgtype: content}, policy=policy)

    async def template_send(self, touser: str, content: Json, policy: RetryPolicy = ONE_SHOT) -> Json:
        """An Official Account template message (message/template/send): a service notice the
        follower gets outside the 48 h window; `content` {"template_id", "data": {name: text}, "url"}."""
        body = {"touser": touser, "template_id": content.get("template_id"),
                "data": {k: {"value": v} for k, v in (content.get("data") or {}).items()}}
        if content.get("url"):
            body["url"] = content["url"]
        return await self.call("message/template/send", "POST",
                               self.config.mp_api_base + "/cgi-bin/message/template/send", kind="mp", body=body,
                               policy=policy)

    async def mp_unionid(self, openid: str) -> Optional[str]:
        data = await self.call("user/info", "GET", self.config.mp_api_base + "/cgi-bin/user/info", kind="mp",
                               params={"openid": openid, "lang": "zh_CN"})
        return data.get("unionid")

    # --- group robot ------------------------------------------------------------------------------------
    async def robot_send(self, robot_key: str, msgtype: str, content: Json, policy: RetryPolicy = ONE_SHOT) -> Json:
        # the key is a credential: it travels in the query and is never logged
        return await self.call("webhook/send", "POST", self.config.work_api_base + "/cgi-bin/webhook/send",
                               params={"key": robot_key}, body={"msgtype": msgtype, msgtype: content}, policy=policy)

    # --- mass-send tasks ----------------------------------------------------------------------------------
    async def add_msg_template(self, body: Json, policy: RetryPolicy = ONE_SHOT) -> Json:
        return await self.call("externalcontact/add_msg_template", "POST",
                               self.config.work_api_base + "/cgi-bin/externalcontact/add_msg_template",
                               kind="contact", body=body, policy=policy)

    async def get_groupmsg_task(self, msgid: str) -> Json:
        return await self.call("externalcontact/get_groupmsg_task", "POST",
                               self.config.work_api_base + "/cgi-bin/externalcontact/get_groupmsg_task",
                               kind="contact", body={"msgid": msgid, "limit": 1000})

    async def get_groupmsg_send_result(self, msgid: str, userid: str) -> Json:
        return await self.call("externalcontact/get_groupmsg_send_result", "POST",
                               self.config.work_api_base + "/cgi-bin/externalcontact/get_groupmsg_send_result",
                               kind="contact", body={"msgid": msgid, "userid": userid, "limit": 1000})

    async def remind_groupmsg_send(self, msgid: str) -> Json:
        return await self.call("externalcontact/remind_groupmsg_send", "POST",
                               self.config.work_api_base + "/cgi-bin/externalcontact/remind_groupmsg_send",
                               kind="contact", body={"msgid": msgid}, policy=ONE_SHOT)

    async def cancel_groupmsg_send(self, msgid: str) -> Json:
        return await self.call("externalcontact/cancel_groupmsg_send", "POST",
                               self.config.work_api_base + "/cgi-bin/externalcontact/cancel_groupmsg_send",
                               kind="contact", body={"msgid": msgid}, policy=RetryPolicy(idempotent=True))

    # --- app messages to staff ------------------------------------------------------------------------------
    async def app_message_send(self, touser: str, msgtype: str, content: Json, policy: RetryPolicy = ONE_SHOT) -> Json:
        assert self.config.app is not None
        body = {"touser": touser, "msgtype": msgtype, "agentid": self.config.app.agent_id, msgtype: content}
        return await self.call("message/send", "POST", self.config.work_api_base + "/cgi-bin/message/send",
                               kind="app", body=body, policy=policy)
