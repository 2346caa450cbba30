"""Callback authentication against Tencent's published vectors, the team's own implementation of
the algorithm, and the ways a callback can be forged, replayed or broken."""
from __future__ import annotations

import base64
import hmac
import os
import time

import pytest
from wechatpy.crypto.base import BasePrpCrypto

from channels.wechat.inbound import crypto as wc
from channels.wechat.inbound.crypto import (
    CallbackCrypto,
    CryptoConfigError,
    ForgedSignature,
    MalformedCallback,
    StaleTimestamp,
    WrongReceiver,
    sha1_signature,
)
from channels.wechat.inbound.payloads import parse_json, parse_xml
from tests.wechat import reference_crypto as ref

# Tencent's sample (WXBizMsgCrypt demos and the WeCom "加解密方案说明" page)
TOKEN, AES_KEY, CORP_ID = "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7"
MSG_SIGNATURE, TIMESTAMP, NONCE = "477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149"
ENCRYPTED = ("RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/"
             "sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJ"
             "YuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGU"
             "callcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDY"
             "A5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==")
VERIFY = {"msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "timestamp": "1409659589",
          "nonce": "263014780",
          "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="}


def official() -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, CORP_ID, max_age_s=300)


def test_official_message_vector_decrypts():
    plain = official().verify_and_decrypt(MSG_SIGNATURE, TIMESTAMP, NONCE, ENCRYPTED, now=int(TIMESTAMP) + 1)
    fields = parse_xml(plain.encode())
    assert fields["Content"] == "hello"
    assert fields["MsgId"] == "4561255354251345929"


def test_official_url_verification_vector():
    echo = official().verify_and_decrypt(VERIFY["msg_signature"], VERIFY["timestamp"], VERIFY["nonce"],
                                         VERIFY["echostr"], now=int(VERIFY["timestamp"]))
    assert echo == "1616140317555161061"


def test_reference_algorithm_agrees_on_the_official_vector():
    assert ref.signature(TOKEN, TIMESTAMP, NONCE, ENCRYPTED) == MSG_SIGNATURE
    msg, receive_id = ref.decrypt(AES_KEY, ENCRYPTED)
    assert receive_id == CORP_ID
    assert msg == official().decrypt(ENCRYPTED)


def test_wechatpy_encryption_equals_reference_algorithm(monkeypatch):
    """Same random prefix in, byte-identical ciphertext and signature out."""
    prefix = "abcdefgh12345678"
    monkeypatch.setattr(BasePrpCrypto, "get_random_string", lambda self: prefix)
    message = "<xml><Content><![CDATA[我的订单到哪了]]></Content></xml>"
    encrypted, signature, ts, nonce = official().encrypt(message, nonce="42", timestamp="1700000000")
    assert encrypted == ref.encrypt(AES_KEY, prefix.encode(), message, CORP_ID)
    assert signature == ref.signature(TOKEN, ts, nonce, encrypted)


def test_round_trip_with_fresh_random_prefix_decrypts_with_reference():
    message = "<xml><Content><![CDATA[" + "长" * 700 + "]]></Content></xml>"
    encrypted, signature, ts, nonce = official().encrypt(message)
    assert ref.decrypt(AES_KEY, encrypted) == (message, CORP_ID)
    assert official().verify_and_decrypt(signature, ts, nonce, encrypted) == message


def test_one_endpoint_crypto_serves_every_callback_alike():
    """The connectors build an endpoint's crypto once (callback_crypto) and use it for every callback:
    messages of different lengths, encrypted and decrypted in turn, come out as the reference
    algorithm says, and a callback for another corp is still refused afterwards."""
    shared = wc.callback_crypto(TOKEN, AES_KEY, CORP_ID, 300)
    assert wc.callback_crypto(TOKEN, AES_KEY, CORP_ID, 300) is shared
    for n, text in enumerate(["你好", "长" * 500, "", "<b>&amp;</b>", "x" * 15, "y" * 16]):
        message = f"<xml><Content><![CDATA[{text}]]></Content><MsgId>{n}</MsgId></xml>"
        encrypted, signature, ts, nonce = shared.encrypt(message)
        assert ref.decrypt(AES_KEY, encrypted) == (message, CORP_ID)
        assert shared.verify_and_decrypt(signature, ts, nonce, encrypted) == message
    assert shared.decrypt(ENCRYPTED) == official().decrypt(ENCRYPTED)
    other = CallbackCrypto(TOKEN, AES_KEY, "wwanothercorp", 300)
    encrypted, signature, ts, nonce = other.encrypt("<xml/>")
    with pytest.raises(wc.WrongReceiver):
        shared.verify_and_decrypt(signature, ts, nonce, encrypted)


