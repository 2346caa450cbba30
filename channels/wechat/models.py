"""Tables of the WeChat connectors (migrations actions/db/migrations/versions/0003_wechat.py,
0005_wechat_nonces_workers.py and, for the groups' SOP columns, 0007_community_sop.py).

Times are naive UTC with microseconds (ordering and backoff need sub-second precision).
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from actions.db.models import Base


def now_utc() -> datetime:
    return datetime.utcnow()


class InboundMessageRow(Base):
    """Every message a user sent, stored before the callback is acknowledged: the durable inbox the
    pipeline works from (a restart resumes what was not answered) and, through its unique key, the
    database dedup of platform retries."""

    __tablename__ = "wechat_inbound"
    __table_args__ = (
        sa.UniqueConstraint("channel", "dedup_key", name="uq_wechat_inbound_channel_dedup"),
        sa.Index("ix_wechat_inbound_status_received", "status", "received_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    channel = sa.Column(sa.String(16), nullable=False)
    dedup_key = sa.Column(sa.String(160), nullable=False)
    conversation_id = sa.Column(sa.String(255), nullable=False)
    # the normalised message (payloads.InboundMessage)
    payload = sa.Column(sa.JSON, nullable=False)
    # received -> processing -> done | failed; ignored for messages the bot must not answer
    status = sa.Column(sa.String(12), nullable=False, default="received")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    claimed_by = sa.Column(sa.String(64))
    claimed_at = sa.Column(sa.DateTime)
    error = sa.Column(sa.String(256))
    received_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    processed_at = sa.Column(sa.DateTime)


class GatewayWorker(Base):
    """Each running gateway process, seen every few seconds (channels/wechat/workers.py): a claim on
    an inbox row stays with its worker while the worker is seen, and is taken over once it is not."""

    __tablename__ = "wechat_gateway_workers"

    # OutboxWorker.name: host:pid:random, also the inbox's claimed_by
    name = sa.Column(sa.String(64), primary_key=True)
    started_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    seen_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class CallbackNonce(Base):
    """A plaintext-mode callback's (timestamp, nonce) with a hash of its body, kept while its
    timestamp is accepted (channels/wechat/inbound/replays.py): its signature is never good for another body."""

    __tablename__ = "wechat_callback_nonces"
    __table_args__ = (sa.Index("ix_wechat_callback_nonces_expires_at", "expires_at"),)

    connector = sa.Column(sa.String(16), primary_key=True)
    timestamp = sa.Column(sa.BigInteger, primary_key=True, autoincrement=False)
    nonce = sa.Column(sa.String(64), primary_key=True)
    body_sha256 = sa.Column(sa.String(64), nullable=False)
    expires_at = sa.Column(sa.DateTime, nullable=False)


class KfCursor(Base):
    """The next_cursor of kf/sync_msg per 微信客服 account, so a restart neither skips nor repeats."""

    __tablename__ = "wechat_kf_cursors"

    open_kfid = sa.Column(sa.String(64), primary_key=True)
    cursor = sa.Column(sa.String(128), nullable=False, default="")
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc, onupdate=now_utc)


class OutboxMessage(Base):
    """One message to send to the platform. Written by the OutputChannel and the sender API, sent by
    the outbox worker; rows are never deleted by the worker, so staff see what failed and why."""

    __tablename__ = "wechat_outbox"
    __table_args__ = (
        sa.UniqueConstraint("idempotency_key", name="uq_wechat_outbox_idempotency_key"),
        sa.Index("ix_wechat_outbox_status_next", "status", "next_attempt_at"),
        sa.Index("ix_wechat_outbox_recipient", "channel", "recipient", "status"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    # wecom_kf / mp / mini / robot / app / mass_send
    channel = sa.Column(sa.String(16), nullable=False)
    # external_userid / openid / group chat id / staff userids ("a|b")
    recipient = sa.Column(sa.String(255), nullable=False)
    # open_kfid for 微信客服, the group owner for mass sends
    account = sa.Column(sa.String(64))
    conversation_id = sa.Column(sa.String(255), index=True)
    customer_id = sa.Column(sa.Integer, sa.ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    msgtype = sa.Column(sa.String(16), nullable=False)
    # the channel's message body without the recipient ({"text": {"content": ...}})
    body = sa.Column(sa.JSON, nullable=False)
    # unique per logical message: a reprocessed inbound message produces the same keys, never a 2nd row;
    # also the kf/send_msg msgid
    idempotency_key = sa.Column(sa.String(64), nullable=False)
    # pending -> claimed -> sending -> sent | failed | refused | unknown
    status = sa.Column(sa.String(12), nullable=False, default="pending")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    claimed_by = sa.Column(sa.String(64))
    claimed_at = sa.Column(sa.DateTime)
    last_errcode = sa.Column(sa.Integer)
    last_error = sa.Column(sa.String(256))
    platform_msgid = sa.Column(sa.String(64))
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    sent_at = sa.Column(sa.DateTime)


class ReplyWindow(Base):
    """Our count of what the platform lets us send a user: a user message opens 48 h / 5 messages;
    a follow, menu click or entering a mini-program session opens a short event window."""

    __tablename__ = "wechat_reply_windows"

    channel = sa.Column(sa.String(16), primary_key=True)
    user_id = sa.Column(sa.String(128), primary_key=True)
    # the account the user wrote to (微信客服: the open_kfid replies must come from)
    account = sa.Column(sa.String(64))
    message_at = sa.Column(sa.DateTime)
    message_sent = sa.Column(sa.Integer, nullable=False, default=0)
    event_at = sa.Column(sa.DateTime)
    event_sent = sa.Column(sa.Integer, nullable=False, default=0)


class WeChatGroup(Base):
    """A customer group the shop posts into, and how posts reach it."""

    __tablename__ = "wechat_groups"

    chat_id = sa.Column(sa.String(64), primary_key=True)
    name = sa.Column(sa.String(128), nullable=False, default="")
    owner_userid = sa.Column(sa.String(64))
    # the group robot's webhook key (a credential: never logged)
    robot_key = sa.Column(sa.String(128))
    # robot (webhook, automatic) / mass_send (owner confirms in WeCom) / owner_reminder (app message)
    delivery_mode = sa.Column(sa.String(16), nullable=False, default="robot")
    # moderators' labels (新人群, 宝妈群, ...): plans, variants and keyword replies target them
    tags = sa.Column(sa.JSON, nullable=False, default=list)
    owner_name = sa.Column(sa.String(64), nullable=False, default="")
    member_count = sa.Column(sa.Integer, nullable=False, default=0)
    # when the group was created on WeChat ("建群第 N 天" plans); None: unknown
    group_created_at = sa.Column(sa.DateTime)
    # the group was dissolved: posts to it are skipped
    dissolved_at = sa.Column(sa.DateTime)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=now_utc, onupdate=now_utc)


class RobotSend(Base):
    """When each robot message went out: the 20-per-minute budget shared by all processes."""

    __tablename__ = "wechat_robot_sends"
    __table_args__ = (sa.Index("ix_wechat_robot_sends_chat_at", "chat_id", "sent_at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    chat_id = sa.Column(sa.String(64), nullable=False)
    sent_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)


class MassSendTask(Base):
    """A mass-send task to customer groups (externalcontact/add_msg_template) and what became of it."""

    __tablename__ = "wechat_mass_tasks"

    id = sa.Column(sa.Integer, primary_key=True)
    outbox_id = sa.Column(sa.Integer, sa.ForeignKey("wechat_outbox.id", ondelete="SET NULL"), unique=True)
    msgid = sa.Column(sa.String(64), unique=True)
    sender = sa.Column(sa.String(64), nullable=False)
    chat_ids = sa.Column(sa.JSON, nullable=False)
    # created (waiting for the owner) / sent / partly_sent / cancelled
    status = sa.Column(sa.String(16), nullable=False, default="created")
    # chat id -> platform status (0 not sent, 1 sent, 2 not a friend, 3 already received another)
    results = sa.Column(sa.JSON, nullable=False, default=dict)
    reminders = sa.Column(sa.Integer, nullable=False, default=0)
    last_reminded_at = sa.Column(sa.DateTime)
    created_at = sa.Column(sa.DateTime, nullable=False, default=now_utc)
    checked_at = sa.Column(sa.DateTime)
