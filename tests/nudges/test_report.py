"""The per-rule report on SQLite and PostgreSQL, on a generated history whose effect is known.

2,000 customers get a cart reminder (10% control by hash, an A/B test in treatment); each converts
with a seeded draw (30% nudged, 15% held out) and pays within the rule's 3 attribution days. Around
them the history has what attribution must not count: payments too late, before the nudge or at the
very same second, payments taken by a later nudge of another rule, the same order paid twice,
payments of unknown customers, nudges outside the window, suppressed, exited and waiting nudges,
replies after 25 hours and control customers' messages. The report must count exactly what the
generator knows and find the effect; a history without one must not be significant."""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from actions.db.engine import async_session
from actions.db.models import Customer, CustomerIdentity
from channels.wechat.models import InboundMessageRow
from nudges.models import Nudge, NudgeEvent, NudgeLogEntry, NudgeRule
from nudges.report import amount_fen, customer_log, rule_report

T0 = datetime(2024, 3, 4, 2, 0)
SINCE, UNTIL = T0, T0 + timedelta(days=8)
CART_DAYS = 3
CUSTOMERS = 2000
SUPPRESS_REASONS = ("quiet_hours", "capped_day", "opted_out")
EXIT_REASONS = ("paid", "too_late")


def in_control(rule: str, customer_id: int, share: int = 10) -> bool:
    return int.from_bytes(hashlib.sha256(f"{rule}:{customer_id}".encode()).digest()[:8], "big") % 100 < share


@dataclass
class Arm:
    n: int = 0
    conversions: int = 0
    revenue_fen: int = 0
    replies: int = 0


@dataclass
class History:
    """What the generator knows."""

    cart: dict = field(default_factory=lambda: {"treatment": Arm(), "control": Arm()})
    variants: dict = field(default_factory=lambda: {"A": Arm(), "B": Arm()})
    winback: dict = field(default_factory=lambda: {"treatment": Arm(), "control": Arm()})
    suppressed: Counter = field(default_factory=Counter)
    exited: Counter = field(default_factory=Counter)
    scheduled: int = 0
    old: int = 0
    old_conversions: int = 0
    customer_ids: list = field(default_factory=list)


