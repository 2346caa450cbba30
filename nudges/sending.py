"""Due nudges out, through every guardrail at send time. Each nudge that falls due is checked, in
this order, and the first that stops it is logged as its reason:

  rule paused or deleted; too late (past the rule's send window); an exit condition (paid, delivered,
  bought again...); consent for its category (退订 / TD / a staff change, honoured at once); no
  marketing during an escalation at the desk or with an open complaint; the rule's cooldown for the
  customer and its daily cap; quiet hours (held until they end, or dropped, per rule); frequency caps
  per day and week, over all nudges and per category, in the shop's calendar days; one nudge per
  customer at a time, by priority (logistics > order / cart > lifecycle > promotion); the channel's
  rules (微信客服 / Official Account: 48 h after the customer's last message, 5 messages: the sender
  API's reply windows).

What passes is either held out (the rule's control group, by a stable hash: logged "holdout", would
have been sent) or handed to the outbox in the same transaction that marks it sent, under the key
"nudge:<id>": a nudge is sent at most once whatever fails in between.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from actions import templates
from actions.db.models import Customer, CustomerIdentity, Order, Ticket
from actions.templates import datetime_text
from bot.settings import get_settings
from channels.wechat import db
from channels.wechat.outbound import sender
from channels.wechat.outbound.outbox import OutgoingMessage, enqueue_in
from nudges import messages, rules as rulebook
from nudges.models import (
    EXITED,
    HOLDOUT,
    LIVE,
    PAID_STATUSES,
    SCHEDULED,
    SENT,
    SUPPRESSED,
    Nudge,
    NudgeEvent,
    NudgeLogEntry,
    NudgeRule,
    now_utc,
)
from nudges.rules import RuleDef

logger = logging.getLogger("nudges.sending")
CHUNK = 200
# nudges one send_due() call decides at most
ROUND = 1000
# who goes first when a customer has several due: the rule's priority, then service before marketing
ORDER = (Nudge.priority, sa.case((Nudge.category == "transactional", 0), else_=1), Nudge.due_at, Nudge.id)
OPEN_TICKET = ("open", "processing")
DELIVERED_STATUSES = ("delivered", "completed")
# what staff read in the log (and the console's report) for each reason
REASONS = {
    "rule_paused": "规则已暂停或删除",
    "too_late": "已过发送时限",
    "opted_out": "客户已退订此类消息",
    "in_escalation": "客户正在人工会话中，不发营销消息",
    "open_complaint": "客户有未结的投诉，不发营销消息",
    "cooldown": "冷却期内已发过这条规则",
    "rule_cap": "这条规则今天的发送上限已满",
    "quiet_hours": "免打扰时段",
    "capped_day": "客户今天的消息条数已达上限",
    "capped_week": "客户本周的消息条数已达上限",
    "outranked": "同一时间有优先级更高的提醒",
    "duplicate": "同一购物车/订单已有这条提醒",
    "holdout": "对照组：本应发送，按实验不发",
    "out_of_window": "客户 48 小时内没有发过消息，渠道不允许主动发送",
    "over_quota": "这次会话窗口的 5 条消息已用完",
    "no_channel": "客户没有可发送的微信身份",
    "not_configured": "渠道未配置",
    "with_staff": "客服正在处理这位客户",
    "unknown_customer": "找不到这位客户",
    "error": "处理出错，未发送（已记录日志）",
    **rulebook.EXITS,
}


@dataclass
class Decision:
    status: str
    reason: Optional[str] = None
    detail: str = ""
    # held: stays scheduled, due again at this time
    hold_until: Optional[datetime] = None
    outgoing: Optional[List[OutgoingMessage]] = None
    channel: Optional[str] = None
    text: Optional[str] = None
    variant: str = ""
    arm: str = "treatment"


# --- time -------------------------------------------------------------------------------------------------
def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def quiet_until(at: datetime, tz: str, start: str, end: str) -> Optional[datetime]:
    """When the quiet hours around `at` (naive UTC) end, None outside them."""
    local = templates.local(at, tz)
    now, begin, finish = local.hour * 60 + local.minute, _minutes(start), _minutes(end)
    if begin == finish:
        return None
    inside = begin <= now < finish if begin < finish else (now >= begin or now < finish)
    if not inside:
        return None
    day = local.date() if (begin < finish or now < finish) else local.date() + timedelta(days=1)
    until = datetime(day.year, day.month, day.day, finish // 60, finish % 60, tzinfo=ZoneInfo(tz))
    return until.astimezone(timezone.utc).replace(tzinfo=None)


def demo_clock() -> bool:
    """The demo compresses its clock (SIYU_DEMO_NUDGE_DELAY_S): no quiet hours, so it works at any hour."""
    settings = get_settings()
    return settings.demo and settings.demo_nudge_delay_s is not None


def day_and_week(at: datetime, tz: str) -> Tuple[date, Tuple[int, int]]:
    local = templates.local(at, tz).date()
    iso = local.isocalendar()
    return local, (iso[0], iso[1])


# --- the facts of one round ---------------------------------------------------------------------------
class Facts:
    """What the guardrails need about the round's customers, read in a few queries."""

    def __init__(self) -> None:
        self.customers: Dict[int, Customer] = {}
        self.escalated: Set[int] = set()
        self.complaints: Set[int] = set()
        self.open_ticket_orders: Set[str] = set()
        self.payments: Dict[int, List[Tuple[datetime, str]]] = {}
        # (customer, cart id) of orders that name the cart they came from
        self.paid_carts: Set[Tuple[int, str]] = set()
        self.delivered: Set[str] = set()
        # customer -> [(decided_at, rule_key, category)] of the nudges sent in the last 8 days
        self.sent: Dict[int, List[Tuple[datetime, str, str]]] = {}
        self.rule_today: Dict[str, int] = {}
        # product lines read this round (messages.render's cache)
        self.products: Dict[Any, List[str]] = {}

    @classmethod
    async def load(cls, s: AsyncSession, nudges: List[Nudge], now: datetime, tz: str,
                   horizon_days: float = 8) -> "Facts":
        """`horizon_days`: how far back sent nudges matter (the week's cap, the longest cooldown)."""
        from desk.models import ASSIGNED, QUEUED, DeskConversation

        facts = cls()
        ids = sorted({n.customer_id for n in nudges})
        refs = sorted({n.ref for n in nudges if n.ref})
        since = min(n.trigger_at for n in nudges)
        customers = await s.execute(sa.select(Customer).where(Customer.id.in_(ids)))
        facts.customers = {c.id: c for c in customers.scalars()}
        identities = (await s.execute(sa.select(CustomerIdentity.customer_id, CustomerIdentity.channel,
                                                CustomerIdentity.external_id)
                                      .where(CustomerIdentity.customer_id.in_(ids)))).all()
        conversation_of = {f"{ch}:{ext}": cid for cid, ch, ext in identities}
        desk = (await s.execute(sa.select(DeskConversation.customer_id, DeskConversation.conversation_id).where(
            DeskConversation.state.in_((QUEUED, ASSIGNED)),
            sa.or_(DeskConversation.customer_id.in_(ids),
                   DeskConversation.conversation_id.in_(list(conversation_of) or [""]))))).all()
        facts.escalated = ({cid for cid, _ in desk if cid}
                           | {conversation_of[c] for _, c in desk if c in conversation_of})
        tickets = (await s.execute(sa.select(Ticket.customer_id, Ticket.kind, Order.order_no)
                                   .join(Order, Order.id == Ticket.order_id, isouter=True)
                                   .where(Ticket.customer_id.in_(ids), Ticket.status.in_(OPEN_TICKET)))).all()
        facts.complaints = {cid for cid, kind, _ in tickets if kind == "complaint"}
        facts.open_ticket_orders = {no for _, _, no in tickets if no}
        paid = await s.execute(sa.select(NudgeEvent.customer_id, NudgeEvent.at, NudgeEvent.ref, NudgeEvent.data).where(
            NudgeEvent.customer_id.in_(ids), NudgeEvent.type == "order_paid", NudgeEvent.at >= since))
        for cid, at, ref, data in paid.all():
            facts.payments.setdefault(cid, []).append((at, ref))
            if isinstance(data, dict) and data.get("cart"):
                facts.paid_carts.add((cid, str(data["cart"])))
        paid_at = sa.func.coalesce(Order.paid_at, Order.created_at)
        orders = await s.execute(sa.select(Order.customer_id, paid_at, Order.order_no).where(
            Order.customer_id.in_(ids), Order.status.in_(PAID_STATUSES), paid_at >= since))
        for cid, at, ref in orders.all():
            facts.payments.setdefault(cid, []).append((at, ref))
        if refs:
            facts.delivered = set((await s.execute(sa.select(NudgeEvent.ref).where(
                NudgeEvent.type == "order_delivered", NudgeEvent.ref.in_(refs)))).scalars())
            facts.delivered |= set((await s.execute(sa.select(Order.order_no).where(
                Order.order_no.in_(refs), Order.status.in_(DELIVERED_STATUSES)))).scalars())
        sent = await s.execute(sa.select(Nudge.customer_id, Nudge.decided_at, Nudge.rule_key, Nudge.category).where(
            Nudge.customer_id.in_(ids), Nudge.status == SENT,
            Nudge.decided_at >= now - timedelta(days=max(8, horizon_days))))
        for cid, at, key, category in sent.all():
            facts.sent.setdefault(cid, []).append((at, key, category))
        today, _ = day_and_week(now, tz)
        start_of_day = datetime(today.year, today.month, today.day, tzinfo=ZoneInfo(tz)).astimezone(
            timezone.utc).replace(tzinfo=None)
        facts.rule_today = dict((await s.execute(sa.select(Nudge.rule_key, sa.func.count()).where(
            Nudge.status == SENT, Nudge.decided_at >= start_of_day).group_by(Nudge.rule_key))).all())
        return facts


