"""RFM segments and health, on SQLite and PostgreSQL: a small shop whose customers' recency,
frequency and monetary value are known by hand lands each customer in its one of the eight segments,
with the shop's medians and with fixed thresholds; only paid orders count (paid_at, else created_at;
paid_fen, else total_fen); median gaps between orders; customers without paid orders are 未购客户;
open complaints and angry messages lower the health score; a second run changes nothing."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from actions.db.engine import async_session
from actions.db.models import Customer, CustomerIdentity, Order, Ticket
from bot.settings import RfmThresholds
from channels.wechat.models import InboundMessageRow
from desk.context import customer_context
from desk.models import DeskConversation
from nudges import segments
from nudges.models import CustomerSegment, NudgeState

NOW = datetime(2026, 6, 1, 12, 0, 0)
_numbers = itertools.count(1)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def order(customer: Customer, paid_days_ago, yuan, status="completed", paid_fen=None, created_days_ago=None) -> Order:
    n = next(_numbers)
    fen = int(yuan * 100)
    created = days_ago(created_days_ago if created_days_ago is not None else (paid_days_ago or 0) + 0.01)
    return Order(order_no=f"SY{n:08d}", customer=customer, status=status, total_fen=fen,
                 paid_fen=fen if paid_fen is None else paid_fen, receiver_name="张三", receiver_phone="13800000000",
                 address="上海", created_at=created, updated_at=created,
                 paid_at=days_ago(paid_days_ago) if paid_days_ago is not None else None)


def customer(key: str) -> Customer:
    return Customer(external_id=key, name=key)


async def seed_shop() -> dict:
    """Eight buyers, one per segment under the shop's medians (R median 34 days, F median 1.5
    orders, M median 350 yuan), and two customers without a paid order."""
    c = {key: customer(key) for key in "ABCDEFGHNX"}
    orders = [
        # A: R 5, F 3, M 900; gaps 30 and 10 -> median 20. One order has no paid_fen (total counts).
        order(c["A"], 5, 300), order(c["A"], 15, 300, paid_fen=0), order(c["A"], 45, 300, status="delivered"),
        # B: R 6 (paid 6 days ago, created 40 days ago), F 1, M 800 (paid 800 of a 850 total)
        order(c["B"], 6, 850, status="paid", paid_fen=80000, created_days_ago=40),
        # C: R 60, F 4, M 700; gaps 40, 28 and 2 -> median 28
        order(c["C"], 60, 100, status="shipped"), order(c["C"], 62, 200), order(c["C"], 90, 200),
        order(c["C"], 130, 200),
        # D: R 70, F 1, M 600 (no paid_at: created_at is the order's time)
        order(c["D"], None, 600, created_days_ago=70),
        # E: R 7, F 3, M 100; gaps 3 and 10 -> median 6.5
        order(c["E"], 7, 20), order(c["E"], 10, 30), order(c["E"], 20, 50),
        # F: R 8, F 1, M 50
        order(c["F"], 8, 50),
        # G: R 80, F 2, M 80; gap 100
        order(c["G"], 80, 40), order(c["G"], 180, 40),
        # H: R 90, F 1, M 90, and orders that never count
        order(c["H"], 90, 90), order(c["H"], 1, 10000, status="refunded"), order(c["H"], 2, 10000, status="refunding"),
        order(c["H"], None, 10000, status="cancelled", created_days_ago=1),
        order(c["H"], None, 10000, status="pending_payment", created_days_ago=1),
        # N: never paid; X: no orders at all
        order(c["N"], 3, 5000, status="refunded"),
    ]
    async with async_session() as s:
        s.add_all(list(c.values()) + orders)
        await s.commit()
        return {key: value.id for key, value in c.items()}


async def stored() -> dict:
    async with async_session() as s:
        rows = (await s.execute(sa.select(CustomerSegment))).scalars().all()
        return {r.customer_id: r for r in rows}


def as_values(rows: dict) -> dict:
    return {cid: {col.name: getattr(r, col.name) for col in CustomerSegment.__table__.columns}
            for cid, r in rows.items()}


AUTO_SEGMENTS = {"A": "重要价值客户", "B": "重要发展客户", "C": "重要保持客户", "D": "重要挽留客户",
                 "E": "一般价值客户", "F": "一般发展客户", "G": "一般保持客户", "H": "一般挽留客户",
                 "N": segments.NO_ORDERS, "X": segments.NO_ORDERS}


async def test_rfm_with_the_shops_medians(wechat_db, no_redis):
    ids = await seed_shop()
    summary = await segments.recompute(now=NOW, thresholds=RfmThresholds())
    rows = await stored()
    assert {key: rows[cid].segment for key, cid in ids.items()} == AUTO_SEGMENTS
    assert summary["customers"] == 10 and summary["buyers"] == 8
    assert summary["thresholds"] == {"recency_days": 34, "frequency": 1.5, "monetary_yuan": 350.0,
                                     "auto": ["recency_days", "frequency", "monetary_yuan"]}
    assert summary["counts"] == {name: 1 for name in segments.SEGMENTS.values()} | {segments.NO_ORDERS: 2}

    figures = {key: (rows[cid].recency_days, rows[cid].frequency, rows[cid].monetary_fen // 100)
               for key, cid in ids.items()}
    assert figures == {"A": (5, 3, 900), "B": (6, 1, 800), "C": (60, 4, 700), "D": (70, 1, 600), "E": (7, 3, 100),
                       "F": (8, 1, 50), "G": (80, 2, 80), "H": (90, 1, 90), "N": (None, 0, 0), "X": (None, 0, 0)}
    gaps = {key: rows[cid].median_gap_days for key, cid in ids.items()}
    assert gaps["A"] == pytest.approx(20) and gaps["C"] == pytest.approx(28) and gaps["E"] == pytest.approx(6.5)
    assert gaps["G"] == pytest.approx(100)
    assert gaps["B"] is gaps["D"] is gaps["F"] is gaps["H"] is gaps["N"] is gaps["X"] is None
    a = rows[ids["A"]]
    assert (a.r_high, a.f_high, a.m_high) == (True, True, True)
    assert a.first_order_at == days_ago(45) and a.last_order_at == days_ago(5)
    assert rows[ids["D"]].last_order_at == days_ago(70)
    # without orders: no RFM points, so below any buyer with the same service and sentiment
    assert rows[ids["X"]].health_parts["recency"] == 0 and rows[ids["X"]].health < rows[ids["H"]].health
    assert rows[ids["A"]].health > rows[ids["H"]].health

    async with async_session() as s:
        state = await s.get(NudgeState, "segments")
        assert state.value["counts"] == summary["counts"] and state.value["customers"] == 10
        assert state.value["thresholds"] == summary["thresholds"]
        view = await segments.profile(s, ids["A"])
    assert view["segment"] == "重要价值客户" and view["monetary_yuan"] == 900 and view["recency_days"] == 5
    assert view["median_gap_days"] == pytest.approx(20) and view["frequency"] == 3
    assert view["last_order_at"] == "2026-05-27T12:00:00Z" and view["computed_at"] == "2026-06-01T12:00:00Z"
    assert 0 <= view["health"] <= 100 and set(view["health_parts"]) >= set(segments.WEIGHTS)


async def test_rfm_with_fixed_thresholds(wechat_db, no_redis):
    ids = await seed_shop()
    summary = await segments.recompute(now=NOW, thresholds={"recency_days": 60, "frequency": 3, "monetary_yuan": 100})
    rows = await stored()
    # at the threshold is high: C's 60 days is recent, E's 100 yuan is high; G's 2 orders are not frequent
    assert {key: rows[cid].segment for key, cid in ids.items()} == {
        "A": "重要价值客户", "B": "重要发展客户", "C": "重要价值客户", "D": "重要挽留客户", "E": "重要价值客户",
        "F": "一般发展客户", "G": "一般挽留客户", "H": "一般挽留客户", "N": segments.NO_ORDERS, "X": segments.NO_ORDERS}
    assert summary["thresholds"] == {"recency_days": 60, "frequency": 3, "monetary_yuan": 100, "auto": []}
    # a partly fixed set: the others come from the medians
    summary = await segments.recompute(now=NOW, thresholds=RfmThresholds(frequency=2))
    assert summary["thresholds"] == {"recency_days": 34, "frequency": 2, "monetary_yuan": 350.0,
                                     "auto": ["recency_days", "monetary_yuan"]}
    rows = await stored()
    assert rows[ids["G"]].segment == "一般保持客户" and rows[ids["H"]].segment == "一般挽留客户"


async def test_the_shops_thresholds_are_the_default(wechat_db, no_redis, monkeypatch):
    from bot.settings import get_settings

    ids = await seed_shop()
    monkeypatch.setattr(get_settings().shop.nudges, "rfm", RfmThresholds(recency_days=100, frequency=1,
                                                                         monetary_yuan=1))
    summary = await segments.recompute(now=NOW)
    assert summary["thresholds"]["recency_days"] == 100 and summary["thresholds"]["auto"] == []
    rows = await stored()
    assert rows[ids["H"]].segment == "重要价值客户" and rows[ids["X"]].segment == segments.NO_ORDERS


async def test_recompute_is_idempotent(wechat_db, no_redis):
    await seed_shop()
    first = await segments.recompute(now=NOW, thresholds=RfmThresholds())
    before = as_values(await stored())
    second = await segments.recompute(now=NOW, thresholds=RfmThresholds())
    assert as_values(await stored()) == before
    assert len(before) == 10 and first["counts"] == second["counts"]
    # a new customer and a new order are picked up by the next run; rows are updated, not added twice
    async with async_session() as s:
        y = customer("Y")
        s.add_all([y, order(y, 1, 5000)])
        await s.commit()
    await segments.recompute(now=NOW, thresholds=RfmThresholds())
    after = await stored()
    assert len(after) == 11 and after[y.id].segment == "重要发展客户"
    async with async_session() as s:
        assert (await s.execute(sa.select(sa.func.count()).select_from(CustomerSegment))).scalar_one() == 11


async def angry_and_calm_twins() -> dict:
    """P and Q: the same orders; Q has an open complaint, an open return and angry messages of the
    last days; P's only ticket is a resolved complaint and its only angry message is 40 days old."""
    p, q, r = customer("P"), customer("Q"), customer("R")
    rows = [p, q, r]
    for who in (p, q):
        rows += [order(who, 10, 200), order(who, 40, 200)]
    rows.append(order(r, 100, 50))
    rows += [
        CustomerIdentity(customer=p, channel="wecom_kf", external_id="wmP"),
        CustomerIdentity(customer=q, channel="wecom_kf", external_id="wmQ"),
        CustomerIdentity(customer=q, channel="mp", external_id="oQ"),
    ]
    async with async_session() as s:
        s.add_all(rows)
        await s.flush()
        s.add_all([
            Ticket(ticket_no="T1", kind="complaint", status="open", customer_id=q.id, reason="质量差"),
            Ticket(ticket_no="T2", kind="return", status="processing", customer_id=q.id, reason="退货"),
            Ticket(ticket_no="T3", kind="complaint", status="resolved", customer_id=p.id, reason="慢"),
        ])
        messages = [("wecom_kf:wmQ", "你们这什么质量，太差了，我要投诉", 2), ("mp:oQ", "气死我了，客服一直不处理", 1),
                    ("wecom_kf:wmQ", "东西收到了", 3),
                    ("wecom_kf:wmP", "垃圾，差评", 40), ("wecom_kf:wmP", "不用投诉了，就问一下发货时间", 1),
                    ("group:chat1:wmQ", "谢谢谢谢太好了非常满意", 1)]
        for n, (conversation, text, ago) in enumerate(messages):
            channel = conversation.split(":", 1)[0]
            s.add(InboundMessageRow(channel=channel, dedup_key=f"m{n}", conversation_id=conversation,
                                    payload={"channel": channel, "user_id": conversation.rsplit(":", 1)[1],
                                             "dedup_key": f"m{n}", "msg_type": "text", "sent_at": 0, "text": text},
                                    status="done", received_at=days_ago(ago)))
        await s.commit()
        return {"P": p.id, "Q": q.id, "R": r.id}


