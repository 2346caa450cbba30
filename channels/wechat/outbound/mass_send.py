"""Following a mass-send task to customer groups after it was created: it only reaches the groups
when the owner confirms it in WeCom, so its state is read back from the platform
(get_groupmsg_task / get_groupmsg_send_result), the owner can be reminded (at most 3 times in
24 hours) and the task cancelled."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa

from channels.wechat.db import session as async_session
from channels.wechat.models import MassSendTask, now_utc
from channels.wechat.outbound.platform import PlatformClient, PlatformError

logger = logging.getLogger("channels.wechat.outbound.mass_send")
SENT, NOT_A_FRIEND, ALREADY_RECEIVED = 1, 2, 3
MAX_REMINDERS_PER_DAY = 3


async def task(msgid: str) -> Optional[MassSendTask]:
    async with async_session() as session:
        return (await session.execute(sa.select(MassSendTask).where(MassSendTask.msgid == msgid))).scalars().first()


async def refresh(client: PlatformClient, msgid: str) -> Optional[MassSendTask]:
    """Read the task's state from the platform into wechat_mass_tasks."""
    row = await task(msgid)
    if row is None or row.status == "cancelled":
        return row
    # platform calls first, outside any database session
    tasks = await client.get_groupmsg_task(msgid)
    owner_sent = any(t.get("userid") == row.sender and t.get("status") == 2 for t in tasks.get("task_list", []))
    results = dict(row.results or {})
    if owner_sent:
        answer = await client.get_groupmsg_send_result(msgid, row.sender)
        for item in answer.get("send_list", []):
            if item.get("chat_id"):
                results[item["chat_id"]] = int(item.get("status") or 0)
    async with async_session() as session:
        row = await session.get(MassSendTask, row.id)
        row.results = results
        if owner_sent:
            delivered = [c for c in row.chat_ids if results.get(c) == SENT]
            row.status = "sent" if len(delivered) == len(row.chat_ids) else "partly_sent"
        row.checked_at = now_utc()
        await session.commit()
    if row.status == "partly_sent":
        logger.warning("mass send did not reach every group", extra={
            "msgid": msgid, "groups": len(row.chat_ids),
            "over_monthly_quota": sum(1 for v in results.values() if v == ALREADY_RECEIVED)})
    return row


async def remind_owner(client: PlatformClient, msgid: str) -> str:
    """Nudge the owner to confirm: "reminded", or why not (not_found, already_sent, limit)."""
    row = await task(msgid)
    if row is None:
        return "not_found"
    if row.status != "created":
        return "already_sent" if row.status in ("sent", "partly_sent") else row.status
    now = now_utc()
    reminders = row.reminders if row.last_reminded_at and row.last_reminded_at > now - timedelta(hours=24) else 0
    if reminders >= MAX_REMINDERS_PER_DAY:
        return "limit"
    try:
        await client.remind_groupmsg_send(msgid)
    except PlatformError as exc:
        logger.warning("mass send reminder failed", extra={"msgid": msgid, "errcode": exc.errcode})
        return f"error {exc.errcode}"
    async with async_session() as session:
        row = await session.get(MassSendTask, row.id)
        row.reminders = reminders + 1
        row.last_reminded_at = now
        await session.commit()
    return "reminded"


async def cancel(client: PlatformClient, msgid: str) -> bool:
    row = await task(msgid)
    if row is None:
        return False
    await client.cancel_groupmsg_send(msgid)
    async with async_session() as session:
        row = await session.get(MassSendTask, row.id)
        if row.status == "created":
            row.status = "cancelled"
        await session.commit()
    return True
