"""Tables of the one-on-one nudges (migration actions/db/migrations/versions/0008_nudges.py).

Events are the shop's (and our own order scans') facts, stored once under their id. A rule turns an
event into at most one nudge per (rule, customer, ref): the nudge row's unique key is what makes a
reminder go out once, whichever process or restart gets there. Everything that happens to a nudge
(scheduled, sent, suppressed and why, holdout, exited) is appended to the nudge log staff read.
Times are naive UTC.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa

from actions.db.models import Base

# the nudge log's states (the API's names)
SCHEDULED, SENT, SUPPRESSED, HOLDOUT, EXITED = "scheduled", "sent", "suppressed", "holdout", "exited"
NUDGE_STATES = (SCHEDULED, SENT, SUPPRESSED, HOLDOUT, EXITED)
# events: waiting to be acted on / acted on / nothing to do (unknown customer...) / failed after retries
NEW, DONE, IGNORED, FAILED = "new", "done", "ignored", "failed"
# rules: sending / stopped / waiting for a supervisor's OK
LIVE, PAUSED, PENDING_APPROVAL = "live", "paused", "pending"
RULE_STATES = (LIVE, PAUSED, PENDING_APPROVAL)


# orders that count as bought (refunding ones do not: the customer asked for the money back)
PAID_STATUSES = ("paid", "shipped", "delivered", "completed")


def now_utc() -> datetime:
    return datetime.utcnow()


def iso_z(value: Optional[datetime]) -> Optional[str]:
    """A stored (naive UTC) time as the nudges' API writes it: to the second, with a Z."""
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


