"""The one API for outbound WeChat messages (replies of staff, nudges, SOP posts):

  send_to_customer(customer id | conversation id, messages)  -> SendResult
  send_to_group(chat id, messages, mode=None)                  -> SendResult
  notify_staff(userids, text)                                   -> SendResult

The channel is chosen from the customer's identities: the one whose reply window is open with quota
left (微信客服, Official Account, mini-program). When nothing can go out the result says why
(out_of_window, over_quota, no_channel, ...) instead of failing silently; accepted messages are in
the outbox, which sends them (and records what the platform did with them).

Passing a `key` makes a send idempotent: the same key is stored once, however often it is sent
(a scheduler that retries after a crash does not message anyone twice).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import sqlalchemy as sa

from actions.db.models import CustomerIdentity
from actions.identity import split_sender
from channels.wechat.db import session as async_session
from channels.wechat.models import OutboxMessage, ReplyWindow, RobotSend, WeChatGroup, now_utc
from channels.wechat.outbound import windows
from channels.wechat.outbound.outbox import OutgoingMessage, enqueue, new_key
from channels.wechat.outbound.splitting import MARKDOWN_LIMIT_BYTES, TEXT_LIMIT_BYTES, split_text
from channels.wechat.outbound.windows import REASON_TEXT, RULES

logger = logging.getLogger("channels.wechat.outbound.sender")
CUSTOMER_CHANNELS = ("wecom_kf", "mp", "mini")
Message = Union[str, Dict[str, Any]]


@dataclass
class SendResult:
    accepted: bool
    channel: Optional[str] = None
    outbox_ids: List[int] = field(default_factory=list)
    # why nothing (or not everything right now) goes out: out_of_window, over_quota, no_channel,
    # unknown_customer, unknown_group, no_robot, not_configured, rate_limited (accepted, sent later)
    reason: Optional[str] = None
    detail: str = ""

    @classmethod
    def refused(cls, reason: str, detail: str = "", channel: Optional[str] = None) -> "SendResult":
        return cls(False, channel, [], reason, detail or REASON_TEXT.get(reason, reason))


def _keys(key: Optional[str], count: int) -> List[str]:
    """Outbox keys for the parts of one logical message; valid kf msgids (<= 32 chars, [0-9a-z-])."""
    base = hashlib.sha1(key.encode("utf-8")).hexdigest()[:24] if key else new_key()[:24]
    return [f"{base}-{n}" for n in range(count)]


def _texts(messages: Sequence[Message], limit: int) -> List[str]:
    parts: List[str] = []
    for message in messages:
        text = message if isinstance(message, str) else (message.get("text") or "")
        parts.extend(split_text(str(text), limit))
    return parts


def _runtime():
    from channels.wechat.runtime import get_runtime

    return get_runtime()


class _NoWorker:
    def wake(self) -> None:
        """The gateway's outbox worker polls for rows other processes enqueued."""


class OutboxOnly:
    """The runtime a process other than the gateway (the console) sends with: the connectors'
    config to choose a channel; the gateway's worker sends the rows at its next poll."""

    def __init__(self, config=None) -> None:
        from channels.wechat.config import WeChatConfig

        self.config = config or WeChatConfig.from_settings()
        self.worker = _NoWorker()


def _configured(runtime, channel: str) -> bool:
    config = runtime.config
    return bool({"wecom_kf": config.kf, "mp": config.mp, "mini": config.mini, "robot": True,
                 "app": config.app, "mass_send": config.contact, "mp_template": config.mp}.get(channel))


async def _queued(session, channel: str, recipient: str) -> int:
    return (await session.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
        OutboxMessage.channel == channel, OutboxMessage.recipient == recipient,
        OutboxMessage.status.in_(("pending", "sending"))))).scalar() or 0


@dataclass
class Room:
    """What a user's reply window still allows: messages that may be sent (queued ones counted),
    the refusal reason if none, when the window opened and closes, the account they wrote to."""
    room: int
    reason: Optional[str]
    opened: Optional[Any] = None
    closes: Optional[Any] = None
    account: Optional[str] = None


