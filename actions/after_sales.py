"""Returns, refunds, exchanges and repairs (服务即工单): progress questions and new requests."""
from __future__ import annotations

import logging
from typing import List, Optional, Text

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.action_base import ShopAction
from actions.customer_care import hand_over_too
from actions.db.engine import async_session
from actions.db.models import Customer, Order, TicketKind
from actions.identity import customer_for
from actions.order_access import find_order_no, find_ticket_no
from actions.order_views import base_vars, ticket_vars
from actions.repositories import order_repository, ticket_repository
from actions.templates import vocabulary
from bot.settings import get_settings

logger = logging.getLogger("actions.after_sales")

AFTER_SALES_KINDS = [TicketKind.return_goods.value, TicketKind.refund.value, TicketKind.exchange.value,
                     TicketKind.repair.value]


def detect_kind(text: str) -> str:
    for kind, words in vocabulary("after_sales_kind").items():
        if any(w in text for w in words):
            return kind
    return TicketKind.return_goods.value


def is_progress_question(text: str) -> bool:
    return bool(find_ticket_no(text)) or any(w in text for w in vocabulary("after_sales_progress"))


def is_policy_question(text: str) -> bool:
    """"退货运费谁出" asks about the rules; "我要退货" asks us to do something for an order."""
    if find_ticket_no(text) or find_order_no(text):
        return False
    vocab = vocabulary("after_sales_policy_question")
    return any(w in text for w in vocab["question"]) and not any(w in text for w in vocab["request"])


class ActionAfterSalesEntry(ShopAction):
    """return_refund outside the order form: "where is my refund" is answered from the tickets, a
    question about the rules from the FAQ, anything else starts the order form (the rules branch
    on `after_sales_query`)."""

    def name(self) -> Text:
        return "action_after_sales_entry"

    async def act(self, dispatcher, tracker, domain):
        text = tracker.latest_message.get("text") or ""
        kind = detect_kind(text)
        request = [SlotSet("after_sales_query", "request"), SlotSet("after_sales_kind", kind)]
        if is_policy_question(text) and not is_progress_question(text):
            answered = await self._answer_from_faq(dispatcher, tracker, text)
            if answered is not None:
                return answered
        if not is_progress_question(text):
            return request
        tz = self.settings.shop.timezone
        # only a number in this message: otherwise the customer's recent tickets, newest first
        ticket_no = find_ticket_no(text)
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            if ticket_no:
                ticket = await ticket_repository.get_by_no(session, ticket_no)
                if ticket is None or not _may_see(ticket, customer, tracker.sender_id):
                    dispatcher.utter_message(response="utter_ticket_not_found", ticket_no=ticket_no)
                    return [SlotSet("after_sales_query", "progress"), SlotSet("ticket_id", None)]
                tickets = [ticket]
            else:
                tickets = await ticket_repository.recent_for_customer(
                    session, customer.id if customer else None, tracker.sender_id, kinds=AFTER_SALES_KINDS)
        if not tickets:
            # nothing on record: "退款一般多久到账" asks about the rules; otherwise find the order first
            if is_policy_question(text):
                answered = await self._answer_from_faq(dispatcher, tracker, text)
                if answered is not None:
                    return answered
            return request
        for ticket in tickets:
            response = "utter_ticket_status_resolved" if ticket.status == "resolved" else "utter_ticket_status"
            dispatcher.utter_message(response=response, **ticket_vars(ticket, tz))
        return [SlotSet("after_sales_query", "progress")]


    @staticmethod
    async def _answer_from_faq(dispatcher, tracker, text: str) -> Optional[List[EventType]]:
        from actions.knowledge_answers import answer_if_confident

        # an answer stating a price goes on to the catalog action
        events = await answer_if_confident(dispatcher, tracker, text, price_answers=True)
        return None if events is None else events + [SlotSet("after_sales_query", "answered")]


def _may_see(ticket, customer: Optional[Customer], conversation_id: str) -> bool:
    if customer is not None and ticket.customer_id == customer.id:
        return True
    return ticket.conversation_id == conversation_id


async def submit_after_sales(session, dispatcher: CollectingDispatcher, tracker: Tracker, order: Order,
                             customer: Optional[Customer]) -> List[EventType]:
    """The order is eligible and the reason is known: open the ticket and tell the customer what next."""
    shop = get_settings().shop
    kind = tracker.get_slot("after_sales_kind") or TicketKind.return_goods.value
    reason = tracker.get_slot("return_reason") or ""
    ticket = await ticket_repository.create(
        session, kind=kind, customer_id=customer.id if customer else None, order_id=order.id,
        conversation_id=tracker.sender_id, reason=reason, detail=f"opened by the assistant; order {order.order_no}")
    await order_repository.mark_refunding(session, order)
    logger.info("after-sales ticket opened", extra={"conversation": tracker.sender_id, "ticket_no": ticket.ticket_no,
                                                   "kind": kind})
    variables = base_vars(order)
    variables.update(ticket_vars(ticket, shop.timezone))
    variables.update(return_reason=reason, return_address=shop.return_address)
    response = {"refund": "utter_refund_created", "repair": "utter_repair_created"}.get(kind, "utter_return_created")
    dispatcher.utter_message(response=response, **variables)
    if kind != TicketKind.repair.value and order.paid_fen > shop.desk.refund_handoff_above_yuan * 100:
        # a large refund: a person checks it too
        return await hand_over_too(dispatcher, tracker, "refund_amount", ticket_no=ticket.ticket_no)
    return []
