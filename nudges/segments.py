"""Customers' RFM segments (the 8-type high/low split of Chinese CRM) and health score, recomputed
daily into nudge_customer_segments; rules' conditions and the desk's customer context read them.

RFM, over the customer's paid orders:
- a paid order is one in status paid, shipped, delivered or completed. Pending payment, cancelled
  and refunded orders never count, and neither do refunding ones: the customer has asked for the
  money back (a refused refund puts the order back in its earlier status, and it counts again).
- the order's time is paid_at, or created_at when the shop's data has no payment time.
- R: recency_days, whole days from the last paid order to `now`; F: frequency, the number of paid
  orders; M: monetary, the sum of paid_fen (total_fen when paid_fen is 0).
- median_gap_days: the median of the days between consecutive paid orders (None below two
  orders); silent_after_days() turns it into the silent-customer recall threshold.

High or low, per the shop's thresholds (shop.yml nudges.rfm; a None threshold is the shop's median
over its buying customers, recomputed every run):
- R high (recent): recency_days <= the threshold.
- F high: frequency >= a fixed threshold; above the median when automatic (at the median most
  customers have one order, and "at least the median" would make every buyer frequent).
- M high: monetary >= monetary_yuan when fixed; above the median when automatic.
SEGMENTS names the eight (R, F, M) combinations; a customer without a paid order is NO_ORDERS.

Health, 0-100, the sum of five parts (health_parts holds each part's points, and their basis):
- recency 25, frequency 20, monetary 20: the points times the customer's standing among the shop's
  buying customers (the share of them the customer is ahead of, ties counted half: 0.5 is the
  middle); a customer without paid orders gets 0 in all three.
- service 20: minus 5 per open ticket (open or processing) and minus 10 per open complaint, at
  least 0.
- sentiment 15: 15 x (1 + s) / 2, s = (positive - negative) / (positive + negative) words in the
  customer's WeChat messages of the last 30 days (nudges/sentiment.yml and the complaint markers);
  no such words or no messages: s = 0, 7.5 points.
"""
from __future__ import annotations

import asyncio
import functools
import re
import statistics
import time
from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session, transaction
from actions.db.models import Customer, CustomerIdentity, Order, Ticket
from actions.templates import vocabulary
from bot.settings import RfmThresholds, get_settings
from channels.wechat import db
from channels.wechat.models import InboundMessageRow
from nudges.models import PAID_STATUSES, CustomerSegment, NudgeState, iso_z

# (R high, F high, M high) -> the segment's name
SEGMENTS: Dict[Tuple[bool, bool, bool], str] = {
    (True, True, True): "重要价值客户",
    (True, False, True): "重要发展客户",
    (False, True, True): "重要保持客户",
    (False, False, True): "重要挽留客户",
    (True, True, False): "一般价值客户",
    (True, False, False): "一般发展客户",
    (False, True, False): "一般保持客户",
    (False, False, False): "一般挽留客户",
}
NO_ORDERS = "未购客户"
SEGMENT_NAMES = tuple(SEGMENTS.values()) + (NO_ORDERS,)

OPEN_TICKET_STATUSES = ("open", "processing")
COMPLAINT = "complaint"
SENTIMENT_DAYS = 30
# the health score's parts and their points (see the module's docstring)
WEIGHTS = {"recency": 25, "frequency": 20, "monetary": 20, "service": 20, "sentiment": 15}
TICKET_PENALTY, COMPLAINT_PENALTY = 5, 10
STATE_NAME = "segments"
READ_CHUNK, WRITE_CHUNK = 5000, 1000
SENTIMENT_FILE = Path(__file__).resolve().parent / "sentiment.yml"


def silent_after_days(median_gap_days: Optional[float]) -> float:
    """Days without an order after which a customer counts as silent (the recall rules): 1.5 times
    their usual gap between orders, at least 30."""
    return max(30.0, 1.5 * median_gap_days) if median_gap_days else 30.0


