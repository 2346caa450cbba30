"""Keyword auto-replies in groups: "发货" → the shipping answer, per group tag, at most once per
cooldown per group. The cooldown is a conditional UPDATE on a row per (reply, group), so gateway
processes sharing the database never both answer, and the robot never floods a group."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.repositories import audit_repository
from channels.wechat import db
from community_sop.models import SopKeywordFiring, SopKeywordReply, now_utc

logger = logging.getLogger("community_sop.keyword_replies")
MIN_COOLDOWN_S, MAX_COOLDOWN_S = 30, 7 * 86400


class KeywordError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class KeywordInput:
    group_tag: str
    keyword: str
    reply: str
    cooldown_s: int
    active: bool


def check(body: Any) -> KeywordInput:
    if not isinstance(body, dict):
        raise KeywordError("请求体必须是 JSON 对象")
    keyword = body.get("keyword")
    if not isinstance(keyword, str) or not keyword.strip() or len(keyword.strip()) > 32:
        raise KeywordError("keyword（关键词）需要 1-32 个字")
    reply = body.get("reply")
    if not isinstance(reply, str) or not reply.strip() or len(reply) > 1000:
        raise KeywordError("reply（回复内容）需要 1-1000 个字")
    tag = body.get("group_tag") or ""
    if not isinstance(tag, str) or len(tag) > 32:
        raise KeywordError("group_tag 最多 32 个字")
    cooldown = body.get("cooldown_s", 300)
    if not isinstance(cooldown, int) or isinstance(cooldown, bool) or not MIN_COOLDOWN_S <= cooldown <= MAX_COOLDOWN_S:
        raise KeywordError(f"cooldown_s（冷却秒数）需要 {MIN_COOLDOWN_S}-{MAX_COOLDOWN_S}")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise KeywordError("active 必须是 true 或 false")
    return KeywordInput(tag.strip(), keyword.strip(), reply.strip(), cooldown, active)


def to_json(reply: SopKeywordReply) -> Dict[str, Any]:
    return {"id": reply.id, "group_tag": reply.group_tag, "keyword": reply.keyword, "reply": reply.reply,
            "cooldown_s": reply.cooldown_s, "active": reply.active}


async def listing(s: AsyncSession) -> List[SopKeywordReply]:
    return list((await s.execute(sa.select(SopKeywordReply).order_by(SopKeywordReply.id))).scalars())


async def create(s: AsyncSession, data: KeywordInput, actor: str) -> SopKeywordReply:
    reply = SopKeywordReply(group_tag=data.group_tag, keyword=data.keyword, reply=data.reply,
                            cooldown_s=data.cooldown_s, active=data.active, created_by=actor)
    s.add(reply)
    await s.flush()
    audit_repository.record(s, f"staff:{actor}", "sop_keyword_created", f"sop_keyword:{reply.id}",
                            {"keyword": data.keyword}, level=logging.INFO)
    return reply


async def _get(s: AsyncSession, reply_id: int) -> SopKeywordReply:
    reply = await s.get(SopKeywordReply, reply_id)
    if reply is None:
        raise KeywordError("没有这条关键词回复", status=404)
    return reply


async def update(s: AsyncSession, reply_id: int, data: KeywordInput, actor: str) -> SopKeywordReply:
    reply = await _get(s, reply_id)
    reply.group_tag, reply.keyword, reply.reply = data.group_tag, data.keyword, data.reply
    reply.cooldown_s, reply.active = data.cooldown_s, data.active
    audit_repository.record(s, f"staff:{actor}", "sop_keyword_updated", f"sop_keyword:{reply.id}",
                            {"keyword": data.keyword}, level=logging.INFO)
    return reply


async def delete(s: AsyncSession, reply_id: int, actor: str) -> None:
    reply = await _get(s, reply_id)
    await s.delete(reply)
    audit_repository.record(s, f"staff:{actor}", "sop_keyword_deleted", f"sop_keyword:{reply_id}",
                            {"keyword": reply.keyword}, level=logging.INFO)


def matching(replies: Sequence[SopKeywordReply], text: str, tags: Sequence[str]) -> Optional[SopKeywordReply]:
    """The first active reply whose keyword the text contains, for a group with these tags (a
    tagged reply before one for all groups; the longer keyword first)."""
    lowered = (text or "").lower()
    candidates = [r for r in replies if r.active and (not r.group_tag or r.group_tag in tags)
                  and r.keyword.lower() in lowered]
    candidates.sort(key=lambda r: (0 if r.group_tag else 1, -len(r.keyword), r.id))
    return candidates[0] if candidates else None


async def claim(reply: SopKeywordReply, chat_id: str, now: Optional[datetime] = None) -> bool:
    """Take the reply's turn in this group: False while its cooldown runs (here or in another process)."""
    now = now or now_utc()
    async with db.transaction() as s:
        await s.execute(db.insert(s, SopKeywordFiring).values(
            reply_id=reply.id, chat_id=chat_id, fired_at=now - timedelta(seconds=reply.cooldown_s + 1),
        ).on_conflict_do_nothing(index_elements=["reply_id", "chat_id"]))
        taken = await s.execute(sa.update(SopKeywordFiring).where(
            SopKeywordFiring.reply_id == reply.id, SopKeywordFiring.chat_id == chat_id,
            SopKeywordFiring.fired_at <= now - timedelta(seconds=reply.cooldown_s)).values(fired_at=now))
        return taken.rowcount == 1
