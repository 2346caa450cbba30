"""Callback authentication: signatures, the freshness window and AES, for every connector.

The platform signs a callback with sha1 over the sorted [token, timestamp, nonce(, encrypt)] and, in
secure mode, AES-256-CBC encrypts the body (WXBizMsgCrypt). wechatpy does the AES; the signature is
checked here because wechatpy compares with `!=` (timing leak) and accepts any timestamp (replays).
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import struct
import time
from typing import Optional, Tuple

from wechatpy.crypto import PrpCrypto as AppPrpCrypto
from wechatpy.utils import to_text
from wechatpy.work.crypto import PrpCrypto as CorpPrpCrypto


class CallbackRejected(Exception):
    """The callback is not from the platform (or not fresh): answered 403, never processed."""

    status = 403


class ForgedSignature(CallbackRejected):
    pass


class StaleTimestamp(CallbackRejected):
    pass


class WrongReceiver(CallbackRejected):
    """Decrypted fine but addressed to another corp / app id."""


class PlaintextRefused(CallbackRejected):
    """A plaintext body where an EncodingAESKey is configured: its plain `signature` covers token,
    timestamp and nonce only, not the body, so anyone holding one callback's query could sign any body."""


class SignatureReused(CallbackRejected):
    """Plaintext mode: a (timestamp, nonce) already seen with another body (channels/wechat/inbound/replays.py)."""


class MalformedCallback(ValueError):
    """The body or the query cannot be read: answered 400, never processed."""

    status = 400


class CryptoConfigError(ValueError):
    """A Token / EncodingAESKey that cannot work (told at start-up, not at the first callback)."""


def sha1_signature(*parts: str) -> str:
    """The platform's signature: sha1 of the parts sorted as byte strings and concatenated."""
    return hashlib.sha1(b"".join(sorted(p.encode("utf-8") for p in parts))).hexdigest()


def signatures_match(expected: str, given: Optional[str]) -> bool:
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8", "replace"))


def check_fresh(timestamp: Optional[str], max_age_s: int, now: Optional[float] = None) -> int:
    """The callback's Unix timestamp if it is within max_age_s of now (both directions)."""
    try:
        value = int(str(timestamp).strip())
    except (TypeError, ValueError):
        raise StaleTimestamp("timestamp missing or not a number")
    current = time.time() if now is None else now
    if abs(current - value) > max_age_s:
        raise StaleTimestamp(f"timestamp is {int(current - value)} s off (window {max_age_s} s)")
    return value


def decode_aes_key(encoding_aes_key: str) -> bytes:
    try:
        key = base64.b64decode((encoding_aes_key or "") + "=", validate=True)
    except (binascii.Error, ValueError):
        raise CryptoConfigError("EncodingAESKey is not base64 (43 characters from the platform's settings page)")
    if len(encoding_aes_key) != 43 or len(key) != 32:
        raise CryptoConfigError("EncodingAESKey must be the 43 characters shown by the platform")
    return key


class CallbackCrypto:
    """Verification (and AES when an EncodingAESKey is configured) of one callback endpoint.

    receive_id is what the platform appends to the plaintext: the corp id for WeCom apps and 微信客服,
    the app id for the Official Account and mini-program, "" for group robot callbacks.
    """

    def __init__(self, token: str, encoding_aes_key: Optional[str], receive_id: str, max_age_s: int = 300,
                 corp: bool = True) -> None:
        if not token:
            raise CryptoConfigError("callback Token is empty")
        self.token = token
        self.receive_id = receive_id
        self.max_age_s = max_age_s
        self.key = decode_aes_key(encoding_aes_key) if encoding_aes_key else None
        # wechatpy's PrpCrypto keeps only its AES cipher (a new context per message): made once, not
        # for every callback
        self._prp = (CorpPrpCrypto if corp else AppPrpCrypto)(self.key) if self.key is not None else None

    @property
    def secure(self) -> bool:
        return self.key is not None

    # --- inbound --------------------------------------------------------------------------------
    def verify_plain(self, signature: Optional[str], timestamp: Optional[str], nonce: Optional[str],
                     now: Optional[float] = None) -> int:
        """Plaintext mode (Official Account / mini-program): sha1(token, timestamp, nonce); the
        timestamp. It does not cover the body: see channels/wechat/inbound/replays.py."""
        value = check_fresh(timestamp, self.max_age_s, now)
        if not signatures_match(sha1_signature(self.token, str(timestamp), str(nonce or "")), signature):
            raise ForgedSignature("signature does not match")
        return value

    def verify_and_decrypt(self, msg_signature: Optional[str], timestamp: Optional[str], nonce: Optional[str],
                           encrypted: Optional[str], now: Optional[float] = None) -> str:
        """Secure mode: check sha1(token, timestamp, nonce, encrypt), then AES-decrypt it."""
        if self.key is None:
            raise CryptoConfigError("no EncodingAESKey configured for an encrypted callback")
        check_fresh(timestamp, self.max_age_s, now)
        if not isinstance(encrypted, str) or not encrypted:
            raise MalformedCallback("no Encrypt field / echostr")
        if not signatures_match(sha1_signature(self.token, str(timestamp), str(nonce or ""), encrypted),
                                msg_signature):
            raise ForgedSignature("msg_signature does not match")
        return self.decrypt(encrypted)

    def decrypt(self, encrypted: str) -> str:
        assert self.key is not None
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedCallback("Encrypt is not base64")
        if not raw or len(raw) % 16:
            raise MalformedCallback("Encrypt is not a whole number of AES blocks")
        try:
            # wechatpy raises its InvalidCorpId/AppId exception when the receive id differs
            return self._prp.decrypt(encrypted, self.receive_id)
        except (UnicodeDecodeError, struct.error, IndexError, ValueError) as exc:
            raise MalformedCallback(f"cannot decrypt ({type(exc).__name__}): check the EncodingAESKey")
        except Exception as exc:  # noqa: BLE001 - wechatpy's receive-id exceptions have no common base
            if type(exc).__name__ in ("InvalidCorpIdException", "InvalidAppIdException"):
                raise WrongReceiver("callback is for another corp id / app id")
            raise MalformedCallback(f"cannot decrypt ({type(exc).__name__})")

    # --- outbound (the sandbox, and tests that act as the platform) ----------------------------
    def encrypt(self, plaintext: str, nonce: Optional[str] = None, timestamp: Optional[str] = None
                ) -> Tuple[str, str, str, str]:
        """(encrypt, msg_signature, timestamp, nonce) exactly as the platform would send them."""
        if self.key is None:
            raise CryptoConfigError("no EncodingAESKey configured")
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**10))
        encrypted = to_text(self._prp.encrypt(plaintext, self.receive_id))
        return encrypted, sha1_signature(self.token, timestamp, nonce, encrypted), timestamp, nonce

    def plain_signature(self, timestamp: str, nonce: str) -> str:
        return sha1_signature(self.token, timestamp, nonce)


@functools.lru_cache(maxsize=64)
def callback_crypto(token: str, encoding_aes_key: Optional[str], receive_id: str, max_age_s: int = 300,
                    corp: bool = True) -> CallbackCrypto:
    """One endpoint's CallbackCrypto, made once per configuration (it decodes the key and builds the
    cipher) instead of for every callback."""
    return CallbackCrypto(token, encoding_aes_key, receive_id, max_age_s, corp)


def encrypted_xml_envelope(encrypted: str, to_user: str = "", agent_id: str = "") -> str:
    """The XML body the platform POSTs in secure mode."""
    agent = f"<AgentID><![CDATA[{agent_id}]]></AgentID>" if agent_id else ""
    return (f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName>{agent}"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>")