# --- sentiment -------------------------------------------------------------------------------------
class _Lexicon:
    def __init__(self) -> None:
        with open(SENTIMENT_FILE, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        positive = {w.lower() for w in data["positive"]}
        negative = {w.lower() for w in data["negative"]} | {w.lower() for w in vocabulary("complaint_markers")}
        self.polarity = {w: -1 for w in negative}
        self.polarity.update({w: 1 for w in positive - negative})
        # longest first: the regex takes the first alternative that matches at a position
        words = sorted(self.polarity, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, words)))
        self.negations = tuple(sorted(set(vocabulary("negations")) | set(data.get("negations") or []),
                                      key=len, reverse=True))
        self.not_negations = tuple(data.get("not_negations") or [])

    def negated(self, before: str) -> bool:
        return before.endswith(self.negations) and not before.endswith(self.not_negations)

    def counts(self, text: str) -> Tuple[int, int]:
        positive = negative = 0
        text = text.lower()
        for match in self.pattern.finditer(text):
            polarity = self.polarity[match.group()]
            if self.negated(text[max(0, match.start() - 4):match.start()]):
                if polarity < 0:
                    continue  # "不用投诉": taken back
                polarity = -1  # "不喜欢"
            if polarity > 0:
                positive += 1
            else:
                negative += 1
        return positive, negative


@functools.lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    return _Lexicon()


def sentiment_counts(text: str) -> Tuple[int, int]:
    """(positive, negative) words of one message."""
    return _lexicon().counts(text or "")


# --- reading the shop's facts ----------------------------------------------------------------------
def _days_between(dialect: str, later: Any, earlier: Any) -> Any:
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", later - earlier), sa.Float) / 86400.0
    return sa.func.julianday(later) - sa.func.julianday(earlier)


async def _partitions(s: AsyncSession, stmt: Any) -> AsyncIterator[Sequence[Any]]:
    """The rows of a large result in batches: the event loop runs between them."""
    result = await s.stream(stmt.execution_options(yield_per=READ_CHUNK))
    async for part in result.partitions(READ_CHUNK):
        yield part


def _paid_orders() -> Tuple[Any, Any, Any]:
    o = Order.__table__
    at = sa.func.coalesce(o.c.paid_at, o.c.created_at)
    fen = sa.case((o.c.paid_fen > 0, o.c.paid_fen), else_=o.c.total_fen)
    return at, fen, o.c.status.in_(PAID_STATUSES)


async def _order_facts(s: AsyncSession) -> Dict[int, list]:
    """customer id -> [frequency, monetary_fen, first order at, last order at, median gap days]."""
    o = Order.__table__
    at, fen, paid = _paid_orders()
    totals = sa.select(o.c.customer_id, sa.func.count(), sa.func.sum(fen), sa.func.min(at), sa.func.max(at)) \
        .where(paid).group_by(o.c.customer_id)
    facts = {}
    async for part in _partitions(s, totals):
        for cid, n, total, first, last in part:
            facts[cid] = [int(n), int(total or 0), first, last, None]
    # median gap, in SQL on both databases: each order's gap to the customer's previous one (LAG),
    # then the middle one or two of each customer's sorted gaps (2*rank between n and n+2)
    times = sa.select(o.c.customer_id.label("cid"), at.label("at")).where(paid).subquery()
    previous = sa.func.lag(times.c.at).over(partition_by=times.c.cid, order_by=times.c.at)
    gaps = sa.select(times.c.cid, _days_between(s.get_bind().dialect.name, times.c.at, previous).label("gap")) \
        .subquery()
    ranked = sa.select(gaps.c.cid, gaps.c.gap,
                       sa.func.row_number().over(partition_by=gaps.c.cid, order_by=gaps.c.gap).label("rn"),
                       sa.func.count().over(partition_by=gaps.c.cid).label("n")) \
        .where(gaps.c.gap.isnot(None)).subquery()
    medians = sa.select(ranked.c.cid, sa.func.avg(ranked.c.gap)) \
        .where(ranked.c.rn * 2 >= ranked.c.n, ranked.c.rn * 2 <= ranked.c.n + 2).group_by(ranked.c.cid)
    async for part in _partitions(s, medians):
        for cid, gap in part:
            if cid in facts and gap is not None:
                facts[cid][4] = float(gap)
    return facts


async def _ticket_facts(s: AsyncSession) -> Dict[int, Tuple[int, int]]:
    """customer id -> (open tickets, open complaints)."""
    t = Ticket.__table__
    stmt = sa.select(t.c.customer_id, sa.func.count(), sa.func.sum(sa.case((t.c.kind == COMPLAINT, 1), else_=0))) \
        .where(t.c.status.in_(OPEN_TICKET_STATUSES), t.c.customer_id.isnot(None)).group_by(t.c.customer_id)
    return {cid: (int(n), int(c or 0)) for cid, n, c in (await s.execute(stmt)).all()}


