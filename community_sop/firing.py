"""A plan falls due: one run row per target group, written under its unique (plan, group, due time)
key in the same transaction as the post's outbox rows. Whoever fires the same due time again (a
second scheduler, a restart, a retry) finds the rows and sends nothing more; a crash before the
commit leaves neither, so the next firing sends it. Groups that cannot get the post get a skipped
or failed row with the reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Dict, List, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from channels.wechat import db
from channels.wechat.models import WeChatGroup
from channels.wechat.outbound import outbox
from channels.wechat.outbound.sender import group_post
from community_sop import plans as plan_store
from community_sop.models import FAILED, PENDING, SKIPPED, SopPlan, SopRun, now_utc
from community_sop.rendering import GroupInfo, render

logger = logging.getLogger("community_sop.firing")
CHUNK = 200
DEFAULT_GRACE = timedelta(minutes=10)
# what moderators read for a sender refusal
REFUSAL_TEXT = {
    "no_robot": "群未配置机器人 webhook",
    "no_owner": "没有记录群主的企业微信账号",
    "not_configured": "企业微信的相应接口未配置",
    "empty": "内容为空",
    "unknown_mode": "未知的发送方式",
}


@dataclass
class FireResult:
    plan_id: int
    due_at: datetime
    handed: int = 0
    skipped: int = 0
    failed: int = 0
    existing: int = 0
    outbox_ids: List[int] = field(default_factory=list)


def run_key(run: SopRun) -> str:
    return f"sop-run-{run.id}"


def _local_day(moment: datetime, tz: str) -> date:
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(tz)).date()


def _plan_dict(plan: SopPlan) -> Dict:
    return {"content": plan.content, "variants": plan.variants or []}


def _skip_reason(plan: SopPlan, group: Optional[WeChatGroup], due_at: datetime, now: datetime,
                 grace: timedelta) -> Optional[str]:
    if group is None:
        return "群不存在（未登记或已被移除）"
    if group.dissolved_at is not None:
        return "群已解散"
    if not plan.active:
        return "计划已暂停"
    if plan.starts_at and due_at < plan.starts_at or plan.ends_at and due_at > plan.ends_at:
        return "不在计划的有效期内"
    late = now - due_at
    if late > grace:
        minutes, allowed = int(late.total_seconds() // 60), int(grace.total_seconds() // 60)
        return f"到期时服务未运行，晚了 {minutes} 分钟，超过 {allowed} 分钟宽限期"
    return None


async def _targets(s: AsyncSession, plan: SopPlan, due_at: datetime, tz: str
                   ) -> List[Tuple[str, Optional[WeChatGroup]]]:
    groups = await plan_store.target_groups(s, plan.targets, include_dissolved=True)
    if plan.schedule.get("kind") == "after_group_created":
        day = _local_day(due_at, tz) - timedelta(days=int(plan.schedule.get("days", 0)))
        groups = [g for g in groups if g.group_created_at and _local_day(g.group_created_at, tz) == day]
    found: List[Tuple[str, Optional[WeChatGroup]]] = [(g.chat_id, g) for g in groups]
    found += [(c, None) for c in plan_store.missing_chat_ids(plan.targets, groups)]
    return found


def _info(group: WeChatGroup) -> GroupInfo:
    return GroupInfo(chat_id=group.chat_id, name=group.name or group.chat_id, owner=group.owner_userid or "",
                     owner_name=group.owner_name or "", tags=tuple(group.tags or ()))


async def _hand_over(s: AsyncSession, plan: SopPlan, run: SopRun, group: WeChatGroup, tz: str, runtime) -> bool:
    """Render the post for the group and store its outbox rows under the run's key (one per
    attempt); False (and the run failed) if it cannot go out."""
    post = await render(s, _plan_dict(plan), _info(group), run.due_at.replace(tzinfo=ZoneInfo("UTC")), tz)
    # the mass-send limits (attachments, 4000 bytes) bind only that mode
    problems = [p for p in post.problems if plan.delivery == "mass_send" or not p.startswith("群发")]
    if problems:
        run.status, run.reason = FAILED, "；".join(problems)[:256]
        return False
    key = run_key(run) if run.attempts <= 1 else f"{run_key(run)}-{run.attempts}"
    if plan.delivery == "robot":
        outgoing, refusal = group_post(group, "robot", robot=post.for_robot(), key=key, runtime=runtime)
    elif plan.delivery == "mass_send":
        text, attachments = post.for_mass_send()
        outgoing, refusal = group_post(group, "mass_send", text=text, attachments=attachments, key=key,
                                       runtime=runtime)
    else:
        outgoing, refusal = group_post(group, "owner_reminder", text=post.for_reminder(group.name or group.chat_id),
                                       key=key, runtime=runtime)
    if refusal is not None:
        run.status = FAILED
        run.reason = REFUSAL_TEXT.get(refusal.reason or "", refusal.detail or refusal.reason or "无法发送")[:256]
        return False
    run.outbox_ids = await outbox.enqueue_in(s, outgoing)
    run.handed_at = now_utc()
    return True


async def fire(plan_id: int, due_at: datetime, *, tz: str = "Asia/Shanghai", grace: timedelta = DEFAULT_GRACE,
               runtime=None, now: Optional[datetime] = None) -> FireResult:
    """Hand the posts of the plan's due time (naive UTC) to the outbox, once per group."""
    now = now or now_utc()
    result = FireResult(plan_id, due_at)
    async with db.session() as s:
        plan = await s.get(SopPlan, plan_id)
        if plan is None or plan.deleted_at is not None:
            return result
        targets = await _targets(s, plan, due_at, tz)
    for start in range(0, len(targets), CHUNK):
        chunk = targets[start:start + CHUNK]
        async with db.transaction() as s:
            await _fire_chunk(s, plan_id, due_at, chunk, tz, grace, now, runtime, result)
    if runtime is not None and result.handed:
        runtime.worker.wake()
    logger.info("sop plan fired", extra={"plan_id": plan_id, "due_at": due_at.isoformat(), "handed": result.handed,
                                         "skipped": result.skipped, "failed": result.failed,
                                         "already": result.existing})
    return result


