"""The conversation: an inbox row becomes a turn of the Rasa server (pipeline.py, over the relay:
relay_client.py), with the customer behind the WeChat user (identity.py), group messages only when
addressed to the bot (addressing.py), and Rasa's replies rendered as WeChat messages (replies.py)."""
