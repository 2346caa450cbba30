"""Each shipped rule fires, exits and is capped as specified, on SQLite and PostgreSQL against the
WeChat sandbox: logistics delay (from a shop event and from our own order data, with the carrier's
latest scan), refund completed, first-order follow-up, replenishment from the product's use cycle,
silent-customer recall from the customer's own order rhythm, and welcome for a new 微信客服 contact."""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from actions.db.engine import async_session, in_transaction
from actions.db.models import Customer, LogisticsEvent, Order, OrderItem, Product, ProductVariant
from nudges import events, scheduling, sending
from nudges.models import Nudge, NudgeEvent
from tests.nudges.conftest import add_customer, event, install_rules, log_of, text_of

NOW = datetime.utcnow


async def run(h, now=None):
    await scheduling.process_events(now=now)
    counts = await sending.send_due(now=now, runtime=h.runtime)
    h.runtime.worker.wake()
    return counts


async def writes(h, user):
    await h.say("kf", user, "你好")
    await h.quiet()


async def kf_texts(h, user):
    await h.quiet()
    return [text_of(d) for d in h.deliveries("kf", user)]


async def nudges_of(number):
    async with async_session() as s:
        cid = (await s.execute(sa.select(Customer.id).where(Customer.external_id == number))).scalar()
        return (await s.execute(sa.select(Nudge).where(Nudge.customer_id == cid).order_by(Nudge.id))).scalars().all()


async def add_order(customer_id, order_no, status, *, days_ago=10, sku=None, spu=None, cycle=None,
                    carrier="中通快递", scans=(), category="美妆护肤", paid_fen=8900):
    async def work(s):
        variant = None
        if sku:
            product = (await s.execute(sa.select(Product).where(Product.spu == spu))).scalars().first()
            if product is None:
                product = Product(spu=spu, name="氨基酸温和洁面乳", category=category,
                                  specs={"使用周期": cycle} if cycle else {})
                s.add(product)
                await s.flush()
                variant = ProductVariant(product_id=product.id, sku=sku, price_fen=8900, stock=50)
                s.add(variant)
                await s.flush()
            else:
                variant = (await s.execute(sa.select(ProductVariant).where(ProductVariant.sku == sku))).scalars().one()
        at = NOW() - timedelta(days=days_ago)
        order = Order(order_no=order_no, customer_id=customer_id, status=status, total_fen=paid_fen,
                      paid_fen=paid_fen, receiver_name="王", receiver_phone="13800000000", address="杭州",
                      carrier=carrier, created_at=at, paid_at=at, shipped_at=at + timedelta(hours=5))
        s.add(order)
        await s.flush()
        if variant is not None:
            s.add(OrderItem(order_id=order.id, variant_id=variant.id, product_name="氨基酸温和洁面乳", sku=sku,
                            quantity=1, unit_price_fen=8900))
        for hours_ago, location, text in scans:
            s.add(LogisticsEvent(order_id=order.id, occurred_at=NOW() - timedelta(hours=hours_ago),
                                 location=location, description=text))
    await in_transaction(work)


async def test_logistics_delay_from_our_own_order_data_with_the_latest_scan(harness):
    h = harness
    cid = await add_customer("C20001", "wmParcel")
    await install_rules(["logistics_delay"])
    await writes(h, "wmParcel")
    await add_order(cid, "SY20261201000001", "shipped", scans=[(70, "杭州", "已揽收"),
                                                             (60, "嘉兴转运中心", "快件已到达嘉兴转运中心")])
    await add_order(cid, "SY20261201000002", "shipped", scans=[(3, "上海", "派送中")])  # moving: no apology
    assert await events.scan_stalled_parcels() == 1
    assert await events.scan_stalled_parcels() == 0          # the same stall is one event
    assert (await run(h)).get("sent") == 1
    text = (await kf_texts(h, "wmParcel"))[-1]
    assert "SY20261201000001" in text and "中通快递" in text and "嘉兴转运中心" in text
    assert "TD" not in text                                   # a service message has no unsubscribe line