# --- deciding -------------------------------------------------------------------------------------------
def _exit(rule: RuleDef, nudge: Nudge, facts: Facts) -> Optional[str]:
    # paid in the same second as the checkout counts: shops' clocks are not finer than that
    paid_after = [ref for at, ref in facts.payments.get(nudge.customer_id, []) if at >= nudge.trigger_at]
    for name in rule.exits:
        if name in ("paid", "repurchased", "ordered") and paid_after:
            return name
        if name == "paid" and (nudge.customer_id, nudge.ref) in facts.paid_carts:
            return name
        if name == "delivered" and nudge.ref in facts.delivered:
            return name
        if name == "open_ticket" and (nudge.ref in facts.open_ticket_orders or nudge.customer_id in facts.complaints):
            return name
        if name == "contacted" and any(at > nudge.trigger_at for at, _, _ in facts.sent.get(nudge.customer_id, [])):
            return name
    return None


def _capped(nudge: Nudge, facts: Facts, now: datetime, tz: str) -> Optional[Tuple[str, str]]:
    caps = get_settings().shop.nudges.caps
    day, week = day_and_week(now, tz)
    counts = {"day": {"all": 0, "cat": 0}, "week": {"all": 0, "cat": 0}}
    for at, _, category in facts.sent.get(nudge.customer_id, []):
        d, w = day_and_week(at, tz)
        same = category == nudge.category
        if d == day:
            counts["day"]["all"] += 1
            counts["day"]["cat"] += same
        if w == week:
            counts["week"]["all"] += 1
            counts["week"]["cat"] += same
    category_cap = getattr(caps, nudge.category)
    when = {"day": "今天", "week": "本周"}
    for period in ("day", "week"):
        if counts[period]["cat"] >= getattr(category_cap, period):
            kind = "营销" if nudge.category == "marketing" else "服务"
            return f"capped_{period}", f"{when[period]}{kind}消息已发 {counts[period]['cat']} 条"
        if counts[period]["all"] >= getattr(caps.all, period):
            return f"capped_{period}", f"{when[period]}共已发 {counts[period]['all']} 条"
    return None


