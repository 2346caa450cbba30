"""Callbacks as the platform sends them: the message (or the 微信客服 event) built in the channel's
format, signed and encrypted with the shop's callback Token and EncodingAESKey, POSTed to the bot,
and sent again when the bot does not answer 200 within the platform's timeout (3 retries)."""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlencode

import aiohttp

from channels.wechat.inbound.crypto import CallbackCrypto, callback_crypto, encrypted_xml_envelope
from channels.wechat.outbound.http import Sessions, read_limited, text_of
from channels.wechat.sandbox.config import CALLBACK_PATHS, SandboxConfig


def cdata(value: Any) -> str:
    return "<![CDATA[" + str(value).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def xml_document(fields: Dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if isinstance(value, dict):
            parts.append(f"<{key}>{''.join(f'<{k}>{cdata(v)}</{k}>' for k, v in value.items())}</{key}>")
        elif isinstance(value, int):
            parts.append(f"<{key}>{value}</{key}>")
        else:
            parts.append(f"<{key}>{cdata(value)}</{key}>")
    return "<xml>" + "".join(parts) + "</xml>"


@dataclass
class SignedRequest:
    """One callback exactly as it goes over the wire (retries repeat it byte for byte)."""

    channel: str
    path: str
    query: Dict[str, str]
    body: bytes
    content_type: str
    key: str  # what the test or CLI calls this message by

    def url(self, base: str) -> str:
        return base.rstrip("/") + self.path + "?" + urlencode(self.query)


class CallbackSigner:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    def _crypto(self, channel: str) -> CallbackCrypto:
        c = self.config
        if channel == "kf":
            return callback_crypto(c.kf_token, c.kf_aes_key, c.corp_id)
        if channel == "group":
            return callback_crypto(c.robot_token, c.robot_aes_key, "")
        if channel == "mp":
            return callback_crypto(c.mp_token, c.mp_aes_key or None, c.mp_app_id, corp=False)
        return callback_crypto(c.mini_token, c.mini_aes_key or None, c.mini_app_id, corp=False)

    def kf_event(self, msg_token: str, timestamp: Optional[int] = None) -> SignedRequest:
        c = self.config
        created = timestamp or int(time.time())
        plain = xml_document({"ToUserName": c.corp_id, "CreateTime": created, "MsgType": "event",
                              "Event": "kf_msg_or_event", "Token": msg_token, "OpenKfId": c.open_kfid})
        return self._encrypted("kf", plain, c.corp_id, str(created), key=msg_token)

    def group_message(self, chat_id: str, robot_key: str, user_id: str, name: str, text: str, msg_id: str,
                      base_url: str, timestamp: Optional[int] = None) -> SignedRequest:
        plain = xml_document({
            "WebhookUrl": f"{base_url.rstrip('/')}/cgi-bin/webhook/send?key={robot_key}",
            "ChatId": chat_id, "ChatType": "group",
            "GetChatInfoUrl": f"{base_url.rstrip('/')}/cgi-bin/webhook/get_chat_info?code={secrets.token_hex(8)}",
            "From": {"UserId": user_id, "Name": name, "Alias": ""},
            "MsgType": "text", "Text": {"Content": text}, "MsgId": msg_id})
        return self._encrypted("group", plain, "", str(timestamp or int(time.time())), key=msg_id)

    def account_message(self, channel: str, message: Dict[str, Any], timestamp: Optional[int] = None
                        ) -> SignedRequest:
        """Official Account (XML) or mini-program (JSON or XML) push, plaintext or secure mode."""
        c = self.config
        ts = str(timestamp or int(time.time()))
        nonce = str(secrets.randbelow(10**9))
        crypto = self._crypto(channel)
        as_json = channel == "mini" and c.mini_format == "json"
        plain = json.dumps(message, ensure_ascii=False) if as_json else xml_document(message)
        key = str(message.get("MsgId") or f"{message['FromUserName']}:{message['CreateTime']}")
        query = {"signature": crypto.plain_signature(ts, nonce), "timestamp": ts, "nonce": nonce,
                 "openid": message["FromUserName"]}
        content_type = "application/json" if as_json else "text/xml"
        if not crypto.secure:
            return SignedRequest(channel, CALLBACK_PATHS[channel], query, plain.encode("utf-8"), content_type, key)
        encrypted, msg_signature, _, _ = crypto.encrypt(plain, nonce, ts)
        query.update({"encrypt_type": "aes", "msg_signature": msg_signature})
        if as_json:
            body = json.dumps({"ToUserName": message["ToUserName"], "Encrypt": encrypted}).encode()
        else:
            body = encrypted_xml_envelope(encrypted, message["ToUserName"]).encode()
        return SignedRequest(channel, CALLBACK_PATHS[channel], query, body, content_type, key)

    def _encrypted(self, channel: str, plain: str, to_user: str, timestamp: str, key: str) -> SignedRequest:
        crypto = self._crypto(channel)
        nonce = str(secrets.randbelow(10**9))
        encrypted, signature, _, _ = crypto.encrypt(plain, nonce, timestamp)
        body = encrypted_xml_envelope(encrypted, to_user).encode()
        query = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}
        return SignedRequest(channel, CALLBACK_PATHS[channel], query, body, "text/xml", key)

    def verification(self, channel: str, echo: str) -> Dict[str, str]:
        """The GET the platform sends when an operator saves the callback URL."""
        crypto = self._crypto(channel)
        ts, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        if channel in ("kf", "group"):
            encrypted, signature, _, _ = crypto.encrypt(echo, nonce, ts)
            return {"msg_signature": signature, "timestamp": ts, "nonce": nonce, "echostr": encrypted}
        return {"signature": crypto.plain_signature(ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": echo}


# the bot answers a callback with "success", "" or a short error
MAX_ANSWER_BYTES = 64 * 1024
# below the gateway's (Sanic's) 5 s keep-alive: a kept connection is never reused just as it closes
KEEPALIVE_S = 3.0


class CallbackSender:
    """POSTs callbacks to the bot like the platform: 5 s timeout, up to 3 retries of the same request.
    The bot is called directly, never through a proxy."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.log: List[Dict[str, Any]] = []
        self._sessions = Sessions(limit=200, keepalive_s=KEEPALIVE_S, timeout_s=config.callback_timeout_s,
                                  trust_env=False)

    async def close(self) -> None:
        await self._sessions.close()

    async def _post(self, request: SignedRequest, base: str) -> Tuple[int, str]:
        session = await self._sessions.get()
        async with session.post(request.url(base), data=request.body,
                                headers={"Content-Type": request.content_type},
                                timeout=aiohttp.ClientTimeout(total=self.config.callback_timeout_s),
                                allow_redirects=False) as resp:
            return resp.status, text_of(await read_limited(resp, MAX_ANSWER_BYTES), resp.charset)

    async def deliver(self, request: SignedRequest, bot_url: Optional[str] = None) -> Dict[str, Any]:
        base = bot_url or self.config.bot_url
        if not base:
            return {"key": request.key, "delivered": False, "reason": "no bot_url configured"}
        attempts: List[Dict[str, Any]] = []
        for attempt in range(1 + self.config.callback_retries):
            started = time.perf_counter()
            entry: Dict[str, Any] = {"channel": request.channel, "key": request.key, "attempt": attempt + 1}
            try:
                status, text = await self._post(request, base)
                entry.update(status=status, body=text[:200])
            except asyncio.TimeoutError:
                entry.update(status=None, error="timeout")
            except aiohttp.ClientError as exc:
                entry.update(status=None, error=type(exc).__name__)
            entry["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
            # the Official Account shows users "该公众号暂时无法提供服务" for any answer but "" / "success"
            entry["accepted"] = entry.get("status") == 200 and entry.get("body", "") in ("", "success")
            attempts.append(entry)
            self.log.append(entry)
            if entry["accepted"] or entry.get("status") in (400, 403):
                break
            if attempt < self.config.callback_retries and self.config.callback_retry_delay_s:
                await asyncio.sleep(self.config.callback_retry_delay_s)
        return {"key": request.key, "delivered": attempts[-1]["accepted"], "attempts": attempts}
