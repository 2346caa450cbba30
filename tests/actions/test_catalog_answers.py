"""Product and promotion answers come from the live database, never from templates."""
from __future__ import annotations

from actions.products import ActionProductInquiry
from actions.promotions import ActionPromotion
from actions.repositories import product_repository
from tests.actions import shop_queries as q
from tests.actions.helpers import responses, run, slot_events, tracker


async def test_price_comes_from_the_database(shop_db):
    product_repository.name_index.invalidate()
    t = tracker("im:u10001", "真空保温杯多少钱", "product_inquiry")
    messages, events = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_price"]
    assert messages[0]["price"] == "¥119"
    assert slot_events(events)["product"] == "JJ5002"
    q.set_price("JJ5002", 109)
    messages, _ = await run(ActionProductInquiry(), t)
    assert messages[0]["price"] == "¥109"


async def test_sold_out_variant_is_reported_and_others_offered(shop_db):
    product_repository.name_index.invalidate()
    t = tracker("im:u10001", "法式碎花雪纺连衣裙蓝色碎花XL有货吗", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_sold_out"]
    assert messages[0]["asked"] == "蓝色碎花/XL"
    t = tracker("im:u10001", "法式碎花雪纺连衣裙有货吗", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_stock_partial"]
    assert "蓝色碎花/XL" in messages[0]["out_of_stock"] and "杏色碎花/M" in messages[0]["in_stock"]


async def test_specs_and_sizes(shop_db):
    t = tracker("im:u10001", "轻跑缓震运动鞋尺码偏大还是偏小", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_variants", "utter_product_size_tip"]
    assert "偏小半码" in messages[1]["size_tip"]
    t = tracker("im:u10001", "充电宝能带上飞机吗 参数发我看看", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_specs"]
    assert "74Wh" in messages[0]["specs"]


async def test_ambiguous_names_ask_which_and_categories_recommend(shop_db):
    t = tracker("im:u10001", "裙子多少钱", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_choose"]
    assert {b["title"] for b in messages[0]["buttons"]} == {"法式碎花雪纺连衣裙", "醋酸缎面半身裙"}
    # the product talked about last resolves "那条裙子"
    t = tracker("im:u10001", "那条裙子多少钱", "product_inquiry", slots={"product": "NZ1007"})
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_price"] and messages[0]["product_name"] == "醋酸缎面半身裙"
    t = tracker("im:u10001", "数码配件有什么推荐", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_recommend"] and messages[0]["category"] == "数码配件"
    t = tracker("im:u10001", "你们卖不卖二手挖掘机", "product_inquiry")
    messages, _ = await run(ActionProductInquiry(), t)
    assert responses(messages) == ["utter_product_not_found"]


async def test_only_currently_valid_coupons_are_listed(shop_db):
    t = tracker("im:guest-1", "最近有什么优惠活动", "promotion")
    messages, _ = await run(ActionPromotion(), t)
    assert responses(messages) == ["utter_promotions_list"]
    listing = messages[0]["coupon_list"]
    assert "全场满199减30" in listing
    for gone in ("已结束", "未开始", "零食满99减10"):  # expired, future, paused by the shop
        assert gone not in listing


async def test_coupon_applicability_and_best_price_for_a_product(shop_db):
    t = tracker("im:guest-1", "羊毛双面呢大衣有优惠吗", "promotion")
    messages, events = await run(ActionPromotion(), t)
    assert responses(messages) == ["utter_promotion_for_product"]
    assert "大衣立减100" in messages[0]["coupon_list"] and "美妆" not in messages[0]["coupon_list"]
    # 899 with 15 % off women's wear = 764.15, better than 899 - 100
    assert messages[0]["best_coupon"] == "女装85折券" and messages[0]["best_price"] == "764.15"
    assert slot_events(events)["product"] == "NZ1004"


async def test_member_only_coupon_needs_the_level(shop_db):
    t = tracker("im:guest-1", "蓝牙耳机有券吗", "promotion")
    messages, _ = await run(ActionPromotion(), t)
    assert "数码配件9折券" not in messages[0].get("coupon_list", "")


async def test_price_protection_is_the_shop_policy(shop_db):
    t = tracker("im:guest-1", "买完降价了能退差价吗", "promotion")
    messages, _ = await run(ActionPromotion(), t)
    assert responses(messages) == ["utter_policy_answer"] and "15 天价保" in messages[0]["answer"]
