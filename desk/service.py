"""The desk's operations as the console calls them: each staff step commits in the desk's tables
and then tells the Rasa server (pause when a person takes a conversation, resume when the bot gets
it back); if Rasa cannot be told, the step is undone and reported, so desk and bot never disagree
about who answers. Replies are stored first and then handed to the customer's channel."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session, in_transaction
from actions.identity import split_sender
from bot.settings import ShopConfig, get_settings
from desk import queue, replies, sla
from desk.handoff import PRIORITY_NAMES
from desk.labels import label
from desk.models import ASSIGNED, DeskConversation, DeskMessage, now_utc
from desk.queue import Conflict, DeskError, Forbidden, Staff
from desk.rasa_bridge import BridgeError, RasaBridge
from desk.transcript import iso, transcript

logger = logging.getLogger("desk.service")
MAX_REPLY_CHARS = 2000
KF_ENDED = 4  # 微信客服 service_state: ended


class Unavailable(DeskError):
    status = 503


def summary(row: DeskConversation, now: Optional[datetime] = None, shop: Optional[ShopConfig] = None) -> Dict[str, Any]:
    """A conversation as the API lists it."""
    now = now or now_utc()
    shop = shop or get_settings().shop
    waiting = None
    if row.state in ("queued", ASSIGNED) and row.queued_at and not row.first_response_at:
        waiting = int((now - row.queued_at).total_seconds())
    return {"id": row.id, "channel": row.channel, "customer": row.customer_name or row.conversation_id,
            "state": row.state, "reason": row.reason, "priority": row.priority, "queued_at": iso(row.queued_at),
            "assignee": row.assignee, "conversation_id": row.conversation_id, "customer_id": row.customer_id,
            "reason_text": row.reason_text, "priority_name": PRIORITY_NAMES.get(row.priority, ""),
            "assigned_at": iso(row.assigned_at), "first_response_at": iso(row.first_response_at),
            "closed_at": iso(row.closed_at),
            "last_customer_at": iso(row.last_customer_at), "snoozed_until": iso(row.snoozed_until),
            "ticket_no": row.ticket_no, "waiting_seconds": waiting,
            "snoozed": bool(row.snoozed_until and row.snoozed_until > now),
            "sla": sla.status(shop, row, now)}


class DeskService:
    def __init__(self, bridge: Optional[RasaBridge] = None, sender_runtime=None) -> None:
        self.bridge = bridge or RasaBridge()
        self.sender_runtime = sender_runtime

    async def close(self) -> None:
        await self.bridge.close()

    # --- taking and giving back -----------------------------------------------------------------
    @staticmethod
    async def _step(conversation: int, step) -> Tuple[DeskConversation, Dict[str, Any]]:
        """Run a queue step in a transaction; the conversation after it, and its state and holder before."""
        before: Dict[str, Any] = {}

        async def work(s: AsyncSession) -> DeskConversation:
            current = await queue.get(s, conversation)
            before.update(state=current.state, assignee=current.assignee)
            return await step(s)

        return await in_transaction(work), before

    async def claim(self, conversation: int, staff: Staff) -> Dict[str, Any]:
        row, before = await self._step(conversation, lambda s: queue.claim(s, conversation, staff))
        await self._tell_rasa(row, pause=True, undo=before)
        return summary(row)

    async def assign(self, conversation: int, to: str, staff: Staff) -> Dict[str, Any]:
        row, before = await self._step(conversation, lambda s: queue.assign(s, conversation, to, staff))
        if before["state"] != ASSIGNED:
            await self._tell_rasa(row, pause=True, undo=before)
        return summary(row)

    async def handback(self, conversation: int, staff: Staff) -> Dict[str, Any]:
        return await self._release(conversation, staff, queue.handback)

    async def end(self, conversation: int, staff: Staff) -> Dict[str, Any]:
        """End the handling; a 微信客服 session is ended on the platform too (state 4, after the
        replies already queued), so the customer's next message opens a new one the bot answers."""
        result = await self._release(conversation, staff, queue.close)
        if result["channel"] == "wecom_kf":
            from channels.wechat.outbound.sender import OutboxOnly, set_kf_session_state

            try:
                outcome = await set_kf_session_state(result["conversation_id"], KF_ENDED,
                                                     key=f"desk-end-{conversation}-{result['closed_at']}",
                                                     runtime=self.sender_runtime or OutboxOnly())
                if not outcome.accepted:
                    logger.warning("kf session not ended", extra={"conversation": result["conversation_id"],
                                                                  "reason": outcome.reason})
            except Exception:  # noqa: BLE001 - the desk's end stands; the platform ends it after 48 h
                logger.exception("kf session end failed", extra={"conversation": result["conversation_id"]})
        return result

    async def _release(self, conversation: int, staff: Staff, step) -> Dict[str, Any]:
        row, before = await self._step(conversation, lambda s: step(s, conversation, staff))
        if before["state"] == ASSIGNED:
            await self._tell_rasa(row, pause=False, undo=before)
        return summary(row)

    async def _tell_rasa(self, row: DeskConversation, pause: bool, undo: Dict[str, Any]) -> None:
        try:
            if pause:
                await self.bridge.pause(row.conversation_id)
            else:
                await self.bridge.resume(row.conversation_id)
        except BridgeError as exc:
            why = str(exc)
            logger.error("desk step undone: rasa not told", extra={"conversation": row.conversation_id,
                                                                   "error": why})

            async def revert(s: AsyncSession) -> None:
                await queue.revert(s, await queue.get(s, row.id), undo["state"], undo["assignee"], why)

            await in_transaction(revert)
            raise Unavailable("机器人服务暂时联系不上，操作未生效，请稍后再试") from exc

    async def snooze(self, conversation: int, minutes: int, staff: Staff) -> Dict[str, Any]:
        row = await in_transaction(lambda s: queue.snooze(s, conversation, minutes, staff))
        return summary(row)

    # --- writing ----------------------------------------------------------------------------------
    async def reply(self, conversation: int, text: str, staff: Staff) -> Dict[str, Any]:
        text = (text or "").strip()
        if not text:
            raise DeskError("回复内容不能为空")
        if len(text) > MAX_REPLY_CHARS:
            raise DeskError(f"回复不能超过 {MAX_REPLY_CHARS} 字")

        async def store(s: AsyncSession):
            row = await queue.get(s, conversation)
            if row.state != ASSIGNED:
                raise Conflict("请先接入会话再回复")
            if row.assignee != staff.username:
                raise Forbidden(f"会话由 {row.assignee} 接待")
            message = await replies.enqueue_reply(s, row, staff.username, text)
            now = now_utc()
            row.first_response_at = row.first_response_at or now
            row.last_agent_at = row.updated_at = now
            queue.record(s, row, "replied", staff.actor, {"message_id": message.id}, audit=False)
            return row.conversation_id, row.channel, message.id

        conversation_id, channel, message_id = await in_transaction(store)
        try:
            outcome = await replies.dispatch(message_id, conversation_id, channel, text, self.sender_runtime)
        except Exception:  # noqa: BLE001 - the reply is stored; staff see that it did not go out
            logger.exception("desk reply dispatch failed", extra={"conversation": conversation_id})
            outcome = {"delivery": replies.FAILED, "delivery_detail": label("failure", "dispatch_error")}

        async def settle(s: AsyncSession) -> DeskMessage:
            message = await s.get(DeskMessage, message_id)
            if message.delivery == replies.QUEUED:  # the chat page's stream may have delivered it already
                for key, value in outcome.items():
                    setattr(message, key, value)
            return message

        message = await in_transaction(settle)
        return {"message_id": message.id, "delivery": message.delivery, "delivery_detail": message.delivery_detail,
                "channel": message.channel}

    async def note(self, conversation: int, text: str, staff: Staff) -> Dict[str, Any]:
        text = (text or "").strip()
        if not text:
            raise DeskError("备注内容不能为空")

        async def store(s: AsyncSession) -> DeskMessage:
            row = await queue.get(s, conversation)
            message = DeskMessage(conversation=row.id, kind="note", author=staff.username, text=text[:2000],
                                  created_at=now_utc())
            s.add(message)
            await s.flush()
            queue.record(s, row, "noted", staff.actor, {"message_id": message.id}, audit=False)
            return message

        message = await in_transaction(store)
        return {"message_id": message.id}

    # --- reading ----------------------------------------------------------------------------------
    async def detail(self, conversation: int) -> Dict[str, Any]:
        async def read(s: AsyncSession) -> Dict[str, Any]:
            row = await queue.get(s, conversation)
            sent = list((await s.execute(sa.select(DeskMessage).where(
                DeskMessage.conversation == row.id, DeskMessage.kind == "reply",
                DeskMessage.delivery == replies.QUEUED))).scalars())
            await replies.refresh(s, sent)
            result = summary(row)
            result["messages"] = await transcript(s, row)
            result["window"] = await reply_window(s, row)
            return result

        return await in_transaction(read)

    async def listing(self, state: Optional[str], assignee: Optional[str] = None, limit: int = 200,
                      offset: int = 0) -> List[Dict[str, Any]]:
        async with async_session() as s:
            rows = await queue.listing(s, state=state, assignee=assignee, limit=limit, offset=offset)
            now, shop = now_utc(), get_settings().shop
            return [summary(r, now, shop) for r in rows]


async def reply_window(s: AsyncSession, row: DeskConversation) -> Dict[str, Any]:
    """Whether staff can write to the customer now, until when, and why not (the sender API's rule)."""
    if row.channel == "im":
        return {"open": True, "limited": False}
    if row.channel not in replies.WECHAT_CHANNELS:
        return {"open": row.channel == "group", "limited": False,
                "reason": None if row.channel == "group" else replies.REFUSAL_TEXT["unsupported_channel"]}
    from channels.wechat.outbound.sender import reply_room

    found = await reply_room(s, row.channel, split_sender(row.conversation_id)[1])
    result: Dict[str, Any] = {"open": found.room > 0, "limited": True, "remaining": found.room,
                              "closes_at": iso(found.closes),
                              "reason": replies.REFUSAL_TEXT.get(found.reason) if found.reason else None}
    if found.closes is not None:
        result["seconds_left"] = int((found.closes - now_utc()).total_seconds())
    return result
