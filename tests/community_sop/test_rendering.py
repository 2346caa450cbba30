"""Rendering community SOP posts on the demo shop (SQLite and PostgreSQL): variables, variants,
live product prices and stock read at render time, and the three WeCom delivery forms.

Catalog changes are flushed, never committed: the fixture's session rolls them back."""
from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from actions.db.models import Product, ProductVariant
from community_sop.rendering import (
    WARN_MASS_SEND_QUOTA,
    WARN_OWNER_REMINDER,
    WARN_ROBOT_MINIPROGRAM,
    GroupInfo,
    Post,
    choose_content,
    price_text,
    render,
    yuan_text,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_10AM = datetime(2026, 12, 7, 10, 0, tzinfo=SHANGHAI)
GROUP = GroupInfo(chat_id="wrOgQhDgAAAA", name="小满宝妈一群", owner="zhangsan", owner_name="张姐",
                  tags=("宝妈群", "杭州"))
DRESS = "NZ1001"  # 法式碎花雪纺连衣裙, ¥239, 2 colours x 4 sizes (catalog.yml)


def text_plan(text: str) -> dict:
    return {"content": [{"type": "text", "text": text}]}


async def variants_of(session, spu: str):
    stmt = (sa.select(ProductVariant).join(Product, Product.id == ProductVariant.product_id)
            .where(Product.spu == spu).order_by(ProductVariant.id))
    return (await session.execute(stmt)).scalars().all()


async def product_line(session, spu: str = DRESS) -> Post:
    return await render(session, {"content": [{"type": "product", "spu": spu}]}, GROUP, MONDAY_10AM)


# --- variables -------------------------------------------------------------------------------------
async def test_variables_are_filled_in_the_shop_time_zone(db_session):
    post = await render(db_session, text_plan("早上好 {群名}！今天是{日期}{星期}，{时间} {群主}带大家打卡 {优惠码}"),
                        GROUP, MONDAY_10AM)
    assert post.texts == ["早上好 小满宝妈一群！今天是12月7日星期一，10:00 张姐带大家打卡 {优惠码}"]
    assert post.problems == [] and post.variant is None

    # a naive datetime is UTC, as the database stores it: 23:30 UTC on the 6th is Monday 07:30 in Shanghai
    post = await render(db_session, text_plan("{日期}{星期} {时间}"), GROUP, datetime(2026, 12, 6, 23, 30))
    assert post.texts == ["12月7日星期一 07:30"]
    post = await render(db_session, text_plan("{日期}{星期} {时间}"), GROUP, MONDAY_10AM, tz="America/New_York")
    assert post.texts == ["12月6日星期日 21:00"]


async def test_owner_falls_back_to_the_userid_then_to_a_title(db_session):
    plan = text_plan("{群主}")
    named = await render(db_session, plan, GROUP, MONDAY_10AM)
    by_id = await render(db_session, plan, GroupInfo("c1", "群", owner="lisi"), MONDAY_10AM)
    nobody = await render(db_session, plan, GroupInfo("c1", "群"), MONDAY_10AM)
    assert [named.texts, by_id.texts, nobody.texts] == [["张姐"], ["lisi"], ["群主"]]


# --- variants --------------------------------------------------------------------------------------
def test_choose_content_takes_the_first_variant_the_group_is_tagged_with():
    default = [{"type": "text", "text": "默认"}]
    plan = {"content": default, "variants": [
        {"group_tag": "学生群", "content": [{"type": "text", "text": "学生"}]},
        {"group_tag": "杭州"},  # no content: not a usable variant
        {"group_tag": "宝妈群", "content": [{"type": "text", "text": "宝妈"}]},
        {"group_tag": "杭州", "content": [{"type": "text", "text": "杭州"}]},
    ]}
    assert choose_content(plan, ["杭州", "宝妈群"]) == ([{"type": "text", "text": "宝妈"}], "宝妈群")
    assert choose_content(plan, ["杭州"]) == ([{"type": "text", "text": "杭州"}], "杭州")
    assert choose_content(plan, ["上海"]) == (default, None)
    assert choose_content(plan, []) == (default, None)
    assert choose_content({}, ["宝妈群"]) == ([], None)


async def test_a_tagged_group_receives_its_variant(db_session):
    plan = {"content": [{"type": "text", "text": "大家好"}],
            "variants": [{"group_tag": "宝妈群", "content": [{"type": "text", "text": "{群名}的宝妈们好"}]}]}
    post = await render(db_session, plan, GROUP, MONDAY_10AM)
    assert (post.texts, post.variant) == (["小满宝妈一群的宝妈们好"], "宝妈群")
    other = await render(db_session, plan, GroupInfo("c2", "学生群"), MONDAY_10AM)
    assert (other.texts, other.variant) == (["大家好"], None)
    assert post.preview()["variant"] == "宝妈群"


# --- products: live price and stock --------------------------------------------------------------
def test_prices_in_yuan():
    assert [yuan_text(f) for f in (23900, 1250, 1205, 99, 0)] == ["¥239", "¥12.50", "¥12.05", "¥0.99", "¥0"]
    assert price_text([12900, 9900, 12900]) == "¥99-129"
    assert price_text([1250, 1999]) == "¥12.50-19.99"
    assert price_text([23900]) == "¥239"


async def test_a_product_shows_the_price_in_the_database_at_render_time(db_session):
    variants = await variants_of(db_session, DRESS)
    assert len(variants) == 8
    for v in variants:
        v.stock = 20
    await db_session.flush()
    post = await product_line(db_session)
    assert post.texts == ["【法式碎花雪纺连衣裙】¥239，有货"] and post.problems == []

    for v in variants:
        v.price_fen = 19900
    await db_session.flush()
    assert (await product_line(db_session)).texts == ["【法式碎花雪纺连衣裙】¥199，有货"]

    # changed behind the session's back (its loaded objects still say 199): the render reads the rows
    await db_session.execute(sa.update(ProductVariant).where(ProductVariant.id == variants[0].id)
                             .values(price_fen=1250).execution_options(synchronize_session=False))
    assert variants[0].price_fen == 19900
    assert (await product_line(db_session)).texts == ["【法式碎花雪纺连衣裙】¥12.50-199，有货"]


async def test_a_price_range_across_the_variants(db_session):
    variants = await variants_of(db_session, DRESS)
    variants[2].price_fen = 21950
    await db_session.flush()
    post = await product_line(db_session)
    assert "¥219.50-239" in post.texts[0]


async def test_stock_is_summed_over_the_variants(db_session):
    variants = await variants_of(db_session, DRESS)
    for v in variants:
        v.stock = 0
    variants[1].stock, variants[5].stock = 3, 4
    await db_session.flush()
    assert (await product_line(db_session)).texts == ["【法式碎花雪纺连衣裙】¥239，仅剩7件"]

    variants[5].stock = 8
    await db_session.flush()
    assert (await product_line(db_session)).texts[0].endswith("，有货")  # 11 left

    for v in variants:
        v.stock = 0
    await db_session.flush()
    post = await product_line(db_session)
    assert post.texts == ["【法式碎花雪纺连衣裙】¥239，已售罄"]
    assert post.problems == []  # sold out is shown, it does not stop the post
    assert any("已售罄" in note for note in post.warnings("robot"))


async def test_an_unknown_or_withdrawn_product_is_a_problem(db_session):
    post = await product_line(db_session, "NZ9999")
    assert post.texts == ["【商品 NZ9999 不存在或已下架】"]
    assert post.problems == ["商品 NZ9999 不存在或已下架"]
    assert post.preview()["problems"] == ["商品 NZ9999 不存在或已下架"]

    product = (await db_session.execute(sa.select(Product).where(Product.spu == DRESS))).scalar_one()
    product.on_sale = False
    await db_session.flush()
    assert (await product_line(db_session)).problems == [f"商品 {DRESS} 不存在或已下架"]

    assert (await render(db_session, {"content": [{"type": "product"}]}, GROUP, MONDAY_10AM)).problems \
        == ["商品块缺少 spu"]


# --- delivery forms --------------------------------------------------------------------------------
FULL_PLAN = {"content": [
    {"type": "text", "text": "{群名} {日期}上新"},
    {"type": "product", "spu": DRESS},
    {"type": "image", "url": "https://img.example.com/a.jpg"},
    {"type": "link", "title": "穿搭指南", "url": "https://shop.example.com/guide", "description": "三套通勤搭配",
     "picurl": "https://img.example.com/g.jpg"},
    {"type": "link", "title": "店铺首页", "url": "https://shop.example.com/"},
    {"type": "text", "text": "喜欢的姐妹点链接"},
    {"type": "miniprogram", "title": "小满商城", "appid": "wx1234567890abcdef", "page": "pages/item/index?spu=NZ1001"},
    {"type": "text", "text": "今晚 8 点截止"},
]}


async def full_post(session) -> Post:
    for v in await variants_of(session, DRESS):
        v.stock = 30
    await session.flush()
    post = await render(session, FULL_PLAN, GROUP, MONDAY_10AM)
    assert post.problems == []
    return post


async def test_the_robot_gets_few_messages_in_content_order(db_session):
    post = await full_post(db_session)
    assert post.for_robot() == [
        "小满宝妈一群 12月7日上新\n【法式碎花雪纺连衣裙】¥239，有货",
        {"msgtype": "news", "news": {"articles": [
            {"title": "图片", "url": "https://img.example.com/a.jpg", "picurl": "https://img.example.com/a.jpg"},
            {"title": "穿搭指南", "url": "https://shop.example.com/guide", "description": "三套通勤搭配",
             "picurl": "https://img.example.com/g.jpg"},
            {"title": "店铺首页", "url": "https://shop.example.com/"},
        ]}},
        "喜欢的姐妹点链接\n「小满商城」请在微信中打开小程序查看\n今晚 8 点截止",
    ]
    assert WARN_ROBOT_MINIPROGRAM in post.warnings("robot")


def test_a_robot_news_message_holds_at_most_8_articles():
    post = Post(texts=[], cards=[{"type": "image", "url": f"https://img.example.com/{i}.jpg"} for i in range(10)],
                problems=[], variant=None)
    messages = post.for_robot()
    assert [len(m["news"]["articles"]) for m in messages] == [8, 2]
    assert WARN_ROBOT_MINIPROGRAM not in post.warnings("robot")


async def test_mass_send_text_and_attachments(db_session):
    post = await full_post(db_session)
    text, attachments = post.for_mass_send()
    assert text == ("小满宝妈一群 12月7日上新\n【法式碎花雪纺连衣裙】¥239，有货\n喜欢的姐妹点链接\n今晚 8 点截止")
    assert attachments == [
        {"msgtype": "image", "image": {"pic_url": "https://img.example.com/a.jpg"}},
        {"msgtype": "link", "link": {"title": "穿搭指南", "picurl": "https://img.example.com/g.jpg",
                                     "desc": "三套通勤搭配", "url": "https://shop.example.com/guide"}},
        {"msgtype": "link", "link": {"title": "店铺首页", "url": "https://shop.example.com/"}},
        {"msgtype": "miniprogram", "miniprogram": {"title": "小满商城", "appid": "wx1234567890abcdef",
                                                   "page": "pages/item/index?spu=NZ1001"}},
    ]
    warnings = post.warnings("mass_send")
    assert warnings[0] == WARN_MASS_SEND_QUOTA
    assert any("pic_media_id" in w for w in warnings)  # WeCom needs a cover for a mini-program attachment

    with_cover = Post(texts=[], cards=[{"type": "miniprogram", "title": "小满商城", "appid": "wx1", "page": "p",
                                        "pic_media_id": "MEDIA"}], problems=[], variant=None)
    assert with_cover.for_mass_send()[1][0]["miniprogram"] == {"title": "小满商城", "pic_media_id": "MEDIA",
                                                              "appid": "wx1", "page": "p"}
    assert with_cover.warnings("mass_send") == [WARN_MASS_SEND_QUOTA]


async def test_the_owner_reminder_is_one_text_to_forward(db_session):
    post = await full_post(db_session)
    assert post.for_reminder("小满宝妈一群") == "\n".join([
        "请把下面的内容发到群「小满宝妈一群」：",
        "",
        "小满宝妈一群 12月7日上新",
        "【法式碎花雪纺连衣裙】¥239，有货",
        "喜欢的姐妹点链接",
        "今晚 8 点截止",
        "【图片】https://img.example.com/a.jpg",
        "【链接】穿搭指南 https://shop.example.com/guide",
        "【链接】店铺首页 https://shop.example.com/",
        "【小程序】小满商城（wx1234567890abcdef pages/item/index?spu=NZ1001）",
    ])
    assert post.warnings("owner_reminder") == [WARN_OWNER_REMINDER]
    with pytest.raises(ValueError):
        post.warnings("sms")


async def test_mass_send_limits_are_problems(db_session):
    images = [{"type": "image", "url": f"https://img.example.com/{i}.jpg"} for i in range(10)]
    assert (await render(db_session, {"content": images[:9]}, GROUP, MONDAY_10AM)).problems_for("mass_send") == []
    post = await render(db_session, {"content": images}, GROUP, MONDAY_10AM)
    assert len(post.for_mass_send()[1]) == 10
    assert [p for p in post.problems_for("mass_send") if "群发最多 9 个附件" in p]
    assert post.problems_for("robot") == [], "the robot and the owner's reminder carry any number of cards"

    long = await render(db_session, text_plan("好" * 1334), GROUP, MONDAY_10AM)  # 4002 bytes in UTF-8
    assert [p for p in long.problems_for("mass_send") if "4000 字节" in p] and long.problems == []
    assert (await render(db_session, text_plan("好" * 1333), GROUP, MONDAY_10AM)).problems_for("mass_send") == []


async def test_missing_keys_do_not_crash(db_session):
    plan = {"content": [
        {"type": "text"},
        {"type": "link", "title": "只有标题和网址", "url": "https://shop.example.com/"},
        {"type": "image"},
        {"type": "miniprogram", "title": "缺 page", "appid": "wx1"},
        {"type": "video", "url": "https://v.example.com/1.mp4"},
    ]}
    post = await render(db_session, plan, GroupInfo("c3", ""), datetime(2026, 12, 7))
    assert post.texts == []
    assert post.cards == [{"type": "link", "title": "只有标题和网址", "url": "https://shop.example.com/"}]
    assert post.problems == ["图片缺少链接（url）", "小程序缺少page", "不支持的内容类型：video"]
    assert (await render(db_session, {}, GROUP, MONDAY_10AM)).problems == ["内容为空"]


async def test_the_preview_is_json(db_session):
    post = await full_post(db_session)
    preview = post.preview()
    assert set(preview) == {"variant", "texts", "cards", "problems", "mass_send_problems", "robot", "mass_send"}
    assert json.loads(json.dumps(preview, ensure_ascii=False)) == preview
    assert preview["robot"] == post.for_robot()
    text, attachments = post.for_mass_send()
    assert preview["mass_send"] == {"text": text, "attachments": attachments}
    assert preview["texts"][1] == "【法式碎花雪纺连衣裙】¥239，有货"
    assert [c["type"] for c in preview["cards"]] == ["image", "link", "link", "miniprogram"]
