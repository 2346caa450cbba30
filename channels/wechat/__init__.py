"""WeChat and WeCom connectors of the assistant.

Inbound: every callback is verified (constant-time signature, timestamp window), decrypted, parsed,
deduplicated and stored in a durable inbox before it is acknowledged; Rasa handles it in a
background task. Outbound: the replies Rasa produces, and every proactive message, go through the
persistent outbox (channels/wechat/outbound/outbox.py) and one sender API (channels/wechat/outbound/sender.py) that
respects each channel's reply window and quota.

The platform sandbox in channels/wechat/sandbox/ stands in for the real platform in tests, the
benchmark and `python -m bot run --sandbox`. Platform-side setup: docs/WECHAT_SETUP.md.
"""