async def _messages(s: AsyncSession, since: datetime) -> List[Tuple[int, str]]:
    """(customer id, text) of the customers' WeChat messages since `since`: the inbox's
    conversation ids are "<channel>:<external id>" of a customer identity."""
    i = CustomerIdentity.__table__
    owner = {}
    async for part in _partitions(s, sa.select(i.c.customer_id, i.c.channel, i.c.external_id)):
        owner.update((f"{channel}:{external}", cid) for cid, channel, external in part)
    m = InboundMessageRow.__table__
    text = InboundMessageRow.payload["text"].as_string()
    messages: List[Tuple[int, str]] = []
    async for part in _partitions(s, sa.select(m.c.conversation_id, text).where(m.c.received_at >= since)):
        messages.extend((owner[conversation], body) for conversation, body in part if body and conversation in owner)
    return messages


# --- computing -------------------------------------------------------------------------------------
def _thresholds(value: Union[None, RfmThresholds, Mapping[str, Any]]) -> RfmThresholds:
    if value is None:
        return get_settings().shop.nudges.rfm
    if isinstance(value, RfmThresholds):
        return value
    return RfmThresholds.model_validate(dict(value))


def _standing(ordered: List[float], value: float) -> float:
    """The share of `ordered` below `value`, ties counted half."""
    return (bisect_left(ordered, value) + bisect_right(ordered, value)) / 2 / len(ordered)


def _either(fixed: Optional[int], median: Optional[float]) -> Optional[float]:
    return fixed if fixed is not None else median


