"""The desk's daily numbers (a day of the shop's time zone), from its append-only event log:
handoffs by reason, first response times (median and p90, seconds from the handoff to staff's
first reply), SLA breaches, conversations handed back and ended, and corrections made."""
from __future__ import annotations

import statistics
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import ShopConfig
from desk.models import DeskCorrection, DeskEvent


def day_bounds(shop: ShopConfig, day: date):
    """The local day as naive UTC [start, end)."""
    tz = ZoneInfo(shop.timezone)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc).replace(tzinfo=None)
    return start, start + timedelta(days=1)


def today(shop: ShopConfig) -> date:
    return datetime.now(timezone.utc).astimezone(ZoneInfo(shop.timezone)).date()


def _percentile(values: List[float], share: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(share * (len(ordered) - 1)))))
    return round(ordered[index], 1)


async def daily(s: AsyncSession, shop: ShopConfig, day: Optional[date] = None) -> Dict[str, Any]:
    day = day or today(shop)
    start, end = day_bounds(shop, day)
    events = list((await s.execute(sa.select(DeskEvent).where(DeskEvent.at >= start, DeskEvent.at < end)
                                   .order_by(DeskEvent.id))).scalars())
    queued = [e for e in events if e.kind == "queued"]
    reasons = Counter((e.detail or {}).get("reason") or "unknown" for e in queued)
    # first replies of the day's handoffs (a reply may come the next day: looked up separately)
    first_response: List[float] = []
    if queued:
        later = list((await s.execute(sa.select(DeskEvent).where(
            DeskEvent.conversation.in_({e.conversation for e in queued}), DeskEvent.id > queued[0].id,
            DeskEvent.kind.in_(("queued", "replied", "cancelled"))).order_by(DeskEvent.id))).scalars())
        for event in queued:
            for nxt in later:
                if nxt.conversation != event.conversation or nxt.id <= event.id:
                    continue
                if nxt.kind == "replied":
                    first_response.append((nxt.at - event.at).total_seconds())
                break
    breaches = Counter((e.detail or {}).get("kind") for e in events if e.kind == "sla_breach")
    corrections = (await s.execute(sa.select(sa.func.count()).select_from(DeskCorrection).where(
        DeskCorrection.at >= start, DeskCorrection.at < end))).scalar() or 0
    return {
        "day": day.isoformat(),
        "handoffs": len(queued),
        "handoffs_by_reason": dict(reasons.most_common()),
        "first_response_s": {"answered": len(first_response),
                             "median": round(statistics.median(first_response), 1) if first_response else None,
                             "p90": _percentile(first_response, 0.9)},
        "sla_breaches": sum(breaches.values()),
        "sla_breaches_by_kind": dict(breaches),
        "handed_back": sum(1 for e in events if e.kind == "handed_back"),
        "closed": sum(1 for e in events if e.kind == "closed"),
        "cancelled_by_customer": sum(1 for e in events if e.kind == "cancelled"),
        "corrections": corrections,
    }
