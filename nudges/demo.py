"""The demo shop's nudges: the shipped rules (live), the sandbox's 微信客服 users wmDemoUser01…05 as
demo customers C10001…C10005, a generated history of cart reminders with a known effect (so the
console's treatment-vs-control figures have something to show), and a day of shop events to play,
in-process (the console's button) or over HTTP like a shop's back-end:

  python -m nudges.demo play [--url http://127.0.0.1:5008] [--token siyu-demo-events]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from actions.db.models import Customer, ProductVariant
from nudges import rules as rulebook
from nudges.models import HOLDOUT, LIVE, SENT, Nudge, NudgeEvent, NudgeRule, now_utc

DEMO_TOKEN = "siyu-demo-events"
HISTORY_SEED = 20261207
HISTORY_CARTS = 1500
# the generated history's truth: conversion within the attribution window, treatment vs control
HISTORY_RATES = {"treatment": 0.32, "control": 0.18}


def link_kf_users() -> List[str]:
    """wmDemoUser0N (微信客服) is demo customer C1000N (the sandbox's own linking); those linked."""
    from channels.wechat.sandbox.demo import DEMO_USERS, link_demo_users

    return [number for channel, _, number in DEMO_USERS if channel == "wecom_kf"] if link_demo_users() else []


def install_rules(session: Session, cart_delay_s: Optional[int] = None) -> int:
    """The shipped rules the shop lacks, live."""
    known = set(session.execute(sa.select(NudgeRule.key)).scalars())
    added = 0
    for data in rulebook.shipped(cart_delay_s):
        if data["key"] in known:
            continue
        session.add(NudgeRule(key=data["key"], name=data["name"], definition=data, status=LIVE,
                              requires_approval=data.get("requires_approval", False), created_by="system:demo",
                              updated_by="system:demo"))
        added += 1
    session.commit()
    return added


def seed_history(session: Session, carts: int = HISTORY_CARTS, seed: int = HISTORY_SEED) -> int:
    """Cart reminders of the last 60 days (sent, or held out by the rule's hash split) and the
    payments that followed some of them, drawn at HISTORY_RATES; once (skipped when present)."""
    from nudges.messages import in_holdout

    rule_row = session.execute(sa.select(NudgeRule).where(NudgeRule.key == "cart_abandonment")).scalars().first()
    if rule_row is None or session.execute(sa.select(Nudge.id).where(Nudge.ref.like("demo-cart-%")).limit(1)).first():
        return 0
    rule = rulebook.definition(rule_row)
    holdout = 0.1
    customers = session.execute(sa.select(Customer.id, Customer.external_id).order_by(Customer.id)).all()
    if not customers:
        return 0
    rng = random.Random(seed)
    now = now_utc()
    nudges, payments = [], []
    for n in range(carts):
        cid, number = rng.choice(customers)
        at = now - timedelta(days=rng.uniform(8, 60))
        control = in_holdout(rule, number, holdout)
        ref = f"demo-cart-{n:05d}"
        nudges.append(Nudge(rule_id=rule_row.id, rule_key=rule_row.key, customer_id=cid, ref=ref,
                            dedupe_key=f"{rule_row.key}:{cid}:{ref}", event_id=None, trigger_at=at,
                            due_at=at + timedelta(minutes=30), category="marketing", priority=2,
                            arm="control" if control else "treatment", status=HOLDOUT if control else SENT,
                            reason="holdout" if control else None, channel="wecom_kf",
                            decided_at=at + timedelta(minutes=30),
                            context={"demo_history": True}, created_at=at))
        if rng.random() < HISTORY_RATES["control" if control else "treatment"]:
            paid = at + timedelta(minutes=30) + timedelta(hours=rng.uniform(0.2, 36))
            payments.append(NudgeEvent(event_id=f"demo-history-paid-{n:05d}", type="order_paid", customer=number,
                                       customer_id=cid, ref=f"demo-order-{n:05d}", at=paid,
                                       data={"amount": rng.choice([89, 129, 199, 259, 399])}, source="demo",
                                       status="done", note="demo history", received_at=paid, processed_at=paid))
    session.add_all(nudges + payments)
    session.commit()
    return len(nudges)


def seed(session: Session, cart_delay_s: Optional[int] = None) -> Dict[str, Any]:
    return {"rules": install_rules(session, cart_delay_s), "linked": link_kf_users(),
            "history": seed_history(session)}


# --- a day of shop events ---------------------------------------------------------------------------
def _iso(at: datetime) -> str:
    return at.replace(tzinfo=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def day_events(skus: List[Dict[str, Any]], now: Optional[datetime] = None, tag: Optional[str] = None) -> List[Dict]:
    """A realistic morning-to-evening of the demo shop, compressed to the last minutes so the demo's
    short cart delay shows it at once: browsing, carts, checkouts (C10001 leaves hers, C10002 pays
    within minutes), a shipment that stalls, a delivery, a refund."""
    now = now or now_utc()
    tag = tag or now.strftime("%Y%m%d%H%M%S")
    item = skus[0] if skus else {"sku": "SKU-DEMO", "name": "商品", "price": 99}
    other = skus[1] if len(skus) > 1 else item

    def ev(n: int, kind: str, customer: str, ref: str, minutes_ago: float, **data) -> Dict[str, Any]:
        return {"id": f"demo-{tag}-{n:02d}", "type": kind, "customer": customer, "ref": ref,
                "at": _iso(now - timedelta(minutes=minutes_ago)), **data}

    cart1, cart2, cart3 = f"CART-{tag}-1", f"CART-{tag}-2", f"CART-{tag}-3"
    order2, order4 = f"DEMO-{tag}-2", f"DEMO-{tag}-4"
    line1 = [{"sku": item["sku"], "name": item["name"], "qty": 1, "price": item["price"]}]
    line2 = [{"sku": other["sku"], "name": other["name"], "qty": 2, "price": other["price"]}]
    return [
        ev(1, "product_viewed", "C10001", item["sku"], 6),
        ev(2, "cart_updated", "C10001", cart1, 5, items=line1, amount=item["price"]),
        ev(3, "checkout_started", "C10001", cart1, 4, items=line1, amount=item["price"]),
        ev(4, "product_viewed", "C10002", other["sku"], 6),
        ev(5, "checkout_started", "C10002", cart2, 4, items=line2, amount=other["price"] * 2),
        ev(6, "order_paid", "C10002", order2, 2, cart=cart2, amount=other["price"] * 2),
        ev(7, "checkout_started", "C10003", cart3, 3, items=line1, amount=item["price"]),
        ev(8, "order_shipped", "C10004", order4, 3, carrier="中通快递"),
        ev(9, "logistics_stalled", "C10004", order4, 1, carrier="中通快递",
           last_scan={"location": "杭州转运中心", "text": "快件已到达杭州转运中心"}),
        ev(10, "refund_completed", "C10005", f"DEMO-{tag}-5", 1, amount=129),
    ]


def demo_skus(session: Session) -> List[Dict[str, Any]]:
    rows = session.execute(sa.select(ProductVariant).where(ProductVariant.stock > 0).order_by(ProductVariant.id)
                           .limit(2)).scalars().all()
    from actions.db.models import Product

    out = []
    for v in rows:
        product = session.get(Product, v.product_id)
        out.append({"sku": v.sku, "name": product.name if product else v.sku, "price": v.price_fen / 100})
    return out


async def play_in_process(now: Optional[datetime] = None) -> Dict[str, Any]:
    """Ingest the day's events here (the console's button): what a shop's back-end would post."""
    from actions.db.engine import async_session
    from nudges import events

    async with async_session() as s:
        skus = await s.run_sync(lambda sync: demo_skus(sync))
    body = {"events": day_events(skus, now)}
    result = await events.ingest(body)
    return {"events": len(body["events"]), "accepted": result.accepted, "duplicates": result.duplicates,
            "rejected": result.rejected}


async def play_over_http(url: str, token: str) -> int:
    import aiohttp

    from actions.db.engine import async_session, dispose_async_engines

    async with async_session() as s:
        skus = await s.run_sync(lambda sync: demo_skus(sync))
    await dispose_async_engines()
    events = day_events(skus)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for event in events:
            async with http.post(f"{url.rstrip('/')}/api/events", json=event,
                                 headers={"Authorization": f"Bearer {token}"}) as response:
                print(f"{event['type']:<18} {event['customer']} {event['ref']:<28} -> {response.status}")
                if response.status >= 400:
                    print(await response.text(), file=sys.stderr)
                    return 1
    return 0


def main(argv=None) -> int:
    from bot.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m nudges.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    play = sub.add_parser("play", help="post a day of demo shop events to the console's /api/events")
    play.add_argument("--url", default=f"http://{settings.local_host}:{settings.console_port}")
    token = settings.events_token.get_secret_value() if settings.events_token else DEMO_TOKEN
    play.add_argument("--token", default=token)
    args = parser.parse_args(argv)
    return asyncio.run(play_over_http(args.url, args.token))


if __name__ == "__main__":
    sys.exit(main())
