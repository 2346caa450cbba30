"""Staff replies leave through the customer's own channel: the web IM (the chat page's live stream
picks them up, and the shop's callback URL when configured) or WeChat through the sender API and
its outbox (exactly once, retried, window-aware). Each reply records its delivery: queued,
delivered, or failed / refused with the reason staff can act on."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.identity import split_sender
from bot.settings import get_settings
from desk.labels import label, labels
from desk.models import DeskConversation, DeskMessage, now_utc

logger = logging.getLogger("desk.replies")
QUEUED, DELIVERED, FAILED, REFUSED = "queued", "delivered", "failed", "refused"
WECHAT_CHANNELS = ("wecom_kf", "mp", "mini")
# why a reply could not go out, as staff read it
REFUSAL_TEXT = labels("refusal")


def im_recipient(conversation_id: str) -> str:
    """The id the web IM client knows: "im:u10002" -> "u10002", "im:guest-abc" -> "abc"."""
    return split_sender(conversation_id)[1].removeprefix("guest-")


async def enqueue_reply(session: AsyncSession, row: DeskConversation, author: str, text: str) -> DeskMessage:
    """The reply as a row (delivery queued), in the caller's transaction."""
    message = DeskMessage(conversation=row.id, kind="reply", author=author, text=text, channel=row.channel,
                          delivery=QUEUED, created_at=now_utc())
    session.add(message)
    await session.flush()
    return message


async def dispatch(message_id: int, conversation_id: str, channel: str, text: str, sender_runtime=None) -> Dict:
    """Hand a stored reply to its channel; returns the delivery fields to store on the message."""
    if channel == "im":
        url = get_settings().im_callback_url
        if url:
            from channels.im import post_callback

            ok = await post_callback(url, [{"recipient_id": im_recipient(conversation_id), "text": text,
                                            "from": "agent", "message_id": message_id}])
            if ok:
                return {"delivery": DELIVERED, "delivered_at": now_utc()}
            return {"delivery": QUEUED, "delivery_detail": label("failure", "callback_down")}
        # the chat page's live stream marks it delivered when it passes it on
        return {"delivery": QUEUED}
    if channel in WECHAT_CHANNELS:
        from channels.wechat.outbound.sender import OutboxOnly, send_to_customer

        result = await send_to_customer(conversation_id, [text], key=f"desk-reply-{message_id}",
                                        runtime=sender_runtime or OutboxOnly())
        return _from_send(result)
    if channel == "group":
        from channels.wechat.outbound.sender import OutboxOnly, send_to_group

        _, chat_id, user = conversation_id.split(":", 2)
        result = await send_to_group(chat_id, [text], mention=[user], key=f"desk-reply-{message_id}",
                                     runtime=sender_runtime or OutboxOnly())
        return _from_send(result)
    return {"delivery": REFUSED, "delivery_detail": REFUSAL_TEXT["unsupported_channel"]}


def _from_send(result) -> Dict:
    if result.accepted:
        return {"delivery": QUEUED, "outbox_ids": list(result.outbox_ids), "channel": result.channel}
    return {"delivery": REFUSED, "delivery_detail": REFUSAL_TEXT.get(result.reason or "", result.detail)[:256]}


async def refresh(session: AsyncSession, messages: Sequence[DeskMessage]) -> List[DeskMessage]:
    """Bring WeChat replies' delivery up to date from their outbox rows (sent, still trying, failed)."""
    from channels.wechat.models import OutboxMessage

    pending = [m for m in messages if m.delivery == QUEUED and m.outbox_ids]
    if not pending:
        return []
    ids = [i for m in pending for i in m.outbox_ids]
    rows = {r.id: r for r in (await session.execute(sa.select(OutboxMessage).where(OutboxMessage.id.in_(ids))))
            .scalars()}
    changed = []
    for message in pending:
        parts = [rows.get(i) for i in message.outbox_ids]
        if any(p is not None and p.status == "failed" for p in parts):
            failed = next(p for p in parts if p is not None and p.status == "failed")
            message.delivery = FAILED
            message.delivery_detail = _failure_text(failed.last_errcode, failed.last_error)
            changed.append(message)
        elif parts and all(p is not None and p.status == "sent" for p in parts):
            message.delivery = DELIVERED
            message.delivered_at = max(p.sent_at or now_utc() for p in parts)
            changed.append(message)
    return changed


def _failure_text(errcode: Optional[int], error: Optional[str]) -> str:
    known = label("failure", errcode) if errcode else ""
    return (known or label("failure", "other", errcode=errcode or "", error=error or ""))[:256]
