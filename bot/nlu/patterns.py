"""Order numbers, mobile numbers and links in a customer's message: the patterns the NLU
(bot/nlu/message_shape.py) and the actions (actions/order_access.py, orders.py, products.py) share.

They live under bot/ because the action server already imports from bot/ (bot.settings) while the
Rasa server's components never import actions/. Plain `re` only: importing this pulls in neither
Rasa nor the database. The RegexEntityExtractor's own order / ticket patterns are training data
(nlu_data/entities.yml) and stay there.
"""
from __future__ import annotations

import re

# the digits of a mainland mobile number
_MOBILE = r"1[3-9]\d{9}"
# numbers from other shops' formats: long digit runs (not a mobile number), masked numbers ("SY2026****0123")
_OTHER_FORMATS = (r"(?<![\dA-Za-z])(?!" + _MOBILE + r"(?!\d))\d{10,24}(?!\d)"
                  r"|[A-Za-z]{0,3}\d{2,}\*{2,}\d{2,}")

# a mainland mobile number on its own
MOBILE_NO = re.compile(r"(?<!\d)" + _MOBILE + r"(?!\d)")
# the shop's order number, spaces allowed ("sy 2026 1103 000123"); group 1: the digits
SHOP_ORDER_NO = re.compile(r"(?<![A-Za-z0-9])[Ss][Yy]\s?(\d[\d\s]{12,20}\d)(?!\d)")
# a shop order number without its prefix: 14 digits starting with the year; group 1: the number
BARE_SHOP_ORDER_NO = re.compile(r"(?<![\dA-Za-z])(20\d{12})(?!\d)")
# an order number of another format (what a pasted card of another shop or platform carries)
OTHER_ORDER_NO = re.compile(_OTHER_FORMATS)
# something that looks like an attempt at an order number: the shop's prefix with the wrong length, or
# another format
ORDER_NO_LIKE = re.compile(r"(?<![A-Za-z0-9])[Ss][Yy]\s?\d{4,30}(?!\d)|" + _OTHER_FORMATS)
# a web link (a pasted product page)
LINK = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