async def reply_room(session, channel: str, user_id: str) -> Room:
    window = await session.get(ReplyWindow, (channel, user_id), populate_existing=True)
    queued = await _queued(session, channel, user_id) if window is not None else 0
    return room_of(channel, window, queued)


def room_of(channel: str, window: Optional[ReplyWindow], queued: int, now=None) -> Room:
    """reply_room() for a window as read and the user's messages still queued."""
    rule = RULES[channel]
    now = now or now_utc()
    if window is None:
        return Room(0, windows.OUT_OF_WINDOW)
    room, opened, closes = 0, None, None
    if window.message_at and window.message_at > now - rule.message_window:
        room += rule.message_quota - window.message_sent
        opened, closes = window.message_at, window.message_at + rule.message_window
    if rule.event_quota and window.event_at and window.event_at > now - rule.event_window:
        room += rule.event_quota - window.event_sent
        opened = opened or window.event_at
        closes = closes or window.event_at + rule.event_window
    room -= queued
    if room > 0:
        return Room(room, None, opened, closes, window.account)
    return Room(0, windows.OVER_QUOTA if opened else windows.OUT_OF_WINDOW, opened, closes, window.account)


async def _identities(session, target: Union[int, str]) -> Tuple[Optional[int], List[Tuple[str, str]]]:
    if isinstance(target, str) and ":" in target:
        channel, _, user = target.partition(":")
        known = (await session.execute(sa.select(CustomerIdentity.customer_id).where(
            CustomerIdentity.channel == channel, CustomerIdentity.external_id == user))).scalar()
        return known, [(channel, user)] if channel in CUSTOMER_CHANNELS and user else []
    try:
        customer_id = int(target)
    except (TypeError, ValueError):
        return None, []
    rows = await session.execute(sa.select(CustomerIdentity.channel, CustomerIdentity.external_id).where(
        CustomerIdentity.customer_id == customer_id, CustomerIdentity.channel.in_(CUSTOMER_CHANNELS)))
    return customer_id, [(c, u) for c, u in rows.all()]


async def _with_staff(session, customer_id: Optional[int], identities: List[Tuple[str, str]]) -> bool:
    """Whether a person is handling (or about to handle) one of the customer's conversations."""
    from desk.models import ASSIGNED, QUEUED, DeskConversation

    ids = [f"{c}:{u}" for c, u in identities]
    match = DeskConversation.conversation_id.in_(ids)
    if customer_id is not None:
        match = sa.or_(match, DeskConversation.customer_id == customer_id)
    found = await session.execute(sa.select(DeskConversation.id).where(
        match, DeskConversation.state.in_((QUEUED, ASSIGNED))).limit(1))
    return found.first() is not None


async def send_to_customer(target: Union[int, str], messages: Sequence[Message], *, key: Optional[str] = None,
                           runtime=None, proactive: bool = False) -> SendResult:
    """Send text to a customer (customer id, or a conversation id like "wecom_kf:wmXXXX").
    `proactive` (marketing, SOP, nudges): refused while staff handle the customer (with_staff)."""
    runtime = runtime or _runtime()
    async with async_session() as session:
        outgoing, refusal = await customer_post(session, target, messages, key=key, runtime=runtime,
                                                proactive=proactive)
    # the session is closed before enqueueing: a task holds one session at a time
    if refusal is not None:
        return refusal
    ids = await enqueue(outgoing)
    runtime.worker.wake()
    return SendResult(True, outgoing[0].channel, ids)


async def customer_post(session, target: Union[int, str], messages: Sequence[Message], *, key: Optional[str],
                        runtime=None, proactive: bool = False) -> Tuple[List[OutgoingMessage], Optional[SendResult]]:
    """The outbox rows of a message to a customer, on the channel whose reply window is open with
    room for every part (the most recently opened one), or the refusal. send_to_customer() stores
    them at once; nudges/sending.py in its own transaction, with the nudge's state."""
    customer_id, identities = await _identities(session, target)
    staffed = proactive and bool(identities) and await _with_staff(session, customer_id, identities)
    rooms = {}
    for channel, user in identities:
        if _configured(runtime or _runtime(), channel):
            rooms[(channel, user)] = await reply_room(session, channel, user)
    return _post(customer_id, identities, rooms, staffed, messages, key, target, runtime)


