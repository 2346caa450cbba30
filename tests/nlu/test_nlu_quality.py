"""The trained NLU on the independent field set (tests/data/nlu_field_test.yml, never trained on)."""
from __future__ import annotations

import asyncio

import pytest
import yaml

from bot.settings import REPO_ROOT

pytestmark = pytest.mark.model
FIELD_SET = REPO_ROOT / "tests" / "data" / "nlu_field_test.yml"
CONTRACT = {"greet", "goodbye", "thanks", "affirm", "deny", "bot_challenge", "order_status", "change_order",
            "cancel_order", "return_refund", "product_inquiry", "promotion", "invoice", "payment",
            "shipping_policy", "complaint", "request_human", "unsubscribe", "checkin", "chitchat"}


def field_examples():
    data = yaml.safe_load(FIELD_SET.read_text(encoding="utf-8"))
    for block in data["nlu"]:
        for line in block["examples"].splitlines():
            if line.strip().startswith("- "):
                yield line.strip()[2:], block["intent"]


@pytest.fixture(scope="module")
def agent(trained_model):
    from rasa.core.agent import Agent

    return Agent.load(str(trained_model))


def test_the_intent_contract_is_in_the_model(agent):
    assert CONTRACT <= set(agent.domain.intents)


def test_field_set_accuracy_meets_the_bar(agent):
    examples = list(field_examples())
    assert len(examples) == 800

    async def classify():
        return [(await agent.parse_message(text))["intent"]["name"] for text, _ in examples]

    predicted = asyncio.run(classify())
    accuracy = sum(p == e for p, (_, e) in zip(predicted, examples)) / len(examples)
    print(f"\nfield-set intent accuracy: {accuracy:.3f}")
    assert accuracy >= 0.88


@pytest.mark.parametrize("text,intent,reason", [
    ("你们这什么破店，气死我了", "complaint", "anger"),
    ("再不退款我就打12315投诉你们", "complaint", "dispute"),
    ("急死了，今天必须给我发货", "request_human", "urgency"),
    ("转人工，十万火急", "request_human", "urgency"),
])
def test_anger_disputes_and_urgency_go_to_a_person(agent, text, intent, reason):
    parsed = asyncio.run(agent.parse_message(text))
    assert parsed["intent"]["name"] == intent
    assert {"entity": "handoff_reason", "value": reason} in [
        {"entity": e["entity"], "value": e["value"]} for e in parsed["entities"]]


@pytest.mark.parametrize("text", ["垃圾袋有货吗", "滚筒洗衣机有优惠吗", "我的订单到哪了"])
def test_everyday_words_are_not_escalation(agent, text):
    parsed = asyncio.run(agent.parse_message(text))
    assert all(e["entity"] != "handoff_reason" for e in parsed["entities"])
