"""What each rule did, and whether it worked: the console's per-rule report and a customer's nudge log.

Per rule, over the nudges decided in [since, until) (`decided_at`, naive UTC; aware datetimes are
converted): how many were sent, held out (the control group, "would have sent"), suppressed and
exited, by reason; replies; conversions of treatment (sent) and control (holdout) and the uplift
between them (nudges/uplift.py). "scheduled" is what waits right now, whatever the window.

Counting is SQL GROUP BY. Attribution is one pass for all the reported rules, built to stay linear at
~100k nudges: after a GROUP BY for each rule's first and last nudge of the window, one query loads
every sent or holdout nudge, of any rule, of the window's customers from the window's first nudge to
the last attribution end (the "touches": the window's nudges of the reported rules, and those that
may come later and take a payment), and one those customers' `order_paid` events in that span;
customers are selected by a subquery, never by a list of ids (no bound-parameter limits). Python
then sorts each customer's touches and finds each payment's last touch by bisection. Replies are
the same merge over the customers' inbound messages. Measured: 100k nudges, 25k payments and 20k
messages on SQLite take a few seconds, mostly SQLite's datetime strings being parsed.

Attribution rules:
- a payment is attributed to the customer's latest sent or holdout nudge (any rule; the higher id on
  a tie) decided strictly before it, if it falls in (decided_at, decided_at + N days], N being that
  nudge's rule's attribution days; otherwise to no nudge (last touch: an earlier nudge does not get
  it back). A nudge converted when at least one payment is attributed to it;
- the payment's customer is `NudgeEvent.customer_id`, or when that is not set yet the customer whose
  `external_id` is the event's `customer`;
- the same order paid twice (same customer and non-empty `ref`: the shop's event and our own order
  scan) counts once, at its first `at`;
- revenue is the event's data "amount_fen" (integer fen) when present, else data "amount" (yuan,
  number or numeric string) x 100; neither: 0;
- conversions are followed to N days after each nudge even past `until`, so the last N days' nudges
  are still maturing (their rates only grow).

N is the rule definition's "attribution_days" (nudges/rules.py), else the shop's
`nudges.attribution_days`.

Replies: a sent nudge got a reply when the customer wrote to the shop (a `wechat_inbound` row on
a conversation "{channel}:{external_id}" of one of the customer's identities) within 24 hours after it.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from actions.db.models import Customer, CustomerIdentity
from bot.settings import get_settings
from channels.wechat.models import InboundMessageRow
from nudges.models import (
    EXITED,
    HOLDOUT,
    SCHEDULED,
    SENT,
    SUPPRESSED,
    Nudge,
    NudgeEvent,
    NudgeLogEntry,
    NudgeRule,
    iso_z,
)
from nudges.uplift import two_proportions

ORDER_PAID = "order_paid"
REPLY_WINDOW = timedelta(hours=24)


def _naive_utc(value: Optional[datetime]) -> Optional[datetime]:
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def attribution_days(rule: NudgeRule) -> int:
    """The rule's attribution window in days (see the module's docstring)."""
    definition = rule.definition if isinstance(rule.definition, dict) else {}
    value = definition.get("attribution_days")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    return get_settings().shop.nudges.attribution_days


def amount_fen(data) -> int:
    """A payment event's amount in fen: data "amount_fen", else data "amount" in yuan x 100."""
    if not isinstance(data, dict):
        return 0
    for key, scale in (("amount_fen", 1), ("amount", 100)):
        value = data.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            return round(float(value) * scale)
        except (TypeError, ValueError):
            continue
    return 0


def _rate(x: int, n: int) -> Optional[float]:
    return x / n if n else None


async def _rules(session: AsyncSession, rule_key: Optional[str]) -> List[NudgeRule]:
    stmt = sa.select(NudgeRule).order_by(NudgeRule.id)
    # a deleted rule is reported only when asked for by its key
    stmt = stmt.where(NudgeRule.key == rule_key) if rule_key else stmt.where(NudgeRule.deleted_at.is_(None))
    return list((await session.execute(stmt)).scalars())


