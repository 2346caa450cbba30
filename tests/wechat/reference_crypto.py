"""WXBizMsgCrypt written by the team from Tencent's published description of the algorithm, without
wechatpy, to cross-check the library the connectors use:

  AESKey = Base64_Decode(EncodingAESKey + "=")                      (32 bytes)
  FullStr = random(16 bytes) + msg_len(4 bytes, network order) + msg + receiveid
  msg_encrypt = Base64_Encode(AES-256-CBC(AESKey, iv = AESKey[:16], PKCS#7 pad to 32 bytes)(FullStr))
  msg_signature = sha1(sort([token, timestamp, nonce, msg_encrypt]) joined)
"""
from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


def encrypt(encoding_aes_key: str, random16: bytes, msg: str, receive_id: str) -> str:
    key = aes_key(encoding_aes_key)
    body = msg.encode()
    full = random16 + struct.pack(">I", len(body)) + body + receive_id.encode()
    pad = 32 - len(full) % 32
    full += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(full) + encryptor.finalize()).decode()


def decrypt(encoding_aes_key: str, msg_encrypt: str):
    key = aes_key(encoding_aes_key)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    full = decryptor.update(base64.b64decode(msg_encrypt)) + decryptor.finalize()
    full = full[:-full[-1]]
    (length,) = struct.unpack(">I", full[16:20])
    return full[20:20 + length].decode(), full[20 + length:].decode()
