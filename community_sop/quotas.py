"""What the platform will allow a plan, told before it is saved: the robot's 20 messages a minute,
a customer group's monthly mass-send allowance (as many as the month has days, counting the other
mass-send plans to the same group), the 30 app messages a minute an owner may get, and groups that
lack what the chosen delivery mode needs.
"""
from __future__ import annotations

import calendar
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Sequence
from zoneinfo import ZoneInfo

from channels.wechat.models import WeChatGroup
from community_sop import schedule as rules
from community_sop.models import SopPlan

ROBOT_PER_MINUTE = 20
APP_PER_MINUTE = 30


def _month_bounds(now: datetime, tz: str):
    local = now.astimezone(ZoneInfo(tz))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(local.year, local.month)[1]
    return start, start + timedelta(days=days), days


def _due_this_month(schedule: Dict, tz: str, now: datetime) -> int:
    start, end, _ = _month_bounds(now, tz)
    return sum(1 for _ in rules.due_times(rules.trigger(schedule, tz), start - timedelta(seconds=1), end, limit=5000))


def warnings(delivery: str, schedule: Dict, groups: Sequence[WeChatGroup], messages_per_post: int,
             other_plans: Sequence[SopPlan], other_targets: Dict[int, List[str]], tz: str,
             now: datetime | None = None) -> List[str]:
    """Chinese notes for the moderator; an empty list when nothing stands in the way."""
    now = now or datetime.now(timezone.utc)
    notes: List[str] = []
    if not groups:
        notes.append("没有匹配的群：保存后不会发送给任何群")
    dissolved = [g.name or g.chat_id for g in groups if g.dissolved_at is not None]
    if dissolved:
        notes.append(f"已解散的群会被跳过：{'、'.join(dissolved[:5])}")
    live = [g for g in groups if g.dissolved_at is None]
    if delivery == "robot":
        missing = [g.name or g.chat_id for g in live if not g.robot_key]
        if missing:
            notes.append(f"这些群没有机器人，无法发送：{'、'.join(missing[:5])}" + ("等" if len(missing) > 5 else ""))
        if messages_per_post > ROBOT_PER_MINUTE:
            notes.append(f"每次每群 {messages_per_post} 条消息，超过机器人每分钟 {ROBOT_PER_MINUTE} 条的上限，"
                         "多出的会在之后几分钟内发出")
        elif messages_per_post > 1:
            notes.append(f"每次每群 {messages_per_post} 条消息（机器人每分钟最多 {ROBOT_PER_MINUTE} 条）")
    else:
        missing = [g.name or g.chat_id for g in live if not g.owner_userid]
        if missing:
            notes.append(f"这些群没有记录群主，无法发送：{'、'.join(missing[:5])}")
    if delivery == "mass_send":
        _, _, days = _month_bounds(now, tz)
        this_plan = _due_this_month(schedule, tz, now)
        counts: Counter = Counter({g.chat_id: this_plan for g in live})
        for plan in other_plans:
            if plan.delivery != "mass_send" or not plan.active:
                continue
            per_group = _due_this_month(plan.schedule, tz, now)
            for chat_id in other_targets.get(plan.id, []):
                if chat_id in counts:
                    counts[chat_id] += per_group
        over = [(c, n) for c, n in counts.items() if n > days]
        notes.append(f"企业微信群发需要群主在手机上确认；每个客户群每月最多收到 {days} 次群发"
                     f"（本计划本月约 {this_plan} 次）")
        if over:
            names = {g.chat_id: g.name or g.chat_id for g in live}
            worst = ", ".join(f"{names[c]} {n} 次" for c, n in sorted(over, key=lambda x: -x[1])[:5])
            notes.append(f"超出本月群发上限，超出部分不会送达：{worst}")
    if delivery == "owner_reminder":
        per_owner = Counter(g.owner_userid for g in live if g.owner_userid)
        busy = [o for o, n in per_owner.items() if n > APP_PER_MINUTE]
        notes.append("群主会在企业微信收到提醒，需要手动转发到群里")
        if busy:
            notes.append(f"同一群主一次收到超过 {APP_PER_MINUTE} 条提醒会被平台丢弃：{'、'.join(busy[:5])}")
    return notes
