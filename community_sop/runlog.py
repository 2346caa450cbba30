"""The execution log: a run becomes sent or failed from what happened to its outbox rows (and, for
a mass send, from the owner's confirmation and the platform's per-group result), with the
platform's message id and reason. Also the calendar of upcoming posts and the groups' numbers.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from channels.wechat import db
from channels.wechat.models import MassSendTask, OutboxMessage, WeChatGroup
from community_sop import schedule as rules
from community_sop.models import (
    FAILED,
    PENDING,
    SENT,
    SKIPPED,
    SopGroupActivity,
    SopGroupCheckin,
    SopModerationHit,
    SopPlan,
    SopRun,
    now_utc,
)
from community_sop.plans import iso_z

logger = logging.getLogger("community_sop.runlog")
WAITING_FOR_OWNER = "等待群主在企业微信确认发送"
RATE_LIMITED = "群机器人每分钟 20 条已用完"
MASS_RESULT_TEXT = {2: "群主与该群的关系已变化，未发送", 3: "该群本月收到的群发已达上限"}
FAILED_OUTBOX = ("failed", "refused", "unknown")


def _reason(row: OutboxMessage) -> str:
    code = f"（错误码 {row.last_errcode}）" if row.last_errcode else ""
    if row.status == "unknown":
        return "平台未确认是否送达" + code
    return f"{row.last_error or row.status}{code}"[:256]


def _local_hhmm(moment: datetime) -> str:
    from bot.settings import get_settings

    zone = ZoneInfo(get_settings().shop.timezone)
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).strftime("%H:%M")


def _settle_run(run: SopRun, rows: List[OutboxMessage], tasks: Dict[int, MassSendTask]) -> bool:
    """Move one pending run on from its outbox rows; whether it changed."""
    if not rows:
        return False
    broken = [r for r in rows if r.status in FAILED_OUTBOX]
    if broken:
        run.status, run.reason = FAILED, _reason(broken[0])
        return True
    if any(r.status != "sent" for r in rows):
        # paced by the robot's 20 messages a minute: say so, and when it goes
        deferred = [r for r in rows if r.status == "pending" and r.last_error == "rate_limited"]
        reason = (f"{RATE_LIMITED}，约 {_local_hhmm(deferred[0].next_attempt_at)} 自动发出" if deferred else None)
        changed = run.reason != reason
        run.reason = reason
        return changed
    if run.delivery == "mass_send":
        task = tasks.get(rows[0].id)
        if task is None:
            return False
        run.message_id = task.msgid
        if task.status == "created":
            changed = run.reason != WAITING_FOR_OWNER
            run.reason = WAITING_FOR_OWNER
            return changed
        if task.status == "cancelled":
            run.status, run.reason = SKIPPED, "群发任务已取消"
            return True
        result = int((task.results or {}).get(run.chat_id, 0))
        if result == 1:
            run.status, run.reason, run.sent_at = SENT, None, task.checked_at or now_utc()
        else:
            run.status, run.reason = FAILED, MASS_RESULT_TEXT.get(result, "群主确认后该群未收到")
        return True
    run.status, run.reason = SENT, None
    run.sent_at = max(r.sent_at for r in rows if r.sent_at) if any(r.sent_at for r in rows) else now_utc()
    run.message_id = next((r.platform_msgid for r in rows if r.platform_msgid), None)
    return True


async def settle(limit: int = 2000) -> int:
    """Update pending runs from their outbox rows; how many changed."""
    changed = 0
    async with db.transaction() as s:
        runs = (await s.execute(sa.select(SopRun).where(SopRun.status == PENDING, SopRun.handed_at.isnot(None))
                                .order_by(SopRun.id).limit(limit))).scalars().all()
        ids = sorted({i for run in runs for i in (run.outbox_ids or [])})
        rows: Dict[int, OutboxMessage] = {}
        tasks: Dict[int, MassSendTask] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for row in (await s.execute(sa.select(OutboxMessage).where(OutboxMessage.id.in_(part)))).scalars():
                rows[row.id] = row
            for task in (await s.execute(sa.select(MassSendTask).where(MassSendTask.outbox_id.in_(part)))).scalars():
                tasks[task.outbox_id] = task
        now = now_utc()
        for run in runs:
            if _settle_run(run, [rows[i] for i in run.outbox_ids or [] if i in rows], tasks):
                run.updated_at = now
                changed += 1
    return changed


def run_json(run: SopRun, group_name: str = "") -> Dict[str, Any]:
    return {"id": run.id, "plan_id": run.plan_id, "chat_id": run.chat_id, "group_name": group_name,
            "due_at": iso_z(run.due_at), "status": run.status, "reason": run.reason, "sent_at": iso_z(run.sent_at),
            "message_id": run.message_id, "delivery": run.delivery, "attempts": run.attempts}


async def _group_names(s: AsyncSession, chat_ids) -> Dict[str, str]:
    ids = list(set(chat_ids))
    names: Dict[str, str] = {}
    for start in range(0, len(ids), 500):
        rows = await s.execute(sa.select(WeChatGroup.chat_id, WeChatGroup.name).where(
            WeChatGroup.chat_id.in_(ids[start:start + 500])))
        names.update({c: n for c, n in rows.all()})
    return names


async def runs(s: AsyncSession, plan_id: Optional[int] = None, status: Optional[str] = None,
               limit: int = 500) -> List[Dict[str, Any]]:
    """Newest first."""
    query = sa.select(SopRun).order_by(SopRun.due_at.desc(), SopRun.chat_id).limit(limit)
    if plan_id is not None:
        query = query.where(SopRun.plan_id == plan_id)
    if status:
        query = query.where(SopRun.status == status)
    found = list((await s.execute(query)).scalars())
    names = await _group_names(s, [r.chat_id for r in found])
    return [run_json(r, names.get(r.chat_id, "")) for r in found]


async def failures(s: AsyncSession, since: datetime, limit: int = 200) -> List[Dict[str, Any]]:
    found = list((await s.execute(sa.select(SopRun, SopPlan.name).join(SopPlan, SopPlan.id == SopRun.plan_id).where(
        SopRun.status == FAILED, SopRun.due_at >= since).order_by(SopRun.due_at.desc()).limit(limit))).all())
    names = await _group_names(s, [r.chat_id for r, _ in found])
    return [dict(run_json(r, names.get(r.chat_id, "")), plan_name=n) for r, n in found]


async def calendar(s: AsyncSession, start: datetime, end: datetime, tz: str) -> List[Dict[str, Any]]:
    """Every due time of the active plans between start and end (aware), with how many groups it
    reaches; past ones as they went (from the runs)."""
    entries = []
    for plan in (await s.execute(sa.select(SopPlan).where(SopPlan.deleted_at.is_(None)))).scalars():
        trig = rules.plan_trigger(plan, tz)
        for due in rules.due_times(trig, start, end, limit=400):
            entries.append({"plan_id": plan.id, "plan_name": plan.name, "due_at": due.isoformat(),
                            "active": plan.active, "delivery": plan.delivery,
                            "schedule_text": rules.describe(plan.schedule)})
    counts = await s.execute(sa.select(SopRun.plan_id, SopRun.due_at, SopRun.status, sa.func.count()).where(
        SopRun.due_at >= rules.to_utc_naive(start), SopRun.due_at <= rules.to_utc_naive(end)).group_by(
        SopRun.plan_id, SopRun.due_at, SopRun.status))
    by_due: Dict[tuple, Dict[str, int]] = defaultdict(dict)
    for plan_id, due, status, n in counts.all():
        by_due[(plan_id, due)][status] = n
    for entry in entries:
        key = (entry["plan_id"], rules.to_utc_naive(datetime.fromisoformat(entry["due_at"])))
        entry["runs"] = by_due.get(key, {})
    entries.sort(key=lambda e: e["due_at"])
    return entries


def _day_bounds(day: date, tz: str):
    start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))
    return rules.to_utc_naive(start), rules.to_utc_naive(start + timedelta(days=1))


async def metrics(s: AsyncSession, days: List[date], tz: str) -> List[Dict[str, Any]]:
    """Per day (the shop's calendar): posts sent and failed, check-ins, members active, moderation hits."""
    out = []
    for day in days:
        lo, hi = _day_bounds(day, tz)
        statuses = dict((await s.execute(sa.select(SopRun.status, sa.func.count()).where(
            SopRun.due_at >= lo, SopRun.due_at < hi).group_by(SopRun.status))).all())
        checkins = (await s.execute(sa.select(sa.func.count()).select_from(SopGroupCheckin).where(
            SopGroupCheckin.day == day))).scalar() or 0
        active = (await s.execute(sa.select(sa.func.count(sa.distinct(SopGroupActivity.member))).where(
            SopGroupActivity.day == day))).scalar() or 0
        hits = (await s.execute(sa.select(sa.func.count()).select_from(SopModerationHit).where(
            SopModerationHit.at >= lo, SopModerationHit.at < hi))).scalar() or 0
        out.append({"day": day.isoformat(), "sent": statuses.get(SENT, 0), "failed": statuses.get(FAILED, 0),
                    "pending": statuses.get(PENDING, 0), "skipped": statuses.get(SKIPPED, 0),
                    "checkins": checkins, "members_active": active, "moderation_hits": hits})
    return out


async def group_metrics(s: AsyncSession, day: date, tz: str) -> List[Dict[str, Any]]:
    """One day per group: the same numbers as metrics(), for the table under the chart."""
    lo, hi = _day_bounds(day, tz)
    rows: Dict[str, Dict[str, Any]] = defaultdict(lambda: {"sent": 0, "failed": 0, "checkins": 0,
                                                           "members_active": 0, "moderation_hits": 0})
    for chat_id, status, n in (await s.execute(sa.select(SopRun.chat_id, SopRun.status, sa.func.count()).where(
            SopRun.due_at >= lo, SopRun.due_at < hi, SopRun.status.in_((SENT, FAILED))).group_by(
            SopRun.chat_id, SopRun.status))).all():
        rows[chat_id][status] = n
    for chat_id, n in (await s.execute(sa.select(SopGroupCheckin.chat_id, sa.func.count()).where(
            SopGroupCheckin.day == day).group_by(SopGroupCheckin.chat_id))).all():
        rows[chat_id]["checkins"] = n
    for chat_id, n in (await s.execute(sa.select(SopGroupActivity.chat_id, sa.func.count()).where(
            SopGroupActivity.day == day).group_by(SopGroupActivity.chat_id))).all():
        rows[chat_id]["members_active"] = n
    for chat_id, n in (await s.execute(sa.select(SopModerationHit.chat_id, sa.func.count()).where(
            SopModerationHit.at >= lo, SopModerationHit.at < hi).group_by(SopModerationHit.chat_id))).all():
        rows[chat_id]["moderation_hits"] = n
    names = await _group_names(s, rows.keys())
    return [dict(v, chat_id=c, name=names.get(c, "")) for c, v in sorted(rows.items())]
