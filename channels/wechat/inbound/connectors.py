"""The Rasa InputChannels, one per platform entry point (callback URL /webhooks/<name>/webhook):

  wecom_kf      微信客服 (WeCom customer service)       AES, corp id; messages pulled with kf/sync_msg
  wechat_mp     Official Account (公众号) 客服消息         XML, plaintext or AES ("secure") mode
  wechat_mini   mini-program (小程序) customer service  JSON or XML, plaintext or AES mode
  wecom_group   group robot message callback (@robot)  AES, empty receive id; replies via the webhook
"""
from __future__ import annotations

import time
from typing import List, Optional, Text
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from sanic.request import Request

from channels.wechat.db import session as async_session
from channels.wechat.inbound import kf, replays
from channels.wechat.inbound.callback import WeChatInput, query
from channels.wechat.inbound.crypto import CallbackCrypto, MalformedCallback, PlaintextRefused, callback_crypto
from channels.wechat.inbound.payloads import InboundMessage, event_dedup_key, int_field, parse_json, parse_xml, required
from channels.wechat.models import WeChatGroup, now_utc


class EncryptedXmlInput(WeChatInput):
    """WeCom callbacks: always AES-encrypted XML, signed with msg_signature."""

    def crypto(self) -> CallbackCrypto:
        raise NotImplementedError

    def verify_get(self, request: Request) -> str:
        return self.crypto().verify_and_decrypt(query(request, "msg_signature"), query(request, "timestamp"),
                                                query(request, "nonce"), query(request, "echostr"))

    def decrypted_xml(self, request: Request) -> dict:
        envelope = parse_xml(request.body)
        plain = self.crypto().verify_and_decrypt(query(request, "msg_signature"), query(request, "timestamp"),
                                                 query(request, "nonce"), envelope.get("Encrypt"))
        return parse_xml(plain.encode("utf-8"))


class WeComKfInput(EncryptedXmlInput):
    channel = "wecom_kf"

    @classmethod
    def name(cls) -> Text:
        return "wecom_kf"

    def configured(self) -> bool:
        return self.runtime.config.kf is not None

    def crypto(self) -> CallbackCrypto:
        c = self.runtime.config
        return callback_crypto(c.kf.callback.token, c.kf.callback.aes_key, c.kf.corp_id, c.callback_max_age_s)

    async def read_post(self, request: Request) -> List[InboundMessage]:
        data = self.decrypted_xml(request)
        if data.get("MsgType") == "event" and data.get("Event") == "kf_msg_or_event":
            open_kfid = required(data, "OpenKfId")
            # the callback is only a doorbell: pull the messages after acknowledging it
            kf.schedule_sync(self.runtime, open_kfid, data.get("Token") or None)
        return []


