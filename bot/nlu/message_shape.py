"""Reads the shape of a message where the intent classifier reads only its words.

Real customers paste order cards, open with a greeting before the question, and ask confirmation
questions that end in 吧 / 对吧 / 是吗. A bag-of-n-grams classifier gets these wrong in ways the
dialogue cannot repair, so this component corrects the intent after classification:

* a message that is only an order reference (a number, a pasted card with amount and time) is
  about that order: `order_status`, unless the classifier already chose another order task;
  a bare 14-digit number in the shop's format gets the `SY` prefix as an `order_id` entity;
* a greeting followed by a real request is that request (the best non-greeting intent);
* a link pasted on its own is about the product behind it (`product_inquiry`);
* taking a request back ("算了，不取消了", "不用人工了") is `deny`; "稍等，我找找" is `affirm`;
* a yes/no question is not agreement: `affirm` / `deny` give way to the question's topic, or to
  `chitchat` (the knowledge base) when no topic stands out.
The patterns are the shop's data (nlu_data/message_shape.yml).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Text

import yaml
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.patterns import BARE_SHOP_ORDER_NO, LINK, OTHER_ORDER_NO, SHOP_ORDER_NO
from bot.settings import REPO_ROOT

ORDER_TASKS = {"order_status", "cancel_order", "change_order", "return_refund"}
# requests a customer takes back with "不取消了" / "不用人工了"
WITHDRAWABLE = {"cancel_order", "change_order", "return_refund", "request_human", "complaint", "unsubscribe",
                "order_status", "goodbye", "chitchat"}
# order numbers (the shop's, bare, other formats) and links: bot/nlu/patterns.py (shared with the actions)
DATE = re.compile(r"\d{2,4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?")
TIME = re.compile(r"\d{1,2}\s*[:：]\s*\d{2}(\s*[:：]\s*\d{2})?")
AMOUNT = re.compile(r"[¥￥]?\s*\d+(\.\d{1,2})?\s*元?")
FILLER = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass
class Patterns:
    card_labels: List[str]
    greetings: List[str]
    question_endings: List[str]
    question_words: List[str]
    answer_starts: List[str]
    withdrawals: List[str]
    waiting: List[str]

    @classmethod
    def load(cls, path: Path) -> "Patterns":
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        # longest first, so "订单编号" is removed before "订单"
        return cls(*(sorted((str(w) for w in data.get(key) or []), key=len, reverse=True)
                     for key in ("card_labels", "greetings", "question_endings", "question_words",
                                 "answer_starts", "withdrawals", "waiting")))


def _strip(text: str, words: List[str]) -> str:
    for word in words:
        text = text.replace(word, " ")
    return text


def _content(text: str) -> str:
    return FILLER.sub("", text)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class MessageShape(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"patterns_file": "nlu_data/message_shape.yml",
                # a greeting or an answer gives way only to an intent at least this confident
                "min_alternative_confidence": 0.05}

    def __init__(self, config: Dict[Text, Any]) -> None:
        path = Path(config["patterns_file"])
        self.patterns = Patterns.load(path if path.is_absolute() else REPO_ROOT / path)
        self.min_alternative = float(config["min_alternative_confidence"])

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "MessageShape":
        return cls({**cls.get_default_config(), **config})

    # --- what the message is ------------------------------------------------------------------
    def order_reference_only(self, text: str) -> bool:
        """The message is an order number or a pasted order card and nothing else."""
        if not (SHOP_ORDER_NO.search(text) or BARE_SHOP_ORDER_NO.search(text) or OTHER_ORDER_NO.search(text)):
            return False
        rest = SHOP_ORDER_NO.sub(" ", text)
        rest = OTHER_ORDER_NO.sub(" ", rest)
        rest = DATE.sub(" ", rest)
        rest = TIME.sub(" ", rest)
        rest = AMOUNT.sub(" ", rest)
        rest = _strip(rest, self.patterns.card_labels)
        return len(_content(rest)) <= 1

    def link_only(self, text: str) -> bool:
        """A pasted link with at most a few words ("这个有货吗" is left to the classifier)."""
        return bool(LINK.search(text)) and len(_content(LINK.sub(" ", text))) <= 2

    def request_after_greeting(self, text: str) -> bool:
        return len(_content(_strip(text, self.patterns.greetings))) >= 4

    def is_question(self, text: str) -> bool:
        """A yes/no or open question, as opposed to an answer ("好的吧", "对，就这个")."""
        stripped = text.strip()
        if any(stripped.startswith(w) for w in self.patterns.answer_starts):
            return False
        core = re.sub(r"[\s。.!！~～…]+$", "", stripped)
        asked = core.endswith(("?", "？"))
        core = core.rstrip("?？ ")
        ending = next((e for e in self.patterns.question_endings if core.endswith(e)), None)
        if ending is None and not asked and not any(w in core for w in self.patterns.question_words):
            return False
        body = core[:len(core) - len(ending)] if ending else core
        return len(_content(body)) >= 4

    # --- corrections ---------------------------------------------------------------------------
    def _alternative(self, message: Message, excluded: set) -> Optional[Dict[str, Any]]:
        for candidate in message.get("intent_ranking") or []:
            if candidate.get(INTENT_NAME_KEY) not in excluded:
                if (candidate.get(PREDICTED_CONFIDENCE_KEY) or 0.0) >= self.min_alternative:
                    return candidate
                return None
        return None

    @staticmethod
    def _set_intent(message: Message, name: str, confidence: float) -> None:
        intent = {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: confidence}
        ranking = [r for r in message.get("intent_ranking") or [] if r.get(INTENT_NAME_KEY) != name]
        message.set(INTENT, intent, add_to_output=True)
        message.set("intent_ranking", [intent] + ranking, add_to_output=True)

    def _add_bare_order_no(self, message: Message, text: str) -> None:
        entities = list(message.get(ENTITIES) or [])
        if any(e.get("entity") == "order_id" for e in entities):
            return
        match = BARE_SHOP_ORDER_NO.search(text)
        if match and not SHOP_ORDER_NO.search(text):
            entities.append({"entity": "order_id", "value": "SY" + match.group(1), "start": match.start(1),
                             "end": match.end(1), "confidence_entity": 1.0, "extractor": "MessageShape"})
            message.set(ENTITIES, entities, add_to_output=True)

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            intent = (message.get(INTENT) or {}).get(INTENT_NAME_KEY)
            if not text or not intent:
                continue
            self._add_bare_order_no(message, text)
            if self.order_reference_only(text):
                if intent not in ORDER_TASKS:
                    self._set_intent(message, "order_status", 1.0)
                continue
            if self.link_only(text):
                # a product page pasted on its own is a question about that product, never a coupon
                if intent != "product_inquiry":
                    self._set_intent(message, "product_inquiry", 1.0)
                continue
            if intent in WITHDRAWABLE and any(w in text for w in self.patterns.withdrawals):
                # "算了，不取消了" / "不用人工了": taking the request back is a no
                self._set_intent(message, "deny", 1.0)
                continue
            if intent == "goodbye" and any(w in text for w in self.patterns.waiting):
                # "好的稍等，我找下手机号" keeps the conversation going
                self._set_intent(message, "affirm", 1.0)
                continue
            if intent == "greet" and self.request_after_greeting(text):
                alternative = self._alternative(message, {"greet"})
                if alternative:
                    self._set_intent(message, alternative[INTENT_NAME_KEY], alternative[PREDICTED_CONFIDENCE_KEY])
            elif intent in ("affirm", "deny") and self.is_question(text):
                alternative = self._alternative(message, {"affirm", "deny", "greet", "thanks", "goodbye"})
                name = alternative[INTENT_NAME_KEY] if alternative else "chitchat"
                self._set_intent(message, name, alternative[PREDICTED_CONFIDENCE_KEY] if alternative else 0.0)
        return messages
