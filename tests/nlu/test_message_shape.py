"""bot/nlu/message_shape.py: the corrections the shape of a message makes to the classifier's intent."""
from __future__ import annotations

import pytest
from rasa.shared.nlu.training_data.message import Message

from bot.nlu.message_shape import MessageShape


@pytest.fixture(scope="module")
def shape() -> MessageShape:
    return MessageShape(MessageShape.get_default_config())


def classified(text: str, *ranking) -> Message:
    """A message as the intent classifier leaves it: `ranking` is (intent, confidence) pairs."""
    message = Message(data={"text": text})
    ranked = [{"name": name, "confidence": confidence} for name, confidence in ranking]
    message.set("intent", ranked[0])
    message.set("intent_ranking", ranked)
    message.set("entities", [])
    return message


def intent_after(shape: MessageShape, message: Message) -> str:
    shape.process([message])
    return message.get("intent")["name"]


@pytest.mark.parametrize("text", [
    "SY20261103000123",
    "订单号：SY20261103000123 实付：¥299.00 下单时间：2026-11-03 10:21",
    "【订单编号】SY20261103000123【实付金额】¥59.90【下单时间】2026/11/03 10:21:08",
    "3320198765432109",
    "SY2026****0123",
])
def test_an_order_number_or_a_pasted_card_alone_asks_about_that_order(shape, text):
    message = classified(text, ("payment", 0.6), ("order_status", 0.3))
    assert intent_after(shape, message) == "order_status"


def test_an_order_number_with_another_order_task_keeps_that_task(shape):
    message = classified("取消 SY20261103000123", ("cancel_order", 0.7), ("order_status", 0.2))
    assert intent_after(shape, message) == "cancel_order"


def test_an_order_number_with_a_real_question_is_left_to_the_classifier(shape):
    message = classified("SY20261103000123 这单能开专票吗", ("invoice", 0.8), ("order_status", 0.1))
    assert intent_after(shape, message) == "invoice"


def test_a_bare_shop_number_without_prefix_becomes_an_order_id(shape):
    message = classified("20261103000123", ("chitchat", 0.5), ("order_status", 0.4))
    shape.process([message])
    assert [(e["entity"], e["value"]) for e in message.get("entities")] == [("order_id", "SY20261103000123")]


def test_a_mobile_number_is_not_an_order_reference(shape):
    message = classified("13812345678", ("chitchat", 0.5), ("order_status", 0.4))
    assert intent_after(shape, message) == "chitchat"


def test_a_greeting_before_a_request_is_the_request(shape):
    message = classified("你好，我想问下退货运费谁出", ("greet", 0.5), ("return_refund", 0.4))
    assert intent_after(shape, message) == "return_refund"


def test_a_greeting_alone_stays_a_greeting(shape):
    message = classified("在吗？亲", ("greet", 0.9), ("chitchat", 0.05))
    assert intent_after(shape, message) == "greet"


@pytest.mark.parametrize("text", ["退款是原路退回的吧", "我理解的是七天内可以无理由退，对吧？", "这个是包邮的是吗",
                                  "会员是不是免运费"])
def test_a_yes_no_question_is_answered_not_taken_as_agreement(shape, text):
    message = classified(text, ("affirm", 0.6), ("return_refund", 0.3))
    assert intent_after(shape, message) == "return_refund"


def test_a_question_with_no_topic_goes_to_the_knowledge_base(shape):
    message = classified("这样真的可以的吧？", ("affirm", 0.99), ("deny", 0.01), ("greet", 0.0))
    assert intent_after(shape, message) == "chitchat"


@pytest.mark.parametrize("text", ["好的吧", "对，就是这个", "是的吗", "嗯嗯", "不是这个", "行吧", "可以的"])
def test_answers_stay_answers(shape, text):
    message = classified(text, ("affirm", 0.8), ("return_refund", 0.2))
    assert intent_after(shape, message) == "affirm"


def test_a_pasted_link_alone_is_a_product_question_not_a_coupon_request(shape):
    message = classified("https://item.example.com/100012.html", ("promotion", 0.6), ("product_inquiry", 0.3))
    assert intent_after(shape, message) == "product_inquiry"


def test_a_link_with_a_question_is_left_to_the_classifier(shape):
    message = classified("https://item.example.com/100012.html 这个能开发票吗", ("invoice", 0.7), ("payment", 0.2))
    assert intent_after(shape, message) == "invoice"


@pytest.mark.parametrize("text,intent", [("算了算了，不取消了", "cancel_order"), ("哦没事了，不用人工了", "goodbye"),
                                         ("不改了，先这样", "change_order")])
def test_taking_a_request_back_is_a_no(shape, text, intent):
    assert intent_after(shape, classified(text, (intent, 0.9), ("deny", 0.05))) == "deny"


@pytest.mark.parametrize("text", ["好的稍等，我找下手机号", "行，我等着"])
def test_asking_for_time_is_not_a_goodbye(shape, text):
    assert intent_after(shape, classified(text, ("goodbye", 0.8), ("affirm", 0.1))) == "affirm"
