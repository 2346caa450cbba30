"""The demo shop's knowledge and the evaluation data keep the properties the evaluation relies on."""
import csv
from datetime import datetime

from kb_testdata import REPO

from knowledge.calibration import out_of_scope_queries, read_labelled
from knowledge.importer import read_faq, read_sources
from knowledge.text import compact

DEMO = REPO / "knowledge" / "demo"
EVAL = REPO / "knowledge" / "eval"
NOW = datetime(2026, 11, 21)


def test_demo_faq_is_complete_and_clean():
    result = read_faq(DEMO / "faq.csv")
    assert not result.errors
    entries = result.entries
    assert len(entries) >= 150
    assert all(2 <= len(e.similar) <= 5 and e.category and e.source for e in entries)
    assert any(e.valid_to and e.valid_to < NOW for e in entries)
    assert any(e.valid_to and e.valid_to > NOW for e in entries)
    categories = {e.category for e in entries}
    assert {
        "女装", "男装", "鞋包", "美妆护肤", "家居日用", "零食茶饮", "数码配件", "会员", "售后", "物流"
    } <= categories


def test_demo_faq_agrees_with_the_shop_config():
    from bot.settings import load_shop_config

    shop = load_shop_config(REPO / "bot" / "shop.yml")
    by_id = {e.id: e for e in read_faq(DEMO / "faq.csv").entries}
    assert f"{shop.return_window_days} 天内" in by_id["SH-001"].answer
    assert by_id["WL-004"].answer in shop.policies["shipping"].answer_for("包邮")
    assert by_id["FP-001"].answer == shop.policies["invoice"].default
    assert by_id["YH-001"].answer == shop.policies["price_protection"].default
    assert f"每天签到得 {shop.checkin.points_per_day} 积分" in by_id["HY-006"].answer


def test_demo_documents_split_into_passages():
    result = read_sources(docs=[DEMO / "docs"])
    assert not result.errors
    files = {e.id.split("#")[0] for e in result.entries}
    assert files == {"doc:size-guide", "doc:fabric-care", "doc:skincare-usage", "doc:electronics-warranty"}


def test_evaluation_set_is_independent_of_the_indexed_questions():
    entries = read_faq(DEMO / "faq.csv").entries
    ids = {e.id for e in entries}
    indexed = {compact(q) for e in entries for q in e.questions}
    rows = list(csv.DictReader(open(EVAL / "questions.csv", encoding="utf-8")))
    assert list(rows[0]) == ["query", "expected_id"]
    positives = [r for r in rows if r["expected_id"]]
    assert len(positives) >= 300 and len(rows) - len(positives) >= 60
    assert all(r["expected_id"] in ids for r in positives)
    assert not [r["query"] for r in rows if compact(r["query"]) in indexed]
    calibration = read_labelled(EVAL / "calibration.csv") + out_of_scope_queries()
    evaluation = {compact(r["query"]) for r in rows}
    assert not [q for q, _ in calibration if compact(q) in evaluation]
    typos = [t for t in (EVAL / "typos.txt").read_text(encoding="utf-8").splitlines() if t]
    assert set(typos) <= {r["query"] for r in positives}


def test_shop_dictionary_format():
    raw = (REPO / "nlu_data" / "jieba" / "shop_dict.txt").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r\n" not in raw
    for line in raw.decode("utf-8").splitlines():
        word, freq, tag = line.split(" ")
        assert word and freq.isdigit() and tag


def test_realistic_set_is_labelled_and_independent():
    entries = read_faq(DEMO / "faq.csv").entries
    ids = {e.id for e in entries}
    indexed = {compact(q) for e in entries for q in e.questions}
    rows = list(csv.DictReader(open(EVAL / "realistic.csv", encoding="utf-8")))
    assert list(rows[0]) == ["query", "expected_id", "fold"]
    positives = [r for r in rows if r["expected_id"]]
    assert len(positives) >= 200 and len(rows) - len(positives) >= 100
    assert all(r["expected_id"] in ids for r in positives)
    assert {r["fold"] for r in rows} == {"1", "2"}
    assert len({compact(r["query"]) for r in rows}) == len(rows)
    assert not [r["query"] for r in rows if compact(r["query"]) in indexed]
    # nothing the builds calibrate on (the generic out-of-scope list, the labelled split) is evaluated here,
    # and the two evaluation sets do not share questions
    others = {compact(q) for q, _ in read_labelled(EVAL / "calibration.csv") + out_of_scope_queries()}
    others |= {compact(r["query"]) for r in csv.DictReader(open(EVAL / "questions.csv", encoding="utf-8"))}
    assert not [r["query"] for r in rows if compact(r["query"]) in others]
    # chat style: most messages are longer than a FAQ question, many have several clauses
    assert sum(len(r["query"]) >= 15 for r in positives) >= len(positives) // 3
