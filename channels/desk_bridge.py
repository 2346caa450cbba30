"""The Rasa server's end of the escalation desk: the console tells Rasa that a person has taken a
conversation (ConversationPaused: the bot stays silent, customer messages are still recorded) or
handed it back (ConversationResumed), with the slots the dialogue needs, the way Rasa's own
`/conversations/<id>/tracker/events` does it (under the conversation's lock) but without opening
Rasa's whole HTTP API.

POST /webhooks/desk_bridge/webhook, header Authorization: Bearer <SIYU_DESK_BRIDGE_SECRET>
    {"conversation_id": "im:u10002", "events": [{"event": "pause"}, {"event": "slot", ...}]}
 -> 200 {"paused": true}   400 malformed   403 wrong secret   503 model not loaded / not configured
"""
from __future__ import annotations

import hmac
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.server import update_conversation_with_events
from rasa.shared.core.events import Event
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.settings import get_settings

logger = logging.getLogger("channels.desk_bridge")
# the only events the desk may add: pause/resume and the desk's own slots
ALLOWED_EVENTS = {"pause", "resume", "slot"}
DESK_SLOTS = {"handoff_queued"}


class BadEvents(ValueError):
    pass


def parse(body: Any) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise BadEvents("body must be a JSON object")
    conversation_id = body.get("conversation_id")
    if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= 255:
        raise BadEvents("conversation_id must be a string of 1-255 characters")
    raw = body.get("events")
    if not isinstance(raw, list) or not 0 < len(raw) <= 10:
        raise BadEvents("events must be a list of 1-10 events")
    events: List[Event] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("event") not in ALLOWED_EVENTS:
            raise BadEvents(f"only these events are accepted: {sorted(ALLOWED_EVENTS)}")
        if item["event"] == "slot" and item.get("name") not in DESK_SLOTS:
            raise BadEvents(f"only these slots may be set: {sorted(DESK_SLOTS)}")
        event = Event.from_parameters(item)
        if event is None:
            raise BadEvents("an event could not be read")
        events.append(event)
    return {"conversation_id": conversation_id, "events": events}


class DeskBridgeInput(InputChannel):
    @classmethod
    def name(cls) -> Text:
        return "desk_bridge"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        return cls()

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("desk_bridge", __name__)

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            secret = _secret()
            if not secret:
                return response.json({"error": "desk bridge not configured (SIYU_DESK_BRIDGE_SECRET)"}, status=503)
            offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(offered.encode(), secret.encode()):
                logger.warning("desk bridge call refused", extra={"remote": request.ip})
                return response.json({"error": "forbidden"}, status=403)
            try:
                call = parse(request.json)
            except Exception as exc:  # noqa: BLE001 - Sanic raises its own error for invalid JSON
                return response.json({"error": str(exc)[:200] if isinstance(exc, BadEvents) else "invalid JSON"},
                                     status=400)
            agent = getattr(request.app.ctx, "agent", None)
            if agent is None or not agent.is_ready():
                return response.json({"error": "model not loaded yet"}, status=503)
            conversation_id = call["conversation_id"]
            try:
                async with agent.lock_store.lock(conversation_id):
                    tracker = await update_conversation_with_events(conversation_id, agent.processor, agent.domain,
                                                                    call["events"])
                    await agent.tracker_store.save(tracker)
            except Exception:  # noqa: BLE001 - the console retries; this process lives on
                logger.exception("desk bridge update failed", extra={"conversation": conversation_id})
                return response.json({"error": "internal error"}, status=500)
            logger.info("desk changed a conversation", extra={"conversation": conversation_id,
                                                              "events": [e.type_name for e in call["events"]]})
            return response.json({"paused": tracker.is_paused()})

        return bp


def _secret() -> Optional[str]:
    secret = get_settings().desk_bridge_secret
    return secret.get_secret_value() if secret is not None else None
