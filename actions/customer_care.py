"""Complaints and requests for a person: recorded as tickets that staff follow up (live handoff to
the support console is a later capability; until then the customer is told so honestly)."""
from __future__ import annotations

import abc
import logging
from typing import Text

from actions.action_base import ShopAction
from actions.db.engine import async_session
from actions.db.models import TicketKind
from actions.identity import customer_for
from actions.repositories import ticket_repository

logger = logging.getLogger("actions.customer_care")


class _TicketAction(ShopAction):
    kind: str = ""
    response: str = ""

    @abc.abstractmethod
    def name(self) -> Text:
        ...

    async def act(self, dispatcher, tracker, domain):
        text = (tracker.latest_message.get("text") or "")[:1000]
        shop = self.settings.shop
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            recent = await ticket_repository.recent_for_customer(
                session, customer.id if customer else None, tracker.sender_id, kinds=[self.kind], limit=1)
            open_ticket = next((t for t in recent if t.status in ticket_repository.OPEN_STATUSES), None)
            if open_ticket is not None:
                # a repeated request adds to the open ticket instead of opening another one
                open_ticket.detail = (open_ticket.detail + "\n" + text).strip()
                await session.commit()
                ticket = open_ticket
            else:
                ticket = await ticket_repository.create(
                    session, kind=self.kind, customer_id=customer.id if customer else None, order_id=None,
                    conversation_id=tracker.sender_id, reason=text[:100], detail=text)
        logger.info("customer care ticket", extra={"conversation": tracker.sender_id, "kind": self.kind,
                                                   "ticket_no": ticket.ticket_no})
        hours = shop.business_hours
        dispatcher.utter_message(response=self.response, ticket_no=ticket.ticket_no,
                                 staff_response_hours=shop.staff_response_hours,
                                 business_hours=f"{hours.start:%H:%M}-{hours.end:%H:%M}",
                                 service_phone=shop.service_phone)
        return []


class ActionComplaint(_TicketAction):
    kind = TicketKind.complaint.value
    response = "utter_complaint_recorded"

    def name(self) -> Text:
        return "action_complaint"


class ActionRequestHuman(_TicketAction):
    kind = TicketKind.human_request.value
    response = "utter_human_not_available"

    def name(self) -> Text:
        return "action_request_human"
