"""Web IM channel: JSON over HTTP at /webhooks/im/webhook, answering in the same shape as Rasa's
REST channel, optionally pushing replies (and proactive messages) to a callback URL, plus the chat
page of the browser demo at /webhooks/im/.

Conversation ids are "im:<user id>"; the user id is trusted as a customer identity only when it is
signed with SIYU_IM_IDENTITY_SECRET; unsigned senders (and every sender while no secret is
configured) are anonymous visitors ("im:guest-<id>"). A conversation has at most a few turns in
flight in this process; more at once get 429 with Retry-After instead of queueing behind them.

Staff replies from the support desk (desk/replies.py) reach the chat page through a live stream of
server-sent events at /webhooks/im/stream, authenticated like the webhook: a visitor only ever sees
the replies of its own "im:guest-<id>" conversation.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Text, Tuple

import aiohttp
import sqlalchemy as sa
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from actions.db.engine import async_session, dispose_async_engines, in_transaction
from bot.settings import get_settings
from channels import inbound_text
from channels.multi_request import split_requests
from desk.models import DeskConversation, DeskMessage, StaffUser, now_utc

# set by this channel from what the server saw (the client's address); a client's own value is dropped
CLIENT_METADATA_KEY = "siyu_client"

logger = logging.getLogger("channels.im")

CHANNEL = "im"
PAGE = Path(__file__).resolve().parent / "web" / "chat.html"
SENDER_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
SIGNATURE_RE = re.compile(r"^[0-9a-fA-F]{64}$")
# metadata is the client's: bounded in size and depth before it reaches the tracker store
METADATA_MAX_DEPTH = 8
METADATA_MAX_BYTES = 8 * 1024
# button payloads a client may send: an intent of ours with at most an order number
BUTTON_INTENTS = {"affirm", "deny", "order_status", "cancel_order", "change_order", "return_refund", "request_human"}
PAYLOAD_RE = re.compile(r'^/([a-z_]+)(\{"order_id":\s*"[Ss][Yy]\d{14}"\})?$')
CALLBACK_TIMEOUT_S = 5.0
CALLBACK_RETRIES = 3
# a client over the per-conversation limit may try again after this many seconds
RETRY_AFTER_S = 2
# the staff reply stream: how often this process looks for new replies (one query for all open
# streams), the keep-alive comment that stops proxies from closing an idle stream, how many streams
# a process and a conversation may hold open, and the browser's reconnection delay
STREAM_POLL_S = 0.5
STREAM_KEEPALIVE_S = 15.0
STREAM_MAX_TOTAL = 500
STREAM_MAX_PER_CONVERSATION = 5
STREAM_RETRY_MS = 3000
STREAM_BATCH = 50
STREAM_BACKOFF_MAX_S = 10.0
# a database error is logged with its traceback at most this often (the stream keeps retrying)
STREAM_ERROR_LOG_EVERY_S = 30.0
MESSAGE_ID_RE = re.compile(r"^[0-9]{1,18}$")
DESK_TABLES = ("desk_conversations", "desk_messages", "staff_users")


class BadRequest(ValueError):
    """The request is malformed: answered with 400 and the reason."""


def sign_sender(secret: str, sender: str) -> str:
    return hmac.new(secret.encode(), sender.encode(), hashlib.sha256).hexdigest()


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting no further than `limit` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def check_metadata(metadata: Dict[str, Any]) -> Dict[str, Any]:
    """The client's metadata, if it is small, shallow, valid Unicode and free of our reserved key."""
    if _depth(metadata, METADATA_MAX_DEPTH) > METADATA_MAX_DEPTH:
        raise BadRequest(f"'metadata' is nested more than {METADATA_MAX_DEPTH} levels deep")
    try:
        size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("'metadata' holds text that is not valid Unicode")
    if size > METADATA_MAX_BYTES:
        raise BadRequest(f"'metadata' is larger than {METADATA_MAX_BYTES} bytes")
    return {k: v for k, v in metadata.items() if isinstance(k, str) and k != CLIENT_METADATA_KEY}


