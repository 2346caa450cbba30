"""The web IM channel's request validation and identity rules (no server needed)."""
from __future__ import annotations

import json

import pytest

from channels.im import BadRequest, WebIMInput, sign_sender


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


def test_identity_is_trusted_only_when_signed_if_a_secret_is_set():
    assert channel().conversation_id("u10001", None) == "im:u10001"
    signed = channel("s3cret")
    assert signed.conversation_id("u10001", sign_sender("s3cret", "u10001")) == "im:u10001"
    assert signed.conversation_id("u10001", "forged") == "im:guest-u10001"
    assert signed.conversation_id("u10001", None) == "im:guest-u10001"
