"""Consent per category (marketing; transactional = service messages about orders), changed by the
customer (退订 / TD / 别再发了 in a conversation, or 订阅 to take it back) or by staff at the
customer's request. Every change is appended to consent_events with its source; the customers'
flags are what the guardrails read at send time, so a refusal holds from the next nudge on."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import ConsentEvent, Customer, utcnow
from nudges.models import iso_z

logger = logging.getLogger("nudges.consent")
CATEGORIES = ("marketing", "transactional")


class ConsentError(ValueError):
    pass


async def set_consent(s: AsyncSession, customer: Customer, category: str, granted: bool, source: str,
                      conversation_id: Optional[str] = None) -> bool:
    """Record the customer's choice; whether it changed anything. The caller commits."""
    if category not in CATEGORIES:
        raise ConsentError(f"未知的消息类别 {category}（marketing / transactional）")
    if category == "marketing":
        changed = customer.marketing_opt_out == granted
        customer.marketing_opt_out = not granted
        if not granted:
            customer.opt_out_at, customer.opt_out_source = utcnow(), source[:64]
    else:
        changed = customer.transactional_opt_out == granted
        customer.transactional_opt_out = not granted
    s.add(ConsentEvent(customer_id=customer.id, conversation_id=conversation_id, granted=granted, category=category,
                       source=source[:64]))
    logger.info("consent recorded", extra={"customer_id": customer.id, "category": category, "granted": granted,
                                           "source": source})
    return changed


def state(customer: Customer) -> Dict[str, Any]:
    return {"marketing": not customer.marketing_opt_out, "transactional": not customer.transactional_opt_out,
            "opted_out_at": iso_z(customer.opt_out_at),
            "source": customer.opt_out_source}


async def history(s: AsyncSession, customer_id: int, limit: int = 20) -> list:
    rows = (await s.execute(sa.select(ConsentEvent).where(ConsentEvent.customer_id == customer_id)
                            .order_by(ConsentEvent.id.desc()).limit(limit))).scalars()
    return [{"category": r.category, "granted": r.granted, "source": r.source,
             "at": iso_z(r.created_at)} for r in rows]
