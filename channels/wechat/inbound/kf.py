"""微信客服 (WeCom customer service): the callback only says "there is something new" (with a one-time
Token); the messages themselves are pulled with kf/sync_msg from the persisted cursor.

Pages are serialised per account within a process; the inbox drops messages another process (or a
repeated page) already stored, and the cursor is saved in the same transaction as its page.

A cursor the platform no longer accepts (e.g. after a reset on its side) is dropped with a warning:
the account is pulled again from the start of what the platform retains, and the inbox's msgid
dedup keeps that exactly-once. It remembers answered messages for the dedup horizon
(SIYU_WECHAT_DEDUP_TTL_S) only; older ones on that replay are skipped, not answered again.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any, Dict, List, Optional

import sqlalchemy as sa

from channels.wechat import db
from channels.wechat.conversation.pipeline import conversation_id
from channels.wechat.inbound import cursors
from channels.wechat.inbound.payloads import InboundMessage
from channels.wechat.models import KfCursor
from channels.wechat.outbound import errcodes as E, outbox
from channels.wechat.outbound.platform import PlatformError

logger = logging.getLogger("channels.wechat.inbound.kf")
CHANNEL = "wecom_kf"
# origin of a message in sync_msg: 3 the WeChat user, 4 a system event, 5 a servicer in the WeCom client
FROM_CUSTOMER, SYSTEM_EVENT = 3, 4
MAX_PAGES_PER_SYNC = 50
# a replay after a cursor reset answers messages sent this much inside the dedup horizon only: the
# inbox rows of older ones may have been pruned (clocks of the platform and the gateway may differ)
REPLAY_MARGIN_S = 300


def normalize(item: Dict[str, Any]) -> Optional[InboundMessage]:
    """The customer's messages (and entering the session) as InboundMessages; None for the rest."""
    origin = item.get("origin")
    msgid, msgtype = item.get("msgid"), item.get("msgtype")
    if not isinstance(msgid, str) or not msgid or not isinstance(msgtype, str):
        return None
    open_kfid = str(item.get("open_kfid") or "")
    sent_at = int(item.get("send_time") or 0)
    if origin == FROM_CUSTOMER and item.get("external_userid"):
        text = (item.get("text") or {}).get("content") if msgtype == "text" else None
        return InboundMessage(CHANNEL, str(item["external_userid"]), msgid, msgtype, sent_at, account=open_kfid,
                              text=text if isinstance(text, str) else ("" if msgtype == "text" else None))
    if origin == SYSTEM_EVENT and msgtype == "event":
        event = item.get("event") or {}
        user = event.get("external_userid")
        if event.get("event_type") == "enter_session" and user:
            return InboundMessage(CHANNEL, str(user), msgid, "event", sent_at, account=open_kfid,
                                  event="enter_session")
    return None


async def _note_event(item: Dict[str, Any]) -> None:
    event = item.get("event") or {}
    if event.get("event_type") == "msg_send_fail" and event.get("fail_msgid"):
        # the platform accepted one of our messages but could not deliver it (e.g. the user refused)
        found = await outbox.mark_failed_by_msgid(CHANNEL, str(event["fail_msgid"]),
                                                  f"msg_send_fail (fail_type {event.get('fail_type')})")
        logger.warning("wechat kf message not delivered", extra={"fail_type": event.get("fail_type"),
                                                                 "known": found})


def schedule_sync(runtime, open_kfid: str, msg_token: Optional[str]) -> None:
    """A callback rang: make sure one pull starts after it. Callbacks arriving while a pull is still
    waiting to start are served by that pull (under load one pull answers many doorbells)."""
    state = runtime.kf_sync_state(open_kfid)
    if msg_token:
        state["token"] = msg_token  # the newest token; any valid one will do
    if state["pending"]:
        return
    state["pending"] = True
    runtime.spawn(_scheduled_sync(runtime, open_kfid))


