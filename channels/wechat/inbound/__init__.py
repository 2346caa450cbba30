"""Callbacks in: the platform's callbacks are verified (signatures, freshness, nonces), decrypted and
parsed (connectors.py on callback.py, crypto.py, payloads.py, replays.py), 微信客服 messages are pulled
(kf.py, cursors.py), and every message is stored in the durable inbox (inbox.py) before the
callback is acknowledged."""
