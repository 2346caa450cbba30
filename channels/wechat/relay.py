"""The Rasa server's end of the WeChat gateway: the gateway process (channels/wechat/gateway.py)
verifies, stores and acknowledges the platform's callbacks and keeps the outbox; here Rasa only
answers the turns it relays, like the web IM webhook does. So a WeChat message costs the Rasa
process what an IM message costs, and the connector bookkeeping runs on another core.

POST /webhooks/wechat_relay/webhook, header X-Siyu-Relay-Token (a secret the launcher gives both
processes; the gateway has already checked the platform's signature, so this endpoint must not be
usable by anyone else: it speaks for any WeChat customer):

    {"conversation_id": "mp:openid", "channel": "mp", "text": "...", "split": true,
     "message_id": "mp-<dedup key>", "metadata": {...}}
 -> 200 {"replies": [{"text": ...}, ...]}   503 model not loaded yet   403 wrong token   400 malformed
"""
from __future__ import annotations

import hmac
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.settings import get_settings
from channels.multi_request import split_requests
from channels.wechat.conversation.replies import ReplyCollector

logger = logging.getLogger("channels.wechat.relay")
TOKEN_HEADER = "X-Siyu-Relay-Token"
# input channel names as Rasa records them (the connectors' names)
INPUT_CHANNEL = {"wecom_kf": "wecom_kf", "mp": "wechat_mp", "mini": "wechat_mini", "group": "wecom_group"}
MAX_TEXT_CHARS = 10_000


class BadTurn(ValueError):
    pass


def parse_turn(body: Any) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise BadTurn("body must be a JSON object")
    turn = {}
    for key in ("conversation_id", "channel", "text", "message_id"):
        value = body.get(key)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
            raise BadTurn(f"{key} must be a non-empty string")
        turn[key] = value
    if turn["channel"] not in INPUT_CHANNEL:
        raise BadTurn("unknown channel")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadTurn("metadata must be an object")
    turn["metadata"] = metadata
    turn["split"] = bool(body.get("split"))
    return turn


async def answer_turn(agent, on_new_message: Callable[[UserMessage], Awaitable[Any]],
                      turn: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Rasa's replies to one WeChat message (two requests in it are answered one after the other)."""
    texts = await split_requests(turn["text"], agent.parse_message) if turn["split"] else [turn["text"]]
    collector = ReplyCollector(turn["channel"])
    for n, text in enumerate(texts):
        await on_new_message(UserMessage(text, collector, turn["conversation_id"],
                                         input_channel=INPUT_CHANNEL[turn["channel"]],
                                         message_id=f"{turn['message_id']}-{n}"[:120], metadata=turn["metadata"]))
    return collector.messages


class WeChatRelayInput(InputChannel):
    @classmethod
    def name(cls) -> Text:
        return "wechat_relay"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        return cls()

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("wechat_relay", __name__)

        @bp.route("/health", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok" if _secret() else "not configured"})

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            secret = _secret()
            if not secret:
                return response.json({"error": "relay not configured (SIYU_WECHAT_RELAY_SECRET)"}, status=503)
            offered = request.headers.get(TOKEN_HEADER) or ""
            if not hmac.compare_digest(offered.encode(), secret.encode()):
                logger.warning("wechat relay call refused", extra={"remote": request.ip})
                return response.json({"error": "forbidden"}, status=403)
            try:
                turn = parse_turn(request.json)
            except Exception as exc:  # noqa: BLE001 - Sanic raises its own error for invalid JSON
                return response.json({"error": str(exc)[:200] if isinstance(exc, BadTurn) else "invalid JSON"},
                                     status=400)
            agent = getattr(request.app.ctx, "agent", None)
            if agent is None or not agent.is_ready():
                return response.json({"error": "model not loaded yet"}, status=503)
            try:
                replies = await answer_turn(agent, on_new_message, turn)
            except Exception:  # noqa: BLE001 - the gateway records the failure; this process lives on
                logger.exception("wechat relay turn failed", extra={"conversation": turn["conversation_id"]})
                return response.json({"error": "internal error"}, status=500)
            return response.json({"replies": replies})

        return bp


def _secret() -> Optional[str]:
    secret = get_settings().wechat_relay_secret
    return secret.get_secret_value() if secret is not None else None
