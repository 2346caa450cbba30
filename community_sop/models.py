"""Tables of the community SOP (migration actions/db/migrations/versions/0007_community_sop.py).

Plans are the moderators' own rows; the scheduler derives its jobs from them. Every due post to a
group is one run row whose (plan, group, due time) key is unique: the key, not the scheduler's lock,
is what makes a post go out once. Times are naive UTC.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from actions.db.models import Base

# run states (the API's names): handed to the outbox and not settled yet / delivered / failed / not sent
PENDING, SENT, FAILED, SKIPPED = "pending", "sent", "failed", "skipped"
RUN_STATES = (PENDING, SENT, FAILED, SKIPPED)
DELIVERY_MODES = ("robot", "mass_send", "owner_reminder")
MODERATION_STATES = ("open", "handled", "false_alarm")


def now_utc() -> datetime:
    return datetime.utcnow()


class SopPlan(Base):
    """A moderator's plan: which groups, when, what, how. Deleting keeps the row (deleted_at) so the
    execution log still names the plan."""

    __tablename__ = "sop_plans"

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100), nullable=False)
    # {"chat_ids": [...]} | {"group_tag": "..."} | {"owner": "userid"}
    targets = sa.Column(sa.JSON, nullable=False)
    # {"kind": "once"|"daily"|"weekly"|"cron"|"after_group_created", ...}
    schedule = sa.Column(sa.JSON, nullable=False)
    content = sa.Column(sa.JSON, nullable=False)
    # [{"group_tag": "...", "content": [...]}]: tagged groups get their own copy
    variants = sa.Column(sa.JSON, nullable=False, default=list)
    delivery = sa.Column(sa.String(16), nullable=False, default="robot")
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    # the plan's validity window (UTC); None: open-ended
    starts_at = sa.Column(sa.DateTime)
    ends_at = sa.Column(sa.DateTime)
    created_by = sa.Column(sa.String(64), nullable=False, default="")
    updated_by = sa.Column(sa.String(64), nullable=False, default="")
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc, index=True)
    deleted_at = sa.Column(sa.DateTime)


class SopRun(Base):
    """One post of one plan to one group at one due time, and what became of it."""

    __tablename__ = "sop_runs"
    __table_args__ = (
        sa.UniqueConstraint("plan_id", "chat_id", "due_at", name="uq_sop_runs_plan_chat_due"),
        sa.Index("ix_sop_runs_status_due", "status", "due_at"),
        sa.Index("ix_sop_runs_chat_due", "chat_id", "due_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    plan_id = sa.Column(sa.Integer, sa.ForeignKey("sop_plans.id", ondelete="CASCADE"), nullable=False)
    chat_id = sa.Column(sa.String(64), nullable=False)
    due_at = sa.Column(sa.DateTime, nullable=False)
    status = sa.Column(sa.String(12), nullable=False, default=PENDING)
    # why it failed or was skipped, or what it waits for (Chinese, shown to moderators)
    reason = sa.Column(sa.String(256))
    delivery = sa.Column(sa.String(16), nullable=False, default="robot")
    # the outbox rows that carry the post (wechat_outbox.id)
    outbox_ids = sa.Column(sa.JSON, nullable=False, default=list)
    # the platform's message id (robot: none is returned; mass send: its msgid; app message: msgid)
    message_id = sa.Column(sa.String(64))
    handed_at = sa.Column(sa.DateTime)
    sent_at = sa.Column(sa.DateTime)
    attempts = sa.Column(sa.Integer, nullable=False, default=1)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class SopKeywordReply(Base):
    """A keyword auto-reply for groups with a tag (all groups when group_tag is empty)."""

    __tablename__ = "sop_keyword_replies"

    id = sa.Column(sa.Integer, primary_key=True)
    group_tag = sa.Column(sa.String(32), nullable=False, default="")
    keyword = sa.Column(sa.String(32), nullable=False)
    reply = sa.Column(sa.Text, nullable=False)
    cooldown_s = sa.Column(sa.Integer, nullable=False, default=300)
    active = sa.Column(sa.Boolean, nullable=False, default=True)
    created_by = sa.Column(sa.String(64), nullable=False, default="")
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class SopKeywordFiring(Base):
    """When a keyword reply last went to a group: the cooldown shared by every gateway process."""

    __tablename__ = "sop_keyword_firings"

    reply_id = sa.Column(sa.Integer, sa.ForeignKey("sop_keyword_replies.id", ondelete="CASCADE"), primary_key=True)
    chat_id = sa.Column(sa.String(64), primary_key=True)
    fired_at = sa.Column(sa.DateTime, nullable=False)


class SopGroupCheckin(Base):
    """A member's check-in in a group on a day (the shop's calendar): the group's numbers. The
    points themselves are the customer's (checkins / customers.points), the same as in 1:1 chats."""

    __tablename__ = "sop_group_checkins"
    __table_args__ = (sa.UniqueConstraint("chat_id", "member", "day", name="uq_sop_group_checkins_chat_member_day"),)

    id = sa.Column(sa.Integer, primary_key=True)
    chat_id = sa.Column(sa.String(64), nullable=False)
    member = sa.Column(sa.String(64), nullable=False)
    day = sa.Column(sa.Date, nullable=False, index=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="SET NULL"))
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class SopGroupActivity(Base):
    """How many messages a member wrote in a group on a day: "members active"."""

    __tablename__ = "sop_group_activity"

    chat_id = sa.Column(sa.String(64), primary_key=True)
    member = sa.Column(sa.String(64), primary_key=True)
    day = sa.Column(sa.Date, primary_key=True)
    messages = sa.Column(sa.Integer, nullable=False, default=0)


class SopModerationHit(Base):
    """A group message the moderation flagged; moderators mark it handled or a false alarm."""

    __tablename__ = "sop_moderation_hits"
    __table_args__ = (sa.Index("ix_sop_moderation_hits_status_at", "status", "at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    chat_id = sa.Column(sa.String(64), nullable=False)
    member = sa.Column(sa.String(64), nullable=False)
    member_name = sa.Column(sa.String(64), nullable=False, default="")
    text = sa.Column(sa.Text, nullable=False)
    kind = sa.Column(sa.String(16), nullable=False)
    reason = sa.Column(sa.String(256), nullable=False, default="")
    at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    status = sa.Column(sa.String(12), nullable=False, default="open")
    owner_alerted = sa.Column(sa.Boolean, nullable=False, default=False)
    handled_by = sa.Column(sa.String(64))
    handled_at = sa.Column(sa.DateTime)


class SopSchedulerState(Base):
    """The leading scheduler's heartbeat: the console shows it, and a new leader catches up on the
    posts that fell due since the last one was seen."""

    __tablename__ = "sop_scheduler_state"

    name = sa.Column(sa.String(32), primary_key=True)
    leader = sa.Column(sa.String(64), nullable=False)
    started_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    seen_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