def guard(rule_row: Optional[NudgeRule], rule: Optional[RuleDef], nudge: Nudge, facts: Facts, now: datetime,
          tz: str, chosen: Dict[int, str]) -> Optional[Decision]:
    """The guardrail that stops this nudge now (or holds it), None when it may go."""
    if rule is None or rule_row is None or rule_row.status != LIVE or rule_row.deleted_at is not None:
        return Decision(SUPPRESSED, "rule_paused")
    if nudge.expires_at is not None and now > nudge.expires_at:
        return Decision(EXITED, "too_late", f"应在 {datetime_text(nudge.expires_at, tz)} 前发出")
    exit_reason = _exit(rule, nudge, facts)
    if exit_reason:
        return Decision(EXITED, exit_reason)
    customer = facts.customers.get(nudge.customer_id)
    if customer is None:
        return Decision(SUPPRESSED, "unknown_customer")
    if (customer.marketing_opt_out if nudge.category == "marketing" else customer.transactional_opt_out):
        return Decision(SUPPRESSED, "opted_out", f"{'营销' if nudge.category == 'marketing' else '服务'}消息已退订")
    if nudge.category == "marketing":
        if nudge.customer_id in facts.escalated:
            return Decision(SUPPRESSED, "in_escalation")
        if nudge.customer_id in facts.complaints:
            return Decision(SUPPRESSED, "open_complaint")
    cooldown = timedelta(days=rule.cap.cooldown_days)
    if cooldown and any(key == nudge.rule_key and at > now - cooldown
                        for at, key, _ in facts.sent.get(nudge.customer_id, [])):
        return Decision(SUPPRESSED, "cooldown", f"{rule.cap.cooldown_days:g} 天内已发过")
    if rule.cap.per_day is not None and facts.rule_today.get(nudge.rule_key, 0) >= rule.cap.per_day:
        return Decision(SUPPRESSED, "rule_cap", f"每天最多 {rule.cap.per_day} 条")
    settings = get_settings().shop.nudges
    until = None if demo_clock() else quiet_until(now, tz, settings.quiet_start, settings.quiet_end)
    if until is not None:
        if rule.quiet_hours == "drop" or (nudge.expires_at is not None and until > nudge.expires_at):
            return Decision(SUPPRESSED, "quiet_hours", f"{settings.quiet_start}-{settings.quiet_end} 不发送")
        return Decision(SCHEDULED, "quiet_hours", f"免打扰时段，推迟到 {settings.quiet_end} 发送", hold_until=until)
    capped = _capped(nudge, facts, now, tz)
    if capped:
        return Decision(SUPPRESSED, capped[0], capped[1])
    if nudge.customer_id in chosen:
        if nudge.category == "marketing":
            return Decision(SUPPRESSED, "outranked", f"优先发送「{chosen[nudge.customer_id]}」")
        return Decision(SCHEDULED, "outranked", hold_until=now + timedelta(seconds=30))
    return None


