"""Is a group message addressed to the bot, and what is the question without the address?

Members address the bot with an @-mention (WeChat / WeCom clients put U+2005, a four-per-em space,
after "@name"; typed mentions and some clients use an ordinary space), with a configured prefix
("豆豆，…", "#客服 …") or by using a configured keyword. Everything else in a group is
conversation between people and is left alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

MENTION_SPACE = "\u2005"
# after a mention: U+2005, any other whitespace, or the end of the text
_AFTER_MENTION = r"(?:[\u2005\s]+|$)"
# another member's @-mention as clients insert it (the name cannot contain U+2005)
_OTHER_MENTION = re.compile(r"@[^\s@\u2005]{1,32}\u2005")
_LEADING_PUNCT = re.compile(r"^[\s,，:：、]+")


@dataclass(frozen=True)
class Addressing:
    addressed: bool
    text: str  # the question with the bot's address removed
    how: Optional[str] = None  # mention / prefix / keyword


def _mention_pattern(names: Iterable[str]) -> Optional[re.Pattern]:
    names = sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True)
    if not names:
        return None
    alternatives = "|".join(re.escape(n).replace(r"\ ", r"[\s\u2005]?") for n in names)
    return re.compile(rf"@(?:{alternatives}){_AFTER_MENTION}", re.I)


def detect(text: str, bot_names: Iterable[str], prefixes: Iterable[str] = (), keywords: Iterable[str] = ()
           ) -> Addressing:
    text = text or ""
    mention = _mention_pattern(bot_names)
    if mention and mention.search(text):
        stripped = mention.sub(" ", text)
        stripped = _OTHER_MENTION.sub(" ", stripped)
        return Addressing(True, _clean(stripped), "mention")
    for prefix in sorted((p for p in prefixes if p), key=len, reverse=True):
        if text.lstrip().lower().startswith(prefix.lower()):
            return Addressing(True, _clean(text.lstrip()[len(prefix):]), "prefix")
    for keyword in keywords:
        if keyword and keyword.lower() in text.lower():
            return Addressing(True, _clean(_OTHER_MENTION.sub(" ", text)), "keyword")
    return Addressing(False, text.strip())


def _clean(text: str) -> str:
    text = re.sub(r"[ \t\u2005]+", " ", text)
    return _LEADING_PUNCT.sub("", text).strip()
