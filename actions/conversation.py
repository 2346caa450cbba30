"""Turn-taking: greetings, thanks, goodbyes, "are you a bot", and bare yes / no.

Real sessions showed the bot greeting again mid-conversation and answering every "好的" with the
same follow-up question. These replies are actions so that their second and third time in a
session use the shorter `_again` forms (actions/repeats.py, for every action); a yes / no right
after a confirmation question (a complaint or an unsubscribe the NLU was not sure about) carries
that action out or drops it.
"""
from __future__ import annotations

import abc
import logging
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Tracker

from actions.action_base import ShopAction
from actions.repeats import session_events

logger = logging.getLogger("actions.conversation")

CONFIRM_COMPLAINT = "utter_confirm_complaint"
CONFIRM_UNSUBSCRIBE = "utter_confirm_unsubscribe"


def last_bot_question(tracker: Tracker) -> Optional[str]:
    """The response the bot ended its previous turn with (before the current user message)."""
    events = session_events(tracker)
    users = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if not users:
        return None
    for event in reversed(events[:users[-1]]):
        if event.get("event") == "user":
            return None
        if event.get("event") == "bot":
            return (event.get("metadata") or {}).get("utter_action")
    return None


def said_this_turn(tracker: Tracker) -> List[str]:
    """Responses the bot already used since the customer's current message (e.g. a validation's
    hint, which then is the question and needs no second one)."""
    names: List[str] = []
    for event in reversed(tracker.events or []):
        if event.get("event") == "user":
            break
        if event.get("event") == "bot" and (event.get("metadata") or {}).get("utter_action"):
            names.append(event["metadata"]["utter_action"])
    return names


def previous_user_text(tracker: Tracker) -> str:
    """What the customer said before the current message (what a confirmation was about)."""
    texts = [e.get("text") or "" for e in session_events(tracker) if e.get("event") == "user"]
    return texts[-2] if len(texts) >= 2 else ""


class _OnceAction(ShopAction, abc.ABC):
    response = ""

    @abc.abstractmethod
    def name(self) -> Text:
        ...

    async def act(self, dispatcher, tracker, domain) -> List[Dict[Text, Any]]:
        # the second and third time in a session: shorter forms (actions/repeats.py)
        dispatcher.utter_message(response=self.response)
        return []


class ActionGreet(_OnceAction):
    response = "utter_greet"

    def name(self) -> Text:
        return "action_greet"


class ActionThanks(_OnceAction):
    response = "utter_thanks"

    def name(self) -> Text:
        return "action_thanks"


class ActionBotChallenge(_OnceAction):
    response = "utter_bot_challenge"

    def name(self) -> Text:
        return "action_bot_challenge"


class ActionGoodbye(_OnceAction):
    response = "utter_goodbye"

    def name(self) -> Text:
        return "action_goodbye"


class ActionAffirm(ShopAction):
    """A yes: carries out what the bot just asked to confirm, otherwise acknowledges it."""

    def name(self) -> Text:
        return "action_affirm"

    async def act(self, dispatcher, tracker, domain) -> List[Dict[Text, Any]]:
        asked = last_bot_question(tracker)
        if asked == CONFIRM_COMPLAINT:
            from actions.customer_care import register_complaint

            return await register_complaint(dispatcher, tracker, previous_user_text(tracker))
        if asked == CONFIRM_UNSUBSCRIBE:
            from actions.membership import opt_out

            return await opt_out(dispatcher, tracker)
        dispatcher.utter_message(response="utter_affirm_idle")
        return []


class ActionDeny(ShopAction):
    """A no: drops what the bot asked to confirm, otherwise says it is there when needed."""

    def name(self) -> Text:
        return "action_deny"

    async def act(self, dispatcher, tracker, domain) -> List[Dict[Text, Any]]:
        if last_bot_question(tracker) in (CONFIRM_COMPLAINT, CONFIRM_UNSUBSCRIBE):
            dispatcher.utter_message(response="utter_confirmation_dropped")
            return []
        dispatcher.utter_message(response="utter_deny_idle")
        return []
