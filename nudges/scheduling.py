"""Events to nudges: each new event is matched against the live rules it triggers; a rule whose
conditions hold schedules one nudge per (rule, customer, ref) at the event's time plus the rule's
delay. A second trigger for the same key is logged as a duplicate and changes nothing. Daily rules
(silent-customer recall) schedule over their audience instead of an event.

The leader works events in id order, a batch per transaction: the nudges, their log lines and the
events' new state commit together, so an event is acted on once whatever restarts in between.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Tuple

import sqlalchemy as sa
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Customer, LogisticsEvent, Order, OrderItem, Product, ProductVariant
from actions.templates import datetime_text
from bot.settings import get_settings
from channels.wechat import db
from nudges import rules as rulebook
from nudges.models import (
    DONE,
    FAILED,
    IGNORED,
    LIVE,
    NEW,
    PAID_STATUSES,
    SCHEDULED,
    SUPPRESSED,
    CustomerSegment,
    Nudge,
    NudgeEvent,
    NudgeLogEntry,
    NudgeRule,
    now_utc,
)
from nudges.rules import RuleDef

logger = logging.getLogger("nudges.scheduling")
BATCH = 500
CYCLE = re.compile(r"(\d+)\s*(天|日|周|个月|月)")


@dataclass
class Plan:
    """A nudge to schedule (or why not: `skip`)."""
    due_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    context: Dict[str, Any] = field(default_factory=dict)
    skip: Optional[str] = None


def live_rules(rows: List[NudgeRule]) -> List[Tuple[NudgeRule, RuleDef]]:
    out = []
    for row in rows:
        if row.status != LIVE or row.deleted_at is not None:
            continue
        try:
            out.append((row, rulebook.definition(row)))
        except ValueError:
            logger.exception("nudge rule unusable", extra={"rule": row.key})
    return out


def demo_delay(rule: RuleDef) -> Optional[timedelta]:
    """The demo shows the cart reminder in seconds (SIYU_DEMO_NUDGE_DELAY_S)."""
    settings = get_settings()
    if settings.demo and settings.demo_nudge_delay_s is not None and rule.key == "cart_abandonment":
        return timedelta(seconds=settings.demo_nudge_delay_s)
    return None


def number(value: Any, default: float = 0) -> float:
    """A number from an event's field as the shop sent it ("2", 2, 2.5); `default` for anything else."""
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return value
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return default


def value_fen(data: Dict[str, Any]) -> int:
    """The cart's / order's value in fen: amount_fen, amount (yuan), or the items' prices."""
    if isinstance(data.get("amount_fen"), (int, float)):
        return int(data["amount_fen"])
    if isinstance(data.get("amount"), (int, float)):
        return int(round(data["amount"] * 100))
    total = 0.0
    for item in data.get("items") or []:
        if isinstance(item, dict):
            price = number(item.get("price_fen"), number(item.get("price")) * 100)
            total += price * max(1, int(number(item.get("qty") or item.get("quantity"), 1)))
    return int(round(total))


def use_cycle_days(product: Optional[Product], category: Optional[str]) -> Optional[int]:
    """Days a product lasts: its specs' 使用周期 ("60天", "8周", "2个月"), else the category's default."""
    spec = str((product.specs or {}).get("使用周期", "")) if product is not None else ""
    found = CYCLE.search(spec)
    if found:
        n, unit = int(found.group(1)), found.group(2)
        return n * {"天": 1, "日": 1, "周": 7}.get(unit, 30)
    defaults = get_settings().shop.nudges.use_cycle_days
    return defaults.get(category or (product.category if product is not None else ""))


async def _order_facts(s: AsyncSession, order_no: str) -> Dict[str, Any]:
    """What the shop's own order data says about an order the event names."""
    order = (await s.execute(sa.select(Order).where(Order.order_no == order_no))).scalars().first()
    if order is None:
        return {}
    items = (await s.execute(sa.select(OrderItem, ProductVariant, Product)
                             .join(ProductVariant, ProductVariant.id == OrderItem.variant_id, isouter=True)
                             .join(Product, Product.id == ProductVariant.product_id, isouter=True)
                             .where(OrderItem.order_id == order.id))).all()
    scan = (await s.execute(sa.select(LogisticsEvent).where(LogisticsEvent.order_id == order.id)
                            .order_by(LogisticsEvent.occurred_at.desc()).limit(1))).scalars().first()
    return {"order_no": order.order_no, "value_fen": order.paid_fen or order.total_fen, "carrier": order.carrier,
            "customer_id": order.customer_id,
            "last_scan": f"{scan.location} {scan.description}".strip() if scan else "",
            "items": [{"sku": i.sku, "name": i.product_name, "qty": i.quantity,
                       "cycle": use_cycle_days(p, p.category if p is not None else None)} for i, _, p in items]}