async def generate(p_treatment: float, p_control: float, seed: int) -> History:
    rng = random.Random(seed)
    known = History()
    async with async_session() as s:
        # executemany: every row names the same columns
        await s.execute(sa.insert(NudgeRule), [
            {"key": "cart", "name": "加购未付提醒", "definition": {"attribution_days": CART_DAYS}, "status": "live",
             "deleted_at": None},
            {"key": "winback", "name": "沉睡召回", "definition": {}, "status": "live", "deleted_at": None},
            {"key": "empty", "name": "新规则", "definition": {"holdout": 0.2, "attribution_days": 5},
             "status": "paused", "deleted_at": None},
            {"key": "gone", "name": "已删除", "definition": {}, "status": "paused", "deleted_at": T0}])
        await s.execute(sa.insert(Customer), [{"external_id": f"C{10000 + i}", "name": f"客户{i}"}
                                              for i in range(CUSTOMERS + 30)])
        rules = dict((await s.execute(sa.select(NudgeRule.key, NudgeRule.id))).all())
        ids = dict((await s.execute(sa.select(Customer.external_id, Customer.id))).all())
        nudges, events, identities, inbound = [], [], [], []

        def nudge(rule, cid, ref, status, at, variant="", reason=None):
            nudges.append({"rule_id": rules[rule], "rule_key": rule, "customer_id": cid, "ref": ref,
                           "dedupe_key": f"{rule}:{cid}:{ref}", "trigger_at": at or T0, "due_at": at or T0,
                           "arm": "control" if status == "holdout" else "treatment", "variant": variant,
                           "status": status, "reason": reason or ("holdout" if status == "holdout" else None),
                           "decided_at": at})

        def paid(external, cid, at, ref, amount, by_id=True, source="shop"):
            data = {"amount_fen": amount} if len(events) % 3 else {"amount": f"{amount / 100:.2f}"}
            events.append({"event_id": f"e{len(events)}", "type": "order_paid", "customer": external,
                           "customer_id": cid if by_id else None, "ref": ref, "at": at, "data": data,
                           "source": source, "status": "done"})

        def wrote(cid, i, at):
            identities.append({"customer_id": cid, "channel": "wecom_kf", "external_id": f"wm{i}"})
            inbound.append({"channel": "wecom_kf", "dedup_key": f"m{len(inbound)}",
                            "conversation_id": f"wecom_kf:wm{i}", "payload": {"text": "在吗"}, "status": "done",
                            "received_at": at})

        for i in range(CUSTOMERS):
            external = f"C{10000 + i}"
            cid = ids[external]
            known.customer_ids.append(cid)
            at = T0 + timedelta(minutes=5 * i, seconds=rng.randrange(60))
            control = in_control("cart", cid)
            arm = known.cart["control" if control else "treatment"]
            variant = "AB"[int.from_bytes(hashlib.sha256(f"v:{cid}".encode()).digest()[:2], "big") % 2]
            nudge("cart", cid, f"cart{i}", "holdout" if control else "sent", at, variant)
            arm.n += 1
            if not control:
                known.variants[variant].n += 1
            by_id = rng.random() < 0.5
            stolen = False
            if rng.random() < (p_control if control else p_treatment):
                # converts within the 3 days (10%: on the very last second of them)
                offset = timedelta(days=CART_DAYS) if rng.random() < 0.1 else \
                    timedelta(seconds=rng.randrange(1, CART_DAYS * 86400))
                amount = rng.randrange(1000, 50000)
                paid(external, cid, at + offset, f"o{i}", amount, by_id)
                if rng.random() < 0.2:  # our own order scan reports the same order again, later
                    paid(external, cid, at + offset + timedelta(minutes=2), f"o{i}", amount, not by_id, "system")
                arm.conversions += 1
                arm.revenue_fen += amount
                if not control:
                    known.variants[variant].conversions += 1
                    known.variants[variant].revenue_fen += amount
            else:
                draw = rng.random()
                if draw < 0.1:
                    # a win-back nudge a day later takes the payment of the next day
                    stolen = True
                    winback_control = in_control("winback", cid)
                    nudge("winback", cid, f"w{i}", "holdout" if winback_control else "sent", at + timedelta(days=1))
                    paid(external, cid, at + timedelta(days=2), f"o{i}", 9900, by_id)
                    winback = known.winback["control" if winback_control else "treatment"]
                    winback.n += 1
                    winback.conversions += 1
                    winback.revenue_fen += 9900
                elif draw < 0.15:  # an hour too late
                    paid(external, cid, at + timedelta(days=CART_DAYS, hours=1), f"o{i}", 5000, by_id)
                elif draw < 0.2:  # paid before the reminder
                    paid(external, cid, at - timedelta(hours=1), f"o{i}", 5000, by_id)
                elif draw < 0.22:  # at the very same second: not after it
                    paid(external, cid, at, f"o{i}", 5000, by_id)
            if not stolen:
                reply = rng.random()
                if reply < 0.2:
                    wrote(cid, i, at + timedelta(hours=2))
                    if not control:
                        arm.replies += 1
                        known.variants[variant].replies += 1
                elif reply < 0.3:
                    wrote(cid, i, at + timedelta(hours=25))
            # guardrails and exits in the window, waiting nudges, and suppressed before it
            if i % 7 == 0:
                reason = SUPPRESS_REASONS[i % 3]
                nudge("cart", cid, f"s{i}", "suppressed", at + timedelta(minutes=1), reason=reason)
                known.suppressed[reason] += 1
            if i % 11 == 0:
                reason = EXIT_REASONS[i % 2]
                nudge("cart", cid, f"x{i}", "exited", at + timedelta(minutes=2), reason=reason)
                known.exited[reason] += 1
            if i % 13 == 0:
                nudge("cart", cid, f"q{i}", "scheduled", None)
                known.scheduled += 1
            if i % 17 == 0:
                nudge("cart", cid, f"old-s{i}", "suppressed", T0 - timedelta(days=3), reason="quiet_hours")
        # 30 customers reminded and converted long before the window
        for i in range(CUSTOMERS, CUSTOMERS + 30):
            cid, at = ids[f"C{10000 + i}"], T0 - timedelta(days=10)
            nudge("cart", cid, f"cart{i}", "sent", at, "A")
            paid(f"C{10000 + i}", cid, at + timedelta(days=1), f"o{i}", 1000)
            known.old += 1
            known.old_conversions += 1
        # a payment nobody here knows
        paid("C-unknown", None, T0 + timedelta(hours=3), "ox", 1000, by_id=False)
        for table, rows in ((Nudge, nudges), (NudgeEvent, events), (CustomerIdentity, identities),
                            (InboundMessageRow, inbound)):
            for start in range(0, len(rows), 1000):
                await s.execute(sa.insert(table), rows[start:start + 1000])
        await s.commit()
    return known