async def decide_all(s: AsyncSession, rules: Dict[int, Tuple[NudgeRule, Optional[RuleDef]]], nudges: List[Nudge],
                     facts: Facts, now: datetime, tz: str, runtime) -> List[Decision]:
    """Each nudge's decision, in the order given (priority first). The guardrails pick at most one
    nudge per customer; those are rendered and offered to the sender API together, whose windows
    may still refuse them; what remains is held out or sent."""
    decisions: List[Optional[Decision]] = []
    chosen: Dict[int, str] = {}
    candidates: List[Tuple[int, RuleDef, Nudge]] = []
    for nudge in nudges:
        row, rule = rules.get(nudge.rule_id, (None, None))
        stop = guard(row, rule, nudge, facts, now, tz, chosen)
        decisions.append(stop)
        if stop is None:
            chosen[nudge.customer_id] = rule.name
            facts.rule_today[nudge.rule_key] = facts.rule_today.get(nudge.rule_key, 0) + 1
            candidates.append((len(decisions) - 1, rule, nudge))
    wanted, shown = [], []
    for _, rule, nudge in candidates:
        customer = facts.customers[nudge.customer_id]
        variant, text = messages.variant_for(rule, customer.external_id)
        body = await messages.render(s, rule, customer, nudge.context or {}, text, cache=facts.products)
        shown.append((variant, body))
        marketing = nudge.category == "marketing"
        wanted.append(sender.CustomerMessage(nudge.customer_id, [body], f"nudge:{nudge.id}", proactive=marketing,
                                             buttons=messages.unsubscribe_button() if marketing
                                             and rule.message.unsubscribe_hint else (),
                                             template=messages.template_for(rule, customer, nudge.context or {})))
    posts = await sender.customer_posts(s, wanted, runtime) if wanted else []
    share, exempt = get_settings().shop.nudges.holdout_share, messages.holdout_exempt()
    for (index, rule, nudge), (variant, body), (outgoing, refusal) in zip(candidates, shown, posts):
        customer = facts.customers[nudge.customer_id]
        if refusal is not None:
            decisions[index] = Decision(SUPPRESSED, refusal.reason, text=body, variant=variant)
        elif messages.in_holdout(rule, customer.external_id, share, exempt):
            decisions[index] = Decision(HOLDOUT, "holdout", text=body, variant=variant, arm="control",
                                        channel=outgoing[0].channel)
        else:
            decisions[index] = Decision(SENT, None, text=body, variant=variant, outgoing=outgoing,
                                        channel=outgoing[0].channel)
    return decisions


