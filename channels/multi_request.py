"""Splits a message that carries two requests ("我的订单到哪了，另外那条裙子有优惠吗") so each is
answered. Only explicit connectives split: a long message with backstory stays one request."""
from __future__ import annotations

import re
from typing import Awaitable, Callable, Dict, List

CONNECTIVES = ("另外", "还有个问题", "还有就是", "还有", "顺便问一下", "顺便问下", "顺便", "对了", "再问一下", "再问下",
               "还想问一下", "还想问", "另问", "以及")
_SPLIT_RE = re.compile(r"[，,。.!！？?；;\s]*(?:" + "|".join(map(re.escape, CONNECTIVES)) + r")[，,：:\s]*")
# intents that ask for something: two different ones in one message are two requests
REQUEST_INTENTS = {"order_status", "change_order", "cancel_order", "return_refund", "product_inquiry", "promotion",
                   "invoice", "payment", "shipping_policy", "checkin"}
# intents answered by the order form: they go last so its question is the last thing the customer reads
FORM_INTENTS = {"order_status", "change_order", "cancel_order", "return_refund"}
MIN_CONFIDENCE = 0.6
MIN_SEGMENT_CHARS = 3

Parse = Callable[[str], Awaitable[Dict]]


def candidate_segments(text: str) -> List[str]:
    if not any(c in text for c in CONNECTIVES):
        return [text]
    parts = [p.strip(" ，,。") for p in _SPLIT_RE.split(text)]
    return [p for p in parts if len(p) >= MIN_SEGMENT_CHARS]


async def split_requests(text: str, parse: Parse) -> List[str]:
    """The message as one or more requests, in the order they should be answered."""
    segments = candidate_segments(text)
    if len(segments) < 2:
        return [text]
    classified: List[tuple] = []
    for segment in segments:
        result = await parse(segment)
        intent = (result.get("intent") or {}).get("name")
        confidence = (result.get("intent") or {}).get("confidence") or 0.0
        classified.append((segment, intent, confidence))
    requests = [(s, i) for s, i, c in classified if i in REQUEST_INTENTS and c >= MIN_CONFIDENCE]
    if len(requests) < 2 or len({i for _, i in requests}) < 2:
        return [text]
    # context-only segments (greetings, "亲") are dropped; requests keep their order, forms last
    one_step = [s for s, i in requests if i not in FORM_INTENTS]
    forms = [s for s, i in requests if i in FORM_INTENTS]
    return one_step + forms