@dataclass
class CustomerMessage:
    """One message of customer_posts(): to a customer id, proactive or not, under an idempotency key.
    `buttons` [(id, text)]: on 微信客服 a one-part message goes as a menu message whose items the
    customer taps to answer with their text (anywhere else the text alone goes)."""
    customer_id: int
    messages: Sequence[Message]
    key: str
    proactive: bool = False
    buttons: Sequence[Tuple[str, str]] = ()
    # an Official Account template message {"template_id", "data", "url"} for when no window is open
    template: Optional[Dict[str, Any]] = None


async def customer_posts(session, wanted: Sequence[CustomerMessage], runtime=None
                         ) -> List[Tuple[List[OutgoingMessage], Optional[SendResult]]]:
    """customer_post() for many customers at once (a nudge round): identities, staff, windows and
    queued messages are read in a few queries instead of a few per customer; the same choice of
    channel and the same refusals. Messages to one user in the batch count against each other."""
    runtime = runtime or _runtime()
    ids = sorted({w.customer_id for w in wanted})
    identities: Dict[int, List[Tuple[str, str]]] = {}
    for start in range(0, len(ids), 1000):
        rows = await session.execute(sa.select(CustomerIdentity.customer_id, CustomerIdentity.channel,
                                               CustomerIdentity.external_id).where(
            CustomerIdentity.customer_id.in_(ids[start:start + 1000]),
            CustomerIdentity.channel.in_(CUSTOMER_CHANNELS)))
        for cid, channel, user in rows.all():
            identities.setdefault(cid, []).append((channel, user))
    users = sorted({u for found in identities.values() for _, u in found})
    found_windows: Dict[Tuple[str, str], ReplyWindow] = {}
    queued: Dict[Tuple[str, str], int] = {}
    staffed: set = set()
    from desk.models import ASSIGNED, QUEUED, DeskConversation

    owner = {f"{c}:{u}": cid for cid, found in identities.items() for c, u in found}
    by_user: Dict[str, List[str]] = {}
    for conversation in owner:
        by_user.setdefault(conversation.partition(":")[2], []).append(conversation)
    for start in range(0, len(users), 1000):
        part = users[start:start + 1000]
        for window in (await session.execute(sa.select(ReplyWindow).where(
                ReplyWindow.user_id.in_(part)).execution_options(populate_existing=True))).scalars():
            found_windows[(window.channel, window.user_id)] = window
        counted = await session.execute(sa.select(OutboxMessage.channel, OutboxMessage.recipient, sa.func.count())
                                        .where(OutboxMessage.recipient.in_(part),
                                               OutboxMessage.status.in_(("pending", "sending")))
                                        .group_by(OutboxMessage.channel, OutboxMessage.recipient))
        queued.update({(c, r): n for c, r, n in counted.all()})
        conversations = [c for user in part for c in by_user.get(user, [])]
        rows = await session.execute(sa.select(DeskConversation.conversation_id).where(
            DeskConversation.state.in_((QUEUED, ASSIGNED)), DeskConversation.conversation_id.in_(conversations)))
        staffed |= {owner[conversation] for conversation in rows.scalars() if conversation in owner}
    for start in range(0, len(ids), 1000):
        rows = await session.execute(sa.select(DeskConversation.customer_id).where(
            DeskConversation.state.in_((QUEUED, ASSIGNED)), DeskConversation.customer_id.in_(ids[start:start + 1000])))
        staffed |= set(rows.scalars())
    out = []
    now = now_utc()
    for w in wanted:
        mine = identities.get(w.customer_id, [])
        rooms = {(c, u): room_of(c, found_windows.get((c, u)), queued.get((c, u), 0), now)
                 for c, u in mine if _configured(runtime, c)}
        outgoing, refusal = _post(w.customer_id, mine, rooms, w.proactive and w.customer_id in staffed,
                                  w.messages, w.key, w.customer_id, runtime, w.buttons, w.template)
        for message in outgoing:
            queued[(message.channel, message.recipient)] = queued.get((message.channel, message.recipient), 0) + 1
        out.append((outgoing, refusal))
    return out