def _rules(rows: Iterable[NudgeRule]) -> Dict[int, Tuple[NudgeRule, Optional[RuleDef]]]:
    out: Dict[int, Tuple[NudgeRule, Optional[RuleDef]]] = {}
    for row in rows:
        try:
            out[row.id] = (row, rulebook.definition(row))
        except ValueError:
            logger.exception("nudge rule unusable", extra={"rule": row.key})
            out[row.id] = (row, None)
    return out


async def send_due(now: Optional[datetime] = None, limit: int = ROUND, runtime=None) -> Dict[str, int]:
    """Decide every nudge due by now (up to `limit`), CHUNK per transaction; counts per outcome.
    A chunk that fails is decided nudge by nudge; a nudge that fails on its own is suppressed with
    the error as its reason (logged, never retried forever, never blocking the others)."""
    now = now or now_utc()
    tz = get_settings().shop.timezone
    runtime = runtime or sender.OutboxOnly()
    async with db.session() as s:
        due = (await s.execute(sa.select(Nudge.id).where(Nudge.status == SCHEDULED, Nudge.due_at <= now)
                               .order_by(*ORDER).limit(limit))).scalars().all()
    counts: Dict[str, int] = {}
    woke = False
    for start in range(0, len(due), CHUNK):
        part = due[start:start + CHUNK]
        try:
            woke = await _decide_chunk(part, now, tz, runtime, counts) or woke
            continue
        except (OperationalError, InterfaceError, OSError, asyncio.TimeoutError):
            raise  # the database is away: the next round tries again
        except Exception:  # noqa: BLE001 - find the nudge that fails; the others go on
            logger.exception("nudge chunk failed: deciding its nudges one by one")
        for nudge_id in part:
            try:
                woke = await _decide_chunk([nudge_id], now, tz, runtime, counts) or woke
            except (OperationalError, InterfaceError, OSError, asyncio.TimeoutError):
                raise
            except Exception as exc:  # noqa: BLE001
                logger.exception("nudge failed", extra={"nudge_id": nudge_id})
                await _fail(nudge_id, exc, now)
                counts["error"] = counts.get("error", 0) + 1
    if woke:
        runtime.worker.wake()
    if counts:
        logger.info("nudges decided", extra={"outcomes": counts})
    return counts