async def test_logistics_delay_exits_when_the_parcel_arrives(harness):
    h = harness
    await add_customer("C20002", "wmArrived")
    await install_rules(["logistics_delay"], logistics_delay={"delay": {"minutes": 60}})
    await writes(h, "wmArrived")
    await events.ingest({"events": [
        event("l1", "logistics_stalled", "C20002", "SY-L1", 61, carrier="顺丰速运"),
        event("l2", "order_delivered", "C20002", "SY-L1", 5)]})
    assert (await run(h)).get("delivered") == 1
    assert (await log_of("C20002"))[-1]["status"] == "exited"


async def test_refund_completed_says_the_amount(harness):
    h = harness
    await add_customer("C20003", "wmRefund")
    await install_rules(["refund_completed"])
    await writes(h, "wmRefund")
    await events.ingest(event("f1", "refund_completed", "C20003", "SY-F1", 0, amount=129.5))
    assert (await run(h)).get("sent") == 1
    text = (await kf_texts(h, "wmRefund"))[-1]
    assert "129.5" in text and "SY-F1" in text


async def test_first_order_follow_up_only_for_the_first_order_and_not_with_an_open_ticket(harness):
    h = harness
    await add_customer("C20004", "wmFirst")
    old = await add_customer("C20005", "wmRegular")
    await add_order(old, "SY-OLD-1", "completed", days_ago=90)
    await install_rules(["first_order_followup"])
    await writes(h, "wmFirst")
    await writes(h, "wmRegular")
    await events.ingest({"events": [event("o1", "order_delivered", "C20004", "SY-NEW-1", 0),
                                    event("o2", "order_delivered", "C20005", "SY-OLD-2", 0)]})
    await scheduling.process_events()
    first = await nudges_of("C20004")
    assert len(first) == 1 and not await nudges_of("C20005")
    assert timedelta(days=2, hours=23) < first[0].due_at - first[0].trigger_at <= timedelta(days=3)
    # three days later, fine: sent
    assert (await run(h, NOW() + timedelta(days=3, minutes=1))).get("sent") == 1
    # another first order with a complaint opened meanwhile: exits
    third = await add_customer("C20006", "wmUnhappy")
    await writes(h, "wmUnhappy")
    await events.ingest(event("o3", "order_delivered", "C20006", "SY-NEW-3", 0))
    await scheduling.process_events()

    async def complain(s):
        from actions.db.models import Ticket

        s.add(Ticket(ticket_no="T-20006", kind="complaint", status="open", customer_id=third, reason="破损"))
    await in_transaction(complain)
    assert (await run(h, NOW() + timedelta(days=3, minutes=1))).get("open_ticket") == 1


async def test_replenishment_from_the_products_use_cycle_and_exit_when_bought_again(harness):
    h = harness
    cid = await add_customer("C20007", "wmRefill")
    other = await add_customer("C20008", "wmRefill2")
    await install_rules(["replenishment"])
    await add_order(cid, "SY-RF-1", "delivered", days_ago=1, sku="MZ-SKU-1", spu="MZ-1", cycle="60天")
    await add_order(other, "SY-RF-2", "delivered", days_ago=1, sku="MZ-SKU-1", spu="MZ-1")
    await events.ingest({"events": [event("rf1", "order_delivered", "C20007", "SY-RF-1", 0),
                                    event("rf2", "order_delivered", "C20008", "SY-RF-2", 1)]})
    await scheduling.process_events()
    [nudge] = await nudges_of("C20007")
    assert nudge.due_at - nudge.trigger_at == timedelta(days=55)          # 60-day cycle, 5 days ahead
    assert nudge.context["items"][0]["sku"] == "MZ-SKU-1"
    await writes(h, "wmRefill")
    # the second customer bought again before the reminder: exits
    await events.ingest(event("rf3", "order_paid", "C20008", "SY-RF-3", 0, amount=89))
    counts = await run(h, NOW() + timedelta(days=55, minutes=1))
    assert counts.get("sent") == 1 and counts.get("repurchased") == 1
    text = (await kf_texts(h, "wmRefill"))[-1]
    assert "氨基酸温和洁面乳" in text and "55" in text and "¥89" in text


