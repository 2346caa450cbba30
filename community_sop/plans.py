"""SOP plans as moderators write them: checking a plan (400 with the reason), storing, listing,
pausing and deleting it, and the groups it targets. The JSON shape is the console API's
(`{"name", "targets", "schedule", "content", "delivery", "active"}` plus `variants`, `starts_at`,
`ends_at`); the scheduler notices changes through `updated_at`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.repositories import audit_repository
from channels.wechat.models import WeChatGroup
from community_sop import schedule as rules
from community_sop.models import DELIVERY_MODES, SopPlan, now_utc

logger = logging.getLogger("community_sop.plans")
BLOCK_TYPES = ("text", "image", "link", "miniprogram", "product")
MAX_BLOCKS = 12
MAX_TEXT = 2000
MAX_TARGETS = 2000


class PlanError(ValueError):
    """A plan that cannot be saved; the message says why (Chinese, shown in the console)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or len(value) > 1000:
        raise PlanError(f"{field} 需要 http(s) 链接")
    return value


def _text(value: Any, field: str, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise PlanError(f"{field} 不能为空")
    if len(value) > limit:
        raise PlanError(f"{field} 最多 {limit} 个字")
    return value


def check_content(content: Any, field: str = "content") -> List[Dict[str, Any]]:
    if not isinstance(content, list) or not content:
        raise PlanError(f"{field} 至少需要一个内容块")
    if len(content) > MAX_BLOCKS:
        raise PlanError(f"{field} 最多 {MAX_BLOCKS} 个内容块")
    blocks = []
    for n, block in enumerate(content, 1):
        where = f"{field} 第 {n} 块"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise PlanError(f"{where}：type 只能是 {' | '.join(BLOCK_TYPES)}")
        kind = block["type"]
        if kind == "text":
            blocks.append({"type": kind, "text": _text(block.get("text"), f"{where}的文字", MAX_TEXT)})
        elif kind == "image":
            blocks.append({"type": kind, "url": _url(block.get("url"), f"{where}的图片")})
        elif kind == "link":
            item = {"type": kind, "title": _text(block.get("title"), f"{where}的标题", 128),
                    "url": _url(block.get("url"), f"{where}的链接")}
            if block.get("description"):
                item["description"] = _text(block.get("description"), f"{where}的描述", 512)
            if block.get("picurl"):
                item["picurl"] = _url(block.get("picurl"), f"{where}的封面")
            blocks.append(item)
        elif kind == "miniprogram":
            appid = block.get("appid")
            if not isinstance(appid, str) or not appid.startswith("wx") or len(appid) > 32:
                raise PlanError(f"{where}：appid 需要小程序的 AppID（wx 开头）")
            item = {"type": kind, "title": _text(block.get("title"), f"{where}的标题", 64), "appid": appid,
                    "page": _text(block.get("page"), f"{where}的页面路径", 256)}
            if block.get("pic_media_id"):
                item["pic_media_id"] = _text(block.get("pic_media_id"), f"{where}的封面 media_id", 128)
            blocks.append(item)
        else:
            spu = block.get("spu")
            if not isinstance(spu, str) or not spu.strip() or len(spu) > 64:
                raise PlanError(f"{where}：商品块需要 spu（商品编号）")
            blocks.append({"type": kind, "spu": spu.strip()})
    return blocks


def check_targets(targets: Any) -> Dict[str, Any]:
    if not isinstance(targets, dict):
        raise PlanError("targets 必须是 {\"chat_ids\": [...]} 或 {\"group_tag\": \"...\"}")
    if "chat_ids" in targets:
        ids = targets["chat_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(c, str) and c for c in ids):
            raise PlanError("targets.chat_ids 需要至少一个群 ID")
        if len(ids) > MAX_TARGETS:
            raise PlanError(f"一个计划最多 {MAX_TARGETS} 个群")
        return {"chat_ids": list(dict.fromkeys(ids))}
    if "group_tag" in targets:
        tag = targets["group_tag"]
        if not isinstance(tag, str) or not tag.strip():
            raise PlanError("targets.group_tag 不能为空")
        return {"group_tag": tag.strip()}
    if "owner" in targets:
        owner = targets["owner"]
        if not isinstance(owner, str) or not owner.strip():
            raise PlanError("targets.owner 不能为空")
        return {"owner": owner.strip()}
    raise PlanError("targets 需要 chat_ids、group_tag 或 owner")


def _window(body: Dict[str, Any], field: str) -> Optional[datetime]:
    value = body.get(field)
    if value in (None, ""):
        return None
    try:
        return rules.to_utc_naive(rules.parse_instant(value, field))
    except rules.ScheduleError as exc:
        raise PlanError(str(exc)) from None


@dataclass
class PlanInput:
    """A checked plan, ready to store."""

    name: str
    targets: Dict[str, Any]
    schedule: Dict[str, Any]
    content: List[Dict[str, Any]]
    variants: List[Dict[str, Any]]
    delivery: str
    active: bool
    starts_at: Optional[datetime]
    ends_at: Optional[datetime]


def check(body: Any) -> PlanInput:
    """The plan in `body` checked field by field; PlanError names the first problem."""
    if not isinstance(body, dict):
        raise PlanError("请求体必须是 JSON 对象")
    name = _text(body.get("name"), "name（计划名称）", 100)
    targets = check_targets(body.get("targets"))
    try:
        schedule = rules.normalise(body.get("schedule"))
    except rules.ScheduleError as exc:
        raise PlanError(str(exc)) from None
    content = check_content(body.get("content"))
    variants = []
    raw_variants = body.get("variants") or []
    if not isinstance(raw_variants, list):
        raise PlanError("variants 必须是列表")
    for n, variant in enumerate(raw_variants, 1):
        if not isinstance(variant, dict) or not isinstance(variant.get("group_tag"), str) \
                or not variant["group_tag"].strip():
            raise PlanError(f"variants 第 {n} 项需要 group_tag")
        variants.append({"group_tag": variant["group_tag"].strip(),
                         "content": check_content(variant.get("content"), f"variants 第 {n} 项的 content")})
    delivery = body.get("delivery", "robot")
    if delivery not in DELIVERY_MODES:
        raise PlanError(f"delivery 只能是 {' | '.join(DELIVERY_MODES)}")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise PlanError("active 必须是 true 或 false")
    starts_at, ends_at = _window(body, "starts_at"), _window(body, "ends_at")
    if starts_at and ends_at and ends_at <= starts_at:
        raise PlanError("ends_at 必须晚于 starts_at")
    if schedule["kind"] == "once" and active:
        at = rules.to_utc_naive(rules.parse_instant(schedule["at"]))
        if at < now_utc() - timedelta(minutes=1):
            raise PlanError("单次发送的时间已经过去了")
    return PlanInput(name.strip(), targets, schedule, content, variants, delivery, active, starts_at, ends_at)


def iso_z(moment: Optional[datetime]) -> Optional[str]:
    """A stored (naive UTC) time as the API writes it."""
    return moment.isoformat() + "Z" if moment else None


def to_json(plan: SopPlan) -> Dict[str, Any]:
    return {"id": plan.id, "name": plan.name, "targets": plan.targets, "schedule": plan.schedule,
            "content": plan.content, "variants": plan.variants or [], "delivery": plan.delivery,
            "active": plan.active, "starts_at": iso_z(plan.starts_at), "ends_at": iso_z(plan.ends_at),
            "schedule_text": rules.describe(plan.schedule), "created_by": plan.created_by,
            "updated_by": plan.updated_by, "created_at": iso_z(plan.created_at), "updated_at": iso_z(plan.updated_at)}


def _apply(plan: SopPlan, data: PlanInput, actor: str) -> None:
    plan.name, plan.targets, plan.schedule, plan.content = data.name, data.targets, data.schedule, data.content
    plan.variants, plan.delivery, plan.active = data.variants, data.delivery, data.active
    plan.starts_at, plan.ends_at = data.starts_at, data.ends_at
    plan.updated_by, plan.updated_at = actor, now_utc()


async def create(s: AsyncSession, data: PlanInput, actor: str) -> SopPlan:
    plan = SopPlan(created_by=actor, created_at=now_utc())
    _apply(plan, data, actor)
    s.add(plan)
    await s.flush()
    audit_repository.record(s, f"staff:{actor}", "sop_plan_created", f"sop_plan:{plan.id}", {"name": plan.name},
                            level=logging.INFO)
    return plan


async def get(s: AsyncSession, plan_id: int) -> SopPlan:
    plan = await s.get(SopPlan, plan_id)
    if plan is None or plan.deleted_at is not None:
        raise PlanError("没有这个计划", status=404)
    return plan


async def update(s: AsyncSession, plan_id: int, data: PlanInput, actor: str) -> SopPlan:
    plan = await get(s, plan_id)
    _apply(plan, data, actor)
    audit_repository.record(s, f"staff:{actor}", "sop_plan_updated", f"sop_plan:{plan.id}",
                            {"name": plan.name, "active": plan.active}, level=logging.INFO)
    return plan


async def set_active(s: AsyncSession, plan_id: int, active: bool, actor: str) -> SopPlan:
    plan = await get(s, plan_id)
    plan.active, plan.updated_by, plan.updated_at = active, actor, now_utc()
    audit_repository.record(s, f"staff:{actor}", "sop_plan_started" if active else "sop_plan_paused",
                            f"sop_plan:{plan.id}", {"name": plan.name}, level=logging.INFO)
    return plan


async def delete(s: AsyncSession, plan_id: int, actor: str) -> None:
    plan = await get(s, plan_id)
    plan.deleted_at = plan.updated_at = now_utc()
    plan.active, plan.updated_by = False, actor
    audit_repository.record(s, f"staff:{actor}", "sop_plan_deleted", f"sop_plan:{plan.id}", {"name": plan.name},
                            level=logging.INFO)


async def listing(s: AsyncSession) -> List[SopPlan]:
    return list((await s.execute(sa.select(SopPlan).where(SopPlan.deleted_at.is_(None))
                                 .order_by(SopPlan.id))).scalars())


async def listing_rows(s: AsyncSession) -> List[Any]:
    """The plans as plain rows (same attribute names as SopPlan): the plan list reads thousands
    without building ORM objects."""
    columns = [c for c in SopPlan.__table__.columns]
    return list((await s.execute(sa.select(*columns).where(SopPlan.deleted_at.is_(None))
                                 .order_by(SopPlan.id))).all())


def _targeted(targets: Dict[str, Any]):
    if "chat_ids" in targets:
        return WeChatGroup.chat_id.in_(targets["chat_ids"])
    if "owner" in targets:
        return WeChatGroup.owner_userid == targets["owner"]
    return None


async def target_groups(s: AsyncSession, targets: Dict[str, Any], include_dissolved: bool = False
                        ) -> List[WeChatGroup]:
    """The groups a plan's targets name (a tag is matched in Python: tags are a JSON list)."""
    query = sa.select(WeChatGroup).order_by(WeChatGroup.chat_id)
    where = _targeted(targets)
    if where is not None:
        query = query.where(where)
    if not include_dissolved:
        query = query.where(WeChatGroup.dissolved_at.is_(None))
    return [g for g in (await s.execute(query)).scalars() if matches(targets, g)]


def matches(targets: Dict[str, Any], group: WeChatGroup) -> bool:
    """Whether a plan's targets name this group."""
    if "chat_ids" in targets:
        return group.chat_id in targets["chat_ids"]
    if "owner" in targets:
        return group.owner_userid == targets["owner"]
    return targets.get("group_tag") in (group.tags or [])


def missing_chat_ids(targets: Dict[str, Any], groups: Sequence[WeChatGroup]) -> List[str]:
    known = {g.chat_id for g in groups}
    return [c for c in targets.get("chat_ids", []) if c not in known]


class TargetIndex:
    """The live groups by id, tag and owner, to count many plans' targets without a query or a
    scan of every group per plan."""

    def __init__(self, groups: Sequence[WeChatGroup]) -> None:
        self.ids = {g.chat_id for g in groups}
        self.tags: Dict[str, int] = {}
        self.owners: Dict[str, int] = {}
        for g in groups:
            for tag in g.tags or []:
                self.tags[tag] = self.tags.get(tag, 0) + 1
            if g.owner_userid:
                self.owners[g.owner_userid] = self.owners.get(g.owner_userid, 0) + 1

    def count(self, targets: Dict[str, Any]) -> int:
        if "chat_ids" in targets:
            return sum(1 for c in set(targets["chat_ids"]) if c in self.ids)
        if "owner" in targets:
            return self.owners.get(targets["owner"], 0)
        return self.tags.get(targets.get("group_tag"), 0)