# a 微信客服 menu message's text before its items
MENU_HEAD_LIMIT_BYTES = 1024


def _post(customer_id: Optional[int], identities: List[Tuple[str, str]], rooms: Dict[Tuple[str, str], Room],
          staffed: bool, messages: Sequence[Message], key: Optional[str], target, runtime,
          buttons: Sequence[Tuple[str, str]] = (), template: Optional[Dict[str, Any]] = None
          ) -> Tuple[List[OutgoingMessage], Optional[SendResult]]:
    """The channel choice of customer_post(s): `rooms` holds the configured identities' windows."""
    texts = _texts(messages, TEXT_LIMIT_BYTES)
    if not texts:
        return [], SendResult.refused("empty", "nothing to send")
    if not identities:
        reason = "unknown_customer" if customer_id is None and not isinstance(target, str) else "no_channel"
        return [], SendResult.refused(reason)
    if staffed:
        return [], SendResult.refused("with_staff")
    candidates, reasons = [], []
    for channel, user in identities:
        found = rooms.get((channel, user))
        if found is None:
            reasons.append(("not_configured", channel))
            continue
        if found.reason:
            reasons.append((found.reason, channel))
        elif found.room < len(texts):
            reasons.append((windows.OVER_QUOTA, channel))
        else:
            candidates.append((found.opened, channel, user, found.account))
    if not candidates:
        follower = next((u for c, u in identities if c == "mp"), None)
        if template and follower and _configured(runtime or _runtime(), "mp_template"):
            # no window anywhere: the Official Account's template message (a service notice) goes instead
            return [OutgoingMessage(channel="mp_template", recipient=follower, msgtype="template",
                                    body={"template": template}, conversation_id=f"mp:{follower}",
                                    customer_id=customer_id, idempotency_key=_keys(key, 1)[0])], None
        # the most useful reason: a window that is open but full says more than a closed one
        order = [windows.OVER_QUOTA, windows.OUT_OF_WINDOW, "not_configured"]
        reason, channel = sorted(reasons, key=lambda r: order.index(r[0]) if r[0] in order else 9)[0]
        logger.info("wechat send refused", extra={"customer_id": customer_id, "reason": reason, "channel": channel,
                                                  "parts": len(texts)})
        return [], SendResult.refused(reason, channel=channel)
    _, channel, user, account = max(candidates, key=lambda c: c[0])  # the most recently opened window
    account = account if channel == "wecom_kf" else None
    if buttons and channel == "wecom_kf" and len(texts) == 1 \
            and len(texts[0].encode("utf-8")) <= MENU_HEAD_LIMIT_BYTES:
        menu = {"head_content": texts[0], "tail_content": "",
                "list": [{"type": "click", "click": {"id": i, "content": t}} for i, t in buttons]}
        return [OutgoingMessage(channel=channel, recipient=user, msgtype="msgmenu", body={"msgmenu": menu},
                                account=account, conversation_id=f"{channel}:{user}", customer_id=customer_id,
                                idempotency_key=_keys(key, 1)[0])], None
    return [OutgoingMessage(channel=channel, recipient=user, msgtype="text", body={"text": {"content": t}},
                            account=account, conversation_id=f"{channel}:{user}", customer_id=customer_id,
                            idempotency_key=k) for t, k in zip(texts, _keys(key, len(texts)))], None