async def test_health_is_lower_with_open_complaints_and_angry_messages(wechat_db, no_redis):
    ids = await angry_and_calm_twins()
    await segments.recompute(now=NOW)
    rows = await stored()
    p, q = rows[ids["P"]], rows[ids["Q"]]
    assert p.segment == q.segment
    for part in ("recency", "frequency", "monetary"):
        assert p.health_parts[part] == q.health_parts[part]
    # P: no open ticket (20), no sentiment words after taking back "不用投诉" (7.5)
    assert p.health_parts["service"] == 20 and p.health_parts["sentiment"] == 7.5
    # Q: 20 - 10 (open complaint) - 5 (open return); only negative words, over both channels
    assert q.health_parts["service"] == 5 and q.health_parts["sentiment"] == 0
    assert q.health_parts["basis"]["open_complaints"] == 1 and q.health_parts["basis"]["open_tickets"] == 2
    assert q.health_parts["basis"]["messages"] == 3 and q.health_parts["basis"]["negative_words"] >= 3
    assert q.health == p.health - 22 or q.health == p.health - 23  # 15 + 7.5 points, rounded
    assert q.health < p.health
    # parts add up to the score; every part within its weight
    for row in rows.values():
        parts = {k: v for k, v in row.health_parts.items() if k in segments.WEIGHTS}
        assert abs(sum(parts.values()) - row.health) <= 0.5
        assert all(0 <= parts[k] <= w for k, w in segments.WEIGHTS.items())
    # the buyer ahead on recency, frequency and money has the higher RFM points
    r = rows[ids["R"]]
    assert r.health_parts["recency"] < p.health_parts["recency"] and r.health < p.health


