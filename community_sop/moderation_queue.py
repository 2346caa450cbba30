"""The moderation queue: flagged group messages (community_sop/moderation.py decides), the owner's
alert, and moderators marking each handled or a false alarm. The robot cannot remove members; the
alert asks the owner to act in WeCom and never claims anything was done."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.repositories import audit_repository
from channels.wechat.models import WeChatGroup
from community_sop.models import MODERATION_STATES, SopModerationHit, now_utc

logger = logging.getLogger("community_sop.moderation_queue")
STATES = MODERATION_STATES
KIND_TEXT = {"ad": "广告", "qr_promo": "二维码推广", "daigou_phone": "代购电话", "spam_repeat": "刷屏",
             "negative": "强烈负面"}


class HitError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def to_json(hit: SopModerationHit, group_name: str = "") -> Dict[str, Any]:
    return {"id": hit.id, "chat_id": hit.chat_id, "group_name": group_name, "member": hit.member,
            "member_name": hit.member_name, "text": hit.text, "kind": hit.kind,
            "kind_text": KIND_TEXT.get(hit.kind, hit.kind),
            "reason": hit.reason, "at": hit.at.isoformat() + "Z", "status": hit.status, "handled_by": hit.handled_by,
            "owner_alerted": hit.owner_alerted}


def alert_text(hit: SopModerationHit, group_name: str) -> str:
    """The app message to the group owner (Chinese)."""
    who = hit.member_name or hit.member
    kind = KIND_TEXT.get(hit.kind, "违规")
    return (f"【群消息提醒】群「{group_name or hit.chat_id}」中成员 {who} 发送了疑似{kind}的消息：\n"
            f"{hit.text[:300]}\n原因：{hit.reason}\n机器人无法移出成员，如需处理请在企业微信中操作。")


async def listing(s: AsyncSession, status: str, limit: int = 300) -> List[Dict[str, Any]]:
    rows = (await s.execute(sa.select(SopModerationHit, WeChatGroup.name).outerjoin(
        WeChatGroup, WeChatGroup.chat_id == SopModerationHit.chat_id).where(SopModerationHit.status == status)
        .order_by(SopModerationHit.at.desc()).limit(limit))).all()
    return [to_json(hit, name or "") for hit, name in rows]


async def counts(s: AsyncSession) -> Dict[str, int]:
    found = dict((await s.execute(sa.select(SopModerationHit.status, sa.func.count()).group_by(
        SopModerationHit.status))).all())
    return {state: found.get(state, 0) for state in STATES}


async def mark(s: AsyncSession, hit_id: int, status: str, actor: str) -> Dict[str, Any]:
    hit = await s.get(SopModerationHit, hit_id)
    if hit is None:
        raise HitError("没有这条记录", status=404)
    hit.status, hit.handled_by, hit.handled_at = status, actor, now_utc()
    audit_repository.record(s, f"staff:{actor}", f"sop_moderation_{status}", f"sop_moderation:{hit.id}",
                            {"kind": hit.kind}, level=logging.INFO)
    group = await s.get(WeChatGroup, hit.chat_id)
    return to_json(hit, group.name if group else "")
