"""Complaints and requests for a person: the conversation goes to the support desk's queue (desk/)
with a reason and a priority, and the customer is told honestly what happens next: the expected
wait inside business hours, a numbered ticket and a callback promise outside them. A complaint is
also a ticket; "不用了" while waiting cancels the request."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Text
from zoneinfo import ZoneInfo

from rasa_sdk.events import SlotSet

from actions.action_base import ShopAction
from actions.conversation import CONFIRM_COMPLAINT
from actions.db.engine import in_transaction
from actions.db.models import TicketKind
from actions.identity import customer_for
from actions.repositories import ticket_repository
from actions.templates import fmt, t, vocabulary
from bot.settings import ShopConfig, get_settings
from desk import handoff

logger = logging.getLogger("actions.customer_care")


def _reason(tracker, default: str) -> str:
    """A reason the NLU found in the message (e.g. anger), else the action's own."""
    for entity in tracker.latest_message.get("entities") or []:
        if entity.get("entity") == "handoff_reason" and entity.get("value") in handoff.REASONS:
            return entity["value"]
    return default


def opening_text(shop: ShopConfig, now: Optional[datetime] = None) -> str:
    now = now or datetime.now(timezone.utc)
    opening = handoff.next_opening(shop, now)
    today = now.astimezone(ZoneInfo(shop.timezone)).date()
    time_text = f"{opening:%H:%M}"
    if opening.date() == today:
        return fmt("opening_today", time=time_text)
    if (opening.date() - today).days == 1:
        return fmt("opening_tomorrow", time=time_text)
    return fmt("opening_later", month=opening.month, day=opening.day, time=time_text)


async def _ticket(session, kind: str, tracker, customer, text: str):
    """The customer's open ticket of this kind (a repeat adds to it) or a new one."""
    recent = await ticket_repository.recent_for_customer(
        session, customer.id if customer else None, tracker.sender_id, kinds=[kind], limit=1)
    open_ticket = next((t for t in recent if t.status in ticket_repository.OPEN_STATUSES), None)
    if open_ticket is not None:
        open_ticket.detail = (open_ticket.detail + "\n" + text).strip()
        return open_ticket
    return await ticket_repository.create_in(session, kind=kind, customer_id=customer.id if customer else None,
                                             order_id=None, conversation_id=tracker.sender_id, reason=text[:100],
                                             detail=text)


async def hand_over(tracker, reason: str, ticket_kind: Optional[str] = None,
                    ticket_no: Optional[str] = None, text: Optional[str] = None) -> Dict[str, Any]:
    """Queue the conversation for a person (a ticket of `ticket_kind` is made or extended for
    complaints, and outside business hours); returns what the handoff responses need. `text` is
    what the customer asked for (default: the current message)."""
    text = (text or tracker.latest_message.get("text") or "")[:1000]
    shop = get_settings().shop
    in_hours = handoff.in_business_hours(shop)
    reason = _reason(tracker, reason)

    async def work(session):
        customer = await customer_for(session, tracker.sender_id)
        ticket = None
        if ticket_kind and (ticket_kind == TicketKind.complaint.value or not in_hours):
            ticket = await _ticket(session, ticket_kind, tracker, customer, text)
        result = await handoff.request(
            session, shop, tracker.sender_id, reason, text, customer_id=customer.id if customer else None,
            customer_name=customer.name if customer else "", customer_level=customer.level if customer else None,
            ticket_no=ticket.ticket_no if ticket else ticket_no, actor="customer")
        return result, ticket

    result, ticket = await in_transaction(work)
    hours = shop.business_hours
    logger.info("handoff requested", extra={"conversation": tracker.sender_id, "reason": reason,
                                            "already": result.already, "in_hours": in_hours})
    return {"in_hours": in_hours, "already": result.already, "position": result.position,
            "ahead": result.position - 1, "wait_minutes": result.expected_minutes,
            "ticket_no": ticket.ticket_no if ticket else (result.conversation.ticket_no or ""),
            "business_hours": f"{hours.start:%H:%M}-{hours.end:%H:%M}", "service_phone": shop.service_phone,
            "staff_response_hours": shop.staff_response_hours, "opening": opening_text(shop)}


async def hand_over_too(dispatcher, tracker, reason: str, ticket_no: Optional[str] = None) -> List[Dict[str, Any]]:
    """After an answer the bot could give (a large refund, a stalled parcel): a person follows up
    as well; one more line tells the customer so."""
    facts = await hand_over(tracker, reason, ticket_no=ticket_no)
    if not facts["already"]:
        response = "utter_handoff_follow_up" if facts["in_hours"] else "utter_handoff_follow_up_after_hours"
        dispatcher.utter_message(response=response, **facts)
    return [SlotSet("handoff_queued", True)]


# replies that mean "I did not understand": twice in a row, a person takes over
NOT_UNDERSTOOD = {"utter_default", "utter_chitchat"}


