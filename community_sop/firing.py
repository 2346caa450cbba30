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


def _targets(plan: SopPlan, groups: Dict[str, WeChatGroup], due_at: datetime, tz: str) -> List[str]:
    """The chat ids a plan's due time goes to (unknown ids included: they are logged as skipped)."""
    targets = plan.targets or {}
    if "chat_ids" in targets:
        found = list(dict.fromkeys(targets["chat_ids"]))
    else:
        found = sorted(c for c, g in groups.items() if plan_store.matches(targets, g))
    if plan.schedule.get("kind") == "after_group_created":
        day = _local_day(due_at, tz) - timedelta(days=int(plan.schedule.get("days", 0)))
        found = [c for c in found if c in groups and groups[c].group_created_at
                 and _local_day(groups[c].group_created_at, tz) == day]
    return found


async def _prepare(s: AsyncSession, plan: SopPlan, run: SopRun, group: WeChatGroup, tz: str, runtime):
    """The post rendered for the group as outbox rows under the run's key (one per attempt), or
    None with the run failed and why."""
    post = await render(s, _plan_dict(plan), GroupInfo.of(group), run.due_at.replace(tzinfo=ZoneInfo("UTC")), tz)
    problems = post.problems_for(plan.delivery)
    if problems:
        run.status, run.reason = FAILED, "；".join(problems)[:256]
        return None
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
        return None
    return outgoing


async def _hand_over(s: AsyncSession, pairs, tz: str, runtime) -> List[bool]:
    """Store the posts of these (plan, run, group) in the caller's transaction, in one batch."""
    prepared = [await _prepare(s, plan, run, group, tz, runtime) for plan, run, group in pairs]
    ids = await outbox.enqueue_in(s, [m for outgoing in prepared if outgoing for m in outgoing])
    handed, position, now = [], 0, now_utc()
    for (_, run, _), outgoing in zip(pairs, prepared):
        if outgoing:
            run.outbox_ids, run.handed_at = ids[position:position + len(outgoing)], now
            position += len(outgoing)
        handed.append(bool(outgoing))
    return handed


async def fire(plan_id: int, due_at: datetime, *, tz: str = "Asia/Shanghai", grace: timedelta = DEFAULT_GRACE,
               runtime=None, now: Optional[datetime] = None) -> FireResult:
    """Hand the posts of the plan's due time (naive UTC) to the outbox, once per group."""
    results = await fire_many([(plan_id, due_at)], tz=tz, grace=grace, runtime=runtime, now=now)
    return results[(plan_id, due_at)]


async def fire_many(items: Sequence[Tuple[int, datetime]], *, tz: str = "Asia/Shanghai",
                    grace: timedelta = DEFAULT_GRACE, runtime=None, now: Optional[datetime] = None
                    ) -> Dict[Tuple[int, datetime], FireResult]:
    """fire() for many (plan, due time) pairs at once: the plans due at the same moment (every
    group's own 10:00 post) are stored CHUNK posts per transaction rather than one by one."""
    now = now or now_utc()
    results = {(p, d): FireResult(p, d) for p, d in items}
    plan_ids = sorted({p for p, _ in items})
    async with db.session() as s:
        found: Dict[int, SopPlan] = {}
        for start in range(0, len(plan_ids), 500):
            found.update((p.id, p) for p in (await s.execute(sa.select(SopPlan).where(
                SopPlan.id.in_(plan_ids[start:start + 500])))).scalars())
        groups = {g.chat_id: g for g in (await s.execute(sa.select(WeChatGroup))).scalars()}
    work: List[Tuple[SopPlan, datetime, str]] = []
    for plan_id, due_at in items:
        plan = found.get(plan_id)
        if plan is not None and plan.deleted_at is None:
            work.extend((plan, due_at, chat_id) for chat_id in _targets(plan, groups, due_at, tz))
    for start in range(0, len(work), CHUNK):
        async with db.transaction() as s:
            await _fire_chunk(s, work[start:start + CHUNK], tz, grace, now, runtime, results)
    handed = sum(r.handed for r in results.values())
    if runtime is not None and handed:
        runtime.worker.wake()
    for result in results.values():
        logger.info("sop plan fired", extra={"plan_id": result.plan_id, "due_at": result.due_at.isoformat(),
                                             "handed": result.handed, "skipped": result.skipped,
                                             "failed": result.failed, "already": result.existing})
    return results


async def _fire_chunk(s: AsyncSession, chunk: Sequence[Tuple[SopPlan, datetime, str]], tz: str,
                      grace: timedelta, now: datetime, runtime,
                      results: Dict[Tuple[int, datetime], FireResult]) -> None:
    # the chunk's groups read inside this transaction: dissolved, robot key and owner as they are now
    chat_ids = list({c for _, _, c in chunk})
    groups = {g.chat_id: g for g in (await s.execute(sa.select(WeChatGroup).where(
        WeChatGroup.chat_id.in_(chat_ids)))).scalars()}
    reasons = {(plan.id, due, chat): _skip_reason(plan, groups.get(chat), due, now, grace)
               for plan, due, chat in chunk}
    rows = [dict(plan_id=plan.id, chat_id=chat, due_at=due, reason=reasons[(plan.id, due, chat)],
                 status=SKIPPED if reasons[(plan.id, due, chat)] else PENDING, delivery=plan.delivery,
                 outbox_ids=[], attempts=1, created_at=now, updated_at=now) for plan, due, chat in chunk]
    await s.execute(db.insert(s, SopRun).values(rows).on_conflict_do_nothing(
        index_elements=["plan_id", "chat_id", "due_at"]))
    plans_by_id = {plan.id: plan for plan, _, _ in chunk}
    runs = [r for r in (await s.execute(sa.select(SopRun).where(
        SopRun.plan_id.in_(list(plans_by_id)), SopRun.due_at.in_(list({d for _, d, _ in chunk})),
        SopRun.chat_id.in_(chat_ids)))).scalars() if (r.plan_id, r.due_at, r.chat_id) in reasons]
    pairs = []
    for run in runs:
        result = results[(run.plan_id, run.due_at)]
        if run.status == SKIPPED and run.created_at == now and reasons.get((run.plan_id, run.due_at, run.chat_id)):
            result.skipped += 1
        elif run.status != PENDING or run.handed_at is not None:
            result.existing += 1
        else:
            pairs.append((plans_by_id[run.plan_id], run, groups[run.chat_id]))
    for (plan, run, _), handed in zip(pairs, await _hand_over(s, pairs, tz, runtime)):
        result = results[(run.plan_id, run.due_at)]
        if handed:
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
        [handed] = await _hand_over(s, [(plan, run, group)], tz, runtime)
        logger.info("sop run retried", extra={"run_id": run_id, "by": actor, "handed": handed})
    if runtime is not None:
        runtime.worker.wake()
    return run