async def context_for(s: AsyncSession, event: NudgeEvent) -> Dict[str, Any]:
    data = dict(event.data or {})
    context: Dict[str, Any] = {"ref": event.ref, "event": event.type}
    if event.type in ("cart_updated", "checkout_started", "product_viewed"):
        context["items"] = [i for i in data.get("items") or [] if isinstance(i, dict)][:20]
        context["value_fen"] = value_fen(data)
        return context
    facts = await _order_facts(s, event.ref) if event.ref else {}
    context["order_no"] = event.ref
    context["items"] = [i for i in data.get("items") or [] if isinstance(i, dict)][:20] or facts.get("items", [])
    context["value_fen"] = value_fen(data) or facts.get("value_fen", 0)
    context["carrier"] = data.get("carrier") or facts.get("carrier") or ""
    last = data.get("last_scan")
    if isinstance(last, dict):
        last = " ".join(str(last.get(k) or "") for k in ("location", "text", "description")).strip()
    context["last_scan"] = str(last or facts.get("last_scan") or "")
    if event.type == "refund_completed":
        context["refund_fen"] = value_fen(data)
    return context


async def _paid_orders(s: AsyncSession, customer_id: int, but: str = "") -> int:
    """The customer's paid orders (the shop's data and order_paid events), except the ref `but`."""
    in_orders = set((await s.execute(sa.select(Order.order_no).where(
        Order.customer_id == customer_id, Order.status.in_(PAID_STATUSES)))).scalars())
    in_events = set((await s.execute(sa.select(NudgeEvent.ref).where(
        NudgeEvent.customer_id == customer_id, NudgeEvent.type == "order_paid"))).scalars())
    return len((in_orders | in_events) - {but})


def _in_range(value: Optional[float], bounds) -> bool:
    if bounds is None:
        return True
    if value is None:
        return False
    return (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)


async def plan_for(s: AsyncSession, rule: RuleDef, event: NudgeEvent, customer: Customer,
                   segment: Optional[CustomerSegment], now: datetime) -> Plan:
    """When the rule's nudge for this event is due, or why there is none."""
    cond = rule.conditions
    if cond.max_age_minutes and now - event.at > timedelta(minutes=cond.max_age_minutes):
        return Plan(skip="trigger_too_old")
    if cond.levels and customer.level not in cond.levels:
        return Plan(skip="level")
    if cond.tags and not set(cond.tags) & set(customer.tags or []):
        return Plan(skip="tags")
    if cond.segments and (segment is None or segment.segment not in cond.segments):
        return Plan(skip="segment")
    if cond.days_since_last_order is not None:
        if not _in_range(segment.recency_days if segment else None, cond.days_since_last_order):
            return Plan(skip="days_since_last_order")
    context = await context_for(s, event)
    if not _in_range(context.get("value_fen", 0) / 100, cond.value_yuan):
        return Plan(skip="value")
    if cond.first_order and await _paid_orders(s, customer.id, but=event.ref) > 0:
        return Plan(skip="not_first_order")
    delay = demo_delay(rule) or timedelta(minutes=rule.delay.minutes)
    if rule.delay.use_cycle_days_before is not None:
        cycles = [i.get("cycle") for i in context.get("items", []) if i.get("cycle")]
        if not cycles:
            product_cycles = await _cycles(s, [i.get("sku") for i in context.get("items", []) if i.get("sku")])
            cycles = [c for c in product_cycles if c]
        if not cycles:
            return Plan(skip="no_use_cycle")
        days = min(cycles)
        delay = timedelta(days=max(1, days - rule.delay.use_cycle_days_before))
        context["days"] = int(delay.days)
        # the product the reminder is about: the one that runs out first
        context["items"] = sorted(context["items"], key=lambda i: i.get("cycle") or 10 ** 6)[:1]
    due = event.at + delay
    expires = due + timedelta(minutes=rule.send_within_minutes) if rule.send_within_minutes else None
    return Plan(due_at=due, expires_at=expires, context=context)


async def _cycles(s: AsyncSession, skus: List[str]) -> List[Optional[int]]:
    if not skus:
        return []
    rows = (await s.execute(sa.select(Product).join(ProductVariant).where(ProductVariant.sku.in_(skus)))).scalars()
    return [use_cycle_days(p, p.category) for p in rows]