def misunderstood_before(tracker) -> bool:
    """Whether the bot's answer to the customer's previous message was also a not-understood one."""
    events = tracker.events or []
    users = [i for i, e in enumerate(events) if e.get("event") == "user"]
    if len(users) < 2:
        return False
    return any(e.get("event") == "bot" and (e.get("metadata") or {}).get("utter_action") in NOT_UNDERSTOOD
               for e in events[users[-2]:users[-1]])


async def _is_vip(tracker) -> bool:
    from actions.db.engine import async_session

    async with async_session() as session:
        customer = await customer_for(session, tracker.sender_id)
    return customer is not None and handoff.is_vip(get_settings().shop, customer.level)


async def not_understood(dispatcher, tracker, response: str) -> List[Dict[str, Any]]:
    """Say `response`, unless the bot already failed the customer's previous message (or the
    customer is of a level the shop marks as VIP): then apologise and hand over to a person."""
    if not misunderstood_before(tracker) and not await _is_vip(tracker):
        dispatcher.utter_message(response=response)
        return []
    facts = await hand_over(tracker, "misunderstood")
    if facts["already"]:
        dispatcher.utter_message(response="utter_handoff_already_queued", **facts)
    else:
        dispatcher.utter_message(response="utter_handoff_misunderstood" if facts["in_hours"]
                                 else "utter_handoff_misunderstood_after_hours", **facts)
    return [SlotSet("handoff_queued", True)]


class ActionNotUnderstood(ShopAction):
    """The dialogue's fallback (no rule fits): "please say it another way", or a person."""

    def name(self) -> Text:
        return "action_not_understood"

    async def act(self, dispatcher, tracker, domain) -> List[Dict[str, Any]]:
        return await not_understood(dispatcher, tracker, "utter_default")


class _HandoffAction(ShopAction):
    reason = "customer_request"

    async def hand_over(self, tracker, ticket_kind: Optional[str]) -> Dict[str, Any]:
        return await hand_over(tracker, self.reason, ticket_kind)


class ActionRequestHuman(_HandoffAction):
    def name(self) -> Text:
        return "action_request_human"

    async def act(self, dispatcher, tracker, domain) -> List[Dict[str, Any]]:
        facts = await self.hand_over(tracker, TicketKind.human_request.value)
        if facts["already"]:
            response = "utter_handoff_already_queued"
        elif not facts["in_hours"]:
            response = "utter_handoff_after_hours"
        else:
            response = "utter_handoff_queued_next" if facts["ahead"] <= 0 else "utter_handoff_queued"
        dispatcher.utter_message(response=response, **facts)
        return [SlotSet("handoff_queued", True)]


async def register_complaint(dispatcher, tracker, text: Optional[str] = None) -> List[Dict[str, Any]]:
    """A complaint ticket and the desk's queue; `text` is the complaint (default: this message)."""
    facts = await hand_over(tracker, "complaint", TicketKind.complaint.value, text=text)
    response = "utter_complaint_handed_over" if facts["in_hours"] else "utter_complaint_recorded"
    dispatcher.utter_message(response=response, **facts)
    return [SlotSet("handoff_queued", True)]


def sure_of(tracker, markers_key: str) -> bool:
    """Whether the message says plainly what the NLU took it for: an escalation reason, or one of
    the words that only this request uses (actions/templates/vocabulary.yml). Praise with a
    promised review, or a worry that something is troublesome, is not a complaint."""
    if any(e.get("entity") == "handoff_reason" for e in tracker.latest_message.get("entities") or []):
        return True
    text = (tracker.latest_message.get("text") or "").lower()
    for negation in vocabulary("negations"):
        for word in vocabulary(markers_key):
            text = text.replace(negation + word, " ")  # "不用投诉，我就是说一下"
    return any(word in text for word in vocabulary(markers_key))


def ask_to_confirm(dispatcher, response: str, yes_label: str) -> List[Dict[str, Any]]:
    """Asks whether the customer meant it, with a yes (`yes_label`) and a no button; action_affirm /
    action_deny act on the answer (they recognise `response` as the question: actions/conversation.py)."""
    dispatcher.utter_message(response=response, buttons=[{"title": t(yes_label), "payload": "/affirm"},
                                                         {"title": t("confirm_no"), "payload": "/deny"}])
    return []


class ActionComplaint(_HandoffAction):
    """A complaint becomes a ticket and goes to a person; when the message does not say plainly
    that it is one, the customer is asked first (action_affirm carries it out)."""

    reason = "complaint"

    def name(self) -> Text:
        return "action_complaint"

    async def act(self, dispatcher, tracker, domain) -> List[Dict[str, Any]]:
        if not sure_of(tracker, "complaint_markers"):
            return ask_to_confirm(dispatcher, CONFIRM_COMPLAINT, "confirm_complaint_yes")
        return await register_complaint(dispatcher, tracker)


class ActionCancelHandoff(ShopAction):
    def name(self) -> Text:
        return "action_cancel_handoff"

    async def act(self, dispatcher, tracker, domain) -> List[Dict[str, Any]]:
        cancelled = await in_transaction(lambda s: handoff.cancel(s, tracker.sender_id))
        dispatcher.utter_message(response="utter_handoff_cancelled" if cancelled else "utter_deny_idle")
        return [SlotSet("handoff_queued", False)]
