"""bot/nlu/patterns.py: the order-number, mobile and link patterns the NLU and the actions share."""
from __future__ import annotations

import pytest

from bot.nlu.patterns import BARE_SHOP_ORDER_NO, LINK, MOBILE_NO, ORDER_NO_LIKE, OTHER_ORDER_NO, SHOP_ORDER_NO


def test_a_shop_order_number_may_have_spaces_and_gives_its_digits():
    match = SHOP_ORDER_NO.search("订单 sy 2026 1103 000123 到哪了")
    assert match and match.group(1).replace(" ", "") == "20261103000123"
    assert not SHOP_ORDER_NO.search("XSY20261103000123")


@pytest.mark.parametrize("text", ["SY2026110300", "SY2026****0123", "4200001234567890123"])
def test_attempts_at_an_order_number_look_like_one(text):
    assert ORDER_NO_LIKE.search(text)


def test_a_mobile_number_is_no_order_number():
    assert MOBILE_NO.search("电话 13812345678") and not MOBILE_NO.search("138123456789")
    for pattern in (ORDER_NO_LIKE, OTHER_ORDER_NO, BARE_SHOP_ORDER_NO):
        assert not pattern.search("13812345678")


def test_a_bare_shop_number_starts_with_the_year():
    assert BARE_SHOP_ORDER_NO.search("20261103000123").group(1) == "20261103000123"
    assert not BARE_SHOP_ORDER_NO.search("19261103000123")


def test_links():
    assert LINK.search("看看这个 HTTPS://item.example.com/123") and LINK.search("www.example.com")
    assert not LINK.search("example.com")