def dedupe_key(rule_key: str, customer_id: int, ref: str) -> str:
    return f"{rule_key}:{customer_id}:{ref}"[:200]


async def process_events(limit: int = BATCH, now: Optional[datetime] = None) -> int:
    """Act on up to `limit` new events, in one transaction; how many were taken. When the batch
    fails, its events are taken one by one, and one that fails on its own is marked failed with
    the error (kept, not retried forever, and not blocking the others)."""
    now = now or now_utc()
    try:
        return await _process(None, limit, now)
    except Exception:  # noqa: BLE001 - find the event that fails; the others go on
        logger.exception("event batch failed: taking its events one by one")
    async with db.session() as s:
        ids = list((await s.execute(sa.select(NudgeEvent.id).where(NudgeEvent.status == NEW)
                                    .order_by(NudgeEvent.id).limit(limit))).scalars())
    for event_id in ids:
        try:
            await _process(event_id, 1, now)
        except (OperationalError, InterfaceError, OSError, asyncio.TimeoutError):
            raise  # the database is away: nothing is marked, the next round tries again
        except Exception as exc:  # noqa: BLE001
            logger.exception("event failed", extra={"event_row": event_id})
            async with db.transaction() as s:
                row = await s.get(NudgeEvent, event_id)
                if row is not None and row.status == NEW:
                    row.status, row.attempts, row.processed_at = FAILED, row.attempts + 1, now
                    row.note = f"failed: {type(exc).__name__}: {exc}"[:256]
    return len(ids)


async def _process(only: Optional[int], limit: int, now: datetime) -> int:
    async with db.transaction() as s:
        query = sa.select(NudgeEvent).where(NudgeEvent.status == NEW)
        if only is not None:
            query = query.where(NudgeEvent.id == only)
        events = list((await s.execute(query.order_by(NudgeEvent.id).limit(limit))).scalars())
        if not events:
            return 0
        by_type: Dict[str, List[Tuple[NudgeRule, RuleDef]]] = {}
        for row, rule in live_rules(list((await s.execute(sa.select(NudgeRule))).scalars())):
            if rule.trigger.event:
                by_type.setdefault(rule.trigger.event, []).append((row, rule))
        numbers = {e.customer for e in events}
        customers = {c.external_id: c for c in (await s.execute(sa.select(Customer).where(
            Customer.external_id.in_(numbers)))).scalars()}
        segments = {g.customer_id: g for g in (await s.execute(sa.select(CustomerSegment).where(
            CustomerSegment.customer_id.in_([c.id for c in customers.values()])))).scalars()}
        planned: List[Dict[str, Any]] = []
        for event in events:
            customer = customers.get(event.customer)
            event.processed_at, event.attempts = now, event.attempts + 1
            if customer is None:
                event.status, event.note = IGNORED, "unknown customer"
                continue
            event.customer_id, event.status = customer.id, DONE
            notes = []
            for row, rule in by_type.get(event.type, []):
                plan = await plan_for(s, rule, event, customer, segments.get(customer.id), now)
                if plan.skip:
                    notes.append(f"{rule.key}: {plan.skip}")
                    continue
                planned.append({"row": row, "rule": rule, "event": event, "customer": customer, "plan": plan})
                notes.append(f"{rule.key}: scheduled")
            event.note = "; ".join(notes)[:256] or "no rule"
        await _schedule(s, planned, now)
    return len(events)


async def _schedule(s: AsyncSession, planned: List[Dict[str, Any]], now: datetime) -> None:
    """Insert the planned nudges; a key that exists (or repeats in the batch) is logged as a duplicate."""
    keys = [dedupe_key(p["rule"].key, p["customer"].id, p["event"].ref) for p in planned]
    existing = set()
    for start in range(0, len(keys), 500):
        existing |= set((await s.execute(sa.select(Nudge.dedupe_key).where(
            Nudge.dedupe_key.in_(keys[start:start + 500])))).scalars())
    fresh, logs = [], []
    for key, p in zip(keys, planned):
        rule, event, customer = p["rule"], p["event"], p["customer"]
        if key in existing:
            what = "购物车" if event.type in ("cart_updated", "checkout_started") else "订单"
            logs.append({"nudge_id": None, "customer_id": customer.id, "rule_key": rule.key, "status": SUPPRESSED,
                         "reason": "duplicate", "detail": f"同一{what}已有这条提醒（{event.ref}）", "at": now})
            continue
        existing.add(key)
        plan = p["plan"]
        fresh.append(nudge_row(p["row"].id, rule, customer.id, event.ref, event.event_id, event.at, plan.due_at,
                               plan.expires_at, plan.context, now))
    await insert_nudges(s, fresh, logs, now)


