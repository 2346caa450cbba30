from datetime import datetime

import pytest
from kb_testdata import HEADER, write_faq

from knowledge.entries import stable_id
from knowledge.importer import read_document, read_faq, read_sources


def test_bad_rows_are_reported_with_line_numbers_and_the_rest_imported(tmp_path):
    rows = [
        ["A1", "可以开发票吗？", "可以。", "", "", "", "", ""],  # line 2
        ["A2", "", "没有问题的答案", "", "", "", "", ""],  # line 3: empty question
        ["A3", "有没有答案", "", "", "", "", "", ""],  # line 4: empty answer
        ["A4", "日期坏了", "答案", "", "", "", "明天", ""],  # line 5: unreadable date
        ["A5", "顺序反了", "答案", "", "", "", "2026-02-01", "2026-01-01"],  # line 6
        ["A1", "重复的编号", "答案", "", "", "", "", ""],  # line 7: duplicate id
        ["A6", "最后一行是好的", "答案", "", "", "", "", ""],  # line 8
    ]
    result = read_faq(write_faq(tmp_path / "faq.csv", rows))
    assert [e.id for e in result.entries] == ["A1", "A6"]
    assert [(e.line, e.message.split(" ")[0]) for e in result.errors] == [
        (3, "empty"), (4, "empty"), (5, "unreadable"), (6, "valid_from"), (7, "duplicate")]
    assert "first at line 2" in result.errors[-1].message
    assert str(result.errors[0]).startswith("faq.csv:3:")


def test_line_numbers_count_multiline_cells(tmp_path):
    rows = [["B1", "问题一", "第一行\n第二行\n第三行", "", "", "", "", ""], ["B2", "", "答案", "", "", "", "", ""]]
    result = read_faq(write_faq(tmp_path / "faq.csv", rows))
    assert result.errors[0].line == 5  # header 1, B1 spans 2-4


def test_optional_columns_unknown_columns_bom_and_similar_splitting(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("\ufeffquestion,answer,备注,similar\n"
                    "能开票吗,可以,内部备注, 怎么开发票 | 发票怎么开 |能开票吗｜要发票\n",
                    encoding="utf-8")
    (entry,) = read_faq(path).entries
    assert entry.id == stable_id("能开票吗")
    # the standard question is not repeated as a similar question; both | and ｜ separate
    assert entry.similar == ("怎么开发票", "发票怎么开", "要发票")
    assert entry.category == "" and entry.valid_to is None


def test_chinese_headers_and_missing_required_column(tmp_path):
    ok = write_faq(tmp_path / "zh.csv", [["问一", "答一", "相似一|相似二"]], header=["问题", "答案", "相似问"])
    (entry,) = read_faq(ok).entries
    assert entry.similar == ("相似一", "相似二")
    bad = write_faq(tmp_path / "bad.csv", [["问一", "x"]], header=["question", "remark"])
    result = read_faq(bad)
    assert not result.entries and "answer" in result.errors[0].message and result.errors[0].line == 1


def test_a_bare_valid_to_date_lasts_the_whole_day(tmp_path):
    path = write_faq(tmp_path / "faq.csv", [["D1", "q", "a", "", "", "", "2026/01/01", "2026-01-31"]])
    (entry,) = read_faq(path).entries
    assert entry.valid_from == datetime(2026, 1, 1)
    assert entry.valid_to == datetime(2026, 1, 31, 23, 59, 59)
    assert entry.is_valid_at(datetime(2026, 1, 31, 22, 0))
    assert not entry.is_valid_at(datetime(2026, 2, 1, 0, 0, 1))
    assert not entry.is_valid_at(datetime(2025, 12, 31, 23, 0))


def test_xlsx_import_with_numbers_and_dates(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(HEADER + ["unknown"])
    ws.append([101, "能开专票吗", "可以开。", "专票|增值税专用发票", "发票", "规则", None, datetime(2030, 1, 1), "x"])
    ws.append([102, None, "缺问题", None, None, None, None, None, None])
    path = tmp_path / "faq.xlsx"
    wb.save(path)
    result = read_faq(path)
    (entry,) = result.entries
    assert entry.id == "101" and entry.similar == ("专票", "增值税专用发票")
    assert entry.valid_to == datetime(2030, 1, 1, 23, 59, 59)
    assert [(e.line, e.message) for e in result.errors] == [(3, "empty question")]


def test_markdown_is_split_into_passages_with_heading_paths(tmp_path):
    doc = tmp_path / "size-guide.md"
    doc.write_text("# 尺码指南\n\n先量尺寸。\n\n## 女装上衣\n\n| 尺码 | 胸围 |\n| S | 84 |\n\n"
                   "```\n# 不是标题\n```\n\n## 鞋子\n\n脚长 235mm 选 37。\n", encoding="utf-8")
    result = read_document(doc)
    assert [(e.id, e.heading) for e in result.entries] == [
        ("doc:size-guide#1", "尺码指南"), ("doc:size-guide#2", "尺码指南 > 女装上衣"),
        ("doc:size-guide#3", "尺码指南 > 鞋子")]
    assert "# 不是标题" in result.entries[1].answer
    assert result.entries[2].source == "size-guide.md > 尺码指南 > 鞋子"
    assert all(e.kind == "doc" for e in result.entries)


def test_long_sections_are_cut_at_paragraphs_and_text_files_use_their_first_line(tmp_path):
    para = "这是一段比较长的说明文字。" * 12
    doc = tmp_path / "care.txt"
    doc.write_text("面料保养\n\n" + "\n\n".join([para] * 4), encoding="utf-8")
    result = read_document(doc)
    assert len(result.entries) >= 2
    assert all(e.heading == "面料保养" and len(e.answer) <= 2 * len(para) + 2 for e in result.entries)
    assert read_sources(docs=[tmp_path]).entries  # a folder is read file by file