def _window(column, since: Optional[datetime], until: Optional[datetime]) -> list:
    clauses = [column.is_not(None)]
    if since is not None:
        clauses.append(column >= since)
    if until is not None:
        clauses.append(column < until)
    return clauses


async def rule_report(session: AsyncSession, rule_key: Optional[str] = None, since: Optional[datetime] = None,
                      until: Optional[datetime] = None) -> List[dict]:
    """One entry per rule (every rule that is not deleted, or just `rule_key`), in the rules' order:

    {"rule", "name", "status", "attribution_days", "scheduled", "sent", "holdout",
     "exited": {reason: n}, "suppressed": {reason: n}, "suppressed_total", "replies", "reply_rate",
     "treatment": {"n", "conversions", "rate", "revenue_yuan"}, "control": {same},
     "uplift": nudges.uplift.two_proportions(treatment, control),
     "variants": [{"variant", "n", "conversions", "rate", "replies", "reply_rate", "revenue_yuan",
                   "uplift" (this variant against the whole control)}]   # only for A/B tested rules
    }
    Rates are None when their denominator is 0.
    """
    since, until = _naive_utc(since), _naive_utc(until)
    rules = await _rules(session, rule_key)
    if not rules:
        return []
    keys = [rule.key for rule in rules]
    days = {rule.key: attribution_days(rule) for rule in rules}
    counts = await _status_counts(session, keys, since, until)
    outcomes = await _outcomes(session, keys, days, since, until)
    return [_entry(rule, days[rule.key], counts.get(rule.key, {}), outcomes.get(rule.key, {})) for rule in rules]


async def _status_counts(session: AsyncSession, keys: List[str], since, until) -> Dict[str, dict]:
    by_rule: Dict[str, dict] = defaultdict(lambda: {"scheduled": 0, "sent": 0, "holdout": 0, "suppressed": {},
                                                    "exited": {}})
    decided = (sa.select(Nudge.rule_key, Nudge.status, Nudge.reason, sa.func.count())
               .where(Nudge.rule_key.in_(keys), Nudge.status != SCHEDULED, *_window(Nudge.decided_at, since, until))
               .group_by(Nudge.rule_key, Nudge.status, Nudge.reason))
    for key, status, reason, n in (await session.execute(decided)).all():
        counts = by_rule[key]
        if status in (SENT, HOLDOUT):
            counts[status] += n
        elif status in (SUPPRESSED, EXITED):
            bucket = counts[status]
            bucket[reason or ""] = bucket.get(reason or "", 0) + n
    waiting = (sa.select(Nudge.rule_key, sa.func.count()).where(Nudge.rule_key.in_(keys), Nudge.status == SCHEDULED)
               .group_by(Nudge.rule_key))
    for key, n in (await session.execute(waiting)).all():
        by_rule[key]["scheduled"] = n
    return by_rule


class _Target:
    __slots__ = ("id", "rule", "customer", "at", "treated", "variant", "converted", "revenue_fen", "replied")

    def __init__(self, id_, rule, customer, at, status, variant) -> None:
        self.id, self.rule, self.customer, self.at = id_, rule, customer, at
        self.treated, self.variant = status == SENT, variant or ""
        self.converted, self.revenue_fen, self.replied = False, 0, False