def nudge_row(rule_id: int, rule: RuleDef, customer_id: int, ref: str, event_id: Optional[str], trigger_at: datetime,
              due_at: datetime, expires_at: Optional[datetime], context: Dict[str, Any], now: datetime
              ) -> Dict[str, Any]:
    """A new nudge's row values (insert_nudges stores them)."""
    return {"rule_id": rule_id, "rule_key": rule.key, "customer_id": customer_id, "ref": ref,
            "dedupe_key": dedupe_key(rule.key, customer_id, ref), "event_id": event_id, "trigger_at": trigger_at,
            "due_at": due_at, "expires_at": expires_at, "category": rule.category, "priority": rule.priority_rank,
            "arm": "treatment", "variant": "", "status": SCHEDULED, "outbox_ids": [], "context": context,
            "attempts": 0, "created_at": now}


async def insert_nudges(s: AsyncSession, fresh: List[Dict[str, Any]], logs: List[Dict[str, Any]],
                        now: datetime) -> int:
    """Store new nudges (a key stored meanwhile is skipped) with a "scheduled" log line each."""
    for start in range(0, len(fresh), 200):
        await s.execute(db.insert(s, Nudge).values(fresh[start:start + 200]).on_conflict_do_nothing(
            index_elements=["dedupe_key"]))
    tz = get_settings().shop.timezone
    ids: Dict[str, Tuple[int, int]] = {}
    keys = [f["dedupe_key"] for f in fresh]
    for start in range(0, len(keys), 500):
        found = await s.execute(sa.select(Nudge.id, Nudge.dedupe_key, Nudge.created_at)
                                .where(Nudge.dedupe_key.in_(keys[start:start + 500])))
        # only the rows stored now (a key another process stored meanwhile has its own log line)
        ids.update((k, (i, c)) for i, k, c in found.all() if c == now)
    for f in fresh:
        if f["dedupe_key"] in ids:
            logs.append({"nudge_id": ids[f["dedupe_key"]][0], "customer_id": f["customer_id"],
                         "rule_key": f["rule_key"],
                         "status": SCHEDULED, "reason": None,
                         "detail": f"计划 {datetime_text(f['due_at'], tz)} 发送",
                         "at": now})
    for start in range(0, len(logs), 200):
        await s.execute(sa.insert(NudgeLogEntry).values(logs[start:start + 200]))
    return len(ids)


async def schedule_audience(rule_id: int, now: Optional[datetime] = None, limit: int = 100_000) -> int:
    """A daily rule's nudges for its audience, due now. "silent": customers whose last order is
    older than max(30 days, 1.5 x their own median gap between orders), one nudge per silent spell
    (the ref is the last order's day). How many were scheduled."""
    from nudges.segments import silent_after_days

    now = now or now_utc()
    async with db.transaction() as s:
        row = await s.get(NudgeRule, rule_id)
        found = live_rules([row]) if row is not None else []
        if not found:
            return 0
        row, rule = found[0]
        if rule.trigger.audience != "silent":
            return 0
        query = (sa.select(CustomerSegment, Customer).join(Customer, Customer.id == CustomerSegment.customer_id)
                 .where(CustomerSegment.recency_days >= 30, CustomerSegment.last_order_at.isnot(None))
                 .limit(limit))
        fresh = []
        cond = rule.conditions
        for segment, customer in (await s.execute(query)).all():
            if segment.recency_days < silent_after_days(segment.median_gap_days):
                continue
            if cond.levels and customer.level not in cond.levels:
                continue
            if cond.segments and segment.segment not in cond.segments:
                continue
            if cond.tags and not set(cond.tags) & set(customer.tags or []):
                continue
            if not _in_range(segment.recency_days, cond.days_since_last_order):
                continue
            ref = f"silent:{segment.last_order_at:%Y%m%d}"
            fresh.append(nudge_row(row.id, rule, customer.id, ref, None, now, now, now + timedelta(hours=12),
                                   {"days": segment.recency_days}, now))
        known = set()
        keys = [f["dedupe_key"] for f in fresh]
        for start in range(0, len(keys), 500):
            known |= set((await s.execute(sa.select(Nudge.dedupe_key).where(
                Nudge.dedupe_key.in_(keys[start:start + 500])))).scalars())
        return await insert_nudges(s, [f for f in fresh if f["dedupe_key"] not in known], [], now)
