"""SQLAlchemy models of the shop's data (SQLAlchemy 1.4, 2.0-style API).

Money is stored in fen (integer cents) so prices never drift through float arithmetic.
Times are stored as naive UTC.
"""
from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import declarative_base, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
Base = declarative_base(metadata=sa.MetaData(naming_convention=NAMING))


def utcnow() -> datetime:
    return datetime.utcnow().replace(microsecond=0)


class OrderStatus(str, enum.Enum):
    pending_payment = "pending_payment"
    paid = "paid"  # paid, waiting to be shipped
    shipped = "shipped"
    delivered = "delivered"
    completed = "completed"
    cancelled = "cancelled"
    refunding = "refunding"
    refunded = "refunded"


class TicketKind(str, enum.Enum):
    return_goods = "return"
    refund = "refund"
    exchange = "exchange"
    repair = "repair"
    complaint = "complaint"
    change_order = "change_order"
    cancel_order = "cancel_order"
    human_request = "human_request"


class TicketStatus(str, enum.Enum):
    open = "open"
    processing = "processing"
    resolved = "resolved"
    rejected = "rejected"
    closed = "closed"


class Customer(Base):
    __tablename__ = "customers"

    id = sa.Column(sa.Integer, primary_key=True)
    # the shop's own customer number (stable across imports)
    external_id = sa.Column(sa.String(64), nullable=False, unique=True)
    name = sa.Column(sa.String(64), nullable=False)
    phone = sa.Column(sa.String(32))
    level = sa.Column(sa.String(32), nullable=False, default="普通会员")
    points = sa.Column(sa.Integer, nullable=False, default=0)
    marketing_opt_out = sa.Column(sa.Boolean, nullable=False, default=False)
    opt_out_at = sa.Column(sa.DateTime)
    opt_out_source = sa.Column(sa.String(64))
    # service messages (logistics, refunds) refused too: rare, but the customer's to decide
    transactional_opt_out = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    # the shop's labels for the customer (rules' conditions)
    tags = sa.Column(sa.JSON, nullable=False, default=list, server_default="[]")
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    identities = relationship("CustomerIdentity", back_populates="customer", cascade="all, delete-orphan")
    orders = relationship("Order", back_populates="customer")


