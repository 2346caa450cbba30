"""Order status, cancellation and changes, and the order form that collects which order is meant.

The order form (`order_form`) is shared by the four order intents; `order_task` (set from the
intent) decides what else it needs. Every step re-checks that the conversation may see the order.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction

from actions import order_access, order_verification
from actions.action_base import ShopAction
from actions.after_sales import submit_after_sales
from actions.conversation import said_this_turn
from actions.customer_care import hand_over_too
from actions.db.engine import async_session
from actions.db.models import TicketKind, utcnow
from actions.identity import customer_for
from actions.order_access import check_access, find_order_no, find_phone_tail, looks_like_order_no, pick_choice
from actions.order_views import (
    base_vars,
    eligibility,
    order_button_title,
    order_line,
    status_response,
)
from actions.repositories import order_repository, ticket_repository
from actions.templates import vocabulary
from bot.nlu.patterns import MOBILE_NO, ORDER_NO_LIKE, SHOP_ORDER_NO
from bot.settings import get_settings

logger = logging.getLogger("actions.orders")

# intents that mean "stop / something else", never a slot value
ESCAPE_INTENTS = {"deny", "request_human", "complaint", "unsubscribe", "goodbye", "bot_challenge", "greet",
                  "thanks", "chitchat", "product_inquiry", "promotion", "invoice", "payment", "shipping_policy",
                  "checkin"}
ADDRESS_MARKERS = re.compile(r"[省市区县镇乡村路街道巷弄号栋幢楼室单元]|小区|花园|大厦|公寓")
# status answers that mean something went wrong with the delivery
LOGISTICS_EXCEPTIONS = {"utter_order_status_shipped_stalled", "utter_order_status_paid_overdue"}
AFTER_SALES_KINDS = [TicketKind.return_goods.value, TicketKind.refund.value, TicketKind.exchange.value,
                     TicketKind.repair.value]
TASK_INTENT = {"status": "order_status", "cancel": "cancel_order", "change": "change_order",
               "return": "return_refund"}
# which orders to offer first for each task
TASK_STATUSES = {
    "status": None,
    "cancel": ["pending_payment", "paid"],
    "change": ["pending_payment", "paid", "shipped"],
    "return": ["delivered", "completed", "shipped"],
}
# slots that belong to one run of the order form and must not leak into the next one
TASK_SLOTS = ["cancel_confirm", "change_detail", "return_reason", "phone_tail", "pending_order", "task_allowed",
              "after_sales_query", "after_sales_kind", "order_choices", "requested_slot", "verify_refused"]
# what a pasted order card adds around its number
BARE_REFERENCE_NOISE = re.compile(r"[\d\s\W_]|订单编号|订单号|单号|订单|实付|金额|下单时间|时间"
                                  r"|日期|这个|这单|元|是|的")
# answers to the phone-tail question that are not a guess
PHONE_UNKNOWN = "unknown"
PHONE_WAIT = "wait"
# the form asks for the order number at most this often, then offers a person instead
MAX_ORDER_ASKS = 2


def reset_task_slots() -> List[EventType]:
    return [SlotSet(name, None) for name in TASK_SLOTS] + [SlotSet("order_asks", 0)]


def order_numbers(text: str) -> List[str]:
    """The shop's order numbers in a message, in order, without repeats (a pasted list)."""
    seen: List[str] = []
    for match in SHOP_ORDER_NO.finditer(text or ""):
        number = order_access.normalise_order_no(match.group(0))
        if number and number not in seen:
            seen.append(number)
    return seen


def _bare_reference(text: str) -> bool:
    """The message is an order number (or a pasted card) and says nothing else."""
    if not (order_numbers(text) or ORDER_NO_LIKE.search(text or "")):
        return False
    rest = BARE_REFERENCE_NOISE.sub("", SHOP_ORDER_NO.sub("", text))
    return len(rest) <= 2


