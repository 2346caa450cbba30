"""Shop events in: checking one (EventError: the reason, for a 400), storing a batch under the
events' own ids (a repeat is accepted and stored once, so never acted on twice), and the events our
own data produces (a parcel with no scan for N hours, a new 微信客服 contact).

An event: {"id", "type", "customer", "ref", "at", ...}; `customer` is the shop's customer number,
`ref` the cart or order id, `at` ISO 8601 (without an offset: the shop's time zone) or epoch
seconds; every other field is kept as the event's data (items, amount, carrier's scan...).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import CustomerIdentity, LogisticsEvent, Order, OrderStatus
from bot.settings import get_settings
from channels.wechat import db
from nudges.models import NudgeEvent, NudgeState, now_utc
from nudges.rules import EVENT_TYPES

logger = logging.getLogger("nudges.events")
MAX_BATCH = 1000
# an event from further ahead than this is a clock error, not a future fact
FUTURE_SLACK = timedelta(minutes=10)
RESERVED = ("id", "type", "customer", "ref", "at")
INSERT_BATCH = 200


class EventError(ValueError):
    """Why an event is refused (Chinese, returned with 400)."""


@dataclass
class Ingested:
    accepted: int = 0
    duplicates: int = 0
    rejected: List[Dict[str, Any]] = field(default_factory=list)


def _text(body: Dict[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise EventError(f"缺少字段 {name}")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise EventError(f"字段 {name} 需要是字符串")
    value = value.strip()
    if not value and required:
        raise EventError(f"缺少字段 {name}")
    if len(value) > limit:
        raise EventError(f"字段 {name} 最长 {limit} 个字符")
    return value


def parse_time(value: Any, tz: str) -> datetime:
    """Naive UTC from ISO 8601 (no offset: the shop's zone) or epoch seconds."""
    if isinstance(value, bool) or value is None or value == "":
        raise EventError("缺少字段 at（ISO 8601 时间或秒级时间戳）")
    if isinstance(value, (int, float)):
        if not 946684800 <= value <= 4102444800:
            raise EventError("字段 at 的时间戳不在合理范围")
        return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)
    if not isinstance(value, str):
        raise EventError("字段 at 需要 ISO 8601 时间或秒级时间戳")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise EventError(f"字段 at 不是有效的时间：{value[:40]}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.astimezone(timezone.utc).replace(tzinfo=None)


def check(body: Any, now: Optional[datetime] = None, tz: Optional[str] = None) -> Dict[str, Any]:
    """The event's row values, or EventError with the reason."""
    if not isinstance(body, dict):
        raise EventError("事件需要是一个 JSON 对象")
    event_id = _text(body, "id", 128)
    kind = _text(body, "type", 32)
    if kind not in EVENT_TYPES:
        raise EventError(f"未知的事件类型 {kind}（可用：{', '.join(EVENT_TYPES)}）")
    customer = _text(body, "customer", 64)
    ref = _text(body, "ref", 64, required=kind not in ("product_viewed", "contact_added"))
    at = parse_time(body.get("at"), tz or get_settings().shop.timezone)
    if at > (now or now_utc()) + FUTURE_SLACK:
        raise EventError("字段 at 在未来")
    data = {k: v for k, v in body.items() if k not in RESERVED}
    for name in ("amount", "amount_fen"):
        if name in data and (isinstance(data[name], bool) or not isinstance(data[name], (int, float))
                             or data[name] < 0):
            raise EventError(f"字段 {name} 需要是非负数字")
    if "items" in data and not isinstance(data["items"], list):
        raise EventError("字段 items 需要是列表")
    return {"event_id": event_id, "type": kind, "customer": customer, "ref": ref, "at": at, "data": data}


def batch_of(body: Any) -> Tuple[List[Any], bool]:
    """(the events, whether the body was the batch form {"events": [...]})."""
    if isinstance(body, dict) and "events" in body and "id" not in body:
        events = body["events"]
        if not isinstance(events, list) or not events:
            raise EventError("events 需要是非空列表")
        if len(events) > MAX_BATCH:
            raise EventError(f"一次最多 {MAX_BATCH} 个事件")
        return events, True
    return [body], False


async def store(rows: List[Dict[str, Any]], source: str = "shop") -> Tuple[int, int]:
    """Insert checked events (one transaction); (stored, duplicates): a known id is not stored again."""
    if not rows:
        return 0, 0
    now = now_utc()
    values = [{**r, "source": source, "status": "new", "attempts": 0, "received_at": now} for r in rows]
    stored = 0
    if get_settings().is_sqlite:
        async with db.transaction() as s:
            for start in range(0, len(values), INSERT_BATCH):
                result = await s.execute(db.insert(s, NudgeEvent).values(values[start:start + INSERT_BATCH])
                                         .on_conflict_do_nothing(index_elements=["event_id"]))
                stored += max(result.rowcount or 0, 0)
        return stored, len(rows) - stored
    # PostgreSQL: a Core connection (no ORM session: this is the busiest write of the product)
    from sqlalchemy.dialects.postgresql import insert

    from actions.db.engine import get_async_engine

    async with get_async_engine().begin() as conn:
        for start in range(0, len(values), INSERT_BATCH):
            result = await conn.execute(insert(NudgeEvent).values(values[start:start + INSERT_BATCH])
                                        .on_conflict_do_nothing(index_elements=["event_id"]))
            stored += max(result.rowcount or 0, 0)
    return stored, len(rows) - stored


async def ingest(body: Any) -> Ingested:
    """Check and store the body's events: the good ones are kept whatever the bad ones are."""
    events, _ = batch_of(body)
    out = Ingested()
    good, seen = [], set()
    now, tz = now_utc(), get_settings().shop.timezone
    for index, event in enumerate(events):
        try:
            row = check(event, now, tz)
        except EventError as exc:
            out.rejected.append({"index": index, "id": event.get("id") if isinstance(event, dict) else None,
                                 "reason": str(exc)})
            continue
        if row["event_id"] in seen:
            out.duplicates += 1
            continue
        seen.add(row["event_id"])
        good.append(row)
    stored, duplicates = await store(good)
    # accepted: every well-formed event (a repeat is accepted, and stored once); duplicates: repeats
    out.accepted, out.duplicates = len(good) + out.duplicates, out.duplicates + duplicates
    if out.rejected:
        logger.warning("events refused", extra={"refused": len(out.rejected), "first": out.rejected[0]["reason"]})
    return out


# --- events from our own data -------------------------------------------------------------------------
async def _state(s: AsyncSession, name: str) -> Dict[str, Any]:
    row = await s.get(NudgeState, name)
    return dict(row.value) if row else {}


async def _save_state(s: AsyncSession, name: str, value: Dict[str, Any]) -> None:
    row = await s.get(NudgeState, name)
    if row is None:
        s.add(NudgeState(name=name, value=value, updated_at=now_utc()))
    else:
        row.value, row.updated_at = value, now_utc()


async def scan_stalled_parcels(now: Optional[datetime] = None, limit: int = 2000) -> int:
    """logistics_stalled for shipped orders whose latest scan is older than the shop's
    logistics_stall_hours; one event per order and latest scan (a parcel that moves and stalls again
    gets another). How many new events."""
    now = now or now_utc()
    cutoff = now - timedelta(hours=get_settings().shop.logistics_stall_hours)
    latest = (sa.select(LogisticsEvent.order_id, sa.func.max(LogisticsEvent.occurred_at).label("last_at"))
              .group_by(LogisticsEvent.order_id).subquery())
    async with db.session() as s:
        found = (await s.execute(
            sa.select(Order.order_no, Order.carrier, Order.shipped_at, latest.c.last_at, Order.customer_id)
            .join(latest, latest.c.order_id == Order.id, isouter=True)
            .where(Order.status == OrderStatus.shipped.value,
                   sa.func.coalesce(latest.c.last_at, Order.shipped_at) < cutoff)
            .limit(limit))).all()
        if not found:
            return 0
        from actions.db.models import Customer

        numbers = dict((await s.execute(sa.select(Customer.id, Customer.external_id).where(
            Customer.id.in_({r.customer_id for r in found})))).all())
        scans: Dict[str, Tuple[datetime, str, str]] = {}
        orders = [r.order_no for r in found]
        for start in range(0, len(orders), 500):
            rows = (await s.execute(
                sa.select(Order.order_no, LogisticsEvent.occurred_at, LogisticsEvent.description,
                          LogisticsEvent.location)
                .join(LogisticsEvent, LogisticsEvent.order_id == Order.id)
                .where(Order.order_no.in_(orders[start:start + 500]))
                .order_by(LogisticsEvent.occurred_at))).all()
            for no, at, text, location in rows:
                scans[no] = (at, text, location)
    rows = []
    for r in found:
        last = r.last_at or r.shipped_at
        scan = scans.get(r.order_no)
        rows.append({"event_id": f"sys:logistics_stalled:{r.order_no}:{last:%Y%m%d%H%M%S}",
                     "type": "logistics_stalled", "customer": numbers.get(r.customer_id, ""), "ref": r.order_no,
                     "at": now, "data": {"carrier": r.carrier or "", "last_scan_at": last.isoformat() + "Z",
                                         "last_scan": scan[1] if scan else "",
                                         "last_location": scan[2] if scan else ""}})
    stored, _ = await store([r for r in rows if r["customer"]], source="system")
    if stored:
        logger.info("stalled parcels found", extra={"events": stored})
    return stored


async def scan_new_contacts(now: Optional[datetime] = None, limit: int = 2000) -> int:
    """contact_added for 微信客服 identities recorded since the last scan (the gateway records one
    when a new user first writes). The first scan only marks where it starts: contacts from before
    the nudges existed are not welcomed."""
    from actions.db.models import Customer

    async with db.transaction() as s:
        state = await _state(s, "contacts")
        top = (await s.execute(sa.select(sa.func.max(CustomerIdentity.id)))).scalar() or 0
        if "last_id" not in state:
            await _save_state(s, "contacts", {"last_id": top})
            return 0
        found = (await s.execute(
            sa.select(CustomerIdentity.id, CustomerIdentity.external_id, CustomerIdentity.created_at,
                      Customer.external_id.label("number"))
            .join(Customer, Customer.id == CustomerIdentity.customer_id)
            .where(CustomerIdentity.id > state["last_id"], CustomerIdentity.channel == "wecom_kf")
            .order_by(CustomerIdentity.id).limit(limit))).all()
        last = found[-1].id if found and len(found) == limit else top
        await _save_state(s, "contacts", {"last_id": last})
    rows = [{"event_id": f"sys:contact_added:wecom_kf:{r.external_id}", "type": "contact_added",
             "customer": r.number, "ref": f"wecom_kf:{r.external_id}", "at": r.created_at or now or now_utc(),
             "data": {"channel": "wecom_kf"}} for r in found]
    stored, _ = await store(rows, source="system")
    return stored