class CustomerIdentity(Base):
    """How one customer is known on one channel (web IM user id, WeCom external_userid, openid...)."""

    __tablename__ = "customer_identities"
    __table_args__ = (sa.UniqueConstraint("channel", "external_id", name="uq_identity_channel_external"),)

    id = sa.Column(sa.Integer, primary_key=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True)
    channel = sa.Column(sa.String(32), nullable=False)
    external_id = sa.Column(sa.String(128), nullable=False)
    unionid = sa.Column(sa.String(128), index=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    customer = relationship("Customer", back_populates="identities")


class Product(Base):
    __tablename__ = "products"

    id = sa.Column(sa.Integer, primary_key=True)
    spu = sa.Column(sa.String(64), nullable=False, unique=True)
    name = sa.Column(sa.String(128), nullable=False)
    category = sa.Column(sa.String(32), nullable=False, index=True)
    brand = sa.Column(sa.String(64))
    # comma separated words customers use for it (裙子, 连衣裙...)
    aliases = sa.Column(sa.String(512), nullable=False, default="")
    description = sa.Column(sa.Text, nullable=False, default="")
    # free-form spec sheet: {"面料": "100%桑蚕丝", ...}
    specs = sa.Column(sa.JSON, nullable=False, default=dict)
    on_sale = sa.Column(sa.Boolean, nullable=False, default=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    variants = relationship("ProductVariant", back_populates="product", cascade="all, delete-orphan",
                            order_by="ProductVariant.id")


class ProductVariant(Base):
    __tablename__ = "product_variants"

    id = sa.Column(sa.Integer, primary_key=True)
    product_id = sa.Column(sa.Integer, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False, index=True)
    sku = sa.Column(sa.String(64), nullable=False, unique=True)
    color = sa.Column(sa.String(32))
    size = sa.Column(sa.String(32))
    price_fen = sa.Column(sa.Integer, nullable=False)
    stock = sa.Column(sa.Integer, nullable=False, default=0)

    product = relationship("Product", back_populates="variants")


class Order(Base):
    __tablename__ = "orders"

    id = sa.Column(sa.Integer, primary_key=True)
    order_no = sa.Column(sa.String(32), nullable=False, unique=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True)
    status = sa.Column(sa.String(24), nullable=False, index=True)
    total_fen = sa.Column(sa.Integer, nullable=False)
    paid_fen = sa.Column(sa.Integer, nullable=False, default=0)
    receiver_name = sa.Column(sa.String(64), nullable=False)
    receiver_phone = sa.Column(sa.String(32), nullable=False)
    address = sa.Column(sa.String(256), nullable=False)
    carrier = sa.Column(sa.String(32))
    tracking_no = sa.Column(sa.String(64), index=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    paid_at = sa.Column(sa.DateTime)
    shipped_at = sa.Column(sa.DateTime)
    delivered_at = sa.Column(sa.DateTime)
    cancelled_at = sa.Column(sa.DateTime)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow)

    customer = relationship("Customer", back_populates="orders")
    items = relationship("OrderItem", back_populates="order", cascade="all, delete-orphan", order_by="OrderItem.id")
    logistics = relationship("LogisticsEvent", back_populates="order", cascade="all, delete-orphan",
                             order_by="LogisticsEvent.occurred_at")


class OrderItem(Base):
    __tablename__ = "order_items"

    id = sa.Column(sa.Integer, primary_key=True)
    order_id = sa.Column(sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    variant_id = sa.Column(sa.Integer, sa.ForeignKey("product_variants.id"), index=True)
    product_name = sa.Column(sa.String(128), nullable=False)
    sku = sa.Column(sa.String(64), nullable=False)
    spec = sa.Column(sa.String(64), nullable=False, default="")
    quantity = sa.Column(sa.Integer, nullable=False)
    unit_price_fen = sa.Column(sa.Integer, nullable=False)

    order = relationship("Order", back_populates="items")


class LogisticsEvent(Base):
    __tablename__ = "logistics_events"

    id = sa.Column(sa.Integer, primary_key=True)
    order_id = sa.Column(sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True)
    occurred_at = sa.Column(sa.DateTime, nullable=False)
    location = sa.Column(sa.String(64), nullable=False, default="")
    # the carrier's own description of the scan, stored as received
    description = sa.Column(sa.String(256), nullable=False)

    order = relationship("Order", back_populates="logistics")


class Coupon(Base):
    __tablename__ = "coupons"

    id = sa.Column(sa.Integer, primary_key=True)
    code = sa.Column(sa.String(32), nullable=False, unique=True)
    name = sa.Column(sa.String(64), nullable=False)
    # threshold: 满 threshold 减 amount; discount: percent_off on items; no_threshold: amount off
    kind = sa.Column(sa.String(16), nullable=False)
    threshold_fen = sa.Column(sa.Integer, nullable=False, default=0)
    amount_fen = sa.Column(sa.Integer, nullable=False, default=0)
    percent_off = sa.Column(sa.Integer, nullable=False, default=0)
    # all / category / product
    scope = sa.Column(sa.String(16), nullable=False, default="all")
    # the category name or product spu for scoped coupons
    scope_value = sa.Column(sa.String(64))
    valid_from = sa.Column(sa.DateTime, nullable=False)
    valid_to = sa.Column(sa.DateTime, nullable=False)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    # only for members of at least this level, empty = everyone
    member_only = sa.Column(sa.Boolean, nullable=False, default=False)
    description = sa.Column(sa.String(256), nullable=False, default="")


class Ticket(Base):
    """服务即工单: every after-sales request, complaint or change is a ticket with a number."""

    __tablename__ = "tickets"

    id = sa.Column(sa.Integer, primary_key=True)
    ticket_no = sa.Column(sa.String(32), nullable=False, unique=True)
    kind = sa.Column(sa.String(24), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default=TicketStatus.open.value, index=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id"), index=True)
    order_id = sa.Column(sa.Integer, sa.ForeignKey("orders.id"), index=True)
    # the conversation it came from, so staff can read the transcript
    conversation_id = sa.Column(sa.String(255), index=True)
    reason = sa.Column(sa.String(256), nullable=False, default="")
    detail = sa.Column(sa.Text, nullable=False, default="")
    resolution = sa.Column(sa.Text, nullable=False, default="")
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow)

    order = relationship("Order")


class Checkin(Base):
    __tablename__ = "checkins"
    __table_args__ = (sa.UniqueConstraint("customer_id", "day", name="uq_checkin_customer_day"),)

    id = sa.Column(sa.Integer, primary_key=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    # the shop's local calendar day
    day = sa.Column(sa.Date, nullable=False)
    points = sa.Column(sa.Integer, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class ConsentEvent(Base):
    """Append-only record of marketing consent changes (PIPL art. 24: refusal must be honoured)."""

    __tablename__ = "consent_events"

    id = sa.Column(sa.Integer, primary_key=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    conversation_id = sa.Column(sa.String(255), index=True)
    granted = sa.Column(sa.Boolean, nullable=False)
    category = sa.Column(sa.String(32), nullable=False, default="marketing")
    source = sa.Column(sa.String(64), nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class VerificationGuard(Base):
    """Failed anonymous order verifications counted for one subject, and the lock they lead to.

    The subject is an order number ("order:SY…", over every conversation and channel; numbers that
    do not exist are counted too, so a lock says nothing about whether an order exists) or a client
    address ("client:<ip>", over every order). An order's lock lasts until its owner or staff lift
    it; a client's until `locked_until`.
    """

    __tablename__ = "verification_guards"

    key = sa.Column(sa.String(160), primary_key=True)
    failures = sa.Column(sa.Integer, nullable=False, default=0)
    window_started_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    locked_at = sa.Column(sa.DateTime)
    # None while locked: until lifted
    locked_until = sa.Column(sa.DateTime)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class OrderVerification(Base):
    """An anonymous visitor proved an order (its receiver phone's last 4 digits) in one conversation:
    the proof belongs to that conversation only, and is fresh for a limited time."""

    __tablename__ = "order_verifications"
    __table_args__ = (sa.Index("ix_order_verifications_order_conversation", "order_no", "conversation_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    order_no = sa.Column(sa.String(32), nullable=False)
    conversation_id = sa.Column(sa.String(255), nullable=False)
    client = sa.Column(sa.String(64))
    verified_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class AuditEvent(Base):
    """Append-only record of security decisions (verification locks and who lifted them), for staff."""

    __tablename__ = "audit_events"

    id = sa.Column(sa.Integer, primary_key=True)
    at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
    # who did it: "system", "customer:C10001", "staff:<name>"
    actor = sa.Column(sa.String(128), nullable=False)
    action = sa.Column(sa.String(64), nullable=False, index=True)
    subject = sa.Column(sa.String(160), nullable=False, index=True)
    detail = sa.Column(sa.JSON, nullable=False, default=dict)
