"""Escalation words: a message with anger, a dispute (authorities, lawyers, platform intervention)
or urgency is handed to a person whatever else it asks. The word lists are the shop's data
(nlu_data/escalation.yml); a match adds the entity `handoff_reason` and turns the intent into
`complaint` (anger, dispute) or `request_human` (urgency), so the dialogue's existing rules queue
the conversation with that reason."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Text, Tuple

import yaml
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.settings import REPO_ROOT

INTENT_FOR = {"dispute": "complaint", "anger": "complaint", "urgency": "request_human"}
# a message already going to a person keeps its intent (only the reason is added)
HANDED_ON = {"complaint", "request_human"}


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class EscalationDetector(GraphComponent):
    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"words_file": "nlu_data/escalation.yml"}

    def __init__(self, config: Dict[Text, Any]) -> None:
        path = Path(config["words_file"])
        path = path if path.is_absolute() else REPO_ROOT / path
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        # the order of the file is the order of precedence
        self.words: List[Tuple[str, List[str]]] = [(reason, [str(w) for w in words or []])
                                                   for reason, words in data.items() if reason in INTENT_FOR]

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "EscalationDetector":
        return cls({**cls.get_default_config(), **config})

    def find(self, text: str) -> Optional[Tuple[str, str, int]]:
        """(reason, word, position) of the first listed word in the text."""
        for reason, words in self.words:
            for word in words:
                at = text.find(word)
                if at >= 0:
                    return reason, word, at
        return None

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            found = self.find(text)
            if found is None:
                continue
            reason, word, at = found
            entities = list(message.get(ENTITIES) or [])
            entities.append({"entity": "handoff_reason", "value": reason, "start": at, "end": at + len(word),
                             "confidence_entity": 1.0, "extractor": "EscalationDetector"})
            message.set(ENTITIES, entities, add_to_output=True)
            intent = (message.get(INTENT) or {}).get(INTENT_NAME_KEY)
            if intent not in HANDED_ON:
                message.set(INTENT, {INTENT_NAME_KEY: INTENT_FOR[reason], PREDICTED_CONFIDENCE_KEY: 1.0},
                            add_to_output=True)
        return messages
