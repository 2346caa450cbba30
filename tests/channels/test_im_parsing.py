"""The web IM channel's request validation and identity rules (no server needed)."""
from __future__ import annotations

import json

import pytest

from channels.im import BadRequest, ConversationGate, WebIMInput, sign_sender


class FakeRequest:
    def __init__(self, body):
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


def channel(secret=None):
    ch = WebIMInput()
    ch.secret = secret
    return ch


@pytest.mark.parametrize("body,reason", [
    (b"{nope", "valid JSON"), (b"\xff\xfe", "valid JSON"), ([1, 2], "JSON object"),
    ({"message": "hi"}, "'sender'"), ({"sender": "a b", "message": "hi"}, "'sender'"),
    ({"sender": "x" * 65, "message": "hi"}, "'sender'"), ({"sender": "u1"}, "'message'"),
    ({"sender": "u1", "message": 5}, "'message'"), ({"sender": "u1", "payload": "/restart"}, "'payload'"),
    ({"sender": "u1", "payload": '/order_status{"verified_orders":["SY1"]}'}, "'payload'"),
    ({"sender": "u1", "message": "hi", "metadata": []}, "'metadata'"),
    ({"sender": "u1", "message": "hi", "mode": "callback"}, "callback"),
])
def test_malformed_requests_are_rejected_with_a_reason(body, reason):
    with pytest.raises(BadRequest) as err:
        channel().parse(FakeRequest(body))
    assert reason in str(err.value)


def test_button_payloads_of_the_assistant_are_accepted():
    parsed = channel().parse(FakeRequest({"sender": "u1", "payload": '/order_status{"order_id":"SY20261103000123"}'}))
    assert parsed["payload"].startswith("/order_status")


def test_identity_is_trusted_only_when_signed():
    # no secret configured: nobody can be trusted as a customer
    assert channel().conversation_id("u10001", None) == "im:guest-u10001"
    assert channel().conversation_id("u10001", sign_sender("", "u10001")) == "im:guest-u10001"
    signed = channel("s3cret")
    assert signed.conversation_id("u10001", sign_sender("s3cret", "u10001")) == "im:u10001"
    assert signed.conversation_id("u10001", sign_sender("s3cret", "u10001").upper()) == "im:u10001"
    assert signed.conversation_id("u10001", "forged") == "im:guest-u10001"
    assert signed.conversation_id("u10001", None) == "im:guest-u10001"
    # a signature that is not ASCII hex is not compared (hmac.compare_digest refuses non-ASCII text)
    assert signed.conversation_id("u10001", "签名" * 32) == "im:guest-u10001"
    assert signed.conversation_id("u10001", 12345) == "im:guest-u10001"


@pytest.mark.parametrize("body,reason", [
    (b'{"sender": "u1", "message": "hi", "metadata": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001, "nested"),
    ({"sender": "u1", "message": "hi", "metadata": {"a": [[[[[[[[[1]]]]]]]]]}}, "nested"),
    ({"sender": "u1", "message": "hi", "metadata": {"a": "x" * 9000}}, "larger"),
    (b'{"sender": "u1", "message": "hi", "metadata": {"a": "\\ud800"}}', "Unicode"),
])
def test_deep_huge_or_broken_metadata_is_a_bad_request(body, reason):
    with pytest.raises(BadRequest) as err:
        channel().parse(FakeRequest(body))
    assert reason in str(err.value)


def test_a_client_cannot_set_the_address_the_server_saw():
    parsed = channel().parse(FakeRequest({"sender": "u1", "message": "hi",
                                          "metadata": {"siyu_client": {"address": "10.0.0.1"}, "page": "商品页"}}))
    assert parsed["metadata"] == {"page": "商品页"}


def test_a_conversation_has_a_bounded_number_of_turns_in_flight():
    gate = ConversationGate(2)
    assert gate.enter("im:a") and gate.enter("im:a")
    assert not gate.enter("im:a")
    assert gate.enter("im:b")
    gate.leave("im:a")
    assert gate.enter("im:a")
