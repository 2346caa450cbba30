"""Cleaning of inbound message text, shared by every connector: what reaches the NLU is bounded,
printable text that cannot be mistaken for a Rasa intent payload."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Control characters other than newline and tab (binary-looking input), and lone surrogates (JSON
# may carry "\ud800"; such text cannot be encoded as UTF-8 anywhere downstream)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
EMPTY_PAYLOAD = "/empty_message"


@dataclass
class CleanText:
    text: str
    truncated: bool
    empty: bool


def clean(raw: str, max_chars: int) -> CleanText:
    text = _CONTROL_RE.sub("", raw or "")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        return CleanText(EMPTY_PAYLOAD, False, True)
    truncated = len(text) > max_chars
    if truncated:
        text = text[:max_chars]
    if text.startswith("/"):
        # typed text is never an intent payload ("/restart" must not reset the conversation)
        text = "／" + text[1:]
    return CleanText(text, truncated, False)