def test_forged_signature_is_rejected():
    with pytest.raises(ForgedSignature):
        official().verify_and_decrypt("0" * 40, TIMESTAMP, NONCE, ENCRYPTED, now=int(TIMESTAMP))
    with pytest.raises(ForgedSignature):
        official().verify_and_decrypt(None, TIMESTAMP, NONCE, ENCRYPTED, now=int(TIMESTAMP))


def test_tampered_body_or_nonce_is_rejected():
    tampered = ENCRYPTED[:10] + ("A" if ENCRYPTED[10] != "A" else "B") + ENCRYPTED[11:]
    with pytest.raises(ForgedSignature):
        official().verify_and_decrypt(MSG_SIGNATURE, TIMESTAMP, NONCE, tampered, now=int(TIMESTAMP))
    with pytest.raises(ForgedSignature):
        official().verify_and_decrypt(MSG_SIGNATURE, TIMESTAMP, "1372623150", ENCRYPTED, now=int(TIMESTAMP))


@pytest.mark.parametrize("offset", [301, -301, 86400])
def test_stale_or_future_timestamp_is_rejected_even_with_a_valid_signature(offset):
    with pytest.raises(StaleTimestamp):
        official().verify_and_decrypt(MSG_SIGNATURE, TIMESTAMP, NONCE, ENCRYPTED, now=int(TIMESTAMP) + offset)


@pytest.mark.parametrize("timestamp", [None, "", "abc", "1e9"])
def test_missing_or_non_numeric_timestamp_is_rejected(timestamp):
    with pytest.raises(StaleTimestamp):
        official().verify_and_decrypt(MSG_SIGNATURE, timestamp, NONCE, ENCRYPTED)


def test_signature_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(wc.hmac, "compare_digest", spy)
    with pytest.raises(ForgedSignature):
        official().verify_and_decrypt("f" * 40, TIMESTAMP, NONCE, ENCRYPTED, now=int(TIMESTAMP))
    assert calls, "signatures must be compared with hmac.compare_digest"


def test_message_for_another_corp_is_rejected():
    other = CallbackCrypto(TOKEN, AES_KEY, "wwanothercorp")
    with pytest.raises(WrongReceiver):
        other.verify_and_decrypt(MSG_SIGNATURE, TIMESTAMP, NONCE, ENCRYPTED, now=int(TIMESTAMP))


def test_correctly_signed_garbage_is_malformed_not_a_crash():
    ts = str(int(time.time()))
    for garbage in ("not base64 at all!", base64.b64encode(os.urandom(15)).decode(),
                    base64.b64encode(os.urandom(64)).decode()):
        signature = sha1_signature(TOKEN, ts, "1", garbage)
        with pytest.raises((MalformedCallback, WrongReceiver)):
            official().verify_and_decrypt(signature, ts, "1", garbage)


def test_plaintext_mode_signature():
    plain = CallbackCrypto("plaintoken", None, "wxapp", corp=False)
    ts = str(int(time.time()))
    plain.verify_plain(sha1_signature("plaintoken", ts, "99"), ts, "99")
    with pytest.raises(ForgedSignature):
        plain.verify_plain(sha1_signature("othertoken", ts, "99"), ts, "99")
    with pytest.raises(StaleTimestamp):
        plain.verify_plain(sha1_signature("plaintoken", "1000", "99"), "1000", "99")


@pytest.mark.parametrize("key", ["short", "!" * 43, AES_KEY + "A"])
def test_unusable_encoding_aes_key_is_a_configuration_error(key):
    with pytest.raises(CryptoConfigError):
        CallbackCrypto(TOKEN, key, CORP_ID)


@pytest.mark.parametrize("body", [b"", b"   ", b"<xml><a>unclosed</xml>", b"<notxml><a>1</a></notxml>",
                                  b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><xml><a>&e;</a></xml>',
                                  b"<xml><a>" + b"x" * 70000 + b"</a></xml>", b"\xff\xfe garbage",
                                  b"<xml>" + b"<a>" * 9000 + b"1" + b"</a>" * 9000 + b"</xml>"])
def test_malformed_xml_is_rejected(body):
    with pytest.raises(MalformedCallback):
        parse_xml(body)


def test_nested_xml_fields():
    data = parse_xml("<xml><From><UserId><![CDATA[zs]]></UserId></From><Text><Content>hi</Content></Text>"
                     "<CreateTime>1</CreateTime></xml>".encode())
    assert data == {"From": {"UserId": "zs"}, "Text": {"Content": "hi"}, "CreateTime": "1"}


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b"{not json", b'"text"', b'{"a": ' * 9000 + b"1" + b"}" * 9000])
def test_malformed_json_is_rejected(body):
    with pytest.raises(MalformedCallback):
        parse_json(body)
