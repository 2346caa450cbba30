"""Tables of the escalation desk (migration actions/db/migrations/versions/0006_desk.py).

A conversation is Rasa's (its sender id); the desk keeps one row per conversation with who holds it
now, and every change as an append-only event that the console turns into live updates, numbers and
the audit trail. Times are naive UTC.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from actions.db.models import Base

# conversation states (the API's names): with the bot, waiting for a person, held by a person, ended
BOT, QUEUED, ASSIGNED, CLOSED = "bot", "queued", "assigned", "closed"
STATES = (BOT, QUEUED, ASSIGNED, CLOSED)
ROLES = ("agent", "supervisor", "moderator", "admin")


def now_utc() -> datetime:
    return datetime.utcnow()


class DeskConversation(Base):
    __tablename__ = "desk_conversations"
    __table_args__ = (sa.Index("ix_desk_conversations_state_priority", "state", "priority", "queued_at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # Rasa's sender id: "im:u10002", "wecom_kf:wmXXXX", "mp:openid", ...
    conversation_id = sa.Column(sa.String(255), nullable=False, unique=True)
    channel = sa.Column(sa.String(16), nullable=False)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    customer_name = sa.Column(sa.String(64), nullable=False, default="")
    state = sa.Column(sa.String(12), nullable=False, default=BOT)
    # why it was handed on (desk/handoff.py REASONS) and the customer's words that did it
    reason = sa.Column(sa.String(32))
    reason_text = sa.Column(sa.String(200))
    priority = sa.Column(sa.Integer, nullable=False, default=0)
    assignee = sa.Column(sa.String(64), index=True)
    # the current handoff (episode); timestamps of its steps
    episode = sa.Column(sa.Integer, nullable=False, default=0)
    queued_at = sa.Column(sa.DateTime)
    assigned_at = sa.Column(sa.DateTime)
    first_response_at = sa.Column(sa.DateTime)
    closed_at = sa.Column(sa.DateTime)
    snoozed_until = sa.Column(sa.DateTime)
    ticket_no = sa.Column(sa.String(32))
    last_customer_at = sa.Column(sa.DateTime)
    last_agent_at = sa.Column(sa.DateTime)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class DeskMessage(Base):
    """What staff wrote: replies to the customer (with how their delivery went) and internal notes."""

    __tablename__ = "desk_messages"

    id = sa.Column(sa.Integer, primary_key=True)
    conversation = sa.Column(sa.Integer, sa.ForeignKey("desk_conversations.id", ondelete="CASCADE"),
                             nullable=False, index=True)
    kind = sa.Column(sa.String(8), nullable=False)  # reply | note
    author = sa.Column(sa.String(64), nullable=False)
    text = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    channel = sa.Column(sa.String(16))
    # replies: queued -> delivered, or failed / refused with the reason
    delivery = sa.Column(sa.String(12))
    delivery_detail = sa.Column(sa.String(256))
    outbox_ids = sa.Column(sa.JSON)
    delivered_at = sa.Column(sa.DateTime)


class DeskEvent(Base):
    """Append-only: every change of a desk conversation, who made it and when. The console's live
    updates read it in id order; daily numbers are counted from it."""

    __tablename__ = "desk_events"

    id = sa.Column(sa.Integer, primary_key=True)
    at = sa.Column(sa.DateTime, nullable=False, default=now_utc, index=True)
    conversation = sa.Column(sa.Integer, sa.ForeignKey("desk_conversations.id", ondelete="CASCADE"),
                             nullable=False, index=True)
    # queued, cancelled, claimed, assigned, transferred, replied, noted, handed_back, closed, snoozed, customer
    kind = sa.Column(sa.String(24), nullable=False, index=True)
    # "customer", "bot", "staff:<username>", "system"
    actor = sa.Column(sa.String(80), nullable=False)
    detail = sa.Column(sa.JSON, nullable=False, default=dict)


class StaffUser(Base):
    """Who may use the console. Raising session_epoch ends every session of the user."""

    __tablename__ = "staff_users"

    id = sa.Column(sa.Integer, primary_key=True)
    username = sa.Column(sa.String(64), nullable=False, unique=True)
    display_name = sa.Column(sa.String(64), nullable=False, default="")
    role = sa.Column(sa.String(16), nullable=False)
    password_hash = sa.Column(sa.String(256), nullable=False)
    disabled = sa.Column(sa.Boolean, nullable=False, default=False)
    session_epoch = sa.Column(sa.Integer, nullable=False, default=0)
    # online | away (agents set it; new handoffs are announced to online agents)
    presence = sa.Column(sa.String(8), nullable=False, default="away")
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    last_login_at = sa.Column(sa.DateTime)


class CannedReply(Base):
    """A prepared reply staff pick in the reply box; {customer}, {shop}, {agent}, {order} are filled in."""

    __tablename__ = "desk_canned_replies"

    id = sa.Column(sa.Integer, primary_key=True)
    title = sa.Column(sa.String(64), nullable=False, unique=True)
    text = sa.Column(sa.Text, nullable=False)
    created_by = sa.Column(sa.String(64), nullable=False, default="system")
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class DeskCursor(Base):
    """How far the console has read an append-only source (Rasa's events table)."""

    __tablename__ = "desk_cursors"

    name = sa.Column(sa.String(32), primary_key=True)
    position = sa.Column(sa.BigInteger, nullable=False, default=0)


class DeskCorrection(Base):
    """错题本 from the desk: a customer message the bot got wrong, what it should have understood
    (an intent: an NLU training example at the next training) and, for knowledge answers, the
    knowledge base's own correction (kb_corrections) made with it."""

    __tablename__ = "desk_corrections"

    id = sa.Column(sa.Integer, primary_key=True)
    at = sa.Column(sa.DateTime, nullable=False, default=now_utc, index=True)
    staff = sa.Column(sa.String(64), nullable=False)
    conversation = sa.Column(sa.Integer, sa.ForeignKey("desk_conversations.id", ondelete="SET NULL"), index=True)
    event_id = sa.Column(sa.BigInteger)  # Rasa's events row of the customer message
    text = sa.Column(sa.Text, nullable=False)
    wrong_intent = sa.Column(sa.String(64))
    right_intent = sa.Column(sa.String(64))
    kb_correction_id = sa.Column(sa.Integer)
    note = sa.Column(sa.Text, nullable=False, default="")


class DeskModel(Base):
    """A model trained from the console (with the corrections so far): its test results, and
    whether a supervisor switched it in. Rasa pulls the active one from the console."""

    __tablename__ = "desk_models"

    id = sa.Column(sa.Integer, primary_key=True)
    fingerprint = sa.Column(sa.String(64))
    path = sa.Column(sa.String(512))
    # training -> ready (or failed) -> active -> retired
    state = sa.Column(sa.String(12), nullable=False, default="training")
    results = sa.Column(sa.JSON, nullable=False, default=dict)
    log = sa.Column(sa.Text, nullable=False, default="")
    created_by = sa.Column(sa.String(64), nullable=False)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    finished_at = sa.Column(sa.DateTime)
    activated_by = sa.Column(sa.String(64))
    activated_at = sa.Column(sa.DateTime)