async def send_to_group(chat_id: str, messages: Sequence[Message], *, mode: Optional[str] = None,
                        mention: Optional[List[str]] = None, key: Optional[str] = None, runtime=None) -> SendResult:
    """Post into a customer group by its delivery mode (or the given one): robot (text, markdown,
    image, news through the webhook), mass_send (a task the owner confirms) or owner_reminder (an
    app message to the owner with the content to forward)."""
    runtime = runtime or _runtime()
    async with async_session() as session:
        group = await session.get(WeChatGroup, chat_id)
        if group is None:
            return SendResult.refused("unknown_group")
        mode = mode or group.delivery_mode
        backlog = 0
        if mode == "robot" and group.robot_key:
            backlog = (await session.execute(sa.select(sa.func.count()).select_from(RobotSend).where(
                RobotSend.chat_id == chat_id, RobotSend.sent_at > now_utc() - timedelta(seconds=60)))).scalar() or 0
            backlog += await _queued(session, "robot", chat_id)
    # the session is closed before enqueueing: a task holds one session at a time
    if mode == "robot":
        outgoing, refusal = group_post(group, mode, robot=messages, mention=mention, key=key, runtime=runtime)
    elif mode in ("mass_send", "owner_reminder"):
        texts = _texts(messages, TEXT_LIMIT_BYTES)
        if not texts:
            return SendResult.refused("empty", "nothing to send")
        text = "\n".join(texts)
        if mode == "owner_reminder":
            text = f"请把下面的内容发到群「{group.name or chat_id}」：\n\n" + text
        outgoing, refusal = group_post(group, mode, text=text, key=key, runtime=runtime)
    else:
        return SendResult.refused("unknown_mode", f"unknown delivery mode {mode}")
    if refusal is not None:
        return refusal
    ids = await enqueue(outgoing)
    runtime.worker.wake()
    if mode == "mass_send":
        return SendResult(True, "mass_send", ids, None, "waiting for the group owner to confirm in WeCom")
    if mode == "owner_reminder":
        return SendResult(True, "app", ids)
    backlog += len(outgoing)
    if backlog > 20:
        return SendResult(True, "robot", ids, "rate_limited",
                          f"{backlog} messages for this robot within a minute: the excess goes out "
                          f"in the following minutes (20 per minute)")
    return SendResult(True, "robot", ids)


def _robot_messages(chat_id: str, messages: Sequence[Message], mention: Optional[List[str]],
                    key: Optional[str]) -> List[OutgoingMessage]:
    bodies: List[Tuple[str, Dict[str, Any]]] = []
    for message in messages:
        if isinstance(message, str) or "msgtype" not in message:
            text = message if isinstance(message, str) else str(message.get("text") or "")
            bodies.extend(("text", {"text": {"content": t}}) for t in split_text(text, TEXT_LIMIT_BYTES))
        elif message["msgtype"] == "markdown":
            content = str((message.get("markdown") or {}).get("content") or "")
            bodies.extend(("markdown", {"markdown": {"content": t}}) for t in split_text(content, MARKDOWN_LIMIT_BYTES))
        else:
            bodies.append((message["msgtype"], {message["msgtype"]: message.get(message["msgtype"])}))
    if mention:
        for msgtype, body in bodies:
            if msgtype == "text":
                body["text"]["mentioned_list"] = list(mention)
                break
    return [OutgoingMessage(channel="robot", recipient=chat_id, msgtype=msgtype, body=body, idempotency_key=k)
            for (msgtype, body), k in zip(bodies, _keys(key, len(bodies)))]


def group_post(group: WeChatGroup, mode: str, *, robot: Sequence[Message] = (), text: str = "",
               attachments: Optional[List[Dict]] = None, mention: Optional[List[str]] = None,
               key: Optional[str], runtime=None) -> Tuple[List[OutgoingMessage], Optional[SendResult]]:
    """The outbox rows of one post to one group by `mode`: robot messages, a mass-send task to the
    group (text and attachments) or an app message to the owner (text); or the refusal when the
    group cannot get it that way. send_to_group() stores them at once; community_sop/firing.py in
    its own transaction, with the post's run row."""
    runtime = runtime or _runtime()
    if mode == "robot":
        if not group.robot_key:
            return [], SendResult.refused("no_robot", channel="robot")
        outgoing = _robot_messages(group.chat_id, robot, mention, key)
        return (outgoing, None) if outgoing else ([], SendResult.refused("empty", "nothing to send"))
    if mode not in ("mass_send", "owner_reminder"):
        return [], SendResult.refused("unknown_mode", f"unknown delivery mode {mode}")
    if mode == "mass_send" and not runtime.config.contact:
        return [], SendResult.refused("not_configured", channel="mass_send")
    if not group.owner_userid:
        return [], SendResult.refused("no_owner", "the group's owner (WeCom userid) is not recorded")
    if mode == "mass_send":
        if not text and not attachments:
            return [], SendResult.refused("empty", "nothing to send")
        body: Dict[str, Any] = {"text": {"content": text}, "chat_id_list": [group.chat_id]}
        if attachments:
            body["attachments"] = list(attachments)
        return [OutgoingMessage(channel="mass_send", recipient=group.chat_id, msgtype="text", body=body,
                                account=group.owner_userid, idempotency_key=_keys(key, 1)[0])], None
    if not runtime.config.app:
        return [], SendResult.refused("not_configured", channel="app")
    texts = split_text(text, TEXT_LIMIT_BYTES)
    if not texts:
        return [], SendResult.refused("empty", "nothing to send")
    return [OutgoingMessage(channel="app", recipient=group.owner_userid, msgtype="text",
                            body={"text": {"content": t}}, idempotency_key=k)
            for t, k in zip(texts, _keys(key, len(texts)))], None