async def _fire_chunk(s: AsyncSession, plan_id: int, due_at: datetime,
                      chunk: Sequence[Tuple[str, Optional[WeChatGroup]]], tz: str, grace: timedelta,
                      now: datetime, runtime, result: FireResult) -> None:
    plan = await s.get(SopPlan, plan_id)
    ids = [c for c, _ in chunk]
    rows = (await s.execute(sa.select(WeChatGroup).where(WeChatGroup.chat_id.in_(ids)))).scalars()
    known = {g.chat_id: g for g in rows}
    groups = {c: known.get(c) for c in ids}
    reasons = {c: _skip_reason(plan, g, due_at, now, grace) for c, g in groups.items()}
    for chat_id, reason in reasons.items():
        await s.execute(db.insert(s, SopRun).values(
            plan_id=plan_id, chat_id=chat_id, due_at=due_at, status=SKIPPED if reason else PENDING, reason=reason,
            delivery=plan.delivery, outbox_ids=[], attempts=1, created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["plan_id", "chat_id", "due_at"]))
    runs = (await s.execute(sa.select(SopRun).where(
        SopRun.plan_id == plan_id, SopRun.due_at == due_at, SopRun.chat_id.in_(list(groups))))).scalars().all()
    for run in runs:
        if run.status == SKIPPED and reasons.get(run.chat_id) and run.created_at == now:
            result.skipped += 1
            continue
        if run.status != PENDING or run.handed_at is not None:
            result.existing += 1
            continue
        if await _hand_over(s, plan, run, groups[run.chat_id], tz, runtime):
            result.handed += 1
            result.outbox_ids.extend(run.outbox_ids)
        else:
            result.failed += 1
        run.updated_at = now


async def retry(run_id: int, actor: str, *, tz: str = "Asia/Shanghai", runtime=None) -> SopRun:
    """Send a failed run again now (a moderator's "重试"): new outbox rows under a new key."""
    async with db.transaction() as s:
        run = await s.get(SopRun, run_id)
        if run is None:
            raise plan_store.PlanError("没有这条执行记录", status=404)
        if run.status != FAILED:
            raise plan_store.PlanError("只有失败的记录可以重试", status=409)
        plan = await s.get(SopPlan, run.plan_id)
        group = await s.get(WeChatGroup, run.chat_id)
        if plan is None or group is None or group.dissolved_at is not None:
            raise plan_store.PlanError("计划或群已不存在", status=409)
        run.attempts += 1
        run.status, run.reason, run.sent_at, run.message_id = PENDING, None, None, None
        run.updated_at = now_utc()
        handed = await _hand_over(s, plan, run, group, tz, runtime)
        logger.info("sop run retried", extra={"run_id": run_id, "by": actor, "handed": handed})
    if runtime is not None:
        runtime.worker.wake()
    return run

