"""Which orders a conversation may see, and reading order numbers out of messages.

Rules: an identified customer sees only orders they placed; an anonymous visitor sees an order
only after proving it in this conversation with the last 4 digits of its receiver phone, recently
enough for the task (actions/order_verification.py). Unknown and foreign orders get the same
answers as real ones, so nobody can probe which order numbers exist.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from sqlalchemy.ext.asyncio import AsyncSession

from actions import order_verification
from actions.db.models import Customer, Order
from actions.templates import vocabulary
from bot.nlu.patterns import MOBILE_NO, ORDER_NO_LIKE, SHOP_ORDER_NO
from bot.settings import VerificationRules

# order numbers, mobile numbers and links: bot/nlu/patterns.py (shared with the NLU)
BARE_DIGITS_RE = re.compile(r"(?<!\d)(\d{4,16})(?!\d)")
PHONE_TAIL_RE = re.compile(r"(?<!\d)(\d{4})(?!\d)")
TICKET_NO_RE = re.compile(r"(?<![A-Za-z0-9])[Tt](\d{14})(?!\d)")


def normalise_order_no(raw: str) -> Optional[str]:
    """'sy 2026 1103 000123' -> 'SY20261103000123'; None if it is not a well-formed number."""
    digits = re.sub(r"\D", "", raw or "")
    if (raw or "").strip()[:2].upper() == "SY" and len(digits) == 14:
        return "SY" + digits
    return None


def find_order_no(text: str) -> Optional[str]:
    match = SHOP_ORDER_NO.search(text or "")
    if match:
        return normalise_order_no(match.group(0))
    return None


def looks_like_order_no(text: str) -> Optional[str]:
    match = ORDER_NO_LIKE.search(text or "")
    return match.group(0) if match else None


def find_ticket_no(text: str) -> Optional[str]:
    match = TICKET_NO_RE.search(text or "")
    return "T" + match.group(1) if match else None


def find_phone_tail(text: str) -> Optional[str]:
    mobile = MOBILE_NO.search(text or "")
    if mobile:
        return mobile.group(0)[-4:]
    match = PHONE_TAIL_RE.search(text or "")
    return match.group(1) if match else None


def pick_choice(text: str, choices: List[str]) -> Optional[str]:
    """Resolve "第二个", "2", "最后一个" or a number suffix against the listed orders."""
    if not choices or not text:
        return None
    stripped = text.strip().rstrip("。.!！个号单")
    if stripped.isdigit() and 1 <= int(stripped) <= len(choices) and len(stripped) <= 2:
        return choices[int(stripped) - 1]
    for key, words in vocabulary("ordinals").items():
        if any(w in text for w in words):
            if key == "last":
                return choices[0]  # lists are newest first
            index = int(key)
            if index <= len(choices):
                return choices[index - 1]
    digits = BARE_DIGITS_RE.findall(text)
    for d in digits:
        suffix_hits = [c for c in choices if c.endswith(d)]
        if len(suffix_hits) == 1:
            return suffix_hits[0]
    return None


@dataclass
class Access:
    order: Optional[Order]
    allowed: bool
    # an anonymous visitor must (again) prove the order: asked whether the order exists or not
    needs_phone: bool


async def check_access(session: AsyncSession, order_no: str, order: Optional[Order], customer: Optional[Customer],
                       conversation_id: str, task: str, rules: VerificationRules) -> Access:
    if customer is not None:
        return Access(order, order is not None and order.customer_id == customer.id, False)
    if order is not None and await order_verification.proven(session, order_no, conversation_id, task, rules):
        return Access(order, True, False)
    return Access(order, False, True)