async def send_mass(owner_userid: str, chat_ids: List[str], text: str, *, attachments: Optional[List[Dict]] = None,
                    key: Optional[str] = None, runtime=None) -> SendResult:
    """A mass-send task to the owner's customer groups; it reaches them when the owner confirms in
    WeCom (track it with channels.wechat.outbound.mass_send)."""
    runtime = runtime or _runtime()
    if not runtime.config.contact:
        return SendResult.refused("not_configured", channel="mass_send")
    if not chat_ids or len(chat_ids) > 2000:
        return SendResult.refused("bad_request", "a mass send goes to 1-2000 groups")
    if attachments and len(attachments) > 9:
        return SendResult.refused("bad_request", "a mass send carries at most 9 attachments")
    body: Dict[str, Any] = {"text": {"content": text}, "chat_id_list": list(chat_ids)}
    if attachments:
        body["attachments"] = attachments
    ids = await enqueue([OutgoingMessage(channel="mass_send", recipient=",".join(chat_ids)[:255], msgtype="text",
                                         body=body, account=owner_userid, idempotency_key=_keys(key, 1)[0])])
    runtime.worker.wake()
    return SendResult(True, "mass_send", ids, None, "waiting for the group owner to confirm in WeCom")


async def notify_staff(userids: List[str], text: str, *, key: Optional[str] = None, runtime=None) -> SendResult:
    """An app message to staff members (WeCom userids). The platform silently drops messages beyond
    30 per minute / 1000 per hour per member."""
    runtime = runtime or _runtime()
    if not runtime.config.app:
        return SendResult.refused("not_configured", channel="app")
    recipients = "|".join(u for u in userids if u)
    if not recipients:
        return SendResult.refused("no_recipient", "no staff userid given")
    texts = split_text(text, TEXT_LIMIT_BYTES)
    if not texts:
        return SendResult.refused("empty", "nothing to send")
    outgoing = [OutgoingMessage(channel="app", recipient=recipients, msgtype="text", body={"text": {"content": t}},
                                idempotency_key=k) for t, k in zip(texts, _keys(key, len(texts)))]
    ids = await enqueue(outgoing)
    runtime.worker.wake()
    return SendResult(True, "app", ids)


async def set_kf_session_state(conversation_id: str, service_state: int, *, key: str, runtime=None) -> SendResult:
    """Move a 微信客服 session (kf/service_state/trans) through the outbox, after the replies queued
    before it: the desk ends the session (4) when staff end a conversation, so the customer's next
    message starts a new one that the API (and the bot) may answer."""
    runtime = runtime or _runtime()
    channel, user = split_sender(conversation_id)
    if channel != "wecom_kf" or not user:
        return SendResult.refused("no_channel")
    if not runtime.config.kf:
        return SendResult.refused("not_configured", channel="wecom_kf")
    async with async_session() as session:
        window = await session.get(ReplyWindow, ("wecom_kf", user))
    if window is None or not window.account:
        return SendResult.refused("unknown_customer", "the customer has not written to a 微信客服 account")
    ids = await enqueue([OutgoingMessage(channel="kf_state", recipient=user, msgtype="service_state",
                                         body={"service_state": {"service_state": service_state}},
                                         account=window.account, conversation_id=conversation_id,
                                         idempotency_key=_keys(key, 1)[0])])
    runtime.worker.wake()
    return SendResult(True, "kf_state", ids)