def check_arm(report_arm: dict, known: Arm) -> None:
    assert report_arm["n"] == known.n
    assert report_arm["conversions"] == known.conversions
    assert report_arm["rate"] == pytest.approx(known.conversions / known.n)
    assert report_arm["revenue_yuan"] == pytest.approx(known.revenue_fen / 100)


async def test_report_counts_and_attributes_exactly_and_finds_the_known_effect(wechat_db):
    known = await generate(0.30, 0.15, seed=2)
    async with async_session() as s:
        report = await rule_report(s, since=SINCE, until=UNTIL)
    by_key = {entry["rule"]: entry for entry in report}
    assert list(by_key) == ["cart", "winback", "empty"]

    cart = by_key["cart"]
    assert (cart["name"], cart["status"], cart["attribution_days"]) == ("加购未付提醒", "live", CART_DAYS)
    assert cart["sent"] == known.cart["treatment"].n and cart["holdout"] == known.cart["control"].n
    assert cart["sent"] + cart["holdout"] == CUSTOMERS and 150 < cart["holdout"] < 250
    assert cart["scheduled"] == known.scheduled
    assert cart["suppressed"] == dict(known.suppressed) and cart["suppressed_total"] == sum(known.suppressed.values())
    assert cart["exited"] == dict(known.exited)
    check_arm(cart["treatment"], known.cart["treatment"])
    check_arm(cart["control"], known.cart["control"])
    assert cart["replies"] == known.cart["treatment"].replies
    assert cart["reply_rate"] == pytest.approx(known.cart["treatment"].replies / known.cart["treatment"].n)

    uplift = cart["uplift"]
    assert uplift["treated"]["conversions"] == known.cart["treatment"].conversions
    assert uplift["control"]["conversions"] == known.cart["control"].conversions
    assert uplift["enough_data"] and uplift["significant"] and uplift["p_value"] < 0.05
    low, high = uplift["ci"]
    assert low < 0.15 < high and low > 0

    variants = {v["variant"]: v for v in cart["variants"]}
    assert set(variants) == {"A", "B"}
    for name, arm in known.variants.items():
        v = variants[name]
        assert (v["n"], v["conversions"], v["replies"]) == (arm.n, arm.conversions, arm.replies)
        assert v["revenue_yuan"] == pytest.approx(arm.revenue_fen / 100)
        assert v["uplift"]["control"]["n"] == known.cart["control"].n
    assert sum(v["n"] for v in variants.values()) == cart["sent"]

    winback = by_key["winback"]
    assert winback["attribution_days"] == 7 and "variants" not in winback
    check_arm(winback["treatment"], known.winback["treatment"])
    assert winback["control"]["conversions"] == known.winback["control"].conversions
    assert winback["treatment"]["rate"] == 1 and winback["replies"] == 0

    empty = by_key["empty"]
    assert empty["attribution_days"] == 5
    assert (empty["sent"], empty["holdout"], empty["scheduled"], empty["suppressed_total"]) == (0, 0, 0, 0)
    assert empty["treatment"] == {"n": 0, "conversions": 0, "rate": None, "revenue_yuan": 0}
    assert empty["reply_rate"] is None and empty["uplift"]["ci"] is None and not empty["uplift"]["significant"]