async def _outcomes(session: AsyncSession, keys: List[str], days: Dict[str, int], since, until) -> Dict[str, list]:
    """The window's sent and holdout nudges of the rules, each with its conversion, revenue and reply."""
    spans = (await session.execute(
        sa.select(Nudge.rule_key, sa.func.min(Nudge.decided_at), sa.func.max(Nudge.decided_at))
        .where(Nudge.rule_key.in_(keys), Nudge.status.in_((SENT, HOLDOUT)), *_window(Nudge.decided_at, since, until))
        .group_by(Nudge.rule_key))).all()
    if not spans:
        return {}
    first = min(low for _, low, _ in spans)
    last_end = max(high + timedelta(days=days[key]) for key, _, high in spans)
    # the customers of the window's nudges, as a subquery on its own alias of nudges
    inner = aliased(Nudge)
    customers = (sa.select(inner.customer_id)
                 .where(inner.rule_key.in_(keys), inner.status.in_((SENT, HOLDOUT)),
                        *_window(inner.decided_at, since, until)))

    # every touch of these customers that may be the last before one of their payments, any rule; the
    # window's nudges of the reported rules (the targets) are among them
    touches: Dict[int, List[Tuple[datetime, int]]] = defaultdict(list)
    targets: Dict[int, _Target] = {}
    wanted = set(keys)
    result = await session.execute(
        sa.select(Nudge.id, Nudge.rule_key, Nudge.customer_id, Nudge.decided_at, Nudge.status, Nudge.variant)
        .where(Nudge.status.in_((SENT, HOLDOUT)), Nudge.decided_at >= first, Nudge.decided_at <= last_end,
               Nudge.customer_id.in_(customers)))
    for row in result.all():
        nudge_id, key, customer_id, at = row[0], row[1], row[2], row[3]
        touches[customer_id].append((at, nudge_id))
        if key in wanted and (since is None or at >= since) and (until is None or at < until):
            targets[nudge_id] = _Target(*row)
    for found in touches.values():
        found.sort()

    await _attribute(session, targets, touches, days, customers, first, last_end)
    await _replies(session, targets, customers)

    by_rule: Dict[str, list] = defaultdict(list)
    for target in targets.values():
        by_rule[target.rule].append(target)
    return by_rule


async def _attribute(session: AsyncSession, targets: Dict[int, _Target], touches: Dict[int, List[Tuple[datetime, int]]],
                     days: Dict[str, int], customers, first: datetime, last_end: datetime) -> None:
    """Each payment of the customers to its last touch, when that is a target and within its days."""
    times = {customer_id: [at for at, _ in found] for customer_id, found in touches.items()}
    payer = sa.func.coalesce(NudgeEvent.customer_id, Customer.id)
    result = await session.execute(
        sa.select(payer, NudgeEvent.at, NudgeEvent.ref, NudgeEvent.data, NudgeEvent.id)
        .select_from(NudgeEvent)
        .outerjoin(Customer, sa.and_(NudgeEvent.customer_id.is_(None), Customer.external_id == NudgeEvent.customer))
        .where(NudgeEvent.type == ORDER_PAID, NudgeEvent.at > first, NudgeEvent.at <= last_end,
               payer.in_(customers))
        .order_by(NudgeEvent.at, NudgeEvent.id))
    seen_orders = set()
    for customer_id, paid_at, ref, data, _ in result.all():
        if ref:
            if (customer_id, ref) in seen_orders:
                continue
            seen_orders.add((customer_id, ref))
        index = bisect_left(times.get(customer_id, []), paid_at) - 1
        if index < 0:
            continue
        touch_at, nudge_id = touches[customer_id][index]
        target = targets.get(nudge_id)
        if target is None or paid_at > touch_at + timedelta(days=days[target.rule]):
            continue
        target.converted = True
        target.revenue_fen += amount_fen(data)


