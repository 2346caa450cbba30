"""Service targets (SLA) of the desk, counted in business minutes: first response (from the handoff
to staff's first reply), next response (from a customer message staff have not answered yet) and
resolution (from the handoff to the end or hand back). Each is ok, warning (80 % of the target
used) or missed; a miss is recorded once per handoff and kind as a `sla_breach` desk event, which
re-announces the conversation to online agents and flags it to supervisors."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import ShopConfig
from desk.models import ASSIGNED, QUEUED, DeskConversation, DeskEvent, now_utc

WARNING_SHARE = 0.8
KINDS = ("first_response", "next_response", "resolution")


def business_seconds(shop: ShopConfig, start: datetime, end: datetime) -> float:
    """Seconds of business hours between two naive UTC times."""
    if end <= start:
        return 0.0
    tz = ZoneInfo(shop.timezone)
    hours = shop.business_hours
    local_start = start.replace(tzinfo=timezone.utc).astimezone(tz)
    local_end = end.replace(tzinfo=timezone.utc).astimezone(tz)
    total = 0.0
    day = local_start.date()
    while day <= local_end.date():
        if day.isoweekday() in hours.days:
            open_at = datetime.combine(day, hours.start, tzinfo=tz)
            close_at = datetime.combine(day, hours.end, tzinfo=tz)
            lo, hi = max(open_at, local_start), min(close_at, local_end)
            if hi > lo:
                total += (hi - lo).total_seconds()
        day += timedelta(days=1)
    return total


def _clock(target_minutes: int, used_s: float, done: bool) -> Dict[str, Any]:
    target_s = target_minutes * 60
    state = "ok" if used_s < target_s * WARNING_SHARE else ("warning" if used_s < target_s else "missed")
    return {"target_s": target_s, "used_s": int(used_s), "state": state, "running": not done}


def status(shop: ShopConfig, row: DeskConversation, now: Optional[datetime] = None) -> Dict[str, Any]:
    """The three clocks of the conversation's current handoff (empty when it is with the bot)."""
    now = now or now_utc()
    if not row.queued_at or row.state not in (QUEUED, ASSIGNED):
        return {}
    targets = shop.desk.targets
    first_end = row.first_response_at or now
    clocks = {"first_response": _clock(targets.first_response_minutes,
                                       business_seconds(shop, row.queued_at, first_end),
                                       row.first_response_at is not None),
              "resolution": _clock(targets.resolution_minutes, business_seconds(shop, row.queued_at, now), False)}
    waiting_since = row.last_customer_at
    if (row.first_response_at and waiting_since and waiting_since > (row.last_agent_at or row.first_response_at)):
        clocks["next_response"] = _clock(targets.next_response_minutes,
                                         business_seconds(shop, waiting_since, now), False)
    worst = max((c["state"] for c in clocks.values()), key=("ok", "warning", "missed").index)
    clocks["state"] = worst
    return clocks


async def record_breaches(s: AsyncSession, shop: ShopConfig, now: Optional[datetime] = None) -> List[DeskEvent]:
    """Record each missed target of the open handoffs once (per handoff and kind)."""
    now = now or now_utc()
    rows = list((await s.execute(sa.select(DeskConversation).where(
        DeskConversation.state.in_((QUEUED, ASSIGNED))))).scalars())
    if not rows:
        return []
    recorded = {(e.conversation, (e.detail or {}).get("kind"), (e.detail or {}).get("episode"))
                for e in (await s.execute(sa.select(DeskEvent).where(
                    DeskEvent.kind == "sla_breach", DeskEvent.conversation.in_([r.id for r in rows])))).scalars()}
    made = []
    for row in rows:
        clocks = status(shop, row, now)
        for kind in KINDS:
            clock = clocks.get(kind)
            if clock and clock["state"] == "missed" and (row.id, kind, row.episode) not in recorded:
                event = DeskEvent(conversation=row.id, kind="sla_breach", actor="system",
                                  detail={"kind": kind, "episode": row.episode, "target_s": clock["target_s"],
                                          "used_s": clock["used_s"], "assignee": row.assignee})
                s.add(event)
                made.append(event)
    if made:
        await s.flush()
    return made