def _entity_order_no(tracker: Tracker) -> Optional[str]:
    for entity in tracker.latest_message.get("entities") or []:
        if entity.get("entity") == "order_id":
            return order_access.normalise_order_no(str(entity.get("value") or ""))
    return None


def _intent(tracker: Tracker) -> Optional[str]:
    return (tracker.latest_message.get("intent") or {}).get("name")


def _text(tracker: Tracker) -> str:
    return tracker.latest_message.get("text") or ""


def _follows_order_answer(tracker: Tracker) -> bool:
    """Whether the bot's last turn, before the current message, answered about one order."""
    seen_user = False
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            if seen_user:
                return False
            seen_user = True
        elif seen_user and event.get("event") == "action" and event.get("name") not in ("action_listen", None):
            return event.get("name") == "action_order_task"
    return False


async def _open_after_sales(session, order_id: int):
    tickets = await ticket_repository.for_order(session, order_id, kinds=AFTER_SALES_KINDS)
    return next((t for t in tickets if t.status in ticket_repository.OPEN_STATUSES), None)


class ValidateOrderForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_order_form"

    async def required_slots(self, domain_slots: List[Text], dispatcher: CollectingDispatcher, tracker: Tracker,
                             domain: Dict[Text, Any]) -> List[Text]:
        slots: List[Text] = ["order_task"] if tracker.get_slot("order_task") else []
        if tracker.get_slot("verify_locked") or tracker.get_slot("verify_refused"):
            return slots
        if tracker.get_slot("pending_order"):
            slots.append("phone_tail")
        elif not tracker.get_slot("order_id") and (tracker.get_slot("order_asks") or 0) >= MAX_ORDER_ASKS:
            # asked twice without an answer: the form ends and action_order_task offers a person
            return slots
        slots.append("order_id")
        if tracker.get_slot("order_id") and tracker.get_slot("task_allowed"):
            extra = {"cancel": "cancel_confirm", "change": "change_detail", "return": "return_reason"}
            task_slot = extra.get(tracker.get_slot("order_task") or "status")
            if task_slot:
                slots.append(task_slot)
        return slots

    async def run(self, dispatcher, tracker, domain):
        try:
            return await super().run(dispatcher, tracker, domain)
        except Exception:  # noqa: BLE001 - a broken lookup must end the form politely, not loop
            logger.exception("order form validation failed", extra={"conversation": tracker.sender_id})
            dispatcher.messages.clear()
            dispatcher.utter_message(response="utter_action_error")
            return [ActiveLoop(None)] + reset_task_slots()

    # --- order number ---------------------------------------------------------------------
    async def extract_order_id(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                               domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = _text(tracker)
        numbers = order_numbers(text)
        if len(numbers) > 1 and tracker.get_slot("requested_slot") in (None, "order_id"):
            # a pasted list: the customer chooses (validate_order_id keeps the list)
            return {"order_id": None}
        number = (numbers[0] if numbers else None) or _entity_order_no(tracker) or looks_like_order_no(text)
        if number:
            return {"order_id": number}
        requested = tracker.get_slot("requested_slot")
        if requested == "order_id":
            choice = pick_choice(text, tracker.get_slot("order_choices") or [])
            if choice:
                return {"order_id": choice}
        task = tracker.get_slot("order_task")
        if (requested is None and task != "status" and task != tracker.get_slot("recent_task")
                and _follows_order_answer(tracker)):
            # "那我要退货" right after we answered about an order means that order; the same request
            # again ("取消订单" after a refusal) means another one
            recent = tracker.get_slot("recent_order")
            if recent:
                return {"order_id": recent}
        return {}

    async def validate_order_id(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if not value:
            numbers = order_numbers(_text(tracker))
            # a pasted list of order numbers: action_ask_order_id offers them as choices
            return {"order_id": None, "order_choices": numbers} if len(numbers) > 1 else {"order_id": None}
        order_no = order_access.normalise_order_no(str(value))
        if not order_no:
            dispatcher.utter_message(response="utter_order_id_invalid")
            return {"order_id": None}
        settings = get_settings()
        rules = settings.shop.orders.verification
        task = tracker.get_slot("order_task") or "status"
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            order = await order_repository.get_by_order_no(session, order_no)
            access = await check_access(session, order_no, order, customer, tracker.sender_id, task, rules)
            if access.needs_phone:
                # asked whether the order exists or not: the answers must not tell
                if await order_verification.is_locked(session, order_no, order_verification.client_of(tracker),
                                                      rules):
                    dispatcher.utter_message(response="utter_verify_order_locked")
                    return {"order_id": None, "pending_order": None, "verify_refused": True}
                return {"order_id": None, "pending_order": order_no, "phone_tail": None}
            if not access.allowed:
                logger.info("order lookup refused", extra={"conversation": tracker.sender_id,
                                                           "reason": "unknown_or_foreign"})
                dispatcher.utter_message(response="utter_order_not_found", order_id=order_no)
                return {"order_id": None, "pending_order": None}
            # the owner, identified on this channel, may lift a lock strangers' guesses put on the order
            await order_verification.lift_for_owner(session, order_no, customer.external_id)
            allowed, _ = eligibility(task, order, settings.shop, utcnow(), await _open_after_sales(session, order.id))
        return {"order_id": order_no, "pending_order": None, "task_allowed": allowed}

    # --- anonymous verification -------------------------------------------------------------
    async def extract_phone_tail(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                 domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "phone_tail" or find_order_no(_text(tracker)):
            return {}
        text = _text(tracker)
        tail = find_phone_tail(text)
        if tail:
            return {"phone_tail": tail}
        if any(w in text for w in vocabulary("phone_unknown")):
            return {"phone_tail": PHONE_UNKNOWN}
        if any(w in text for w in vocabulary("wait_for_me")):
            return {"phone_tail": PHONE_WAIT}
        if _intent(tracker) not in ESCAPE_INTENTS:
            # something that is not 4 digits: count it as a wrong answer so the customer hears why
            return {"phone_tail": "invalid"}
        return {}

    async def validate_phone_tail(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                  domain: Dict[Text, Any]) -> Dict[Text, Any]:
        pending = tracker.get_slot("pending_order")
        if not pending:
            return {"phone_tail": None}
        if value == PHONE_WAIT:
            dispatcher.utter_message(response="utter_phone_tail_wait")
            return {"phone_tail": None}
        if value == PHONE_UNKNOWN:
            # no guess to count: the lookup stops here and the customer hears the other ways
            dispatcher.utter_message(response="utter_phone_tail_unknown")
            return {"phone_tail": None, "pending_order": None, "order_id": None, "verify_refused": True}
        settings = get_settings()
        rules = settings.shop.orders.verification
        outcome = None
        if value and value != "invalid":
            async with async_session() as session:
                outcome = await order_verification.attempt(session, pending, str(value), tracker.sender_id,
                                                           order_verification.client_of(tracker), rules)
                if outcome is order_verification.Outcome.verified:
                    order = await order_repository.get_by_order_no(session, pending)
                    allowed, _ = eligibility(tracker.get_slot("order_task") or "status", order, settings.shop,
                                             utcnow(), await _open_after_sales(session, order.id))
                    return {"phone_tail": value, "order_id": pending, "pending_order": None, "verify_attempts": 0,
                            "task_allowed": allowed}
        if outcome is order_verification.Outcome.locked:
            dispatcher.utter_message(response="utter_verify_order_locked")
            return {"phone_tail": None, "pending_order": None, "order_id": None, "verify_refused": True}
        attempts = int(tracker.get_slot("verify_attempts") or 0) + 1
        if attempts >= rules.max_failures_per_conversation:
            dispatcher.utter_message(response="utter_verify_locked")
            return {"phone_tail": None, "pending_order": None, "order_id": None, "verify_attempts": attempts,
                    "verify_locked": True}
        dispatcher.utter_message(response="utter_phone_tail_mismatch" if outcome else "utter_phone_tail_invalid")
        return {"phone_tail": None, "verify_attempts": attempts}

    # --- task details ---------------------------------------------------------------------------
    async def extract_change_detail(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "change_detail" or _intent(tracker) in ESCAPE_INTENTS - {
                "chitchat", "product_inquiry"}:
            return {}
        return {"change_detail": _text(tracker).strip()}

    async def validate_change_detail(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                     domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = str(value or "").strip()
        if len(text) < 2 or len(text) > 300:
            dispatcher.utter_message(response="utter_change_detail_invalid")
            return {"change_detail": None}
        return {"change_detail": text}

    async def extract_return_reason(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                    domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if tracker.get_slot("requested_slot") != "return_reason":
            return {}
        if _intent(tracker) in {"deny", "request_human", "unsubscribe", "goodbye", "greet", "bot_challenge"}:
            return {}
        return {"return_reason": _text(tracker).strip()[:200]}

    async def validate_return_reason(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                     domain: Dict[Text, Any]) -> Dict[Text, Any]:
        text = str(value or "").strip()
        if not text:
            return {"return_reason": None}
        return {"return_reason": text}

    async def extract_order_task(self, dispatcher: CollectingDispatcher, tracker: Tracker,
                                 domain: Dict[Text, Any]) -> Dict[Text, Any]:
        # "取消订单" → (another topic) → "SY2026…" later: the number resumes the cancellation
        paused = tracker.get_slot("paused_task")
        if paused and _intent(tracker) == "order_status" and tracker.get_slot("order_task") == "status" and \
                _bare_reference(_text(tracker)):
            return {"order_task": paused}
        return {}

    async def validate_order_task(self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                                  domain: Dict[Text, Any]) -> Dict[Text, Any]:
        if value and value == tracker.get_slot("paused_task"):
            return {"order_task": value, "paused_task": None}
        return {"order_task": value}


class ActionAskOrderId(ShopAction):
    """Asks which order: identified customers choose from their recent orders, a pasted list is
    offered back as choices. The second time it says where to find the number (or that a person
    can help); after an invalid number the validation's hint is the question."""

    def name(self) -> Text:
        return "action_ask_order_id"

    async def act(self, dispatcher, tracker, domain):
        asks = int(tracker.get_slot("order_asks") or 0)
        events: List[EventType] = [SlotSet("order_asks", asks + 1)]
        text = _text(tracker)
        pasted = order_numbers(text)
        if len(pasted) > 1 and tracker.get_slot("order_choices") == pasted:
            task = tracker.get_slot("order_task") or "status"
            buttons = [{"title": number, "payload": f'/{TASK_INTENT[task]}{{"order_id":"{number}"}}'}
                       for number in pasted]
            dispatcher.utter_message(response="utter_choose_pasted_order", buttons=buttons,
                                     order_list="\n".join(f"{i}. {n}" for i, n in enumerate(pasted, 1)))
            return events
        hinted = bool(set(said_this_turn(tracker)) & {"utter_order_id_invalid", "utter_order_not_found"})
        if asks >= 1:
            if not hinted and not await self._answered_from_faq(dispatcher, tracker, text):
                dispatcher.utter_message(response="utter_ask_order_id_again")
            return events
        task = tracker.get_slot("order_task") or "status"
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            if customer is None:
                if not hinted:
                    dispatcher.utter_message(response="utter_ask_order_id")
                return events
            orders = await order_repository.recent_for_customer(session, customer.id, TASK_STATUSES[task])
            if not orders and TASK_STATUSES[task]:
                orders = await order_repository.recent_for_customer(session, customer.id)
        if not orders:
            dispatcher.utter_message(response="utter_ask_order_id_no_orders")
            return events
        tz = self.settings.shop.timezone
        intent = TASK_INTENT[task]
        buttons = [{"title": order_button_title(i, o),
                    "payload": f'/{intent}{{"order_id":"{o.order_no}"}}'} for i, o in enumerate(orders, 1)]
        dispatcher.utter_message(response="utter_choose_order", buttons=buttons,
                                 order_list="\n".join(order_line(i, o, tz) for i, o in enumerate(orders, 1)))
        return events + [SlotSet("order_choices", [o.order_no for o in orders])]


    @staticmethod
    async def _answered_from_faq(dispatcher, tracker, text: str) -> bool:
        """"退款一般几天到账啊" while the form waits is a question, not a refusal to answer: the
        FAQ answers it instead of the prompt, when it knows the answer."""
        if order_numbers(text) or looks_like_order_no(text):
            return False
        from actions.knowledge_answers import answer_if_confident

        # the answer's events (kb_source) are not returned: the form's own events are
        return await answer_if_confident(dispatcher, tracker, text, price_answers=False) is not None


class ActionAskPhoneTail(ShopAction):
    """Asks an anonymous visitor for the receiver phone's last 4 digits, once per order: after a
    wrong answer the validation has said what to send, which is the question again."""

    def name(self) -> Text:
        return "action_ask_phone_tail"

    async def act(self, dispatcher, tracker, domain):
        if not set(said_this_turn(tracker)) & {"utter_phone_tail_invalid", "utter_phone_tail_mismatch",
                                               "utter_phone_tail_wait", "utter_phone_tail_unknown"}:
            dispatcher.utter_message(response="utter_ask_phone_tail")
        return []


class ActionAskCancelConfirm(ShopAction):
    def name(self) -> Text:
        return "action_ask_cancel_confirm"

    async def act(self, dispatcher, tracker, domain):
        async with async_session() as session:
            order = await order_repository.get_by_order_no(session, tracker.get_slot("order_id"))
        if order is None:
            dispatcher.utter_message(response="utter_action_error")
            return []
        dispatcher.utter_message(response="utter_ask_cancel_confirm", **base_vars(order))
        return []


class ActionOrderTask(ShopAction):
    """Runs when the order form is complete: answers or performs the requested task."""

    def name(self) -> Text:
        return "action_order_task"

    async def act(self, dispatcher, tracker, domain):
        task = tracker.get_slot("order_task") or "status"
        order_no = tracker.get_slot("order_id")
        # the next order question asks again which order, unless it follows right after this answer
        events = reset_task_slots() + [SlotSet("order_id", None), SlotSet("recent_order", order_no),
                                        SlotSet("recent_task", task), SlotSet("paused_task", None)]
        if tracker.get_slot("verify_locked") or tracker.get_slot("verify_refused"):
            return events
        if not order_no:
            # asked twice without getting a number: a person can find the order by phone
            dispatcher.utter_message(response="utter_order_id_gave_up")
            return events + [SlotSet("paused_task", task)]
        shop = self.settings.shop
        now = utcnow()
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            order = await order_repository.get_by_order_no(session, order_no)
            access = await check_access(session, order_no, order, customer, tracker.sender_id, task,
                                        shop.orders.verification)
            if access.needs_phone:
                # proved too long ago for this task (cancelling and changes need a recent proof)
                dispatcher.utter_message(response="utter_verify_expired", order_no=order_no)
                return events + [SlotSet("recent_order", None)]
            if not access.allowed:
                dispatcher.utter_message(response="utter_order_not_found", order_id=order_no)
                return events + [SlotSet("recent_order", None)]
            open_ticket = await _open_after_sales(session, order.id)
            allowed, refusal = eligibility(task, order, shop, now, open_ticket)
            if task == "status":
                tickets = await ticket_repository.for_order(session, order.id, kinds=AFTER_SALES_KINDS)
                response, variables = status_response(order, shop, now, tickets)
                dispatcher.utter_message(response=response, **variables)
                if response in LOGISTICS_EXCEPTIONS:
                    # a stalled parcel or an overdue shipment: a person follows up with the carrier
                    return events + await hand_over_too(dispatcher, tracker, "logistics_exception")
                return events
            if not allowed:
                variables = base_vars(order)
                variables.update(return_window_days=shop.return_window_days,
                                 ticket_no=open_ticket.ticket_no if open_ticket else "")
                dispatcher.utter_message(response=refusal, **variables)
                return events
            if task == "cancel":
                return events + await self._cancel(session, dispatcher, tracker, order, customer)
            if task == "change":
                return events + await self._change(session, dispatcher, tracker, order, customer)
            return events + await submit_after_sales(session, dispatcher, tracker, order, customer)

    async def _cancel(self, session, dispatcher, tracker, order, customer) -> List[EventType]:
        if tracker.get_slot("cancel_confirm") is not True:
            dispatcher.utter_message(response="utter_cancel_kept", order_no=order.order_no)
            return []
        was_paid = order.paid_at is not None
        await order_repository.cancel(session, order)
        await ticket_repository.create(session, kind=TicketKind.cancel_order.value,
                                       customer_id=customer.id if customer else None, order_id=order.id,
                                       conversation_id=tracker.sender_id, reason="顾客在对话中取消",
                                       detail=f"cancelled in conversation; paid={was_paid}")
        logger.info("order cancelled", extra={"conversation": tracker.sender_id, "order_no": order.order_no})
        dispatcher.utter_message(response="utter_cancel_done_paid" if was_paid else "utter_cancel_done_unpaid",
                                 **base_vars(order))
        return []

    async def _change(self, session, dispatcher, tracker, order, customer) -> List[EventType]:
        detail = tracker.get_slot("change_detail") or ""
        is_address = bool(ADDRESS_MARKERS.search(detail)) and len(detail) >= 6
        wants_items = any(w in detail for w in vocabulary("change_kind")["items"])
        if is_address and not wants_items:
            old = order.address
            phone = MOBILE_NO.search(detail)
            await order_repository.change_address(session, order, None, phone.group(0) if phone else None, detail)
            ticket = await ticket_repository.create(
                session, kind=TicketKind.change_order.value, customer_id=customer.id if customer else None,
                order_id=order.id, conversation_id=tracker.sender_id, reason="修改收货信息",
                detail=f"old address: {old}\nnew: {detail}")
            dispatcher.utter_message(response="utter_change_address_done", new_address=detail,
                                     ticket_no=ticket.ticket_no, **base_vars(order))
            return []
        ticket = await ticket_repository.create(
            session, kind=TicketKind.change_order.value, customer_id=customer.id if customer else None,
            order_id=order.id, conversation_id=tracker.sender_id, reason="修改商品/其他", detail=detail)
        dispatcher.utter_message(response="utter_change_items_ticket", change_detail=detail,
                                 ticket_no=ticket.ticket_no, **base_vars(order))
        return []


class ActionStopOrderForm(ShopAction):
    """Ends the order form: the customer said "算了/不用了", or moved on to another topic."""

    def name(self) -> Text:
        return "action_stop_order_form"

    async def act(self, dispatcher, tracker, domain):
        # other topics were answered by their own action already: the form just yields, and a bare
        # order number later resumes the task
        intent = _intent(tracker)
        events = [ActiveLoop(None)] + reset_task_slots()
        if intent == "deny":
            dispatcher.utter_message(response="utter_order_form_stopped")
            return events + [SlotSet("paused_task", None)]
        if intent == "affirm":
            dispatcher.utter_message(response="utter_order_form_wait")
        return events + [SlotSet("paused_task", tracker.get_slot("order_task"))]
