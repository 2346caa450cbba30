"""From an inbox row to replies in the outbox: claim the row, resolve who is talking, open the reply
window, clean the text like every connector, let the Rasa server answer it (over its relay channel,
channels/wechat/relay.py), and store the replies (keyed by the inbox row, so a message processed
twice after a crash is still answered once)."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, Dict, Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import get_settings
from channels import inbound_text
from channels.wechat import db
from channels.wechat.conversation import identity
from channels.wechat.conversation.addressing import detect
from channels.wechat.conversation.relay_client import RasaNotReady
from channels.wechat.conversation.replies import reply_texts, text_messages
from channels.wechat.inbound import inbox
from channels.wechat.inbound.payloads import InboundMessage
from channels.wechat.outbound import outbox, windows
from channels.wechat.outbound.platform import PlatformError

logger = logging.getLogger("channels.wechat.conversation.pipeline")
# the channel name an outbox row uses for replies to a conversation of this connector
OUTBOUND_CHANNEL = {"wecom_kf": "wecom_kf", "mp": "mp", "mini": "mini", "group": "robot"}
# Official Account follow: greet the new follower (the follow opens a short reply window)
GREET_EVENTS = {("mp", "subscribe")}
GREET_PAYLOAD = "/greet"
# messages stored together (one 微信客服 page) are prepared before any is answered: the first one of a
# new user creates the customer, the others find it here instead of asking the platform again
RECENT_CUSTOMER_S = 60.0
RECENT_CUSTOMERS_KEPT = 10_000


def conversation_id(message: InboundMessage) -> str:
    if message.channel == "group":
        # a member's conversation in one group; never a customer identity: the bot must not show a
        # customer's orders in front of the whole group
        return f"group:{message.account}:{message.user_id}"
    return f"{message.channel}:{message.user_id}"


# the connectors whose users have a reply window and a customer identity (not groups)
ONE_ON_ONE = ("wecom_kf", "mp", "mini")


async def user_wrote(s: AsyncSession, message: InboundMessage) -> Optional[int]:
    """In the caller's transaction: a 1:1 user's message opens their reply window; the customer
    behind them, if known yet (None also for group members, who have neither)."""
    if message.channel not in ONE_ON_ONE:
        return None
    kind = "event" if message.msg_type == "event" else "message"
    await windows.open_window(s, message.channel, message.user_id, kind,
                              at=datetime.utcfromtimestamp(message.sent_at), account=message.account)
    return await identity.customer_of(s, message.channel, message.user_id)


class Pipeline:
    def __init__(self, runtime) -> None:
        self.runtime = runtime
        # identities this process created lately: (channel, user id) -> (customer id, when)
        self._new_customers: "OrderedDict[Tuple[str, str], Tuple[int, float]]" = OrderedDict()

    async def process(self, row_id: int, message: Optional[InboundMessage] = None,
                      customer_id: Optional[int] = None) -> None:
        """Answer an inbox row. `message`: the row was stored already claimed by this process, and
        its store transaction opened the window and found `customer_id`; without it the row is
        claimed here first."""
        rt = self.runtime
        prepared = message is not None
        if message is None:
            message = await rt.inbox.claim(row_id, rt.worker.name)
        if message is None:
            return  # another task or process has it, or it is done
        try:
            if not await self._handle(row_id, message, customer_id, prepared):
                await rt.inbox.finish(row_id, "ignored")
        except RasaNotReady as exc:
            # nothing was answered: the sweeper offers it again later
            logger.warning("wechat message waits for the Rasa server", extra={"inbound_id": row_id, "reason": str(exc)})
            await rt.inbox.finish(row_id, "received", f"the Rasa server was not ready: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
            logger.exception("wechat message handling failed", extra={"inbound_id": row_id,
                                                                      "channel": message.channel})
            await rt.inbox.finish(row_id, "failed", f"{type(exc).__name__}: {exc}")

    async def _handle(self, row_id: int, message: InboundMessage, customer_id: Optional[int], prepared: bool) -> bool:
        rt = self.runtime
        conversation = conversation_id(message)
        if message.channel in ONE_ON_ONE:
            if not prepared:
                # a row the sweeper found opens the window again: nothing was sent for it yet in the
                # common case
                async with db.transaction() as s:
                    customer_id = await user_wrote(s, message)
            if customer_id is None:
                customer_id = await self._new_customer(message)
        if message.channel == "group" and rt.group_messages is not None:
            # activity, moderation, check-in and keyword replies (community_sop/group_messages.py)
            if await rt.group_messages.observe(message):
                await rt.inbox.finish(row_id, "done")
                return True
        turn = self._turn(message, conversation)
        if turn is None:
            return False
        replies = reply_texts(await rt.relay.answer(turn))
        mention = [message.user_id] if message.channel == "group" else None
        recipient = message.account if message.channel == "group" else message.user_id
        outgoing = text_messages(replies, channel=OUTBOUND_CHANNEL[message.channel], recipient=recipient,
                                 key_prefix=f"wxin{row_id}", account=message.account if message.channel == "wecom_kf"
                                 else None, conversation_id=conversation, customer_id=customer_id, mention=mention)
        # the replies and "answered" in one commit; the outbox worker sends them
        async with db.transaction() as s:
            await outbox.enqueue_in(s, outgoing)
            await inbox.finish_in(s, row_id, "done")
        rt.worker.wake()
        logger.info("wechat message answered", extra={"inbound_id": row_id, "channel": message.channel,
                                                      "replies": len(outgoing)})
        return True

    def _turn(self, message: InboundMessage, conversation: str) -> Optional[Dict[str, Any]]:
        """What Rasa is asked (see relay.py), or None when the message is not for the bot."""
        text, split = self._text(message)
        if text is None:
            return None
        return {"conversation_id": conversation, "channel": message.channel, "text": text, "split": split,
                "message_id": f"{message.channel}-{message.dedup_key}"[:110],
                "metadata": {"wechat": {"channel": message.channel, "msgtype": message.msg_type,
                                        "account": message.account}}}

    def _text(self, message: InboundMessage):
        """(text, whether it may hold two requests) or (None, False) for a message the bot ignores."""
        if message.msg_type == "event":
            return (GREET_PAYLOAD, False) if (message.channel, message.event) in GREET_EVENTS else (None, False)
        raw = message.text or ""
        if message.channel == "group":
            group = self.runtime.config.group
            addressing = detect(raw, group.bot_names, group.prefixes, group.keywords)
            if not addressing.addressed:
                return None, False
            raw = addressing.text
        if message.msg_type != "text":
            # a picture, voice message or file: the bot cannot read it and says so (empty_message)
            return inbound_text.EMPTY_PAYLOAD, False
        cleaned = inbound_text.clean(raw, get_settings().im_max_message_chars)
        return cleaned.text, not cleaned.empty

    async def _new_customer(self, message: InboundMessage) -> Optional[int]:
        key = (message.channel, message.user_id)
        recent = self._new_customers.get(key)
        if recent is not None and time.monotonic() - recent[1] < RECENT_CUSTOMER_S:
            # a first contact's second message, stored (and prepared) before its first was answered
            return recent[0]
        unionid = await self._unionid(message)  # a platform call: outside any database transaction
        customer_id = await identity.resolve(message.channel, message.user_id, unionid)
        self._new_customers[key] = (customer_id, time.monotonic())
        if len(self._new_customers) > RECENT_CUSTOMERS_KEPT:
            self._new_customers.popitem(last=False)
        return customer_id

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

