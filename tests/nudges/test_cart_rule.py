"""The cart-abandonment rule end to end on SQLite and PostgreSQL, against the WeChat sandbox through
the real outbox: a checkout left unpaid gets one reminder over 微信客服 after the delay; paying
first, 退订, an escalation, a closed reply window or the holdout stop it, each logged with its
reason; one reminder per cart, and a 7-day cooldown per customer."""
from __future__ import annotations

import sqlalchemy as sa

from actions.db.engine import async_session
from nudges import events, scheduling, sending
from nudges.messages import in_holdout
from nudges.models import Nudge
from nudges.rules import check, shipped
from tests.nudges.conftest import add_customer, event, install_rules, log_of, text_of

CART = {"items": [{"sku": "SKU-1", "name": "法式碎花雪纺连衣裙", "qty": 1, "price": 299}], "amount": 299}


def cart_rule():
    return check(next(r for r in shipped() if r["key"] == "cart_abandonment"))


def treated(prefix: str, count: int = 1):
    """Customer numbers outside the cart rule's holdout."""
    rule, out, n = cart_rule(), [], 0
    while len(out) < count:
        n += 1
        if not in_holdout(rule, f"{prefix}{n}", 0.1):
            out.append(f"{prefix}{n}")
    return out


async def work(h):
    await scheduling.process_events()
    counts = await sending.send_due(runtime=h.runtime)
    h.runtime.worker.wake()
    return counts


async def test_an_unpaid_checkout_gets_one_reminder_after_the_delay(harness):
    h = harness
    [number] = treated("C2")
    await add_customer(number, "wmCart1", name="林小姐")
    await install_rules(["cart_abandonment"])
    await add_product("SKU-1", "法式碎花雪纺连衣裙", price_fen=25900)
    await h.say("kf", "wmCart1", "这条裙子有 M 码吗")
    await h.quiet()
    before = len(h.deliveries("kf", "wmCart1"))

    # checked out just now: scheduled, not yet due
    await events.ingest(event("e1", "checkout_started", number, "CART-1", 1, **CART))
    assert await work(h) == {}
    assert [e["status"] for e in await log_of(number)] == ["scheduled"]

    # 31 minutes later (the same cart checked out again is a duplicate, not a second reminder)
    await events.ingest(event("e2", "checkout_started", number, "CART-1", 0, **CART))
    await _advance(minutes=31)
    assert (await work(h)).get("sent") == 1
    await h.wait_for(lambda: len(h.deliveries("kf", "wmCart1")) > before)
    delivered = h.deliveries("kf", "wmCart1")[-1]
    text = text_of(delivered)
    # a menu message: its 退订 item sends "退订" back when tapped
    assert delivered["msgtype"] == "msgmenu" and "[退订]" in text
    # the item's price of now (it was 299 in the cart), and how to refuse such messages
    assert "法式碎花雪纺连衣裙" in text and "¥259" in text and "TD" in text
    log = await log_of(number)
    assert [(e["status"], e["reason"]) for e in log] == [
        ("scheduled", None), ("suppressed", "duplicate"), ("sent", None)]
    # nothing more, however often the scheduler looks
    assert await work(h) == {}
    await h.quiet()
    assert len(h.deliveries("kf", "wmCart1")) == before + 1


async def add_product(sku: str, name: str, price_fen: int, stock: int = 50) -> None:
    from actions.db.engine import in_transaction
    from actions.db.models import Product, ProductVariant

    async def work(s):
        product = Product(spu=f"SPU-{sku}", name=name, category="女装")
        s.add(product)
        await s.flush()
        s.add(ProductVariant(product_id=product.id, sku=sku, price_fen=price_fen, stock=stock))
    await in_transaction(work)


async def _advance(minutes: float) -> None:
    """Move every scheduled nudge (and its trigger) into the past, as if the time had passed."""
    from datetime import timedelta

    async with async_session() as s:
        rows = (await s.execute(sa.select(Nudge))).scalars().all()
        for row in rows:
            row.due_at -= timedelta(minutes=minutes)
            row.trigger_at -= timedelta(minutes=minutes)
            if row.expires_at:
                row.expires_at -= timedelta(minutes=minutes)
        await s.commit()