async def _scheduled_sync(runtime, open_kfid: str) -> None:
    state = runtime.kf_sync_state(open_kfid)
    async with runtime.kf_lock(open_kfid):
        # from here on a new callback needs a new pull: this one may already have read past it
        state["pending"] = False
        token, state["token"] = state.get("token"), None
        await _pull(runtime, open_kfid, token)


async def sync(runtime, open_kfid: str, msg_token: Optional[str] = None) -> List[int]:
    """Pull everything new for one account into the inbox and schedule it; the new inbox row ids."""
    async with runtime.kf_lock(open_kfid):
        return await _pull(runtime, open_kfid, msg_token)


async def _pull(runtime, open_kfid: str, msg_token: Optional[str]) -> List[int]:
    accepted: List[int] = []
    cursors_cache = runtime.kf_cursors
    cursor = cursors_cache.get(open_kfid)
    if cursor is None:
        cursor = await cursors.load(open_kfid)
    # after a cursor reset: messages sent before this are not taken (see REPLAY_MARGIN_S)
    replay_since: Optional[float] = None
    too_old = 0
    for _ in range(MAX_PAGES_PER_SYNC):
        try:
            page = await runtime.client.kf_sync_msg(open_kfid, cursor, msg_token)
        except PlatformError as exc:
            if exc.errcode == E.KF_INVALID_MSG_TOKEN and msg_token:
                # the callback's token expired (10 min): pull without it
                msg_token = None
                continue
            if exc.errcode in E.KF_CURSOR_REJECTED and cursor and replay_since is None:
                # the platform forgot our cursor: start again from what it retains (once per pull)
                logger.warning("wechat kf cursor rejected by the platform; pulling the account again from the "
                               "start of its retained messages", extra={"errcode": exc.errcode, "errmsg": exc.errmsg})
                cursor = ""
                replay_since = time.time() - runtime.config.dedup_ttl_s + REPLAY_MARGIN_S
                continue
            raise
        # the page's messages and its cursor in one transaction: a crash repeats the page, never skips it
        answer, ignore = [], []
        for item in page.get("msg_list") or []:
            message = normalize(item)
            if message is None:
                await _note_event(item)
            elif replay_since is not None and message.sent_at < replay_since:
                too_old += 1  # older than the inbox remembers: it may have been answered
            else:
                (ignore if message.msg_type == "event" else answer).append((message, conversation_id(message)))
        next_cursor = page.get("next_cursor") or cursor
        # saved with the page's messages; the cursor after an empty page (frequent under load: one
        # pull often takes the messages of the next doorbells too) waits in memory for the next page
        # that stores something, as a restart from the older one repeats nothing and skips nothing
        save_cursor = functools.partial(cursors.save_in, open_kfid=open_kfid, cursor=next_cursor) \
            if next_cursor != cursor and (answer or ignore) else None
        if ignore:
            # entering the session: recorded, not answered (the cursor goes with the page's last store)
            await runtime.inbox.accept(ignore, status="ignored", pulled=True,
                                       also=None if answer or save_cursor is None else _saving(save_cursor))
        if answer:
            accepted += await runtime.take_in(answer, also=save_cursor, pulled=True)
        cursor = next_cursor
        cursors_cache[open_kfid] = cursor
        if not page.get("has_more"):
            break
    if accepted:
        logger.info("wechat kf messages pulled", extra={"messages": len(accepted)})
    if replay_since is not None:
        logger.warning("wechat kf account pulled again after a cursor reset", extra={
            "new_messages": len(accepted), "skipped_older_than_dedup_horizon": too_old})
    return accepted


def _saving(save_cursor):
    async def also(s, _ids):
        await save_cursor(s)
    return also


async def sync_known_accounts(runtime) -> None:
    async with db.session() as session:
        accounts = list((await session.execute(sa.select(KfCursor.open_kfid))).scalars())
    for open_kfid in accounts:
        try:
            await sync(runtime, open_kfid)
        except PlatformError as exc:
            logger.warning("wechat kf start-up sync failed", extra={"errcode": exc.errcode, "kind": exc.kind})
