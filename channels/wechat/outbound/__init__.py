"""Replies out: the one sender API for replies, staff, SOP posts and nudges (sender.py), the users'
reply windows and quotas (windows.py), the persistent outbox (outbox.py) that the worker sends
(worker.py, delivery.py) through the platform's APIs (platform.py on http.py, tokens.py,
errcodes.py), long texts split to the platform's limits (splitting.py), and mass-send tasks
(mass_send.py)."""