async def test_silent_recall_follows_the_customers_own_rhythm(harness):
    from nudges import segments

    h = harness
    steady = await add_customer("C20009", "wmSteady")        # every 10 days, silent for 40: recalled
    slow = await add_customer("C20010", "wmSlow")            # every 60 days, silent for 40: not yet
    for n in range(4):
        await add_order(steady, f"SY-ST-{n}", "completed", days_ago=40 + 10 * n)
        await add_order(slow, f"SY-SL-{n}", "completed", days_ago=40 + 60 * n)
    await segments.recompute()
    await install_rules(["silent_recall"])
    await writes(h, "wmSteady")
    from nudges.models import NudgeRule

    async with async_session() as s:
        rule_id = (await s.execute(sa.select(NudgeRule.id).where(NudgeRule.key == "silent_recall"))).scalar()
    assert await scheduling.schedule_audience(rule_id) == 1
    assert await scheduling.schedule_audience(rule_id) == 0   # one recall per silent spell
    assert (await run(h)).get("sent") == 1
    text = (await kf_texts(h, "wmSteady"))[-1]
    assert "40" in text
    assert not await nudges_of("C20010")


async def test_welcome_for_a_new_wecom_kf_contact(harness, nudge_settings):
    h = harness
    # a new contact's customer number is made up when they first write: no holdout, so it is not chance
    nudge_settings.set(holdout_share=0.0)
    await install_rules(["welcome"])
    assert await events.scan_new_contacts() == 0              # the first scan marks where it starts
    await writes(h, "wmBrandNew")                              # the gateway records the new contact
    assert await events.scan_new_contacts() == 1
    await scheduling.process_events()
    async with async_session() as s:
        [nudge] = (await s.execute(sa.select(Nudge))).scalars().all()
        event_row = (await s.execute(sa.select(NudgeEvent))).scalars().one()
    assert event_row.type == "contact_added" and event_row.ref == "wecom_kf:wmBrandNew"
    assert (await run(h, NOW() + timedelta(minutes=2))).get("sent") == 1
    text = (await kf_texts(h, "wmBrandNew"))[-1]
    assert "欢迎" in text


async def test_outside_every_window_a_service_notice_goes_as_a_template_message(harness):
    from channels.wechat.models import ReplyWindow
    from nudges.rules import RuleError, check, shipped

    h = harness
    cid = await add_customer("C20011")

    async def follower(s):
        from actions.db.models import CustomerIdentity

        s.add(CustomerIdentity(customer_id=cid, channel="mp", external_id="oTemplate1"))
    await in_transaction(follower)
    await h.say("mp", "oTemplate1", "你好")
    await h.quiet()
    async with async_session() as s:     # the follower wrote three days ago: the 48 h window is closed
        await s.execute(sa.update(ReplyWindow).values(message_at=NOW() - timedelta(days=3)))
        await s.commit()
    template = {"template_id": "TPL-logistics-001", "url": "https://shop.example.com/orders",
                "fields": {"first": "{称呼}，您的包裹有延误", "keyword1": "{订单号}", "keyword2": "{最新物流}",
                           "remark": "我们已在催促快递，有进展会告诉您"}}
    logistics = next(r for r in shipped() if r["key"] == "logistics_delay")
    await install_rules(["logistics_delay", "refund_completed"],
                        logistics_delay={"message": {**logistics["message"], "template": template}})
    await events.ingest({"events": [
        event("t1", "logistics_stalled", "C20011", "SY-T1", 0, carrier="中通快递",
              last_scan={"location": "嘉兴转运中心", "text": "快件已到达"}),
        event("t2", "refund_completed", "C20011", "SY-T2", 0, amount=30)]})
    counts = {}
    for turn in range(2):
        for key, value in (await run(h, NOW() + timedelta(seconds=31 * turn))).items():
            counts[key] = counts.get(key, 0) + value
    # the refund has no template: nothing goes, the window is why (it waited its turn behind the logistics)
    assert (counts.get("sent"), counts.get("out_of_window")) == (1, 1), counts
    await h.quiet()
    delivered = h.deliveries("mp", "oTemplate1")[-1]
    assert delivered["msgtype"] == "template" and delivered["content"]["template_id"] == "TPL-logistics-001"
    data = delivered["content"]["data"]
    assert data["keyword1"]["value"] == "SY-T1" and "嘉兴转运中心" in data["keyword2"]["value"]
    # marketing never goes as a template message
    cart = next(r for r in shipped() if r["key"] == "cart_abandonment")
    try:
        check({**cart, "message": {**cart["message"], "template": template}})
        raise AssertionError("a marketing rule took a template")
    except RuleError as exc:
        assert "模板消息" in str(exc)
