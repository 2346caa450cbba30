"""Creates the demo shop (小满生活馆) in an empty database: catalog, customers with their web IM
identities, orders in every state with logistics, coupons and a few tickets.

Everything is derived from `demo/*.yml` and a fixed random seed, with dates relative to now, so a
fresh demo always has orders inside and outside the return window.
"""
from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, List, Tuple

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from actions.db.models import (
    Coupon,
    Customer,
    CustomerIdentity,
    LogisticsEvent,
    Order,
    OrderItem,
    OrderStatus,
    Product,
    ProductVariant,
    Ticket,
    utcnow,
)

logger = logging.getLogger(__name__)
DEMO_DIR = Path(__file__).resolve().parent / "demo"
WEB_CHANNEL = "im"
# how many orders per state the demo shop has (>= 300 in all)
ORDER_MIX = {
    OrderStatus.pending_payment: 20,
    OrderStatus.paid: 45,
    OrderStatus.shipped: 70,
    OrderStatus.delivered: 70,
    OrderStatus.completed: 55,
    OrderStatus.cancelled: 20,
    OrderStatus.refunding: 12,
    OrderStatus.refunded: 12,
}


def _load(name: str) -> dict:
    with open(DEMO_DIR / name, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def is_empty(session: Session) -> bool:
    return session.execute(select(func.count(Product.id))).scalar_one() == 0


def seed_catalog(session: Session, catalog: dict) -> List[Product]:
    products = []
    for i, item in enumerate(catalog["products"]):
        product = Product(
            spu=item["spu"], name=item["name"], category=item["category"], brand=item.get("brand"),
            aliases=",".join(item.get("aliases", [])), description=item.get("description", ""),
            specs=item.get("specs", {}), on_sale=True,
        )
        sold_out = set(item.get("sold_out", []))
        rng = random.Random(f"stock-{item['spu']}")
        for ci, color in enumerate(item["colors"]):
            for si, size in enumerate(item["sizes"]):
                key = f"{color}/{size}"
                product.variants.append(ProductVariant(
                    sku=f"{item['spu']}-{ci + 1:02d}{si + 1:02d}",
                    color=None if color == "默认" else str(color),
                    size=str(size),
                    price_fen=int(round(float(item["price"]) * 100)),
                    stock=0 if key in sold_out else rng.choice([3, 8, 15, 26, 40, 88, 120]),
                ))
        session.add(product)
        products.append(product)
    return products


def _phone(rng: random.Random) -> str:
    return "1" + rng.choice("3456789") + "".join(rng.choice("0123456789") for _ in range(9))


def seed_customers(
    session: Session, people: dict, rng: random.Random, count: int = 90
) -> List[Tuple[Customer, str, str]]:
    customers = []
    used = set()
    for i in range(count):
        while True:
            name = rng.choice(people["surnames"]) + rng.choice(people["given_names"])
            if name not in used:
                used.add(name)
                break
        province, city, districts = rng.choice(people["cities"])
        address = (
            f"{province}{city if city != province else ''}{rng.choice(districts)}{rng.choice(people['streets'])}"
            f"{rng.randint(1, 999)}号{rng.randint(1, 30)}幢{rng.randint(101, 2802)}室"
        )
        customer = Customer(
            external_id=f"C{10001 + i}", name=name, phone=_phone(rng),
            level=rng.choice(people["levels"]), points=rng.randint(0, 3000),
            created_at=utcnow() - timedelta(days=rng.randint(60, 700)),
        )
        customer.identities.append(CustomerIdentity(channel=WEB_CHANNEL, external_id=f"u{10001 + i}"))
        session.add(customer)
        customers.append((customer, address, city))
    return customers


def _tracking(rng: random.Random, carrier: list) -> str:
    name, prefix, digits = carrier
    return prefix + "".join(rng.choice("0123456789") for _ in range(digits))


def _logistics(order: Order, people: dict, rng: random.Random, city: str, until: datetime, delivered: bool,
               stuck: bool) -> None:
    scans = people["scans"]
    t = order.shipped_at
    hub = rng.choice(people["hubs"])
    fill = dict(origin=people["origin"], hub=hub, city=city, courier=rng.choice(people["couriers"]),
                signer=rng.choice(people["signers"]))
    steps = [("collected", 0), ("departed", 3), ("arrived", 9), ("to_city", 20), ("delivering", 30)]
    if stuck:
        steps = [("collected", 0), ("departed", 3), ("arrived", 9), ("held", 12)]
    for key, hours in steps:
        when = t + timedelta(hours=hours + rng.random())
        if when > until:
            break
        order.logistics.append(LogisticsEvent(occurred_at=when, location=hub if key in ("arrived", "held") else city,
                                              description=scans[key].format(**fill)))
    if delivered:
        order.logistics.append(LogisticsEvent(occurred_at=order.delivered_at, location=city,
                                              description=scans["signed"].format(**fill)))


def seed_orders(session: Session, customers, products: List[Product], people: dict, rng: random.Random) -> List[Order]:
    now = utcnow()
    orders = []
    seq = 0
    plan = [status for status, n in ORDER_MIX.items() for _ in range(n)]
    rng.shuffle(plan)
    for index, status in enumerate(plan):
        # the first customers get several orders each so the demo "我的订单" lists are interesting
        customer, address, city = customers[index % 12] if index < 60 else rng.choice(customers)
        # ages chosen so that each state is plausible (shipped: 1-5 days ago, delivered: 1-12 days...)
        age_days = {
            OrderStatus.pending_payment: rng.uniform(0, 0.02),
            OrderStatus.paid: rng.uniform(0.05, 1.8),
            OrderStatus.shipped: rng.uniform(1, 5),
            OrderStatus.delivered: rng.uniform(3, 14),
            OrderStatus.completed: rng.uniform(15, 60),
            OrderStatus.cancelled: rng.uniform(1, 40),
            OrderStatus.refunding: rng.uniform(4, 12),
            OrderStatus.refunded: rng.uniform(10, 50),
        }[status]
        created = now - timedelta(days=age_days)
        seq += 1
        order = Order(
            # the shop's order numbers carry the local (Beijing) date
            order_no=f"SY{created + timedelta(hours=8):%Y%m%d}{seq:06d}", customer=customer, status=status.value,
            receiver_name=customer.name, receiver_phone=customer.phone, address=address,
            created_at=created, total_fen=0,
        )
        for product in rng.sample(products, rng.choice([1, 1, 1, 2, 2, 3])):
            variant = rng.choice(product.variants)
            qty = rng.choice([1, 1, 1, 2])
            spec = "/".join(x for x in (variant.color, variant.size) if x)
            order.items.append(OrderItem(product_name=product.name, sku=variant.sku, spec=spec, quantity=qty,
                                         unit_price_fen=variant.price_fen, variant_id=variant.id))
            order.total_fen += variant.price_fen * qty
        if status != OrderStatus.pending_payment:
            order.paid_at = created + timedelta(minutes=rng.randint(1, 20))
            order.paid_fen = order.total_fen
        if status == OrderStatus.cancelled:
            order.cancelled_at = created + timedelta(hours=rng.uniform(0.5, 20))
            if order.cancelled_at > now:
                order.cancelled_at = now
        shipped_states = {OrderStatus.shipped, OrderStatus.delivered, OrderStatus.completed,
                          OrderStatus.refunding, OrderStatus.refunded}
        if status in shipped_states:
            carrier = rng.choice(people["carriers"])
            order.carrier = carrier[0]
            order.tracking_no = _tracking(rng, carrier)
            order.shipped_at = min(order.paid_at + timedelta(hours=rng.uniform(2, 30)), now - timedelta(hours=6))
            delivered = status != OrderStatus.shipped
            if delivered:
                order.delivered_at = min(order.shipped_at + timedelta(days=rng.uniform(1, 3)), now - timedelta(hours=1))
            stuck = status == OrderStatus.shipped and rng.random() < 0.15
            _logistics(order, people, rng, city, now, delivered, stuck)
        order.updated_at = max([t for t in (order.created_at, order.paid_at, order.shipped_at,
                                            order.delivered_at, order.cancelled_at) if t])
        session.add(order)
        orders.append(order)
    return orders


def seed_coupons(session: Session) -> None:
    now = utcnow()
    day = timedelta(days=1)
    coupons = [
        Coupon(code="NEW20", name="新人无门槛券", kind="no_threshold", amount_fen=2000, scope="all",
               valid_from=now - 30 * day, valid_to=now + 60 * day, description="新注册会员首单可用"),
        Coupon(code="MJ199-30", name="全场满199减30", kind="threshold", threshold_fen=19900, amount_fen=3000,
               scope="all", valid_from=now - 5 * day, valid_to=now + 10 * day),
        Coupon(code="MJ399-70", name="全场满399减70", kind="threshold", threshold_fen=39900, amount_fen=7000,
               scope="all", valid_from=now - 5 * day, valid_to=now + 10 * day),
        Coupon(code="NZ85", name="女装85折券", kind="discount", percent_off=15, scope="category",
               scope_value="女装", valid_from=now - 2 * day, valid_to=now + 5 * day),
        Coupon(code="MZ50", name="美妆满300减50", kind="threshold", threshold_fen=30000, amount_fen=5000,
               scope="category", scope_value="美妆护肤", valid_from=now - 10 * day, valid_to=now + 20 * day),
        Coupon(code="SM9", name="数码配件9折券", kind="discount", percent_off=10, scope="category",
               scope_value="数码配件", valid_from=now - 1 * day, valid_to=now + 14 * day, member_only=True,
               description="银卡及以上会员可领"),
        Coupon(code="COAT100", name="大衣立减100", kind="no_threshold", amount_fen=10000, scope="product",
               scope_value="NZ1004", valid_from=now - 3 * day, valid_to=now + 7 * day),
        Coupon(code="SUMMER50", name="夏日满300减50（已结束）", kind="threshold", threshold_fen=30000,
               amount_fen=5000, scope="all", valid_from=now - 120 * day, valid_to=now - 60 * day),
        Coupon(code="XMAS12", name="双12预热满500减100（未开始）", kind="threshold", threshold_fen=50000,
               amount_fen=10000, scope="all", valid_from=now + 15 * day, valid_to=now + 25 * day),
        Coupon(code="SNACK10", name="零食满99减10", kind="threshold", threshold_fen=9900, amount_fen=1000,
               scope="category", scope_value="零食茶饮", valid_from=now - 7 * day, valid_to=now + 7 * day,
               active=False, description="已被运营暂停"),
    ]
    session.add_all(coupons)


def seed_tickets(session: Session, orders: List[Order]) -> None:
    """Refunding orders already have an open after-sales ticket, refunded ones a resolved one."""
    n = 0
    for order in orders:
        if order.status not in (OrderStatus.refunding.value, OrderStatus.refunded.value):
            continue
        n += 1
        resolved = order.status == OrderStatus.refunded.value
        created = order.delivered_at + timedelta(days=1) if order.delivered_at else order.created_at
        session.add(Ticket(
            ticket_no=f"T{created:%Y%m%d}{n:06d}", kind="return", customer_id=order.customer.id,
            order_id=order.id, status="resolved" if resolved else "processing",
            reason="尺码不合适" if n % 2 else "质量问题", created_at=created,
            resolution="退款已原路退回" if resolved else "",
        ))


def seed_demo_data(session: Session) -> Dict[str, int]:
    rng = random.Random(20261121)
    catalog, people = _load("catalog.yml"), _load("people.yml")
    products = seed_catalog(session, catalog)
    session.flush()
    customers = seed_customers(session, people, rng)
    session.flush()
    orders = seed_orders(session, customers, products, people, rng)
    seed_coupons(session)
    session.flush()
    seed_tickets(session, orders)
    session.commit()
    counts = {"products": len(products), "customers": len(customers), "orders": len(orders)}
    logger.info("demo shop created: %s", counts)
    return counts