async def _replies(session: AsyncSession, targets: Dict[int, _Target], customers) -> None:
    sent = [t for t in targets.values() if t.treated]
    if not sent:
        return
    conversation = CustomerIdentity.channel + ":" + CustomerIdentity.external_id
    identities = await session.execute(
        sa.select(conversation, CustomerIdentity.customer_id).where(CustomerIdentity.customer_id.in_(customers)))
    whose = dict(identities.all())
    if not whose:
        return
    first = min(t.at for t in sent)
    last = max(t.at for t in sent) + REPLY_WINDOW
    conversations = sa.select(conversation).where(CustomerIdentity.customer_id.in_(customers))
    result = await session.execute(
        sa.select(InboundMessageRow.conversation_id, InboundMessageRow.received_at)
        .where(InboundMessageRow.received_at > first, InboundMessageRow.received_at <= last,
               InboundMessageRow.conversation_id.in_(conversations)))
    written: Dict[int, List[datetime]] = defaultdict(list)
    for conversation_id, received_at in result.all():
        customer_id = whose.get(conversation_id)
        if customer_id is not None:
            written[customer_id].append(received_at)
    for found in written.values():
        found.sort()
    for target in sent:
        found = written.get(target.customer)
        if found:
            index = bisect_right(found, target.at)
            target.replied = index < len(found) and found[index] <= target.at + REPLY_WINDOW


def _arm(members: List[_Target]) -> dict:
    n, conversions = len(members), sum(t.converted for t in members)
    return {"n": n, "conversions": conversions, "rate": _rate(conversions, n),
            "revenue_yuan": round(sum(t.revenue_fen for t in members) / 100, 2)}


def _entry(rule: NudgeRule, days: int, counts: dict, outcomes: List[_Target]) -> dict:
    treated = [t for t in outcomes if t.treated]
    control = [t for t in outcomes if not t.treated]
    treatment_arm, control_arm = _arm(treated), _arm(control)
    replies = sum(t.replied for t in treated)
    suppressed = dict(sorted(counts.get("suppressed", {}).items()))
    entry = {
        "rule": rule.key, "name": rule.name, "status": rule.status, "attribution_days": days,
        "scheduled": counts.get("scheduled", 0), "sent": counts.get("sent", 0), "holdout": counts.get("holdout", 0),
        "exited": dict(sorted(counts.get("exited", {}).items())), "suppressed": suppressed,
        "suppressed_total": sum(suppressed.values()),
        "replies": replies, "reply_rate": _rate(replies, len(treated)),
        "treatment": treatment_arm, "control": control_arm,
        "uplift": two_proportions(treatment_arm["n"], treatment_arm["conversions"],
                                  control_arm["n"], control_arm["conversions"]),
    }
    by_variant: Dict[str, List[_Target]] = defaultdict(list)
    for target in treated:
        by_variant[target.variant].append(target)
    if any(by_variant.keys() - {""}):
        variants = []
        for name in sorted(by_variant):
            members = by_variant[name]
            arm = _arm(members)
            shown = sum(t.replied for t in members)
            variants.append({"variant": name, "n": arm["n"], "conversions": arm["conversions"], "rate": arm["rate"],
                             "replies": shown, "reply_rate": _rate(shown, arm["n"]),
                             "revenue_yuan": arm["revenue_yuan"],
                             "uplift": two_proportions(arm["n"], arm["conversions"],
                                                       control_arm["n"], control_arm["conversions"])})
        entry["variants"] = variants
    return entry


async def customer_log(session: AsyncSession, customer_id: int, limit: Optional[int] = None) -> List[dict]:
    """The customer's nudge log, newest first: {"rule", "rule_name" (None for a rule that no longer
    exists), "status", "reason", "detail", "at" (ISO UTC, "2024-05-01T08:30:00Z")}."""
    stmt = (sa.select(NudgeLogEntry.rule_key, NudgeRule.name, NudgeLogEntry.status, NudgeLogEntry.reason,
                      NudgeLogEntry.detail, NudgeLogEntry.at)
            .outerjoin(NudgeRule, NudgeRule.key == NudgeLogEntry.rule_key)
            .where(NudgeLogEntry.customer_id == customer_id)
            .order_by(NudgeLogEntry.at.desc(), NudgeLogEntry.id.desc()))
    if limit:
        stmt = stmt.limit(limit)
    return [{"rule": key, "rule_name": name, "status": status, "reason": reason, "detail": detail, "at": iso_z(at)}
            for key, name, status, reason, detail, at in (await session.execute(stmt)).all()]
