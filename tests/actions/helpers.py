"""Building trackers and running actions the way the Rasa server does."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from bot.settings import REPO_ROOT


def load_domain() -> Dict[str, Any]:
    domain: Dict[str, Any] = {}
    for path in sorted((REPO_ROOT / "bot" / "domain").glob("*.yml")):
        part = yaml.safe_load(path.read_text(encoding="utf-8"))
        for key, value in part.items():
            if isinstance(value, dict):
                domain.setdefault(key, {}).update(value)
            elif isinstance(value, list):
                domain.setdefault(key, []).extend(value)
    return domain


DOMAIN = load_domain()


def tracker(sender: str, text: str = "", intent: Optional[str] = None, slots: Optional[Dict[str, Any]] = None,
            entities: Optional[List[Dict[str, Any]]] = None, events: Optional[List[Dict[str, Any]]] = None,
            active_loop: Optional[str] = None) -> Tracker:
    all_slots = {name: None for name in DOMAIN["slots"]}
    all_slots.update(slots or {})
    latest = {"text": text, "intent": {"name": intent, "confidence": 1.0} if intent else {},
              "entities": entities or [], "intent_ranking": []}
    return Tracker(sender_id=sender, slots=all_slots, latest_message=latest, events=events or [],
                   paused=False, followup_action=None, active_loop={"name": active_loop} if active_loop else {},
                   latest_action_name="action_listen")


async def run(action, t: Tracker) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    dispatcher = CollectingDispatcher()
    events = await action.run(dispatcher, t, DOMAIN)
    return dispatcher.messages, events or []


def responses(messages: List[Dict[str, Any]]) -> List[str]:
    return [m.get("response") for m in messages]


def slot_events(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}
