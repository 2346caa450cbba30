"""Splitting a long reply into messages that fit a channel's byte limit (UTF-8: a Chinese character
is 3 bytes, so 2048 bytes are ~680 characters). Cuts fall after a sentence end if possible, then
after a clause, then at a line break; a single over-long run is cut at a character boundary."""
from __future__ import annotations

import re
from typing import List

# text limits in bytes, per channel and message type
TEXT_LIMIT_BYTES = 2048
MARKDOWN_LIMIT_BYTES = 4096

_SENTENCE_END = re.compile(r"(?<=[。！？!?…；;])|(?<=\n)|(?<=\.\s)")
_CLAUSE_END = re.compile(r"(?<=[，,、：:])|(?<=\s)")


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _pieces(text: str, pattern: re.Pattern) -> List[str]:
    return [p for p in pattern.split(text) if p]


def _hard_cut(text: str, max_bytes: int) -> List[str]:
    parts, current, size = [], [], 0
    for char in text:
        width = utf8_len(char)
        if size + width > max_bytes and current:
            parts.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        parts.append("".join(current))
    return parts


def _fit(unit: str, max_bytes: int) -> List[str]:
    """A unit longer than the limit, broken at clause boundaries, else hard."""
    if utf8_len(unit) <= max_bytes:
        return [unit]
    result: List[str] = []
    for clause in _pieces(unit, _CLAUSE_END):
        result.extend([clause] if utf8_len(clause) <= max_bytes else _hard_cut(clause, max_bytes))
    return result


def split_text(text: str, max_bytes: int = TEXT_LIMIT_BYTES) -> List[str]:
    """Messages of at most max_bytes each that concatenate back to the text (whitespace at the cuts
    trimmed); empty text gives no messages."""
    if max_bytes < 4:
        raise ValueError("max_bytes must hold at least one character")
    text = (text or "").strip()
    if not text:
        return []
    if utf8_len(text) <= max_bytes:
        return [text]
    units: List[str] = []
    for sentence in _pieces(text, _SENTENCE_END):
        units.extend(_fit(sentence, max_bytes))
    messages, current = [], ""
    for unit in units:
        if current and utf8_len(current + unit) > max_bytes:
            messages.append(current)
            current = ""
        current += unit
    if current:
        messages.append(current)
    return [m.strip() for m in messages if m.strip()]
