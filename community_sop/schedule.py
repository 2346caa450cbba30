"""When a plan's posts fall due: each schedule rule becomes an APScheduler trigger in the shop's
time zone, and the same trigger lists due times for the calendar, the catch-up after downtime and
the run keys. "建群第 N 天 HH:MM" is a daily trigger whose firing picks the groups created N days
before that day (community_sop/firing.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, Optional
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

KINDS = ("once", "daily", "weekly", "cron", "after_group_created")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


class ScheduleError(ValueError):
    """A schedule rule that cannot be used (the message is shown to the moderator)."""


def _hh_mm(value: Any) -> tuple:
    if not isinstance(value, str):
        raise ScheduleError("time 必须是 HH:MM")
    parts = value.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ScheduleError(f"time 必须是 HH:MM，收到 {value!r}")
    hour, minute = int(parts[0]), int(parts[1])
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ScheduleError(f"time 超出范围：{value}")
    return hour, minute


def parse_instant(value: Any, field: str = "at") -> datetime:
    """An ISO-8601 date-time with its UTC offset, as an aware datetime."""
    if not isinstance(value, str):
        raise ScheduleError(f"{field} 必须是带时区的 ISO-8601 时间，例如 2026-12-07T10:00:00+08:00")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"{field} 不是有效的 ISO-8601 时间：{value}") from None
    if moment.tzinfo is None:
        raise ScheduleError(f"{field} 需要带时区偏移，例如 +08:00")
    return moment


def normalise(schedule: Any) -> Dict[str, Any]:
    """The rule checked and in its stored form; ScheduleError says what is wrong."""
    if not isinstance(schedule, dict):
        raise ScheduleError("schedule 必须是对象")
    kind = schedule.get("kind")
    if kind not in KINDS:
        raise ScheduleError(f"schedule.kind 只能是 {' | '.join(KINDS)}")
    if kind == "once":
        return {"kind": kind, "at": parse_instant(schedule.get("at")).isoformat()}
    if kind == "cron":
        expr = schedule.get("expr")
        if not isinstance(expr, str) or len(expr.split()) != 5:
            raise ScheduleError("cron 表达式需要 5 段：分 时 日 月 周，例如 0 10 * * 1-5")
        try:
            CronTrigger.from_crontab(expr, timezone=ZoneInfo("Asia/Shanghai"))
        except ValueError as exc:
            raise ScheduleError(f"cron 表达式无效：{exc}") from None
        return {"kind": kind, "expr": expr.strip()}
    hour, minute = _hh_mm(schedule.get("time"))
    rule: Dict[str, Any] = {"kind": kind, "time": f"{hour:02d}:{minute:02d}"}
    if kind == "weekly":
        days = schedule.get("weekdays")
        if not isinstance(days, list) or not days or not all(isinstance(d, int) and 1 <= d <= 7 for d in days):
            raise ScheduleError("weekly 需要 weekdays：1-7 的列表（1 = 周一）")
        rule["weekdays"] = sorted(set(days))
    if kind == "after_group_created":
        days = schedule.get("days")
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 3650:
            raise ScheduleError("after_group_created 需要 days：0-3650 的整数")
        rule["days"] = days
    return rule


def trigger(schedule: Dict[str, Any], tz: str, start: Optional[datetime] = None,
            end: Optional[datetime] = None) -> BaseTrigger:
    """The APScheduler trigger of a (normalised) rule; start/end: the plan's window (aware)."""
    zone = ZoneInfo(tz)
    kind = schedule["kind"]
    if kind == "once":
        return DateTrigger(run_date=parse_instant(schedule["at"]), timezone=zone)
    if kind == "cron":
        return CronTrigger.from_crontab(schedule["expr"], timezone=zone) if not (start or end) else \
            _cron_window(schedule["expr"], zone, start, end)
    hour, minute = _hh_mm(schedule["time"])
    day_of_week = ",".join(WEEKDAYS[d - 1] for d in schedule["weekdays"]) if kind == "weekly" else None
    return CronTrigger(day_of_week=day_of_week, hour=hour, minute=minute, second=0, timezone=zone,
                       start_date=start, end_date=end)


def _cron_window(expr: str, zone: ZoneInfo, start: Optional[datetime], end: Optional[datetime]) -> CronTrigger:
    minute, hour, day, month, day_of_week = expr.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, second=0,
                       timezone=zone, start_date=start, end_date=end)


def due_times(trig: BaseTrigger, after: datetime, until: datetime, limit: int = 10_000) -> Iterator[datetime]:
    """Fire times t with after < t <= until (aware datetimes), in order."""
    moment = trig.get_next_fire_time(None, after + timedelta(microseconds=1))
    count = 0
    while moment is not None and moment <= until and count < limit:
        if moment > after:  # a date trigger names its date whatever the time asked about
            yield moment
            count += 1
        moment = trig.get_next_fire_time(moment, moment + timedelta(seconds=1))


def latest_due(trig: BaseTrigger, now: datetime, lookback: timedelta) -> Optional[datetime]:
    """The most recent fire time at or before `now` within `lookback`: what a firing is for."""
    found = None
    for moment in due_times(trig, now - lookback, now):
        found = moment
    return found


def to_utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def from_utc_naive(moment: Optional[datetime]) -> Optional[datetime]:
    """A stored (naive UTC) time as an aware one."""
    return moment.replace(tzinfo=timezone.utc) if moment else None


def plan_trigger(plan: Any, tz: str) -> BaseTrigger:
    """The trigger of a stored plan (its schedule within its validity window)."""
    return trigger(plan.schedule, tz, from_utc_naive(plan.starts_at), from_utc_naive(plan.ends_at))


def describe(schedule: Dict[str, Any]) -> str:
    """The rule in words for the plan list (Chinese)."""
    kind = schedule.get("kind")
    if kind == "once":
        return f"单次 {schedule.get('at', '')[:16].replace('T', ' ')}"
    if kind == "daily":
        return f"每天 {schedule.get('time')}"
    if kind == "weekly":
        return "每" + "、".join(WEEKDAY_NAMES[d - 1] for d in schedule.get("weekdays", [])) + f" {schedule.get('time')}"
    if kind == "cron":
        return f"cron {schedule.get('expr')}"
    if kind == "after_group_created":
        return f"建群第 {schedule.get('days')} 天 {schedule.get('time')}"
    return str(kind)

