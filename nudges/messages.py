"""A nudge's words: the rule's text in the shop's persona (or the A/B variant the customer falls in),
its variables filled from the trigger's context, and the blocks read at send time: products with
their live price and stock, a coupon if it is still valid, and how to refuse marketing messages.
Words around the blocks live in nudges/texts.yml."""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Coupon, Customer, Product, ProductVariant
from actions.templates import date_text, yuan
from bot.settings import get_settings
from nudges.models import now_utc
from nudges.rules import RuleDef

TEXTS_FILE = Path(__file__).resolve().parent / "texts.yml"
MAX_PRODUCTS = 3


@functools.lru_cache(maxsize=1)
def texts() -> Dict[str, str]:
    with open(TEXTS_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def unsubscribe_button() -> Tuple[Tuple[str, str], ...]:
    """The 退订 button under a marketing nudge on 微信客服: a tap sends "退订" back, which the
    assistant honours at once like the typed word (PIPL art. 24: refusing must be easy)."""
    return (("unsubscribe", texts()["unsubscribe_button"]),)


def share(*parts: str) -> float:
    """A stable number in [0, 1) for the parts (holdout and variant split): the same customer and
    rule always land on the same side, whichever process asks."""
    digest = hashlib.sha256(":".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


DEMO_TEST_CUSTOMERS = frozenset(f"C1000{n}" for n in range(1, 6))


def holdout_exempt() -> frozenset:
    """Customers never held out: the shop's test list (staff's own accounts, to see what goes out);
    in the demo, the customers the sandbox's 微信客服 users are."""
    settings = get_settings()
    exempt = frozenset(settings.shop.nudges.test_customers)
    return exempt | DEMO_TEST_CUSTOMERS if settings.demo else exempt


def in_holdout(rule: RuleDef, customer_number: str, default_share: float, exempt: frozenset = frozenset()) -> bool:
    """The rule's control group: marketing rules hold out `holdout` (or the shop's default share);
    service messages (transactional) are never held out unless the rule says so."""
    if customer_number in exempt:
        return False
    if rule.holdout is not None:
        wanted = rule.holdout
    else:
        wanted = default_share if rule.category == "marketing" else 0.0
    return share("holdout", rule.key, customer_number) < wanted


def variant_for(rule: RuleDef, customer_number: str) -> Tuple[str, Any]:
    options = rule.variant_texts()
    if len(options) == 1:
        return "", options[0][1]
    return options[int(share("variant", rule.key, customer_number) * len(options))]


def persona_text(text: Any, persona: str) -> str:
    if isinstance(text, str):
        return text
    return text.get(persona) or next(iter(text.values()))


def _fill(template: str, values: Dict[str, str]) -> str:
    return re.sub(r"\{([^{}]*)\}", lambda m: values.get(m.group(1), ""), template)


def _items(context: Dict[str, Any]) -> List[Dict[str, Any]]:
    items = context.get("items") or []
    return [i for i in items if isinstance(i, dict)]


def _money(fen: Any) -> str:
    """"¥129.5", or nothing when the event did not say (a message never claims ¥0)."""
    return f"¥{yuan(int(fen))}" if isinstance(fen, (int, float)) and fen > 0 else ""


def values_for(customer: Customer, context: Dict[str, Any]) -> Dict[str, str]:
    shop = get_settings().shop
    items = _items(context)
    names = [str(i.get("name") or i.get("product_name") or i.get("sku") or "") for i in items]
    from nudges.scheduling import number

    count = sum(max(1, int(number(i.get("qty") or i.get("quantity"), 1))) for i in items) if items else 0
    name = customer.name if customer.name and customer.name != "微信用户" else ""
    return {
        "称呼": name or texts()["anonymous_name"],
        "店名": shop.name, "助手": shop.bot_name,
        "商品": (names[0] + (texts()["and_more"].format(count=count) if len(names) > 1 else "")) if names
        else texts()["your_items"],
        "件数": str(count or 1),
        "金额": _money(context.get("value_fen")),
        "订单号": str(context.get("order_no") or context.get("ref") or ""),
        "快递": str(context.get("carrier") or texts()["carrier_unknown"]),
        "最新物流": str(context.get("last_scan") or texts()["no_scan"]),
        "退款金额": _money(context.get("refund_fen")),
        "天数": str(context.get("days") or ""),
        "优惠券": str(context.get("coupon_name") or ""),
    }


async def product_lines(s: AsyncSession, rule: RuleDef, context: Dict[str, Any],
                        cache: Optional[Dict[Any, List[str]]] = None) -> List[str]:
    """One line per product (at most MAX_PRODUCTS) with the price and stock of now; products no
    longer on sale are left out. `cache`: lines already read in this round, by product list."""
    wanted = rule.message.products
    if not wanted:
        return []
    skus = tuple(str(i.get("sku")) for i in _items(context) if i.get("sku"))[:MAX_PRODUCTS]
    key = ("items", skus) if wanted == "items" else ("spus", tuple(wanted))
    if cache is not None and key in cache:
        return cache[key]
    lines = await _product_lines(s, wanted, context)
    if cache is not None:
        cache[key] = lines
    return lines


async def _product_lines(s: AsyncSession, wanted: Any, context: Dict[str, Any]) -> List[str]:
    lines: List[str] = []
    if wanted == "items":
        skus = [str(i.get("sku")) for i in _items(context) if i.get("sku")][:MAX_PRODUCTS]
        if not skus:
            return []
        rows = (await s.execute(sa.select(ProductVariant, Product).join(Product).where(
            ProductVariant.sku.in_(skus), Product.on_sale.is_(True)))).all()
        by_sku = {v.sku: (v, p) for v, p in rows}
        for sku in skus:
            if sku in by_sku:
                variant, product = by_sku[sku]
                spec = " ".join(x for x in (variant.color, variant.size) if x and x != "默认")
                lines.append(_product_line(product.name + (f"（{spec}）" if spec else ""), variant.price_fen,
                                           variant.stock))
        return lines
    rows = (await s.execute(sa.select(Product).where(Product.spu.in_(list(wanted)[:MAX_PRODUCTS]),
                                                      Product.on_sale.is_(True)))).scalars().all()
    for product in rows:
        variants = list(product.variants) if "variants" in product.__dict__ else (await s.execute(
            sa.select(ProductVariant).where(ProductVariant.product_id == product.id))).scalars().all()
        if variants:
            cheapest = min(variants, key=lambda v: v.price_fen)
            lines.append(_product_line(product.name, cheapest.price_fen, sum(v.stock for v in variants)))
    return lines


def _product_line(name: str, price_fen: int, stock: int) -> str:
    line = texts()["product_line"].format(name=name, price=yuan(price_fen))
    if stock <= 0:
        return line + texts()["sold_out"]
    if stock < 10:
        return line + texts()["low_stock"].format(stock=stock)
    return line


async def coupon_line(s: AsyncSession, code: Optional[str]) -> Tuple[str, str]:
    """(the coupon's line, its name); empty when it is gone or no longer valid."""
    if not code:
        return "", ""
    coupon = (await s.execute(sa.select(Coupon).where(Coupon.code == code))).scalars().first()
    now = now_utc()
    if coupon is None or not coupon.active or not (coupon.valid_from <= now <= coupon.valid_to):
        return "", ""
    tz = get_settings().shop.timezone
    return texts()["coupon_line"].format(name=coupon.name, code=coupon.code, until=date_text(coupon.valid_to, tz),
                                         description=coupon.description or ""), coupon.name


def template_for(rule: RuleDef, customer: Customer, context: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The rule's Official Account template message, filled in (None: it has none)."""
    template = rule.message.template
    if template is None:
        return None
    values = values_for(customer, context)
    return {"template_id": template.template_id, "url": template.url,
            "data": {name: _fill(text, values) for name, text in template.fields.items()}}


async def render(s: AsyncSession, rule: RuleDef, customer: Customer, context: Dict[str, Any],
                 variant_text: Any, cache: Optional[Dict[Any, List[str]]] = None) -> str:
    key = ("coupon", rule.message.coupon)
    if cache is not None and key in cache:
        coupon, coupon_name = cache[key]
    else:
        coupon, coupon_name = await coupon_line(s, rule.message.coupon)
        if cache is not None:
            cache[key] = [coupon, coupon_name]
    values = values_for(customer, {**context, "coupon_name": coupon_name})
    body = _fill(persona_text(variant_text, get_settings().shop.persona), values)
    parts = [body]
    lines = await product_lines(s, rule, context, cache)
    if lines:
        parts.append("\n".join(lines))
    if coupon:
        parts.append(coupon)
    if rule.category == "marketing" and rule.message.unsubscribe_hint:
        parts.append(texts()["unsubscribe_hint"])
    return "\n".join(parts)
