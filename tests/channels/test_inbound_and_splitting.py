"""Inbound text cleaning and the two-requests-in-one-message splitter."""
from __future__ import annotations

from channels.inbound_text import EMPTY_PAYLOAD, clean
from channels.multi_request import candidate_segments, split_requests


def test_empty_control_and_payload_like_text():
    assert clean("", 2000).empty and clean("  \n\t ", 2000).text == EMPTY_PAYLOAD
    assert clean("\x00\x01abc\x7f", 2000).text == "abc"
    assert clean("/restart", 2000).text == "／restart"
    long = clean("退" * 10_000, 2000)
    assert long.truncated and len(long.text) == 2000


INTENTS = {
    "我的订单到哪了": ("order_status", 0.97),
    "那条裙子有优惠吗": ("promotion", 0.91),
    "能开发票吗": ("invoice", 0.95),
    "你好": ("greet", 0.99),
}


async def fake_parse(text):  # the NLU's answers for these segments
    name, confidence = INTENTS.get(text, ("chitchat", 0.4))
    return {"intent": {"name": name, "confidence": confidence}}


async def test_two_requests_are_answered_one_step_first_then_the_form():
    text = "我的订单到哪了，另外那条裙子有优惠吗"
    assert candidate_segments(text) == ["我的订单到哪了", "那条裙子有优惠吗"]
    assert await split_requests(text, fake_parse) == ["那条裙子有优惠吗", "我的订单到哪了"]


async def test_no_connective_or_one_request_keeps_the_message_whole():
    assert await split_requests("我的订单到哪了，能开发票吗", fake_parse) == ["我的订单到哪了，能开发票吗"]
    assert await split_requests("你好，另外我的订单到哪了", fake_parse) == ["你好，另外我的订单到哪了"]