def test_sentiment_words():
    assert segments.sentiment_counts("谢谢，质量很好，非常满意") == (3, 0)
    assert segments.sentiment_counts("不满意，太差了") == (0, 2)
    assert segments.sentiment_counts("不用投诉") == (0, 0)
    assert segments.sentiment_counts("不喜欢这个颜色") == (0, 1)
    assert segments.sentiment_counts("特别满意") == (1, 0)
    assert segments.sentiment_counts("客服态度很好") == (1, 0)
    assert segments.sentiment_counts("") == (0, 0)


def test_silent_after_days():
    assert segments.silent_after_days(None) == 30
    assert segments.silent_after_days(10) == 30
    assert segments.silent_after_days(40) == 60


async def test_desk_customer_context_shows_the_segment(wechat_db, no_redis):
    ids = await seed_shop()
    row = DeskConversation(id=0, conversation_id="wecom_kf:wmA", channel="wecom_kf", customer_id=ids["A"])
    async with async_session() as s:
        assert (await customer_context(s, row))["segment"] is None
    await segments.recompute(now=NOW)
    async with async_session() as s:
        context = await customer_context(s, row)
        assert context["segment"]["segment"] == "重要价值客户" and context["segment"]["health"] > 0
        anonymous = DeskConversation(id=0, conversation_id="im:guest-1", channel="im", customer_id=None)
        assert (await customer_context(s, anonymous))["segment"] is None
