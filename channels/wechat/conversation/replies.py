"""Rasa's replies for WeChat: an OutputChannel that collects what the bot says in a turn (nothing is
sent inline), and the rendering of those replies into outbox messages.

A turn's replies are joined into as few messages as the channel's byte limit allows, because the
reply window counts messages (5 per user message) and a customer reads one bubble more easily
than four. Buttons become numbered options; an image becomes its link.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Text

from rasa.core.channels.channel import OutputChannel

from channels.wechat.outbound.outbox import OutgoingMessage
from channels.wechat.outbound.splitting import TEXT_LIMIT_BYTES, split_text


class ReplyCollector(OutputChannel):
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.messages: List[Dict[str, Any]] = []

    @classmethod
    def name(cls) -> Text:
        return "wechat"

    async def send_response(self, recipient_id: Text, message: Dict[Text, Any]) -> None:
        self.messages.append(message)


_NUMBERED_LINE = re.compile(r"^\s*\d+\s*[.、)）]", re.M)


def render(message: Dict[str, Any]) -> Optional[str]:
    parts: List[str] = []
    text = str(message.get("text") or "").strip()
    if text:
        parts.append(text)
    buttons = message.get("buttons") or message.get("quick_replies") or []
    options = [str(b.get("title")).strip() for b in buttons if isinstance(b, dict) and b.get("title")]
    # WeChat text has no buttons: the options become a numbered list to answer with, unless the text
    # already enumerates them
    if options and len(_NUMBERED_LINE.findall(text)) < len(options):
        parts.append("\n".join(title if _NUMBERED_LINE.match(title) else f"{n}. {title}"
                               for n, title in enumerate(options, 1)))
    if message.get("image"):
        parts.append(str(message["image"]))
    custom = message.get("custom")
    if isinstance(custom, dict) and isinstance(custom.get("text"), str):
        parts.append(custom["text"].strip())
    text = "\n".join(p for p in parts if p)
    return text or None


def reply_texts(messages: List[Dict[str, Any]], max_bytes: int = TEXT_LIMIT_BYTES) -> List[str]:
    joined = "\n\n".join(t for t in (render(m) for m in messages) if t)
    return split_text(joined, max_bytes)


def text_messages(texts: List[str], *, channel: str, recipient: str, key_prefix: str, account: Optional[str] = None,
                  conversation_id: Optional[str] = None, customer_id: Optional[int] = None,
                  mention: Optional[List[str]] = None) -> List[OutgoingMessage]:
    """Outbox messages with keys key_prefix-0, -1...: the same turn always yields the same keys."""
    result = []
    for n, text in enumerate(texts):
        content: Dict[str, Any] = {"content": text}
        if mention and n == 0:
            content["mentioned_list"] = mention
        result.append(OutgoingMessage(channel=channel, recipient=recipient, msgtype="text", body={"text": content},
                                      account=account, conversation_id=conversation_id, customer_id=customer_id,
                                      idempotency_key=f"{key_prefix}-{n}"))
    return result
