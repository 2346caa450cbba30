"""Sending one claimed outbox row through the platform API of its channel, after taking its place
in the recipient's reply window (or the group robot's per-minute budget), and turning what the
platform answered into the row's outcome."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional, Sequence

import sqlalchemy as sa

from channels.wechat import db
from channels.wechat.db import session as async_session
from channels.wechat.models import MassSendTask, RobotSend, WeChatGroup, now_utc
from channels.wechat.outbound import windows
from channels.wechat.outbound.outbox import IDEMPOTENT_CHANNELS
from channels.wechat.outbound.platform import PlatformClient, PlatformError

logger = logging.getLogger("channels.wechat.outbound.delivery")
ROBOT_PER_MINUTE = 20
RATE_LIMIT_RETRY_S = 60.0


@dataclass
class Outcome:
    status: str  # sent / refused / failed / unknown / retry / defer
    errcode: Optional[int] = None
    error: Optional[str] = None
    platform_msgid: Optional[str] = None
    retry_in_s: Optional[float] = None


async def _reserve_robot_slot(chat_id: str) -> Optional[float]:
    """None if the robot may send now (the slot is taken), else seconds until a slot frees up.
    Serialised per group on PostgreSQL by locking the group's row."""
    async with async_session() as session:
        # FOR UPDATE: PostgreSQL only (SQLite has one writer at a time anyway)
        await session.execute(sa.select(WeChatGroup.chat_id).where(WeChatGroup.chat_id == chat_id).with_for_update())
        now = now_utc()
        recent = list((await session.execute(sa.select(RobotSend.sent_at).where(
            RobotSend.chat_id == chat_id, RobotSend.sent_at > now - timedelta(seconds=60))
            .order_by(RobotSend.sent_at))).scalars())
        if len(recent) >= ROBOT_PER_MINUTE:
            await session.rollback()
            return max((recent[0] + timedelta(seconds=60) - now).total_seconds(), 0.05)
        session.add(RobotSend(chat_id=chat_id, sent_at=now))
        await session.execute(sa.delete(RobotSend).where(RobotSend.chat_id == chat_id,
                                                         RobotSend.sent_at < now - timedelta(minutes=10)))
        await session.commit()
        return None


async def _robot_key(chat_id: str) -> Optional[str]:
    async with async_session() as session:
        group = await session.get(WeChatGroup, chat_id)
        return group.robot_key if group else None


async def reserve_windows(rows: Sequence[Any]) -> List[Optional[str]]:
    """Take each row's place in its recipient's reply window, all in one transaction: None where
    granted (or not governed by a window), else the refusal reason."""
    if not any(windows.governed(row.channel) for row in rows):
        return [None] * len(rows)
    async with db.transaction() as s:
        return await windows.take_places(s, [(row.channel, row.recipient) for row in rows])


async def deliver(client: PlatformClient, row: Any, refusal: Optional[str]) -> Outcome:
    """Send one claimed row whose window place reserve_windows() has taken; `refusal`: the reason it
    was not granted (None: granted, or the channel has no window)."""
    governed = windows.governed(row.channel)
    if governed:
        if refusal:
            return Outcome("refused", error=refusal)
    elif row.channel == "robot":
        wait = await _reserve_robot_slot(row.recipient)
        if wait is not None:
            return Outcome("defer", error="rate_limited", retry_in_s=wait)
    try:
        answer = await _call(client, row)
    except PlatformError as exc:
        outcome = _failure(row, exc)
        if governed and outcome.status in ("retry", "failed"):
            # nothing reached the user: the window still has this message to give
            await windows.release(row.channel, row.recipient)
        return outcome
    msgid = answer.get("msgid")
    if row.channel == "mass_send":
        await _record_mass_task(row, answer)
    return Outcome("sent", platform_msgid=str(msgid) if msgid else None)


async def _call(client: PlatformClient, row: Any) -> dict:
    content = row.body.get(row.msgtype)
    if row.channel == "wecom_kf":
        return await client.kf_send_msg(row.recipient, row.account or "", row.idempotency_key, row.msgtype, content)
    if row.channel in ("mp", "mini"):
        return await client.custom_send(row.channel, row.recipient, row.msgtype, content)
    if row.channel == "mp_template":
        return await client.template_send(row.recipient, content)
    if row.channel == "robot":
        key = await _robot_key(row.recipient)
        if not key:
            raise PlatformError("webhook/send", "permanent", errmsg="no_robot")
        return await client.robot_send(key, row.msgtype, content)
    if row.channel == "app":
        return await client.app_message_send(row.recipient, row.msgtype, content)
    if row.channel == "mass_send":
        return await client.add_msg_template(dict(row.body, chat_type="group", sender=row.account))
    if row.channel == "kf_state":
        return await client.kf_service_state_trans(row.account or "", row.recipient, int(content["service_state"]),
                                                   content.get("servicer_userid"))
    raise PlatformError(row.channel, "permanent", errmsg=f"unknown channel {row.channel}")


def _failure(row: Any, exc: PlatformError) -> Outcome:
    if exc.kind == "refused":
        return Outcome("refused", exc.errcode, exc.refusal_reason or exc.errmsg)
    if exc.kind == "rate_limited":
        return Outcome("defer", exc.errcode, "rate_limited", retry_in_s=RATE_LIMIT_RETRY_S)
    if exc.kind == "network" and exc.maybe_delivered and row.channel not in IDEMPOTENT_CHANNELS:
        return Outcome("unknown", exc.errcode, f"{exc.errmsg}: the platform may have delivered it")
    if exc.kind in ("network", "transient"):
        return Outcome("retry", exc.errcode, exc.errmsg or exc.kind)
    if exc.failure_reason:
        # e.g. 95018: a servicer took the 微信客服 session over, or it ended; the platform's text kept for support
        return Outcome("failed", exc.errcode, f"{exc.failure_reason}；平台返回：{exc.errmsg}" if exc.errmsg
                       else exc.failure_reason)
    return Outcome("failed", exc.errcode, exc.errmsg or exc.kind)


async def _record_mass_task(row: Any, answer: dict) -> None:
    async with async_session() as session:
        task = (await session.execute(sa.select(MassSendTask).where(MassSendTask.outbox_id == row.id))
                ).scalars().first()
        if task is None:
            task = MassSendTask(outbox_id=row.id, sender=row.account or "", chat_ids=row.body.get("chat_id_list", []),
                                status="created", results={}, reminders=0)
            session.add(task)
        task.msgid = answer.get("msgid")
        await session.commit()
