"""Who the customer is, for the person answering them: identity and channels, recent orders with
their logistics from the shop's database, tickets, and earlier handoffs. Staff see the receiver's
phone masked; the full number stays in the shop's back-end."""
from __future__ import annotations

from typing import Any, Dict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Customer, CustomerIdentity
from actions.repositories import order_repository, ticket_repository
from desk.models import DeskConversation, DeskEvent
from desk.transcript import iso
from nudges import segments


def _mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else "****"


async def customer_context(s: AsyncSession, row: DeskConversation) -> Dict[str, Any]:
    result: Dict[str, Any] = {"conversation_id": row.conversation_id, "channel": row.channel, "customer": None,
                              "identities": [], "orders": [], "tickets": [], "handoffs": [],
                              "segment": None}
    customer = await s.get(Customer, row.customer_id) if row.customer_id else None
    if customer is not None:
        result["customer"] = {"id": customer.id, "external_id": customer.external_id, "name": customer.name,
                              "level": customer.level, "points": customer.points,
                              "phone": _mask_phone(customer.phone or ""),
                              "marketing_opt_out": customer.marketing_opt_out}
        # RFM segment and health score of the last daily recompute (None before it ran)
        result["segment"] = await segments.profile(s, customer.id)
        identities = (await s.execute(sa.select(CustomerIdentity).where(
            CustomerIdentity.customer_id == customer.id))).scalars()
        result["identities"] = [{"channel": i.channel, "external_id": i.external_id} for i in identities]
        for order in await order_repository.recent_for_customer(s, customer.id, limit=5):
            latest = order.logistics[-1] if order.logistics else None
            result["orders"].append({
                "order_no": order.order_no, "status": order.status, "total_yuan": order.total_fen / 100,
                "created_at": iso(order.created_at), "carrier": order.carrier, "tracking_no": order.tracking_no,
                "items": [f"{i.product_name} {i.spec} ×{i.quantity}".strip() for i in order.items],
                "receiver": f"{order.receiver_name[:1]}** {_mask_phone(order.receiver_phone)}",
                "logistics": {"at": iso(latest.occurred_at), "text": latest.description,
                              "location": latest.location} if latest else None})
    tickets = await ticket_repository.recent_for_customer(s, customer.id if customer else None, row.conversation_id,
                                                          limit=5)
    result["tickets"] = [{"ticket_no": t.ticket_no, "kind": t.kind, "status": t.status, "reason": t.reason,
                          "created_at": iso(t.created_at)} for t in tickets]
    queued = (await s.execute(sa.select(DeskEvent).where(DeskEvent.conversation == row.id, DeskEvent.kind == "queued")
                              .order_by(DeskEvent.id.desc()).limit(10))).scalars()
    result["handoffs"] = [{"at": iso(e.at), "reason": (e.detail or {}).get("reason"),
                           "text": (e.detail or {}).get("text")} for e in queued]
    return result