async def _decide_chunk(part: List[int], now: datetime, tz: str, runtime, counts: Dict[str, int]) -> bool:
    """Decide these nudges in one transaction; whether messages went to the outbox."""
    async with db.transaction() as s:
        nudges = list((await s.execute(sa.select(Nudge).where(Nudge.id.in_(part), Nudge.status == SCHEDULED)
                                       .order_by(*ORDER))).scalars())
        if not nudges:
            return False
        rules = _rules((await s.execute(sa.select(NudgeRule).where(
            NudgeRule.id.in_({n.rule_id for n in nudges})))).scalars())
        horizon = max([8.0] + [r.cap.cooldown_days for _, r in rules.values() if r is not None])
        facts = await Facts.load(s, nudges, now, tz, horizon)
        outgoing: List[OutgoingMessage] = []
        keys_of: Dict[int, List[str]] = {}
        logs: List[Dict[str, Any]] = []
        outcomes: Dict[str, int] = {}
        # the nudges' changes are written at commit, not before every read of the round
        with s.no_autoflush:
            decisions = await decide_all(s, rules, nudges, facts, now, tz, runtime)
        for nudge, decision in zip(nudges, decisions):
            _apply(nudge, decision, now, logs)
            outcomes[decision.reason or decision.status] = outcomes.get(decision.reason or decision.status, 0) + 1
            if decision.outgoing:
                outgoing.extend(decision.outgoing)
                keys_of[nudge.id] = [m.idempotency_key for m in decision.outgoing]
        if outgoing:
            ids = await enqueue_in(s, outgoing)
            by_key = {m.idempotency_key: i for m, i in zip(outgoing, ids)}
            for nudge in nudges:
                if nudge.id in keys_of:
                    nudge.outbox_ids = [by_key[k] for k in keys_of[nudge.id]]
        for start_log in range(0, len(logs), 200):
            await s.execute(sa.insert(NudgeLogEntry).values(logs[start_log:start_log + 200]))
    # counted once the transaction is committed (a failed chunk is decided again one by one)
    for key, value in outcomes.items():
        counts[key] = counts.get(key, 0) + value
    return bool(outgoing)


async def _fail(nudge_id: int, exc: Exception, now: datetime) -> None:
    async with db.transaction() as s:
        nudge = await s.get(Nudge, nudge_id)
        if nudge is None or nudge.status != SCHEDULED:
            return
        detail = f"{REASONS['error']}：{type(exc).__name__}"[:256]
        nudge.status, nudge.reason, nudge.detail, nudge.decided_at = SUPPRESSED, "error", detail, now
        s.add(NudgeLogEntry(nudge_id=nudge.id, customer_id=nudge.customer_id, rule_key=nudge.rule_key,
                            status=SUPPRESSED, reason="error", detail=detail, at=now))


def _apply(nudge: Nudge, decision: Decision, now: datetime, logs: List[Dict[str, Any]]) -> None:
    detail = decision.detail or REASONS.get(decision.reason or "", "")
    nudge.attempts += 1
    if decision.status == SCHEDULED:
        nudge.due_at = decision.hold_until or nudge.due_at
        if decision.reason == "outranked":
            return
        logs.append({"nudge_id": nudge.id, "customer_id": nudge.customer_id, "rule_key": nudge.rule_key,
                     "status": SCHEDULED, "reason": decision.reason, "detail": detail[:256], "at": now})
        return
    nudge.status, nudge.reason, nudge.detail, nudge.decided_at = decision.status, decision.reason, detail[:256], now
    nudge.channel, nudge.text = decision.channel, decision.text
    nudge.variant, nudge.arm = decision.variant, decision.arm
    if decision.status == HOLDOUT:
        detail = REASONS["holdout"]
    logs.append({"nudge_id": nudge.id, "customer_id": nudge.customer_id, "rule_key": nudge.rule_key,
                 "status": decision.status, "reason": decision.reason, "detail": detail[:256], "at": now})
