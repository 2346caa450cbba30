"""Web IM channel: JSON over HTTP at /webhooks/im/webhook, answering in the same shape as Rasa's
REST channel, optionally pushing replies (and proactive messages) to a callback URL, plus the chat
page of the browser demo at /webhooks/im/.

Conversation ids are "im:<user id>"; the user id is trusted as a customer identity only when it is
signed with SIYU_IM_IDENTITY_SECRET; unsigned senders (and every sender while no secret is
configured) are anonymous visitors ("im:guest-<id>"). A conversation has at most a few turns in
flight in this process; more at once get 429 with Retry-After instead of queueing behind them.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text

import aiohttp
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.settings import get_settings
from channels import inbound_text
from channels.multi_request import split_requests

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

    async def _handle_and_push(self, request, on_new_message, body, conversation_id: str) -> None:
        try:
            try:
                messages = await self.handle(request, on_new_message, body)
            finally:
                self.gate.leave(conversation_id)
            await post_callback(self.callback_url, messages)
        except Exception:  # noqa: BLE001
            logger.exception("callback-mode handling failed", extra={"sender": body["sender"]})
