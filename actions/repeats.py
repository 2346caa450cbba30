"""No reply twice in a session: a response the bot already gave, with the same facts, is replaced by
its `_again` (then `_again2`) form from the domain's responses when the domain has one.

Half of the bot's turns in replayed real sessions repeated something it had already said. The
action server sees response names and their variables, not the rendered text, so a repeat is the
same response name whose earlier rendered text contains every variable value of the new one
("the same policy answer again" is a repeat, "another policy answer" is not).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from rasa_sdk import Tracker

from bot.settings import REPO_ROOT

FORMS = ("_again", "_again2")
NOT_VARIABLES = {"text", "buttons", "elements", "custom", "template", "response", "image", "attachment"}


@functools.lru_cache(maxsize=1)
def response_names() -> frozenset:
    names = set()
    for path in (REPO_ROOT / "bot" / "domain").glob("*.yml"):
        names.update((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("responses") or {})
    return frozenset(names)


def session_events(tracker: Tracker) -> List[Dict[str, Any]]:
    """The events of the current session (after the last `session_started`; all of them if none)."""
    events = tracker.events or []
    for index in range(len(events) - 1, -1, -1):
        if events[index].get("event") == "session_started":
            return events[index + 1:]
    return events


def session_replies(tracker: Tracker) -> List[Tuple[str, str]]:
    """(response name, rendered text) of the bot's replies in the current session, oldest first."""
    return [((e.get("metadata") or {}).get("utter_action") or "", e.get("text") or "")
            for e in session_events(tracker) if e.get("event") == "bot"]


def _values(message: Dict[str, Any]) -> List[str]:
    return [str(v) for k, v in message.items()
            if k not in NOT_VARIABLES and isinstance(v, (str, int, float)) and len(str(v)) >= 2]


def _repeats(name: str, values: Sequence[str], earlier: Sequence[Tuple[str, str]]) -> bool:
    return any(said == name and all(v in text for v in values) for said, text in earlier)


def fresh_form(message: Dict[str, Any], earlier: Sequence[Tuple[str, str]]) -> Optional[str]:
    """The form of the message's response to send: itself unless that repeats, then the first of
    its `_again` forms that does not; None when it has no other form."""
    name = message.get("response")
    values = _values(message)
    if not name or not _repeats(name, values, earlier):
        return name
    base = name
    for form in FORMS:
        base = base[: -len(form)] if base.endswith(form) else base
    chain = [base] + [base + f for f in FORMS if base + f in response_names()]
    for candidate in chain:
        if not _repeats(candidate, values, earlier):
            return candidate
    return name


def avoid_repeats(messages: List[Dict[str, Any]], tracker: Tracker) -> None:
    """Rewrites, in place, the responses of an action's messages that would repeat a reply."""
    earlier = session_replies(tracker)
    for message in messages:
        form = fresh_form(message, earlier)
        if form and form != message.get("response"):
            message["response"] = message["template"] = form
        if message.get("response"):
            # later messages of the same action count this one as said (its text is not known:
            # the name alone marks it)
            earlier.append((message["response"], " ".join(_values(message))))
