"""Exact identifiers in customer messages: SKUs, order numbers, tracking numbers.

They are looked up exactly (a fuzzy match on "XM2024-018" vs "XM2024-019" is a wrong answer), and an
order or tracking number always means the customer asks about one order: a database fact.
"""
from __future__ import annotations

import re
from typing import List

from .text import normalize

# letters + digits with optional dashes (SKU, SPU), or long digit runs (order / tracking numbers)
_TOKEN = re.compile(r"[0-9a-z]+(?:[-_][0-9a-z]+)*")
# order numbers: 10+ digits, optionally behind a short letter prefix; tracking numbers: courier prefixes
_ORDER_NO = re.compile(r"(?<![0-9a-z])(?:[a-z]{0,3}[0-9]{10,24})(?![0-9a-z])")
_TRACKING_NO = re.compile(r"(?<![0-9a-z])(?:sf|yt|zto|zt|sto|jt|jd|jdx|yd|ems|yz)[0-9]{9,16}(?![0-9a-z])")


def identifiers(text: str) -> List[str]:
    out = []
    for token in _TOKEN.findall(normalize(text)):
        has_digit = any(c.isdigit() for c in token)
        has_alpha = any(c.isalpha() for c in token)
        if (has_digit and has_alpha and len(token) >= 5) or (token.isdigit() and len(token) >= 6):
            out.append(token)
    return out


def order_or_tracking_numbers(text: str) -> List[str]:
    norm = normalize(text)
    found = [m.group(0) for m in _ORDER_NO.finditer(norm)] + [m.group(0) for m in _TRACKING_NO.finditer(norm)]
    return list(dict.fromkeys(found))