class NudgeEvent(Base):
    """One event from the shop's back-end (or our own order scans, source "system"), stored before it
    is acknowledged; `event_id` is the shop's id, unique: a repeat is accepted and stored once."""

    __tablename__ = "nudge_events"
    __table_args__ = (
        sa.UniqueConstraint("event_id", name="uq_nudge_events_event_id"),
        sa.Index("ix_nudge_events_status_id", "status", "id"),
        sa.Index("ix_nudge_events_customer_type_at", "customer", "type", "at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    event_id = sa.Column(sa.String(128), nullable=False)
    type = sa.Column(sa.String(32), nullable=False)
    # the shop's customer number as sent (C10001); customer_id once it is known here
    customer = sa.Column(sa.String(64), nullable=False)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    # the cart or order id
    ref = sa.Column(sa.String(64), nullable=False, default="")
    at = sa.Column(sa.DateTime, nullable=False)
    # the rest of the event (items, amount, carrier's scan...)
    data = sa.Column(sa.JSON, nullable=False, default=dict)
    source = sa.Column(sa.String(16), nullable=False, default="shop")
    status = sa.Column(sa.String(12), nullable=False, default=NEW)
    note = sa.Column(sa.String(256))
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    received_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    processed_at = sa.Column(sa.DateTime)


class NudgeRule(Base):
    """A supervisor's rule; `definition` is the rule's JSON (nudges/rules.py checks it), the same
    document the console exports and imports."""

    __tablename__ = "nudge_rules"

    id = sa.Column(sa.Integer, primary_key=True)
    key = sa.Column(sa.String(64), nullable=False, unique=True)
    name = sa.Column(sa.String(100), nullable=False)
    definition = sa.Column(sa.JSON, nullable=False)
    status = sa.Column(sa.String(12), nullable=False, default=PAUSED)
    requires_approval = sa.Column(sa.Boolean, nullable=False, default=False)
    created_by = sa.Column(sa.String(64), nullable=False, default="")
    updated_by = sa.Column(sa.String(64), nullable=False, default="")
    approved_by = sa.Column(sa.String(64))
    approved_at = sa.Column(sa.DateTime)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    deleted_at = sa.Column(sa.DateTime)


class Nudge(Base):
    """One rule's message to one customer about one ref (cart, order, or a lifecycle period), from
    scheduled to its end: sent, suppressed (with the guardrail's reason), holdout (the control group:
    would have been sent) or exited (its exit condition came true before sending)."""

    __tablename__ = "nudges"
    __table_args__ = (
        sa.UniqueConstraint("dedupe_key", name="uq_nudges_dedupe_key"),
        sa.Index("ix_nudges_status_due", "status", "due_at"),
        sa.Index("ix_nudges_customer_rule", "customer_id", "rule_key", "decided_at"),
        sa.Index("ix_nudges_rule_decided", "rule_key", "decided_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    rule_id = sa.Column(sa.Integer, sa.ForeignKey("nudge_rules.id", ondelete="CASCADE"), nullable=False)
    rule_key = sa.Column(sa.String(64), nullable=False)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    ref = sa.Column(sa.String(64), nullable=False, default="")
    # rule:customer:ref, unique: one nudge per rule, customer and cart/order
    dedupe_key = sa.Column(sa.String(200), nullable=False)
    event_id = sa.Column(sa.String(128))
    trigger_at = sa.Column(sa.DateTime, nullable=False)
    due_at = sa.Column(sa.DateTime, nullable=False)
    # not sent after this (a cart reminder two hours late is noise): exited as too_late
    expires_at = sa.Column(sa.DateTime)
    category = sa.Column(sa.String(16), nullable=False, default="marketing")
    priority = sa.Column(sa.Integer, nullable=False, default=3)
    # treatment / control (the rule's holdout), and the A/B variant's name
    arm = sa.Column(sa.String(10), nullable=False, default="treatment")
    variant = sa.Column(sa.String(16), nullable=False, default="")
    status = sa.Column(sa.String(12), nullable=False, default=SCHEDULED)
    reason = sa.Column(sa.String(32))
    detail = sa.Column(sa.String(256))
    channel = sa.Column(sa.String(16))
    outbox_ids = sa.Column(sa.JSON, nullable=False, default=list)
    text = sa.Column(sa.Text)
    # what the message is about (cart items and value, carrier's scan, refund amount...)
    context = sa.Column(sa.JSON, nullable=False, default=dict)
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    # when it was sent, suppressed, held out or exited
    decided_at = sa.Column(sa.DateTime)


class NudgeLogEntry(Base):
    """Append-only: every step of every nudge, with the reason (what staff read per customer)."""

    __tablename__ = "nudge_log"
    __table_args__ = (sa.Index("ix_nudge_log_customer_at", "customer_id", "at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    nudge_id = sa.Column(sa.Integer, sa.ForeignKey("nudges.id", ondelete="CASCADE"), index=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    rule_key = sa.Column(sa.String(64), nullable=False)
    status = sa.Column(sa.String(12), nullable=False)
    reason = sa.Column(sa.String(32))
    detail = sa.Column(sa.String(256))
    at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class CustomerSegment(Base):
    """A customer's RFM figures, segment (the 8-type high/low split) and health score, recomputed
    daily (nudges/segments.py); rules' conditions and the desk's customer context read them."""

    __tablename__ = "nudge_customer_segments"

    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    # days since the last paid order (None: never ordered)
    recency_days = sa.Column(sa.Integer)
    frequency = sa.Column(sa.Integer, nullable=False, default=0)
    monetary_fen = sa.Column(sa.BigInteger, nullable=False, default=0)
    first_order_at = sa.Column(sa.DateTime)
    last_order_at = sa.Column(sa.DateTime)
    # median days between the customer's orders (None: fewer than two)
    median_gap_days = sa.Column(sa.Float)
    r_high = sa.Column(sa.Boolean, nullable=False, default=False)
    f_high = sa.Column(sa.Boolean, nullable=False, default=False)
    m_high = sa.Column(sa.Boolean, nullable=False, default=False)
    # 重要价值客户 ... 一般挽留客户; 新客户 is not one of them: customers without orders get 未购客户
    segment = sa.Column(sa.String(16), nullable=False, index=True)
    # 0-100, higher is healthier; its parts (recency, frequency, monetary, service, sentiment)
    health = sa.Column(sa.Integer, nullable=False, default=50)
    health_parts = sa.Column(sa.JSON, nullable=False, default=dict)
    computed_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class NudgeState(Base):
    """Small named facts the nudge jobs keep between runs (the last segment recompute, the last
    logistics scan), so a restarted leader neither repeats nor skips them."""

    __tablename__ = "nudge_state"

    name = sa.Column(sa.String(32), primary_key=True)
    value = sa.Column(sa.JSON, nullable=False, default=dict)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