class ConversationGate:
    """Counts the turns of each conversation this process is handling (waiting for the
    conversation's lock or being answered). Rasa answers one turn of a conversation at a time, so a
    flood from one sender would otherwise queue for minutes and end in timeouts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: Dict[str, int] = {}

    def enter(self, conversation_id: str) -> bool:
        pending = self._pending.get(conversation_id, 0)
        if pending >= self.limit:
            return False
        self._pending[conversation_id] = pending + 1
        return True

    def leave(self, conversation_id: str) -> None:
        pending = self._pending.get(conversation_id, 0) - 1
        if pending > 0:
            self._pending[conversation_id] = pending
        else:
            self._pending.pop(conversation_id, None)


class StreamBusy(Exception):
    """More live streams than this process or this conversation may hold: answered with 429."""


def staff_event(message_id: int, text: str, at: Any, author_name: Optional[str]) -> str:
    """One staff reply as a server-sent event (JSON never holds a raw line break)."""
    data: Dict[str, Any] = {"message_id": message_id, "text": text,
                            "at": at.isoformat() + "Z" if hasattr(at, "isoformat") else at}
    if author_name:
        data["author_name"] = author_name
    return f"event: staff\nid: {message_id}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class _Subscriber:
    __slots__ = ("conversation_id", "wake")

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.wake = asyncio.Event()


class StaffFeed:
    """The staff replies of the conversations whose chat pages have a stream open in this process.

    One query every STREAM_POLL_S for all of them says which conversations changed (their latest
    reply, their number of undelivered replies); only those streams read their new replies, send
    them and mark them delivered. Nothing runs while no stream is open."""

    _messages = DeskMessage.__table__
    _conversations = DeskConversation.__table__
    _staff = StaffUser.__table__

    def __init__(self, max_total: int = STREAM_MAX_TOTAL,
                 max_per_conversation: int = STREAM_MAX_PER_CONVERSATION) -> None:
        self.max_total = max_total
        self.max_per_conversation = max_per_conversation
        self.closing = False
        self._subscribers: Dict[str, Set[_Subscriber]] = {}
        self._count = 0
        self._signatures: Dict[str, Tuple[Any, Any]] = {}
        self._task: Optional[asyncio.Task] = None
        self._tables_ok = False
        self.missing_tables_logged = False
        self._error_logged_at = -STREAM_ERROR_LOG_EVERY_S

    @property
    def open_streams(self) -> int:
        return self._count

    # --- subscriptions ----------------------------------------------------------------------------
    def join(self, conversation_id: str) -> _Subscriber:
        if self._count >= self.max_total:
            raise StreamBusy("too many live streams on this server")
        if len(self._subscribers.get(conversation_id, ())) >= self.max_per_conversation:
            raise StreamBusy("too many live streams for this conversation")
        subscriber = _Subscriber(conversation_id)
        self._subscribers.setdefault(conversation_id, set()).add(subscriber)
        self._count += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())
        return subscriber

    def leave(self, subscriber: _Subscriber) -> None:
        subscribers = self._subscribers.get(subscriber.conversation_id)
        if subscribers is None or subscriber not in subscribers:
            return
        subscribers.discard(subscriber)
        self._count -= 1
        if not subscribers:
            del self._subscribers[subscriber.conversation_id]
            self._signatures.pop(subscriber.conversation_id, None)

    def close(self) -> None:
        """The server is stopping: every stream ends (so the connections close at once)."""
        self.closing = True
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.wake.set()

    # --- the shared poll --------------------------------------------------------------------------
    async def _poll(self) -> None:
        delay = STREAM_POLL_S
        try:
            while not self.closing:
                await asyncio.sleep(delay)
                if not self._subscribers or self.closing:
                    break
                try:
                    changed = await self._changed(list(self._subscribers))
                except Exception as exc:  # noqa: BLE001 - logged; the poll tries again, slower
                    self.log_error("staff reply poll failed", exc)
                    delay = min(delay * 2, STREAM_BACKOFF_MAX_S)
                    continue
                delay = STREAM_POLL_S
                for conversation_id in changed:
                    for subscriber in self._subscribers.get(conversation_id, ()):
                        subscriber.wake.set()
        finally:
            self._task = None

    async def _changed(self, conversation_ids: List[str]) -> List[str]:
        m, c = self._messages, self._conversations
        queued = sa.func.sum(sa.case((m.c.delivery == "queued", 1), else_=0))
        rows = []
        async with async_session() as session:
            for start in range(0, len(conversation_ids), 500):
                chunk = conversation_ids[start:start + 500]
                rows += (await session.execute(
                    sa.select(c.c.conversation_id, sa.func.max(m.c.id), queued)
                    .select_from(m.join(c, c.c.id == m.c.conversation))
                    .where(m.c.kind == "reply", c.c.conversation_id.in_(chunk))
                    .group_by(c.c.conversation_id))).all()
        changed = []
        for conversation_id, last, undelivered in rows:
            signature = (last, undelivered)
            if conversation_id in self._subscribers and self._signatures.get(conversation_id) != signature:
                self._signatures[conversation_id] = signature
                changed.append(conversation_id)
        return changed

    # --- reading and marking ----------------------------------------------------------------------
    async def tables_ready(self) -> bool:
        """Whether the database has the desk's tables (an old database has not been migrated)."""
        if not self._tables_ok:
            async with async_session() as session:
                connection = await session.connection()
                names = await connection.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            self._tables_ok = all(table in names for table in DESK_TABLES)
        return self._tables_ok

    async def latest(self, conversation_id: str) -> int:
        """The id of the conversation's latest staff reply (0: none yet)."""
        m, c = self._messages, self._conversations
        async with async_session() as session:
            return (await session.execute(
                sa.select(sa.func.coalesce(sa.func.max(m.c.id), 0))
                .select_from(m.join(c, c.c.id == m.c.conversation))
                .where(c.c.conversation_id == conversation_id, m.c.kind == "reply"))).scalar_one()

    async def replies(self, conversation_id: str, cursor: int, floor: int) -> List[Any]:
        """Replies to send: those after `cursor` (not failed or refused), and those after `floor`
        still waiting for delivery (a reply committed late may have a lower id than one already sent)."""
        m, c, u = self._messages, self._conversations, self._staff
        async with async_session() as session:
            return list((await session.execute(
                sa.select(m.c.id, m.c.text, m.c.created_at, m.c.delivery, u.c.display_name)
                .select_from(m.join(c, c.c.id == m.c.conversation).outerjoin(u, u.c.username == m.c.author))
                .where(c.c.conversation_id == conversation_id, m.c.kind == "reply",
                       sa.or_(sa.and_(m.c.id > cursor, m.c.delivery.in_(("queued", "delivered"))),
                              sa.and_(m.c.id > floor, m.c.delivery == "queued")))
                .order_by(m.c.id).limit(STREAM_BATCH))).all())

    async def mark_delivered(self, message_ids: List[int]) -> None:
        m = self._messages

        async def work(session) -> None:
            from desk.models import DeskEvent

            for message_id in message_ids:
                done = await session.execute(sa.update(m).where(m.c.id == message_id, m.c.delivery == "queued")
                                             .values(delivery="delivered", delivered_at=now_utc()))
                if done.rowcount:  # the console shows the new delivery state live
                    conversation = (await session.execute(sa.select(m.c.conversation).where(
                        m.c.id == message_id))).scalar()
                    session.add(DeskEvent(conversation=conversation, kind="delivered", actor="system",
                                          detail={"message_id": message_id}))

        await in_transaction(work)

    async def _mark(self, message_ids: List[int], conversation_id: str) -> bool:
        try:
            await self.mark_delivered(message_ids)
            return True
        except Exception as exc:  # noqa: BLE001 - logged; the stream tries again
            self.log_error("marking staff replies delivered failed", exc, conversation=conversation_id)
            return False

    def log_error(self, what: str, exc: BaseException, **extra: Any) -> None:
        """Database trouble: the traceback at most every STREAM_ERROR_LOG_EVERY_S, else one line."""
        now = time.monotonic()
        extra["error"] = f"{type(exc).__name__}: {exc}"[:300]
        if now - self._error_logged_at >= STREAM_ERROR_LOG_EVERY_S:
            self._error_logged_at = now
            logger.warning(what, extra=extra, exc_info=exc)
        else:
            logger.warning(what, extra=extra)

    # --- one stream -------------------------------------------------------------------------------
    async def serve(self, request: Request, subscriber: _Subscriber, cursor: int, floor: int) -> None:
        """Send the conversation's staff replies until the client goes (the handler is cancelled)
        or the server stops."""
        if hasattr(request.stream, "keep_alive"):
            # the connection closes with the stream (a stopping server need not wait for it idling)
            request.stream.keep_alive = False
        response = await request.respond(
            content_type="text/event-stream; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.send(f"retry: {STREAM_RETRY_MS}\n: connected\n\n")
        loop = asyncio.get_running_loop()
        keepalive_at = loop.time() + STREAM_KEEPALIVE_S
        retry_at: Optional[float] = None
        backoff = 0.0
        due = True  # read at once: replies waiting for delivery, or sent while connecting
        unmarked: Set[int] = set()  # sent, not yet marked delivered
        conversation_id = subscriber.conversation_id
        while not self.closing:
            if due:
                due = False
                subscriber.wake.clear()
                try:
                    rows = await asyncio.shield(self.replies(conversation_id, cursor, floor))
                except Exception as exc:  # noqa: BLE001 - logged; this stream tries again
                    self.log_error("staff reply stream read failed", exc, conversation=conversation_id)
                    backoff = min(max(backoff * 2, STREAM_POLL_S), STREAM_BACKOFF_MAX_S)
                    retry_at = loop.time() + backoff
                    rows = []
                else:
                    backoff = 0.0
                    due = len(rows) >= STREAM_BATCH
                for message_id, text, at, delivery, author_name in rows:
                    cursor = max(cursor, message_id)
                    if message_id in unmarked:
                        continue
                    await response.send(staff_event(message_id, text, at, author_name))
                    keepalive_at = loop.time() + STREAM_KEEPALIVE_S
                    if delivery == "queued":
                        unmarked.add(message_id)
            if unmarked:
                # shielded: a client that leaves right after the reply reached it must not leave
                # the reply "queued" (its next page would show it again)
                if await asyncio.shield(self._mark(sorted(unmarked), conversation_id)):
                    unmarked.clear()
                else:  # marked on the next round
                    backoff = min(max(backoff * 2, STREAM_POLL_S), STREAM_BACKOFF_MAX_S)
                    retry_at = loop.time() + backoff
                    if len(unmarked) > 1000:
                        unmarked.clear()
            if due:
                continue
            until = keepalive_at if retry_at is None else min(keepalive_at, retry_at)
            timeout = until - loop.time()
            if timeout > 0 and not subscriber.wake.is_set():
                try:
                    await asyncio.wait_for(subscriber.wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            now = loop.time()
            if subscriber.wake.is_set():
                due = True
            if retry_at is not None and now >= retry_at:
                retry_at, due = None, True
            if now >= keepalive_at and not self.closing:
                await response.send(": keep-alive\n\n")
                keepalive_at = now + STREAM_KEEPALIVE_S


class CallbackOutputChannel(OutputChannel):
    """Pushes each message to the shop's callback URL (bounded time, retried, failures logged)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    async def send_response(self, recipient_id: Text, message: Dict[Text, Any]) -> None:
        payload = {"recipient_id": recipient_id}
        payload.update({k: v for k, v in message.items() if v})
        await post_callback(self.url, [payload])

    async def send_text_message(self, recipient_id: Text, text: Text, **kwargs: Any) -> None:
        await post_callback(self.url, [{"recipient_id": recipient_id, "text": text}])


async def post_callback(url: str, messages: List[Dict[str, Any]]) -> bool:
    delay = 0.2
    for attempt in range(1, CALLBACK_RETRIES + 1):
        try:
            timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(url, json=messages) as resp:
                    if resp.status < 500:
                        if resp.status >= 400:
                            logger.error("callback rejected", extra={"status": resp.status})
                            return False
                        return True
                    logger.warning("callback failed", extra={"status": resp.status, "attempt": attempt})
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("callback failed", extra={"error": type(exc).__name__, "attempt": attempt})
        await asyncio.sleep(delay)
        delay *= 4
    logger.error("callback gave up", extra={"messages": len(messages)})
    return False


class WebIMInput(InputChannel):
    @classmethod
    def name(cls) -> Text:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        credentials = credentials or {}
        return cls(callback_url=credentials.get("callback_url"))

    def __init__(self, callback_url: Optional[str] = None) -> None:
        settings = get_settings()
        self.callback_url = callback_url or settings.im_callback_url
        self.max_chars = settings.im_max_message_chars
        self.secret = settings.im_identity_secret.get_secret_value() if settings.im_identity_secret else None
        self.client_ip_header = settings.im_client_ip_header
        self.gate = ConversationGate(settings.im_max_pending_per_conversation)
        self.staff_feed = StaffFeed()

    def get_output_channel(self) -> Optional[OutputChannel]:
        # used for proactive messages (trigger_intent with output_channel=latest)
        return CallbackOutputChannel(self.callback_url) if self.callback_url else None

    # --- request parsing --------------------------------------------------------------------------
    def parse(self, request: Request) -> Dict[str, Any]:
        try:
            body = json.loads(request.body or b"")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body is not valid JSON")
        except RecursionError:
            raise BadRequest("body is nested too deeply")
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        sender = body.get("sender")
        if not isinstance(sender, str) or not SENDER_RE.match(sender):
            raise BadRequest("'sender' is required: 1-64 characters of letters, digits, _ . @ -")
        message, payload = body.get("message"), body.get("payload")
        if payload is not None:
            if not isinstance(payload, str):
                raise BadRequest("'payload' must be a string")
            match = PAYLOAD_RE.match(payload)
            if not match or match.group(1) not in BUTTON_INTENTS:
                raise BadRequest("'payload' is not a button of this assistant")
        elif not isinstance(message, str):
            raise BadRequest("'message' is required and must be a string")
        metadata = body.get("metadata")
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict):
            raise BadRequest("'metadata' must be an object")
        metadata = check_metadata(metadata)
        mode = body.get("mode", "sync")
        if mode not in ("sync", "callback"):
            raise BadRequest("'mode' must be 'sync' or 'callback'")
        if mode == "callback" and not self.callback_url:
            raise BadRequest("callback mode needs a configured callback URL")
        return {"sender": sender, "message": message, "payload": payload, "metadata": metadata, "mode": mode,
                "signature": body.get("signature")}

    @staticmethod
    def stream_params(request: Request) -> Tuple[str, Optional[str], Optional[int]]:
        """sender, signature and the last message id the client has (`after`, or the Last-Event-ID
        of the browser's reconnection) of a stream request."""
        sender = request.args.get("sender")
        if not isinstance(sender, str) or not SENDER_RE.match(sender):
            raise BadRequest("'sender' is required: 1-64 characters of letters, digits, _ . @ -")
        signature = request.args.get("signature")
        after: Optional[int] = None
        raw = request.args.get("after")
        if raw:
            if not MESSAGE_ID_RE.match(raw):
                raise BadRequest("'after' must be a message id")
            after = int(raw)
        last_event_id = (request.headers.get("last-event-id") or "").strip()
        if MESSAGE_ID_RE.match(last_event_id):
            after = max(after or 0, int(last_event_id))
        return sender, signature if isinstance(signature, str) else None, after

    def conversation_id(self, sender: str, signature: Optional[str]) -> str:
        if (self.secret is not None and isinstance(signature, str) and SIGNATURE_RE.match(signature)
                and hmac.compare_digest(sign_sender(self.secret, sender), signature.lower())):
            return f"{CHANNEL}:{sender}"
        # unsigned visitors are served anonymously: "guest-" ids never match a customer identity
        return f"{CHANNEL}:guest-{sender}"

    def client_address(self, request: Request) -> Optional[str]:
        """Where the request came from: the configured header of a trusted reverse proxy, or the peer."""
        if self.client_ip_header:
            forwarded = request.headers.get(self.client_ip_header, "")
            address = forwarded.split(",")[0].strip()
            if address:
                return address[:64]
        return request.ip or None

    # --- handling ---------------------------------------------------------------------------------
    async def handle(self, request: Request, on_new_message: Callable[[UserMessage], Awaitable[Any]],
                     body: Dict[str, Any]) -> List[Dict[str, Any]]:
        conversation_id = self.conversation_id(body["sender"], body["signature"])
        metadata = dict(body["metadata"])
        address = self.client_address(request)
        if address:
            metadata[CLIENT_METADATA_KEY] = {"address": address}
        if body["payload"] is not None:
            texts = [body["payload"]]
        else:
            cleaned = inbound_text.clean(body["message"], self.max_chars)
            if cleaned.truncated:
                logger.info("message truncated", extra={"conversation": conversation_id,
                                                        "chars": len(body["message"])})
                metadata["truncated"] = True
            texts = [cleaned.text] if cleaned.empty else await self._requests(request, cleaned.text)
        collector = CollectingOutputChannel()
        for text in texts:
            await on_new_message(UserMessage(text, collector, conversation_id, input_channel=CHANNEL,
                                             metadata=metadata))
        # replies go to the client under the id it knows
        for message in collector.messages:
            message["recipient_id"] = body["sender"]
        return collector.messages

    @staticmethod
    async def _requests(request: Request, text: str) -> List[str]:
        agent = getattr(request.app.ctx, "agent", None)
        if agent is None or not agent.is_ready():
            return [text]
        return await split_requests(text, agent.parse_message)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("im_webhook", __name__)

        @bp.route("/", methods=["GET"])
        async def page(request: Request) -> HTTPResponse:
            return await response.file(str(PAGE), mime_type="text/html; charset=utf-8")

        @bp.route("/health", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/demo/customers", methods=["GET"])
        async def demo_customers(request: Request) -> HTTPResponse:
            if not get_settings().demo:
                return response.json({"error": "only available in demo mode"}, status=404)
            from channels.demo_identities import demo_customers as load

            customers = await load()
            for customer in customers:
                # the page acts as these demo customers: it gets their signatures (demo mode only)
                customer["signature"] = sign_sender(self.secret, customer["sender"]) if self.secret else None
            return response.json(customers)

        @bp.route("/stream", methods=["GET"])
        async def stream(request: Request) -> Optional[HTTPResponse]:
            try:
                sender, signature, after = self.stream_params(request)
            except BadRequest as exc:
                return response.json({"error": str(exc)}, status=400)
            return await self._stream(request, self.conversation_id(sender, signature), after)

        @bp.listener("before_server_stop")
        async def end_streams(*_: Any) -> None:
            self.staff_feed.close()

        @bp.listener("after_server_stop")
        async def dispose_engines(*_: Any) -> None:
            # the pooled SQLite connections' worker threads would keep the stopped process alive
            # (the demo list and the streams use the async engine in the Rasa server)
            await dispose_async_engines()

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            try:
                body = self.parse(request)
            except BadRequest as exc:
                logger.warning("bad request", extra={"reason": str(exc)})
                return response.json({"error": str(exc)}, status=400)
            conversation_id = self.conversation_id(body["sender"], body["signature"])
            if not self.gate.enter(conversation_id):
                logger.warning("too many messages at once", extra={"conversation": conversation_id})
                return response.json({"error": "too many messages at once from this sender, "
                                               f"try again in {RETRY_AFTER_S} s", "retry_after": RETRY_AFTER_S},
                                     status=429, headers={"Retry-After": str(RETRY_AFTER_S)})
            if body["mode"] == "callback":
                asyncio.create_task(self._handle_and_push(request, on_new_message, body, conversation_id))
                return response.json({"status": "accepted"}, status=202)
            try:
                messages = await self.handle(request, on_new_message, body)
            except Exception:  # noqa: BLE001 - the client gets a clean 500, the process lives on
                logger.exception("message handling failed", extra={"sender": body["sender"]})
                return response.json({"error": "internal error"}, status=500)
            finally:
                self.gate.leave(conversation_id)
            return response.json(messages)

        return bp

    async def _stream(self, request: Request, conversation_id: str, after: Optional[int]) -> Optional[HTTPResponse]:
        """The conversation's staff replies as server-sent events: with `after`, every reply after
        it; without, the replies still waiting for delivery and every new one."""
        feed = self.staff_feed
        if feed.closing:
            return response.json({"error": "the server is stopping"}, status=503,
                                 headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            subscriber = feed.join(conversation_id)
        except StreamBusy as exc:
            logger.warning("stream refused", extra={"conversation": conversation_id, "reason": str(exc)})
            return response.json({"error": f"{exc}, try again in {RETRY_AFTER_S} s", "retry_after": RETRY_AFTER_S},
                                 status=429, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            try:
                # shielded: a client leaving now must not cut a database call short
                if not await asyncio.shield(feed.tables_ready()):
                    if not feed.missing_tables_logged:
                        feed.missing_tables_logged = True
                        logger.error("staff reply stream unavailable: the desk tables are missing "
                                     "(the database needs its migrations)")
                    return response.json({"error": "staff replies are not available: the database has no "
                                                   "desk tables yet (run the migrations: ./siyu migrate)"},
                                         status=503)
                start = after if after is not None else await asyncio.shield(feed.latest(conversation_id))
            except Exception as exc:  # noqa: BLE001 - the client retries later
                feed.log_error("staff reply stream could not start", exc, conversation=conversation_id)
                return response.json({"error": "the database is not available, try again later"}, status=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
            await feed.serve(request, subscriber, cursor=start, floor=after or 0)
        finally:
            feed.leave(subscriber)
        return None

    async def _handle_and_push(self, request, on_new_message, body, conversation_id: str) -> None:
        try:
            try:
                messages = await self.handle(request, on_new_message, body)
            finally:
                self.gate.leave(conversation_id)
            await post_callback(self.callback_url, messages)
        except Exception:  # noqa: BLE001
            logger.exception("callback-mode handling failed", extra={"sender": body["sender"]})
