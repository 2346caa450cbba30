"""Questions no intent covers, answered from the shop's FAQ and documents (knowledge/), with the
source on record; unsure matches are clarified or handed to a colleague, never guessed. Prices,
stock and order states are never answered from here: those go to the catalog and order actions."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text

from rasa_sdk.events import FollowupAction, SlotSet

from actions.action_base import ShopAction
from actions.customer_care import NOT_UNDERSTOOD, hand_over, not_understood
from actions.db.engine import async_session
from actions.db.models import TicketKind
from actions.identity import customer_for
from actions.repositories import ticket_repository
from actions.templates import t
from bot.settings import get_settings
from knowledge import ANSWER, CLARIFY, Decision, KnowledgeBase
from knowledge.decision import DATABASE_FACT

logger = logging.getLogger("actions.knowledge")

_knowledge_base: Optional[KnowledgeBase] = None


def knowledge_base() -> KnowledgeBase:
    """One per action-server process: it reloads itself when a new index is published."""
    global _knowledge_base
    if _knowledge_base is None:
        _knowledge_base = KnowledgeBase.from_settings()
    return _knowledge_base


def source_label(decision: Decision) -> str:
    answer = decision.answer
    if answer.kind == "doc" and answer.heading:
        return answer.heading
    return answer.source


async def answer_from_knowledge(dispatcher, tracker, decision: Decision, on_nothing: str,
                                escalate_when_unsure: bool) -> List[Dict[Text, Any]]:
    """Turns a knowledge-base decision into replies.

    Close or weak matches are offered as choices (with "none of these", which asks a person). When
    nothing matches, a colleague is asked if `escalate_when_unsure` (a question about the shop),
    otherwise `on_nothing` is said (a message the NLU took for small talk)."""
    if decision.action == ANSWER and not decision.answer.mentions_price:
        logger.info("knowledge answer", extra={"conversation": tracker.sender_id, "entry": decision.answer.id,
                                               "score": decision.answer.score, "reason": decision.reason})
        dispatcher.utter_message(response="utter_kb_answer", answer=decision.answer.answer,
                                 source=source_label(decision))
        return [SlotSet("kb_source", f"{decision.answer.id} | {decision.answer.source}")]
    if decision.action == ANSWER:  # the stored answer states a price: the catalog has the live one
        return [FollowupAction("action_product_inquiry")]
    if decision.action == CLARIFY:
        buttons = [{"title": c.question, "payload": c.question} for c in decision.candidates]
        buttons.append({"title": t("kb_none_of_these"), "payload": "/request_human"})
        dispatcher.utter_message(response="utter_kb_clarify", buttons=buttons)
        return []
    if decision.reason == DATABASE_FACT:
        if decision.fact in ("price", "stock"):
            return [FollowupAction("action_product_inquiry")]
        return [SlotSet("order_task", "status"), FollowupAction("order_form")]
    if decision.escalate and escalate_when_unsure:
        return await _ask_a_colleague(dispatcher, tracker, decision)
    if on_nothing in NOT_UNDERSTOOD:
        return await not_understood(dispatcher, tracker, on_nothing)
    dispatcher.utter_message(response=on_nothing)
    return []


async def answer_if_confident(dispatcher, tracker, text: str, *,
                              price_answers: bool) -> Optional[List[Dict[Text, Any]]]:
    """Answers `text` from the FAQ when the knowledge base is confident (a question asked in the
    middle of another task); returns None, having said nothing, when it is not.

    `price_answers`: whether a confident answer that states a price counts as one (it then goes to
    the catalog action, as in `answer_from_knowledge`) or is left alone like an unsure match."""
    decision = await knowledge_base().adecide(text)
    if decision.action != ANSWER or (decision.answer.mentions_price and not price_answers):
        return None
    return await answer_from_knowledge(dispatcher, tracker, decision, on_nothing="utter_default",
                                       escalate_when_unsure=False)


async def _ask_a_colleague(dispatcher, tracker, decision: Decision) -> List[Dict[Text, Any]]:
    """The knowledge base has something related but is not sure: a colleague answers (a ticket with
    the candidates, and the conversation in the desk's queue)."""
    shop = get_settings().shop
    async with async_session() as session:
        customer = await customer_for(session, tracker.sender_id)
        candidates = "; ".join(f"{c.id} ({c.score})" for c in decision.candidates)
        ticket = await ticket_repository.create(
            session, kind=TicketKind.human_request.value, customer_id=customer.id if customer else None,
            order_id=None, conversation_id=tracker.sender_id, reason="知识库无把握的问题",
            detail=f"{decision.query}\ncandidates: {candidates}")
    logger.info("knowledge question handed to a colleague", extra={"conversation": tracker.sender_id,
                                                                   "ticket_no": ticket.ticket_no})
    await hand_over(tracker, "unsure", ticket_no=ticket.ticket_no)
    hours = shop.business_hours
    dispatcher.utter_message(response="utter_kb_ask_colleague", ticket_no=ticket.ticket_no,
                             business_hours=f"{hours.start:%H:%M}-{hours.end:%H:%M}")
    return [SlotSet("handoff_queued", True)]


class ActionKnowledgeAnswer(ShopAction):
    def name(self) -> Text:
        return "action_knowledge_answer"

    async def act(self, dispatcher, tracker, domain):
        text = tracker.latest_message.get("text") or ""
        decision = await knowledge_base().adecide(text)
        # the NLU took it for small talk: answer if the shop's FAQ knows it, else the small-talk reply
        return await answer_from_knowledge(dispatcher, tracker, decision, on_nothing="utter_chitchat",
                                           escalate_when_unsure=False)