async def test_report_window_and_rule_selection(wechat_db):
    known = await generate(0.30, 0.15, seed=7)
    async with async_session() as s:
        everything = {e["rule"]: e for e in await rule_report(s)}
        [cart] = await rule_report(s, "cart", since=SINCE.replace(tzinfo=timezone.utc), until=UNTIL)
        [gone] = await rule_report(s, "gone")
        assert await rule_report(s, "no-such-rule") == []
        later = await rule_report(s, "cart", since=UNTIL)
    # without a window: the 30 old reminders and their payments too, and the suppressed before it
    assert everything["cart"]["treatment"]["n"] == known.cart["treatment"].n + known.old
    assert everything["cart"]["treatment"]["conversions"] == known.cart["treatment"].conversions + known.old_conversions
    assert everything["cart"]["suppressed_total"] == sum(known.suppressed.values()) + len(range(0, CUSTOMERS, 17))
    # an aware `since` is UTC
    assert cart["treatment"]["n"] == known.cart["treatment"].n
    assert cart["treatment"]["conversions"] == known.cart["treatment"].conversions
    assert gone["name"] == "已删除" and gone["sent"] == 0
    # nothing decided after the window; what waits is still reported
    assert later[0]["sent"] == 0 and later[0]["scheduled"] == known.scheduled


async def test_no_effect_is_not_significant(wechat_db):
    known = await generate(0.20, 0.20, seed=99)
    async with async_session() as s:
        [cart] = await rule_report(s, "cart", since=SINCE, until=UNTIL)
    check_arm(cart["control"], known.cart["control"])
    check_arm(cart["treatment"], known.cart["treatment"])
    uplift = cart["uplift"]
    assert uplift["enough_data"] and not uplift["significant"]
    low, high = uplift["ci"]
    assert low < 0 < high


async def test_customer_log_is_newest_first_with_rule_names(wechat_db):
    async with async_session() as s:
        s.add(NudgeRule(key="cart", name="加购未付提醒", definition={}, status="live"))
        customer = Customer(external_id="C1", name="小满")
        s.add(customer)
        await s.flush()
        s.add_all([
            NudgeLogEntry(customer_id=customer.id, rule_key="cart", status="scheduled", at=datetime(2024, 5, 1, 8, 0)),
            NudgeLogEntry(customer_id=customer.id, rule_key="cart", status="suppressed", reason="quiet_hours",
                          detail="21:00-09:00", at=datetime(2024, 5, 1, 13, 30, 5, 123456)),
            NudgeLogEntry(customer_id=customer.id, rule_key="removed", status="sent", at=datetime(2024, 4, 1)),
        ])
        other = Customer(external_id="C2", name="别人")
        s.add(other)
        await s.flush()
        s.add(NudgeLogEntry(customer_id=other.id, rule_key="cart", status="sent", at=datetime(2024, 6, 1)))
        await s.commit()
        log = await customer_log(s, customer.id)
        assert await customer_log(s, customer.id, limit=1) == log[:1]
    assert log == [
        {"rule": "cart", "rule_name": "加购未付提醒", "status": "suppressed", "reason": "quiet_hours",
         "detail": "21:00-09:00", "at": "2024-05-01T13:30:05Z"},
        {"rule": "cart", "rule_name": "加购未付提醒", "status": "scheduled", "reason": None, "detail": None,
         "at": "2024-05-01T08:00:00Z"},
        {"rule": "removed", "rule_name": None, "status": "sent", "reason": None, "detail": None,
         "at": "2024-04-01T00:00:00Z"},
    ]


def test_payment_amounts_in_fen_or_yuan():
    assert amount_fen({"amount_fen": 12345, "amount": 1}) == 12345
    assert amount_fen({"amount": "123.45"}) == 12345
    assert amount_fen({"amount": 99}) == 9900
    assert amount_fen({"amount": "n/a"}) == 0 and amount_fen({}) == 0 and amount_fen(None) == 0
