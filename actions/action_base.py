"""Base class of every custom action: bounded time, any failure becomes a polite reply plus a
logged error instead of a broken conversation, and no reply repeats one already given in the
session (actions/repeats.py)."""
from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any, Dict, List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.repeats import avoid_repeats
from bot.settings import Settings, get_settings

logger = logging.getLogger("actions")


class ShopAction(Action, abc.ABC):
    """Subclasses implement `act`; `run` adds the timeout and the error handling."""

    @abc.abstractmethod
    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        ...

    @property
    def settings(self) -> Settings:
        return get_settings()

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                  domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        # the whole action gets a budget of a few I/O timeouts: it may make several calls
        budget = self.settings.action_io_timeout * 3
        try:
            events = await asyncio.wait_for(self.act(dispatcher, tracker, domain), timeout=budget)
            avoid_repeats(dispatcher.messages, tracker)
            return events
        except asyncio.TimeoutError:
            logger.error("action timed out", extra={"action": self.name(), "conversation": tracker.sender_id,
                                                    "budget_s": budget})
        except Exception:  # noqa: BLE001 - a failing action must not kill the conversation
            logger.exception("action failed", extra={"action": self.name(), "conversation": tracker.sender_id})
        # drop half-written replies so the customer does not get a fragment of an answer
        dispatcher.messages.clear()
        dispatcher.utter_message(response="utter_action_error")
        return []