class AccountInput(WeChatInput):
    """Official Account and mini-program: the same signing, message format and send API."""

    def account(self):
        return getattr(self.runtime.config, self.channel)

    def configured(self) -> bool:
        return self.account() is not None

    def crypto(self) -> CallbackCrypto:
        account = self.account()
        return callback_crypto(account.callback.token, account.callback.aes_key, account.app_id,
                               self.runtime.config.callback_max_age_s, corp=False)

    def verify_get(self, request: Request) -> str:
        self.crypto().verify_plain(query(request, "signature"), query(request, "timestamp"), query(request, "nonce"))
        echo = query(request, "echostr")
        if not echo:
            raise MalformedCallback("echostr missing")
        return echo

    def _parse(self, body: bytes) -> dict:
        return parse_json(body) if body.lstrip()[:1] == b"{" else parse_xml(body)

    async def read_post(self, request: Request) -> List[InboundMessage]:
        crypto = self.crypto()
        timestamp, nonce = query(request, "timestamp"), query(request, "nonce")
        if crypto.secure:
            # secure (or compatible) mode: only the encrypted body counts, under a msg_signature that
            # covers it. The plain `signature` covers token, timestamp and nonce only: a plaintext
            # body is never taken while an EncodingAESKey is configured
            if query(request, "encrypt_type") != "aes":
                raise PlaintextRefused("plaintext callback while an EncodingAESKey is configured")
            envelope = self._parse(request.body)
            if not envelope.get("Encrypt"):
                raise PlaintextRefused("no Encrypt field while an EncodingAESKey is configured")
            plain = crypto.verify_and_decrypt(query(request, "msg_signature"), timestamp, nonce, envelope["Encrypt"])
            data = self._parse(plain.encode("utf-8"))
        else:
            if query(request, "encrypt_type") == "aes":
                raise MalformedCallback("encrypted callback but no EncodingAESKey configured")
            sent_at = crypto.verify_plain(query(request, "signature"), timestamp, nonce)
            # the signature does not cover the body: it is good for this body only
            await replays.first_use_or_retry(self.name(), sent_at, nonce, request.body,
                                             self.runtime.config.callback_max_age_s)
            data = self._parse(request.body)
        return [self.message(data)]

    def message(self, data: dict) -> InboundMessage:
        sender = required(data, "FromUserName")
        created = int_field(data, "CreateTime")
        msg_type = required(data, "MsgType").lower()
        account = str(data.get("ToUserName") or "")
        if msg_type == "event":
            event = required(data, "Event")
            return InboundMessage(self.channel, sender, event_dedup_key(sender, created, event), "event", created,
                                  account=account, event=event)
        text = data.get("Content") if msg_type == "text" else None
        if msg_type == "text" and not isinstance(text, str):
            text = ""
        return InboundMessage(self.channel, sender, required(data, "MsgId"), msg_type, created, account=account,
                              text=text)


class OfficialAccountInput(AccountInput):
    channel = "mp"

    @classmethod
    def name(cls) -> Text:
        return "wechat_mp"


class MiniProgramInput(AccountInput):
    channel = "mini"

    @classmethod
    def name(cls) -> Text:
        return "wechat_mini"


class WeComGroupInput(EncryptedXmlInput):
    """Group robot callbacks: WeCom calls the robot's callback URL when a member @-mentions it, with
    the group's webhook URL for the answer."""

    channel = "group"

    @classmethod
    def name(cls) -> Text:
        return "wecom_group"

    def configured(self) -> bool:
        return self.runtime.config.group.callback is not None

    def crypto(self) -> CallbackCrypto:
        callback = self.runtime.config.group.callback
        # robot callbacks are encrypted with an empty receive id
        return callback_crypto(callback.token, callback.aes_key, "", self.runtime.config.callback_max_age_s)

    async def read_post(self, request: Request) -> List[InboundMessage]:
        data = self.decrypted_xml(request)
        sender = data.get("From") if isinstance(data.get("From"), dict) else {}
        user = required(sender, "UserId")
        chat_id = required(data, "ChatId")
        msg_type = required(data, "MsgType").lower()
        text_node = data.get("Text") if isinstance(data.get("Text"), dict) else {}
        text = text_node.get("Content", "") if msg_type == "text" else None
        robot_key = _webhook_key(data.get("WebhookUrl"))
        message = InboundMessage("group", user, required(data, "MsgId"), msg_type, int(time.time()), account=chat_id,
                                 text=text, extra={"name": str(sender.get("Name") or "")})
        message.extra["robot_key"] = robot_key
        return [message]

    async def accept(self, messages: List[InboundMessage]) -> None:
        for message in messages:
            robot_key = message.extra.pop("robot_key", None)
            if robot_key:
                await remember_robot(message.account, robot_key)
        await super().accept(messages)


def _webhook_key(url) -> Optional[str]:
    if not isinstance(url, str) or not url:
        return None
    keys = parse_qs(urlsplit(url).query).get("key")
    return keys[0] if keys else None


async def remember_robot(chat_id: str, robot_key: str) -> None:
    """The callback tells us the group's robot webhook: store it so replies and proactive posts can use it."""
    async with async_session() as session:
        group = await session.get(WeChatGroup, chat_id)
        if group is None:
            session.add(WeChatGroup(chat_id=chat_id, name="", robot_key=robot_key, delivery_mode="robot"))
        elif group.robot_key != robot_key:
            group.robot_key, group.updated_at = robot_key, now_utc()
        else:
            return
        try:
            await session.commit()
        except sa.exc.IntegrityError:
            await session.rollback()