def _compute(customer_ids: Iterable[int], orders: Dict[int, list], tickets: Dict[int, Tuple[int, int]],
             messages: List[Tuple[int, str]], now: datetime, chosen: RfmThresholds
             ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    recency = {cid: max(0, int((now - f[3]).total_seconds() // 86400)) for cid, f in orders.items()}
    recencies = sorted(recency.values())
    frequencies = sorted(f[0] for f in orders.values())
    monetaries = sorted(f[1] for f in orders.values())
    median = {"recency_days": statistics.median(recencies) if recencies else None,
              "frequency": statistics.median(frequencies) if frequencies else None,
              "monetary_fen": statistics.median(monetaries) if monetaries else None}
    auto = [name for name in ("recency_days", "frequency", "monetary_yuan") if getattr(chosen, name) is None]
    r_limit = chosen.recency_days if chosen.recency_days is not None else median["recency_days"]

    def f_high(n: int) -> bool:
        return n >= chosen.frequency if chosen.frequency is not None else n > median["frequency"]

    def m_high(fen: int) -> bool:
        return fen >= chosen.monetary_yuan * 100 if chosen.monetary_yuan is not None else fen > median["monetary_fen"]

    words: Dict[int, List[int]] = {}
    for cid, text in messages:
        positive, negative = sentiment_counts(text)
        tally = words.setdefault(cid, [0, 0, 0])
        tally[0] += 1
        tally[1] += positive
        tally[2] += negative

    rows: List[Dict[str, Any]] = []
    counts = {name: 0 for name in SEGMENT_NAMES}
    for cid in customer_ids:
        order = orders.get(cid)
        open_tickets, complaints = tickets.get(cid, (0, 0))
        sent, positive, negative = words.get(cid, (0, 0, 0))
        service = max(0, WEIGHTS["service"] - TICKET_PENALTY * (open_tickets - complaints)
                      - COMPLAINT_PENALTY * complaints)
        score = (positive - negative) / (positive + negative) if positive + negative else 0.0
        parts = {"recency": 0.0, "frequency": 0.0, "monetary": 0.0, "service": float(service),
                 "sentiment": round(WEIGHTS["sentiment"] * (1 + score) / 2, 1)}
        row: Dict[str, Any] = {"customer_id": cid, "recency_days": None, "frequency": 0, "monetary_fen": 0,
                               "first_order_at": None, "last_order_at": None, "median_gap_days": None,
                               "r_high": False, "f_high": False, "m_high": False, "segment": NO_ORDERS,
                               "computed_at": now}
        if order is not None:
            n, fen, first, last, gap = order
            days = recency[cid]
            high = (days <= r_limit, f_high(n), m_high(fen))
            row.update(recency_days=days, frequency=n, monetary_fen=fen, first_order_at=first, last_order_at=last,
                       median_gap_days=round(gap, 3) if gap is not None else None, r_high=high[0], f_high=high[1],
                       m_high=high[2], segment=SEGMENTS[high])
            parts.update(recency=round(WEIGHTS["recency"] * (1 - _standing(recencies, days)), 1),
                         frequency=round(WEIGHTS["frequency"] * _standing(frequencies, n), 1),
                         monetary=round(WEIGHTS["monetary"] * _standing(monetaries, fen), 1))
        row["health"] = max(0, min(100, round(sum(parts.values()))))
        parts["basis"] = {"open_tickets": open_tickets, "open_complaints": complaints, "messages": sent,
                          "positive_words": positive, "negative_words": negative}
        row["health_parts"] = parts
        counts[row["segment"]] += 1
        rows.append(row)

    m_median = median["monetary_fen"]
    summary = {"customers": len(rows), "buyers": len(orders), "counts": counts,
               "thresholds": {"recency_days": _either(chosen.recency_days, median["recency_days"]),
                              "frequency": _either(chosen.frequency, median["frequency"]),
                              "monetary_yuan": _either(chosen.monetary_yuan,
                                                       round(m_median / 100, 2) if m_median is not None else None),
                              "auto": auto}}
    return rows, summary


# --- the daily run ---------------------------------------------------------------------------------
async def recompute(now: Optional[datetime] = None,
                    thresholds: Union[None, RfmThresholds, Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Every customer's segment and health as of `now` (naive UTC; default: now), written to
    nudge_customer_segments in one transaction (insert or update per customer) with the run's
    summary in nudge_state "segments": {"customers", "buyers", "counts" (per segment),
    "thresholds" (as used: recency_days, frequency, monetary_yuan, and which were the shop's
    median: "auto"), "at", "seconds", "phases" (seconds reading, computing, writing)}.
    `thresholds`: the shop's (shop.yml nudges.rfm) when None."""
    started = time.perf_counter()
    now = now or datetime.utcnow()
    chosen = _thresholds(thresholds)
    async with async_session() as s:
        customer_ids: List[int] = []
        async for part in _partitions(s, sa.select(Customer.id).order_by(Customer.id)):
            customer_ids.extend(cid for (cid,) in part)
        orders = await _order_facts(s)
        tickets = await _ticket_facts(s)
        messages = await _messages(s, now - timedelta(days=SENTIMENT_DAYS))
    read = time.perf_counter()
    # pure Python over every customer: off the event loop
    rows, summary = await asyncio.to_thread(_compute, customer_ids, orders, tickets, messages, now, chosen)
    computed = time.perf_counter()
    async with transaction() as s:
        table = CustomerSegment.__table__
        stmt = db.insert(s, table)
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.customer_id],
                                          set_={c.name: stmt.excluded[c.name] for c in table.columns
                                                if c.name != "customer_id"})
        for start in range(0, len(rows), WRITE_CHUNK):
            await s.execute(stmt, rows[start:start + WRITE_CHUNK])
        summary["at"] = now.isoformat()
        finished = time.perf_counter()
        summary["seconds"] = round(finished - started, 3)
        summary["phases"] = {"read": round(read - started, 3), "compute": round(computed - read, 3),
                             "write": round(finished - computed, 3)}
        state = db.insert(s, NudgeState).values(name=STATE_NAME, value=summary, updated_at=datetime.utcnow())
        await s.execute(state.on_conflict_do_update(index_elements=["name"], set_={
            "value": state.excluded.value, "updated_at": state.excluded.updated_at}))
    return summary


async def profile(s: AsyncSession, customer_id: int) -> Optional[Dict[str, Any]]:
    """The customer's stored segment and health for the desk and the console; None before the
    first recompute that saw the customer."""
    row = await s.get(CustomerSegment, customer_id)
    if row is None:
        return None
    return {"segment": row.segment, "health": row.health, "health_parts": row.health_parts or {},
            "recency_days": row.recency_days, "frequency": row.frequency,
            "monetary_yuan": (row.monetary_fen or 0) / 100, "median_gap_days": row.median_gap_days,
            "r_high": row.r_high, "f_high": row.f_high, "m_high": row.m_high,
            "last_order_at": iso_z(row.last_order_at), "computed_at": iso_z(row.computed_at)}
