"""Byte-limit splitting, group addressing, identity linking by unionid, windows bookkeeping and the
migration matching the models."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from actions.db.engine import async_session
from actions.db.models import Customer, CustomerIdentity
from actions.identity import customer_for
from channels.wechat.conversation import identity
from channels.wechat.conversation.addressing import detect
from channels.wechat.models import now_utc
from channels.wechat.outbound import windows
from channels.wechat.outbound.splitting import split_text, utf8_len


# --- splitting -----------------------------------------------------------------------------------
def test_short_text_is_one_message_and_empty_is_none():
    assert split_text("你好") == ["你好"]
    assert split_text("   ") == []


@pytest.mark.parametrize("limit", [2048, 600, 100])
def test_chinese_sentences_split_on_sentence_ends_within_the_limit(limit):
    text = "".join(f"第{n}句话说明退换货的规则。" for n in range(300))
    parts = split_text(text, limit)
    assert all(utf8_len(p) <= limit for p in parts)
    assert "".join(parts) == text
    assert all(p.endswith("。") for p in parts)


def test_one_overlong_sentence_splits_at_clauses_then_characters():
    clauses = "，".join(["这个分句没有句号"] * 200)
    parts = split_text(clauses, 2048)
    assert all(utf8_len(p) <= 2048 for p in parts) and "".join(parts) == clauses
    assert parts[0].endswith("，")
    solid = "字" * 2000 + "😀" * 10
    parts = split_text(solid, 2048)
    assert all(utf8_len(p) <= 2048 for p in parts) and "".join(parts) == solid


def test_mixed_latin_text_keeps_words():
    text = "Order SY20260101000001 shipped. " * 200
    parts = split_text(text, 300)
    assert all(utf8_len(p) <= 300 for p in parts)
    assert all("SY2026" not in p[-10:] or p.endswith("shipped.") for p in parts)


# --- group addressing ------------------------------------------------------------------------------
NAMES = ["AI 豆"]


@pytest.mark.parametrize("text,expected", [
    ("@AI 豆\u2005我的订单到哪了", "我的订单到哪了"),
    ("@AI 豆 我的订单到哪了", "我的订单到哪了"),
    ("@AI豆\u2005发票怎么开", "发票怎么开"),
    ("请问一下 @AI 豆\u2005", "请问一下"),
    ("@张三\u2005@AI 豆\u2005这件有货吗", "这件有货吗"),
])
def test_mentions_are_detected_and_stripped(text, expected):
    result = detect(text, NAMES)
    assert result.addressed and result.how == "mention" and result.text == expected


@pytest.mark.parametrize("text", ["大家晚上好", "@AI 豆子 你好", "@张三\u2005你的快递到了", "AI 豆真可爱"])
def test_messages_between_people_are_left_alone(text):
    assert not detect(text, NAMES).addressed


def test_prefix_and_keyword():
    assert detect("豆豆，退货地址是哪", NAMES, prefixes=["豆豆"]).text == "退货地址是哪"
    hit = detect("有人知道客服电话吗", NAMES, keywords=["客服"])
    assert hit.addressed and hit.how == "keyword" and hit.text == "有人知道客服电话吗"


# --- identity -------------------------------------------------------------------------------------------
async def test_same_person_on_three_channels_is_one_customer(wechat_db):
    async with async_session() as session:
        kf_customer = await identity.resolve("wecom_kf", "wmPerson", unionid="oUnionPerson")
        mp_customer = await identity.resolve("mp", "oMpPerson", unionid="oUnionPerson")
        mini_customer = await identity.resolve("mini", "oMiniPerson")
        stranger = await identity.resolve("mp", "oStranger", unionid="oUnionOther")
        assert kf_customer == mp_customer and stranger != kf_customer
        assert mini_customer != kf_customer, "no unionid: a new customer until the shop links it"
        await identity.link(session, kf_customer, "mini", "oMiniPerson", unionid="oUnionPerson")
        for conversation in ("wecom_kf:wmPerson", "mp:oMpPerson", "mini:oMiniPerson"):
            found = await customer_for(session, conversation)
            assert found is not None and found.id == kf_customer
        assert await customer_for(session, "group:wrX:wmPerson") is None, "group conversations stay anonymous"
        again = await identity.resolve("wecom_kf", "wmPerson")
        assert again == kf_customer
        count = (await session.execute(sa.select(sa.func.count()).select_from(CustomerIdentity).where(
            CustomerIdentity.customer_id == kf_customer))).scalar()
        assert count == 3


async def test_existing_shop_customer_is_found_by_unionid(wechat_db):
    async with async_session() as session:
        customer = Customer(external_id="C-0001", name="王小满")
        session.add(customer)
        await session.flush()
        session.add(CustomerIdentity(customer_id=customer.id, channel="im", external_id="u1", unionid="oUnionShop"))
        await session.commit()
        assert await identity.resolve("wecom_kf", "wmShop", unionid="oUnionShop") == customer.id


async def test_an_identity_seen_without_unionid_learns_it_and_a_later_channel_links_to_it(wechat_db):
    # the platform's unionid lookup failed the first time (or the user was not bound yet)
    first = await identity.resolve("wecom_kf", "wmLate")
    assert await identity.resolve("wecom_kf", "wmLate", unionid="oUnionLate") == first
    assert await identity.resolve("mp", "oMpLate", unionid="oUnionLate") == first, "linked by the learnt unionid"


# --- windows --------------------------------------------------------------------------------------------
async def test_window_reservations(wechat_db):
    assert await windows.reserve("mp", "oW") == windows.OUT_OF_WINDOW
    await windows.user_acted("mp", "oW", kind="event")
    assert [await windows.reserve("mp", "oW") for _ in range(4)] == [None] * 3 + [windows.OVER_QUOTA]
    await windows.user_acted("mp", "oW")
    assert [await windows.reserve("mp", "oW") for _ in range(6)] == [None] * 5 + [windows.OVER_QUOTA]
    await windows.release("mp", "oW")
    assert await windows.reserve("mp", "oW") is None
    # the follow's minute is still open but its 3 messages are used: over quota, not out of window
    await windows.user_acted("mp", "oW", at=now_utc() - timedelta(hours=49))
    assert await windows.reserve("mp", "oW") == windows.OVER_QUOTA
    await windows.user_acted("mp", "oOld", at=now_utc() - timedelta(hours=49))
    assert await windows.reserve("mp", "oOld") == windows.OUT_OF_WINDOW
    assert await windows.reserve("robot", "wrAny") is None, "robots have no reply window"


# --- migration -------------------------------------------------------------------------------------------
def test_migration_0003_matches_the_models(wechat_db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import channels.wechat.models  # noqa: F401
    from actions.db.engine import create_sync_engine
    from actions.db.models import Base

    engine = create_sync_engine()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, Base.metadata) if "wechat_" in str(d)]
    engine.dispose()
    assert diff == []


# --- configuration ------------------------------------------------------------------------------------------
def test_incomplete_or_malformed_settings_switch_a_connector_off_and_say_why(monkeypatch):
    from bot.settings import reset_settings_cache
    from channels.wechat.config import WeChatConfig
    from channels.wechat.sandbox.config import random_aes_key

    for key in [k for k in __import__("os").environ if k.startswith("SIYU_WECHAT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SIYU_WECHAT_CORP_ID", "wwcorp")
    monkeypatch.setenv("SIYU_WECHAT_KF_SECRET", "s3cr3t-value")
    monkeypatch.setenv("SIYU_WECHAT_KF_CALLBACK_TOKEN", "tok")
    monkeypatch.setenv("SIYU_WECHAT_KF_AES_KEY", "too-short")
    monkeypatch.setenv("SIYU_WECHAT_MP_APP_ID", "wxapp")
    monkeypatch.setenv("SIYU_WECHAT_MINI_APP_ID", "wxmini")
    monkeypatch.setenv("SIYU_WECHAT_MINI_APP_SECRET", "minisecret")
    monkeypatch.setenv("SIYU_WECHAT_MINI_CALLBACK_TOKEN", "minitoken")
    monkeypatch.setenv("SIYU_WECHAT_MINI_AES_KEY", random_aes_key())
    reset_settings_cache()
    try:
        config = WeChatConfig.from_settings()
        assert config.kf is None and "SIYU_WECHAT_KF_AES_KEY" in config.problems["wecom_kf"][0]
        assert config.mp is None and config.problems["mp"] == ["SIYU_WECHAT_MP_APP_SECRET",
                                                                "SIYU_WECHAT_MP_CALLBACK_TOKEN"]
        assert config.mini is not None and config.mini.callback.aes_key
        assert "minisecret" not in repr(config) and "s3cr3t" not in repr(config)
    finally:
        reset_settings_cache()
