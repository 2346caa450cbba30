"""Plaintext mode (an Official Account or mini-program with no EncodingAESKey): the callback's
`signature` is sha1(token, timestamp, nonce) and covers nothing of the body. Within the freshness
window anyone who holds the query string of one callback could sign any body with it.

So the (timestamp, nonce) of every plaintext callback is remembered with a hash of its body until
its timestamp is no longer accepted: the same body again is the platform's retry (accepted: the
inbox drops the repeated message by its MsgId), another body under a (timestamp, nonce) already
seen is refused (403). The rows are in the database (wechat_callback_nonces), so this holds across
a restart and for every gateway process sharing it; the sweeper deletes expired rows. Encrypted
callbacks need none of this: their msg_signature covers the ciphertext.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa

from channels.wechat import db
from channels.wechat.db import session as async_session
from channels.wechat.inbound.crypto import MalformedCallback, SignatureReused
from channels.wechat.models import CallbackNonce, now_utc

# kept a little past the window (the gateway's and the database's clocks)
EXPIRY_MARGIN = timedelta(seconds=60)
MAX_NONCE_CHARS = 64

async def first_use_or_retry(connector: str, timestamp: int, nonce: str, body: bytes, max_age_s: int) -> None:
    """Returns if this (timestamp, nonce) is new for the connector, or was seen with this same body;
    raises SignatureReused if it was seen with another body. `timestamp`: already checked fresh."""
    nonce = nonce or ""
    if len(nonce) > MAX_NONCE_CHARS:
        raise MalformedCallback("nonce too long")
    digest = hashlib.sha256(body).hexdigest()
    expires_at = datetime.utcfromtimestamp(timestamp + max_age_s) + EXPIRY_MARGIN
    async with db.transaction() as s:
        remembered = await s.execute(db.insert(s, CallbackNonce).values(
            connector=connector, timestamp=timestamp, nonce=nonce, body_sha256=digest, expires_at=expires_at)
            .on_conflict_do_nothing())
        if remembered.rowcount == 1:
            return
        # seen before (rare: a platform retry, or a replay)
        seen = (await s.execute(sa.select(CallbackNonce.body_sha256).where(
            CallbackNonce.connector == connector, CallbackNonce.timestamp == timestamp,
            CallbackNonce.nonce == nonce))).scalar()
    if seen != digest:
        raise SignatureReused("signature already used with another body (same timestamp and nonce)")


async def prune() -> int:
    """Forget nonces whose timestamps are no longer accepted anyway."""
    async with async_session() as session:
        result = await session.execute(sa.delete(CallbackNonce).where(CallbackNonce.expires_at < now_utc()))
        await session.commit()
        return result.rowcount or 0
