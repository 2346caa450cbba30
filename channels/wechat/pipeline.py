"""From an inbox row to replies in the outbox: claim the row, resolve who is talking, open the reply
window, clean and split the text like every connector, let Rasa answer, and store the replies
(keyed by the inbox row, so a message processed twice after a crash is still answered once)."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Awaitable, Callable, List, Optional

from rasa.core.channels.channel import UserMessage

from channels.wechat.db import session as async_session
from bot.settings import get_settings
from channels import inbound_text
from channels.multi_request import split_requests
from channels.wechat import identity, outbox, windows
from channels.wechat.api import PlatformError
from channels.wechat.groups import detect
from channels.wechat.output import ReplyCollector, reply_texts, text_messages
from channels.wechat.payloads import InboundMessage

logger = logging.getLogger("channels.wechat.pipeline")
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
AGENT_WAIT_S = 120.0
# the channel name an outbox row uses for replies to a conversation of this connector
OUTBOUND_CHANNEL = {"wecom_kf": "wecom_kf", "mp": "mp", "mini": "mini", "group": "robot"}
# input channel names as Rasa records them (the InputChannel names)
INPUT_CHANNEL = {"wecom_kf": "wecom_kf", "mp": "wechat_mp", "mini": "wechat_mini", "group": "wecom_group"}
# Official Account follow: greet the new follower (the follow opens a short reply window)
GREET_EVENTS = {("mp", "subscribe")}
GREET_PAYLOAD = "/greet"


def conversation_id(message: InboundMessage) -> str:
    if message.channel == "group":
        # a member's conversation in one group; never a customer identity: the bot must not show a
        # customer's orders in front of the whole group
        return f"group:{message.account}:{message.user_id}"
    return f"{message.channel}:{message.user_id}"


class Pipeline:
    def __init__(self, runtime) -> None:
        self.runtime = runtime

    async def process(self, row_id: int, message: Optional[InboundMessage] = None, claimed: bool = False) -> None:
        rt = self.runtime
        if not claimed or message is None:
            message = await rt.inbox.claim(row_id, rt.worker.name, message)
        if message is None:
            return  # another task or process has it, or it is done
        try:
            if not await self._agent_ready():
                await rt.inbox.finish(row_id, "received", "the model was not loaded yet")
                return
            if not await self._handle(row_id, message):
                await rt.inbox.finish(row_id, "ignored")
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
            logger.exception("wechat message handling failed", extra={"inbound_id": row_id,
                                                                      "channel": message.channel})
            await rt.inbox.finish(row_id, "failed", f"{type(exc).__name__}: {exc}")

    async def _agent_ready(self) -> bool:
        deadline = asyncio.get_running_loop().time() + AGENT_WAIT_S
        while True:
            agent = self.runtime.agent()
            if agent is not None and agent.is_ready():
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.5)

    async def _handle(self, row_id: int, message: InboundMessage) -> bool:
        rt = self.runtime
        conversation = conversation_id(message)
        customer_id = None
        if message.channel in ("wecom_kf", "mp", "mini"):
            kind = "event" if message.msg_type == "event" else "message"
            async with async_session() as session:
                known = await identity.find(session, message.channel, message.user_id)
                customer_id = known.customer_id if known is not None else None
                await windows.user_acted(session, message.channel, message.user_id, kind,
                                         at=datetime.utcfromtimestamp(message.sent_at), account=message.account)
            if customer_id is None:
                customer_id = await self._new_customer(message)
        texts = await self._texts(message)
        if not texts:
            return False
        collector = ReplyCollector(message.channel)
        metadata = {"wechat": {"channel": message.channel, "msgtype": message.msg_type, "account": message.account}}
        for n, text in enumerate(texts):
            await rt.on_new_message(UserMessage(text, collector, conversation, input_channel=INPUT_CHANNEL[message.channel],
                                                message_id=f"{message.channel}-{message.dedup_key}-{n}"[:120],
                                                metadata=metadata))
        replies = reply_texts(collector.messages)
        mention = [message.user_id] if message.channel == "group" else None
        recipient = message.account if message.channel == "group" else message.user_id
        outgoing = text_messages(replies, channel=OUTBOUND_CHANNEL[message.channel], recipient=recipient,
                                 key_prefix=f"wxin{row_id}", account=message.account if message.channel == "wecom_kf"
                                 else None, conversation_id=conversation, customer_id=customer_id, mention=mention)
        # the replies and "answered" in one commit
        await outbox.enqueue(outgoing, together_with=[rt.inbox.finish_statement(row_id, "done")])
        rt.worker.wake()
        logger.info("wechat message answered", extra={"inbound_id": row_id, "channel": message.channel,
                                                      "requests": len(texts), "replies": len(outgoing)})
        return True

    async def _texts(self, message: InboundMessage) -> List[str]:
        if message.msg_type == "event":
            return [GREET_PAYLOAD] if (message.channel, message.event) in GREET_EVENTS else []
        raw = message.text or ""
        if message.channel == "group":
            group = self.runtime.config.group
            addressing = detect(raw, group.bot_names, group.prefixes, group.keywords)
            if not addressing.addressed:
                return []
            raw = addressing.text
        if message.msg_type != "text":
            # a picture, voice message or file: the bot cannot read it and says so (empty_message)
            return [inbound_text.EMPTY_PAYLOAD]
        cleaned = inbound_text.clean(raw, get_settings().im_max_message_chars)
        if cleaned.empty:
            return [cleaned.text]
        agent = self.runtime.agent()
        return await split_requests(cleaned.text, agent.parse_message)

    async def _new_customer(self, message: InboundMessage) -> Optional[int]:
        unionid = await self._unionid(message)  # a platform call: outside any database session
        async with async_session() as session:
            return await identity.resolve(session, message.channel, message.user_id, unionid)

    async def _unionid(self, message: InboundMessage) -> Optional[str]:
        """Asked of the platform once, for a user seen for the first time (mini-program pushes carry
        none; the shop's mini-program backend can link its users with identity.link)."""
        client = self.runtime.client
        try:
            if message.channel == "wecom_kf":
                return (await client.kf_customer_unionids([message.user_id])).get(message.user_id)
            if message.channel == "mp":
                return await client.mp_unionid(message.user_id)
        except PlatformError as exc:
            logger.warning("unionid lookup failed", extra={"channel": message.channel, "errcode": exc.errcode,
                                                           "kind": exc.kind})
        return None

