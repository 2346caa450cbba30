"""Imports the shop's products, customers and orders from CSV or JSON.

Every row is validated on its own: bad rows are reported with their line number (CSV) or item
number (JSON) and skipped, the rest imported. Rows are matched on their natural keys (SPU/SKU,
customer number, order number), so importing the same file twice changes nothing.

CSV columns (header row, UTF-8; lists separated by "|"):
  products:  spu,name,category,brand,aliases,description,specs,sku,color,size,price,stock,on_sale
             (one row per variant; specs as "面料:棉|版型:宽松" or a JSON object)
  customers: external_id,name,phone,level,points,identities,tags
             (identities: "im:u10001|wecom_kf:wm123"; tags, the shop's labels used by nudge rules: "宝妈|老客")
  orders:    order_no,customer,status,created_at,paid_at,shipped_at,delivered_at,cancelled_at,
             receiver_name,receiver_phone,address,carrier,tracking_no,items,logistics
             (items: "SKU*2|SKU2*1"; logistics: JSON list of {time, location, description})
JSON: a list of objects with the same fields (products may nest "variants", orders "items" and
"logistics" as lists).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from actions.db.catalog_dictionary import write_catalog_dictionary
from actions.db.engine import create_sync_engine
from actions.db.migrate import upgrade
from actions.db.models import (
    Customer,
    CustomerIdentity,
    LogisticsEvent,
    Order,
    OrderItem,
    OrderStatus,
    Product,
    ProductVariant,
)

MAX_ROWS = 200_000


@dataclass
class RowError:
    line: int
    message: str


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    errors: List[RowError] = field(default_factory=list)
    dictionary_updated: bool = False  # the catalog's words for jieba changed (products only)


def _split(value: Any) -> List[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split("|") if v.strip()]


def _fen(value: Any) -> int:
    try:
        amount = Decimal(str(value).strip().lstrip("¥￥"))
    except (InvalidOperation, AttributeError):
        raise ValueError(f"not a price: {value!r}")
    if amount < 0 or amount > Decimal("10000000"):
        raise ValueError(f"price out of range: {value!r}")
    return int((amount * 100).to_integral_value())


def _time(value: Any) -> Optional[datetime]:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    text = str(value).strip().replace("/", "-")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise ValueError(f"not a date/time: {value!r}")


# --- row models --------------------------------------------------------------------------------
class VariantRow(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    color: Optional[str] = Field(default=None, max_length=32)
    size: Optional[str] = Field(default=None, max_length=32)
    price_fen: int
    stock: int = Field(ge=0, le=10_000_000)


class ProductRow(BaseModel):
    spu: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=128)
    category: str = Field(min_length=1, max_length=32)
    brand: Optional[str] = Field(default=None, max_length=64)
    aliases: List[str] = Field(default_factory=list)
    description: str = ""
    specs: Dict[str, str] = Field(default_factory=dict)
    on_sale: bool = True
    variants: List[VariantRow]


class CustomerRow(BaseModel):
    external_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    phone: Optional[str] = Field(default=None, max_length=32)
    level: str = "普通会员"
    points: int = Field(default=0, ge=0)
    identities: List[Tuple[str, str]] = Field(default_factory=list)
    # None: the file has no tags column, the customer's tags stay as they are
    tags: Optional[List[str]] = Field(default=None, max_length=50)

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: Optional[str]) -> Optional[str]:
        if v and not v.replace("-", "").replace("+", "").isdigit():
            raise ValueError("phone must be digits")
        return v


class ItemRow(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=10_000)


class EventRow(BaseModel):
    time: datetime
    location: str = ""
    description: str = Field(min_length=1, max_length=256)


class OrderRow(BaseModel):
    order_no: str = Field(min_length=1, max_length=32)
    customer: str
    status: OrderStatus
    created_at: datetime
    paid_at: Optional[datetime] = None
    shipped_at: Optional[datetime] = None
    delivered_at: Optional[datetime] = None
    cancelled_at: Optional[datetime] = None
    receiver_name: str = Field(min_length=1, max_length=64)
    receiver_phone: str = Field(min_length=4, max_length=32)
    address: str = Field(min_length=2, max_length=256)
    carrier: Optional[str] = None
    tracking_no: Optional[str] = None
    items: List[ItemRow] = Field(min_length=1)
    logistics: List[EventRow] = Field(default_factory=list)


# --- parsing of one raw row into a model ----------------------------------------------------------
def _product_rows(raw: Dict[str, Any]) -> ProductRow:
    specs = raw.get("specs") or {}
    if isinstance(specs, str):
        specs = specs.strip()
        if specs.startswith("{"):
            specs = json.loads(specs)
        else:
            pairs = [p.split(":", 1) if ":" in p else p.split("：", 1) for p in _split(specs)]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("specs must be 'key:value|key:value' or a JSON object")
            specs = {k.strip(): v.strip() for k, v in pairs}
    variants = raw.get("variants")
    if variants is None:
        variants = [{"sku": raw.get("sku"), "color": raw.get("color"), "size": raw.get("size"),
                     "price": raw.get("price"), "stock": raw.get("stock", 0)}]
    return ProductRow(
        spu=str(raw.get("spu") or "").strip(), name=str(raw.get("name") or "").strip(),
        category=str(raw.get("category") or "").strip(), brand=raw.get("brand") or None,
        aliases=_split(raw.get("aliases")), description=raw.get("description") or "",
        specs={str(k): str(v) for k, v in specs.items()},
        on_sale=str(raw.get("on_sale", "true")).strip().lower() not in ("false", "0", "no", "下架"),
        variants=[VariantRow(sku=str(v.get("sku") or "").strip(), color=v.get("color") or None,
                             size=(str(v["size"]) if v.get("size") not in (None, "") else None),
                             price_fen=_fen(v.get("price")), stock=int(v.get("stock") or 0)) for v in variants],
    )


def _customer_row(raw: Dict[str, Any]) -> CustomerRow:
    identities = []
    for item in _split(raw.get("identities")):
        channel, sep, external = item.partition(":")
        if not sep or not channel or not external:
            raise ValueError(f"identity {item!r} must be channel:id")
        identities.append((channel.strip(), external.strip()))
    return CustomerRow(external_id=str(raw.get("external_id") or "").strip(), name=str(raw.get("name") or "").strip(),
                       phone=str(raw["phone"]).strip() if raw.get("phone") else None,
                       level=raw.get("level") or "普通会员", points=int(raw.get("points") or 0), identities=identities,
                       tags=[t[:32] for t in _split(raw["tags"])] if "tags" in raw else None)


def _order_row(raw: Dict[str, Any]) -> OrderRow:
    items = raw.get("items")
    if isinstance(items, str):
        parsed = []
        for part in _split(items):
            sku, _, qty = part.partition("*")
            parsed.append({"sku": sku.strip(), "quantity": int(qty or 1)})
        items = parsed
    logistics = raw.get("logistics") or []
    if isinstance(logistics, str):
        logistics = json.loads(logistics) if logistics.strip() else []
    return OrderRow(
        order_no=str(raw.get("order_no") or "").strip().upper(), customer=str(raw.get("customer") or "").strip(),
        status=raw.get("status"), created_at=_time(raw.get("created_at")), paid_at=_time(raw.get("paid_at")),
        shipped_at=_time(raw.get("shipped_at")), delivered_at=_time(raw.get("delivered_at")),
        cancelled_at=_time(raw.get("cancelled_at")), receiver_name=raw.get("receiver_name") or "",
        receiver_phone=str(raw.get("receiver_phone") or ""), address=raw.get("address") or "",
        carrier=raw.get("carrier") or None, tracking_no=raw.get("tracking_no") or None, items=items or [],
        logistics=[{"time": _time(e.get("time")), "location": e.get("location") or "",
                    "description": e.get("description") or ""} for e in logistics],
    )


# --- writing ---------------------------------------------------------------------------------------
def _upsert_product(session: Session, row: ProductRow) -> bool:
    product = session.execute(select(Product).where(Product.spu == row.spu)).scalars().first()
    created = product is None
    if created:
        product = Product(spu=row.spu)
    product.name, product.category, product.brand = row.name, row.category, row.brand
    product.aliases = ",".join(row.aliases) if row.aliases else (product.aliases or "")
    product.description = row.description or product.description or ""
    product.specs = row.specs or product.specs or {}
    product.on_sale = row.on_sale
    if created:
        session.add(product)
    session.flush()
    for v in row.variants:
        variant = session.execute(select(ProductVariant).where(ProductVariant.sku == v.sku)).scalars().first()
        if variant is None:
            variant = ProductVariant(sku=v.sku, product_id=product.id)
            session.add(variant)
        elif variant.product_id != product.id:
            raise ValueError(f"SKU {v.sku} already belongs to another product")
        variant.color, variant.size, variant.price_fen, variant.stock = v.color, v.size, v.price_fen, v.stock
    return created


def _upsert_customer(session: Session, row: CustomerRow) -> bool:
    customer = session.execute(select(Customer).where(Customer.external_id == row.external_id)).scalars().first()
    created = customer is None
    if created:
        customer = Customer(external_id=row.external_id)
    customer.name, customer.phone, customer.level, customer.points = row.name, row.phone, row.level, row.points
    if row.tags is not None:
        customer.tags = row.tags
    elif created:
        customer.tags = []
    if created:
        session.add(customer)
    session.flush()
    for channel, external in row.identities:
        identity = session.execute(select(CustomerIdentity).where(
            CustomerIdentity.channel == channel, CustomerIdentity.external_id == external)).scalars().first()
        if identity is None:
            session.add(CustomerIdentity(customer_id=customer.id, channel=channel, external_id=external))
        elif identity.customer_id != customer.id:
            raise ValueError(f"identity {channel}:{external} already belongs to another customer")
    return created


def _upsert_order(session: Session, row: OrderRow) -> bool:
    customer = session.execute(select(Customer).where(Customer.external_id == row.customer)).scalars().first()
    if customer is None:
        raise ValueError(f"unknown customer {row.customer!r} (import customers first)")
    # resolve every reference before the order joins the session (queries would flush it half-built)
    lines = []
    for item in row.items:
        variant = session.execute(select(ProductVariant).where(ProductVariant.sku == item.sku)).scalars().first()
        if variant is None:
            raise ValueError(f"unknown SKU {item.sku!r} (import products first)")
        product = session.get(Product, variant.product_id)
        lines.append(OrderItem(variant_id=variant.id, product_name=product.name, sku=variant.sku,
                               spec="/".join(x for x in (variant.color, variant.size) if x),
                               quantity=item.quantity, unit_price_fen=variant.price_fen))
    order = session.execute(select(Order).where(Order.order_no == row.order_no)).scalars().first()
    created = order is None
    if created:
        order = Order(order_no=row.order_no)
    order.customer_id = customer.id
    order.status = row.status.value
    for name in ("created_at", "paid_at", "shipped_at", "delivered_at", "cancelled_at", "receiver_name",
                 "receiver_phone", "address", "carrier", "tracking_no"):
        setattr(order, name, getattr(row, name))
    order.total_fen = sum(line.unit_price_fen * line.quantity for line in lines)
    order.paid_fen = order.total_fen if row.paid_at else 0
    order.items = lines
    order.logistics = [LogisticsEvent(occurred_at=e.time, location=e.location, description=e.description)
                       for e in sorted(row.logistics, key=lambda e: e.time)]
    if created:
        session.add(order)
    session.flush()
    return created


KINDS = {
    "products": (_product_rows, _upsert_product),
    "customers": (_customer_row, _upsert_customer),
    "orders": (_order_row, _upsert_order),
}


def read_rows(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """(line or item number, raw row). CSV line numbers count the header as line 1."""
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError("a JSON import file must contain a list of objects")
        for index, item in enumerate(data[:MAX_ROWS], 1):
            yield index, item if isinstance(item, dict) else {"__invalid__": item}
        return
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            if reader.line_num > MAX_ROWS:
                break
            yield reader.line_num, {k.strip(): (v.strip() if isinstance(v, str) else v)
                                    for k, v in row.items() if k is not None}


def import_rows(session: Session, kind: str, rows: Iterator[Tuple[int, Dict[str, Any]]]) -> ImportReport:
    parse, upsert = KINDS[kind]
    report = ImportReport()
    grouped: Dict[str, Tuple[int, ProductRow]] = {}
    parsed: List[Tuple[int, Any]] = []
    for line, raw in rows:
        if "__invalid__" in raw:
            report.errors.append(RowError(line, "not an object"))
            continue
        try:
            row = parse(raw)
        except (ValidationError, ValueError, TypeError, json.JSONDecodeError) as exc:
            report.errors.append(RowError(line, _describe(exc)))
            continue
        if kind == "products" and row.spu in grouped:
            # one CSV row per variant: rows of the same SPU become one product
            grouped[row.spu][1].variants.extend(row.variants)
            continue
        if kind == "products":
            grouped[row.spu] = (line, row)
        parsed.append((line, row))
    for line, row in parsed:
        try:
            with session.begin_nested():
                created = upsert(session, row)
            report.created += int(created)
            report.updated += int(not created)
        except (ValueError, Exception) as exc:  # noqa: BLE001 - one bad row must not stop the import
            report.errors.append(RowError(line, _describe(exc)))
    session.commit()
    return report


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    # database errors: the driver's message says which constraint failed
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0][:200]


def run_import(kind: str, file: str, dictionary: Optional[Path] = None) -> ImportReport:
    """`dictionary`: after a products import, rewrite this jieba word list from the catalog
    (the CLI passes nlu_data/jieba/catalog_dict.txt)."""
    path = Path(file)
    upgrade()
    engine = create_sync_engine()
    try:
        with Session(engine) as session:
            try:
                report = import_rows(session, kind, read_rows(path))
            except (OSError, ValueError, json.JSONDecodeError, csv.Error) as exc:
                return ImportReport(errors=[RowError(0, f"cannot read file: {exc}")])
            if dictionary is not None and kind == "products" and report.created + report.updated:
                report.dictionary_updated = write_catalog_dictionary(session, dictionary)
            return report
    finally:
        engine.dispose()
