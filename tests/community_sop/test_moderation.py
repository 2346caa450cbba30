"""Moderation detector: precision / recall on the team's labelled set (a smoke test, see
docs/MODERATION_EVAL.md), repeat spam in and out of the window, the shop's own links, negation."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from community_sop import moderation
from community_sop.moderation import (
    AD,
    DAIGOU_PHONE,
    NEGATIVE,
    QR_PROMO,
    SPAM_REPEAT,
    Moderator,
    load_vocabulary,
    report,
    run_sequences,
    score,
)

SET_PATH = Path(__file__).with_name("moderation_set.yml")
SHOP = ("xiaoman.shop",)
# (part, minimum precision, minimum recall) of "flagged vs not"
TARGETS = (("tuning", 0.9, 0.85), ("holdout", 0.85, 0.75))


@pytest.fixture(scope="module")
def labelled():
    with open(SET_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_labelled_set_is_large_enough(labelled):
    items = labelled["tuning"] + labelled["holdout"]
    normal = [i for i in items if i["label"] == "none"]
    assert len(normal) >= 120 and len(items) - len(normal) >= 80
    assert {i["label"] for i in items} == {"none", AD, QR_PROMO, DAIGOU_PHONE, NEGATIVE}
    assert len(labelled["holdout"]) >= 0.25 * len(items)


@pytest.mark.parametrize("part,min_precision,min_recall", TARGETS)
def test_precision_and_recall(labelled, part, min_precision, min_recall):
    s = score(part, labelled[part], Moderator(shop_domains=labelled["shop_domains"]))
    print(f"\n{part}: {s.total} messages, {s.problems} problems, "
          f"precision {s.flagged_precision:.1%}, recall {s.flagged_recall:.1%}")
    for kind, (p, r, n, m) in s.per_kind.items():
        print(f"  {kind:13} precision {p:.0%} recall {r:.0%} ({n} labelled, {m} predicted)")
    for text, label, got in s.misses:
        print(f"  miss: {text} (labelled {label}, got {got or 'none'})")
    assert s.flagged_precision >= min_precision
    assert s.flagged_recall >= min_recall


def test_repeat_sequences_of_the_set(labelled):
    for name, right, total, wrong in run_sequences(labelled["repeat_sequences"], shop_domains=labelled["shop_domains"]):
        assert right == total, (name, wrong)


def test_report_is_markdown(labelled):
    text = report(SET_PATH)
    assert text.startswith("| part |") and "| holdout |" in text and "Repeat sequences" in text


def test_third_identical_message_in_window_is_repeat_spam():
    m = Moderator(repeat_window_s=600, repeat_threshold=3)
    text = "请问这款保温杯还有蓝色的吗"
    assert m.check("g1", "alice", text, 0).kind is None
    assert m.check("g1", "alice", text + "？", 100).kind is None
    verdict = m.check("g1", "alice", " " + text + "!!", 200)
    assert verdict.kind == SPAM_REPEAT and "3 次" in verdict.reason


def test_repeat_not_counted_after_the_window():
    m = Moderator(repeat_window_s=600, repeat_threshold=3)
    text = "请问这款保温杯还有蓝色的吗"
    assert [m.check("g1", "bob", text, t).kind for t in (0, 500, 1101, 1800)] == [None, None, None, None]


def test_repeat_is_per_group_and_per_member():
    m = Moderator()
    text = "请问这款保温杯还有蓝色的吗"
    assert m.check("g1", "carol", text, 0).kind is None
    assert m.check("g2", "carol", text, 10).kind is None
    assert m.check("g1", "dave", text, 20).kind is None
    assert m.check("g3", "carol", text, 30).kind is None


@pytest.mark.parametrize("text", ["签到", "1", "+1", "好的", "哈哈", "哈哈哈哈哈哈", "收到收到", "好的谢谢", "接龙",
                                  "签到打卡", "666666"])
def test_allowlisted_short_messages_never_repeat_spam(text):
    m = Moderator()
    kinds = [m.check("g1", f"member{i % 4}", text, i) for i in range(12)]
    assert all(v.kind is None for v in kinds)


def test_jielong_messages_are_not_repeat_spam():
    m = Moderator()
    text = "接龙 周六团购车厘子 1. 王姐 2斤 2. 小李 1斤"
    assert all(m.check("g1", who, text, i).kind is None for i, who in enumerate("abcdef"))


def test_same_long_text_from_three_members_is_coordinated_spam():
    m = Moderator()
    text = "姐妹们快去看看这个直播间，今晚抽大奖"
    assert m.check("g1", "a", text, 0).kind is None
    assert m.check("g1", "b", text, 60).kind is None
    verdict = m.check("g1", "c", text, 120)
    assert verdict.kind == SPAM_REPEAT and "3 位成员" in verdict.reason
    assert m.check("g1", "d", text, 2000).kind is None


def test_repeat_state_is_bounded(monkeypatch):
    monkeypatch.setattr(moderation, "MAX_KEYS", 100)
    m = Moderator()
    for i in range(1000):
        m.check(f"g{i}", f"m{i}", f"第{i}位成员的一条比较长的测试消息", i)
    assert len(m._by_member) <= 100 and len(m._by_text) <= 100


def test_shop_own_domain_is_not_an_ad():
    m = Moderator(shop_domains=("https://www.xiaoman.shop/", "xiaoman-life.tmall.com"))
    for text in ("https://m.xiaoman.shop/act/618 限时特价，点击领券", "xiaoman.shop/p/123 就是这款，大家冲",
                 "我们的天猫店 https://xiaoman-life.tmall.com 同款同价"):
        assert m.check("g1", "u", text, 0).kind is None, text
    verdict = Moderator().check("g1", "u", "https://m.xiaoman.shop/act/618 限时特价，点击领券", 0)
    assert verdict.kind == AD


def test_other_shop_links_are_ads_with_host_in_reason():
    m = Moderator(shop_domains=SHOP)
    verdict = m.check("g1", "u", "看看这个 https://item.taobao.com/item.htm?id=123", 0)
    assert verdict.kind == AD and verdict.reason == "外部店铺链接: taobao.com"
    assert verdict.evidence.startswith("https://item.taobao.com")
    assert m.check("g1", "u", "【手淘】￥Rt5Yu8Io2P￥ 打开看看", 1).kind == AD


@pytest.mark.parametrize("text", ["不是骗子，放心买", "这家店不是坑人的", "还以为是骗人的，结果挺好",
                                  "真不是黑店，我买过三次了", "这个是骗人的吗"])
def test_negated_or_asked_is_not_negative(text):
    assert Moderator().check("g1", "u", text, 0).kind is None


@pytest.mark.parametrize("text", ["你们就是骗子", "垃圾客服，问了三次都不理人", "我要去12315投诉", "退钱！！！"])
def test_strongly_negative(text):
    verdict = Moderator().check("g1", "u", text, 0)
    assert verdict.kind == NEGATIVE and verdict.reason and verdict.evidence


@pytest.mark.parametrize("text", ["快递有点慢", "我的手机号13812345678怎么改", "订单号SY20261201381234567 查一下",
                                  "淘宝上也有卖吗", "二维码扫不出来", "我这个垃圾袋买错尺寸了", "客服电话400-820-1234"])
def test_near_misses_are_fine(text):
    assert Moderator(shop_domains=SHOP).check("g1", "u", text, 0).kind is None


def test_daigou_phone_with_spaces_or_dashes():
    m = Moderator()
    for text in ("韩国代购 139 1234 5678", "微商货源 +86 186-1234-5678", "代购请联系13812345678"):
        verdict = m.check("g1", "u", text, 0)
        assert verdict.kind == DAIGOU_PHONE, text
        assert verdict.evidence.replace(" ", "").replace("-", "").endswith("5678")


def test_precedence_ad_before_negative_and_repeat():
    m = Moderator()
    text = "骗子店别买了，来我这 https://shop.m.jd.com/abc 更便宜"
    assert [m.check("g1", "u", text, t).kind for t in (0, 1, 2)] == [AD, AD, AD]
    assert Moderator().check("g1", "u", "扫码进群领红包，骗子店别买了", 0).kind == QR_PROMO


def test_vocabulary_is_loaded_once():
    assert Moderator().vocabulary is Moderator().vocabulary is load_vocabulary()
