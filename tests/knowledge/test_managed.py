"""Managed mode on a real database (SQLite, and PostgreSQL when reachable): import, re-import,
错题本 round trip, export; through the store API and through the CLI."""
import csv
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
import yaml
from kb_testdata import REPO, SMALL_FAQ, write_faq

from knowledge import ANSWER, KnowledgeBase, store
from knowledge.builder import build_and_publish
from knowledge.export import export_faq, export_nlu
from knowledge.importer import read_document, read_faq
from knowledge.models import KnowledgeCorrection, KnowledgeEntry


def _count(session):
    return session.execute(sa.select(sa.func.count()).select_from(KnowledgeEntry)).scalar_one()


def test_reimport_replaces_by_id_without_duplicates(session_factory, small_faq, tmp_path):
    entries = read_faq(small_faq).entries
    with session_factory() as s, s.begin():
        counts = store.upsert_entries(s, entries, origin="faq.csv")
        assert (counts.inserted, counts.updated) == (len(SMALL_FAQ), 0)
    changed = [r[:] for r in SMALL_FAQ]
    changed[1][2] = "新答案：运费规则已更新。"
    changed[1][3] = "只剩一个相似问"
    with session_factory() as s, s.begin():
        counts = store.upsert_entries(s, read_faq(write_faq(tmp_path / "v2.csv", changed)).entries, origin="v2.csv")
        assert (counts.inserted, counts.updated) == (0, len(SMALL_FAQ))
    with session_factory() as s:
        assert _count(s) == len(SMALL_FAQ)
        row = s.get(KnowledgeEntry, "R2")
        assert row.answer == "新答案：运费规则已更新。" and row.similar == ["只剩一个相似问"] and row.origin == "v2.csv"
        e1 = s.get(KnowledgeEntry, "E1")
        assert e1.valid_to is not None and e1.valid_to.year == 2020


def test_prune_removes_entries_missing_from_the_sheet_but_keeps_corrections(session_factory, small_faq):
    with session_factory() as s, s.begin():
        store.upsert_entries(s, read_faq(small_faq).entries, origin="faq.csv")
        store.add_correction(s, "可以寄到火星吗", new_answer="火星暂不发货。")
    with session_factory() as s, s.begin():
        assert store.prune_faq(s, keep_ids=["R1", "R2"]) == len(SMALL_FAQ) - 2
    with session_factory() as s:
        assert sorted(r.id for r in s.execute(sa.select(KnowledgeEntry)).scalars()) == ["R1", "R2", "corr-1"]


def test_document_reimport_replaces_all_old_passages(session_factory, tmp_path):
    doc = tmp_path / "care.md"
    doc.write_text("# 保养\n\n## 真丝\n\n冷水手洗。\n\n## 羊毛\n\n平铺晾干。\n\n## 皮具\n\n避免暴晒。\n",
                   encoding="utf-8")
    with session_factory() as s, s.begin():
        store.replace_documents(s, read_document(doc).entries, origin="care.md")
    doc.write_text("# 保养\n\n## 真丝\n\n只能干洗。\n", encoding="utf-8")
    with session_factory() as s, s.begin():
        counts = store.replace_documents(s, read_document(doc).entries, origin="care.md")
        assert counts.deleted == 3 and counts.inserted == 1
    with session_factory() as s:
        (row,) = s.execute(sa.select(KnowledgeEntry)).scalars()
        assert row.id == "doc:care#1" and row.answer == "只能干洗。" and row.heading == "保养 > 真丝"


def test_correction_round_trip(session_factory, small_faq, tmp_path):
    query = "东西退回去的话路费算谁头上"  # colloquial: 路费 for 运费
    with session_factory() as s, s.begin():
        store.upsert_entries(s, read_faq(small_faq).entries, origin="faq.csv")
    out = tmp_path / "index"

    def build():
        with session_factory() as s:
            build_and_publish(store.entries_for_index(s), out)
        kb = KnowledgeBase(out, refresh_seconds=0)
        kb.refresh(force=True)
        return kb

    before = build().decide(query)
    assert before.answer is None or before.answer.id != "R2"  # the bot does not know it yet

    with session_factory() as s, s.begin():
        c = store.add_correction(s, query, right_entry_id="R2",
                                 wrong_entry_id=before.answer.id if before.answer else None,
                                 intent="return_refund", conversation_id="conv-1", staff="小王")
        new = store.add_correction(s, "你们支持以旧换新吗", new_answer="暂不支持以旧换新。", intent="chitchat")
        # what the CLI reports back to the operator: the right entry, or the entry the new answer created
        assert c.right_entry_id == "R2" and c.created_entry_id is None
        assert new.right_entry_id is None and new.created_entry_id == "corr-2"
    with session_factory() as s:
        stored = s.execute(sa.select(KnowledgeCorrection).order_by(KnowledgeCorrection.id)).scalars().all()
        assert [x.query for x in stored] == [query, "你们支持以旧换新吗"]
        assert stored[1].created_entry_id == "corr-2"
        # the sheet's own 相似问 are untouched; the correction is applied when the index is built
        assert s.get(KnowledgeEntry, "R2").similar == ["退货邮费谁出", "寄回来的运费我出吗"]

    kb = build()  # the next index refresh
    after = kb.decide(query)
    assert after.action == ANSWER and after.answer.id == "R2"
    created = kb.decide("你们支持以旧换新吗")
    assert created.action == ANSWER and created.answer.id == "corr-2" and created.answer.source == "错题本 #2"

    # re-importing the shop's sheet must not lose the correction
    with session_factory() as s, s.begin():
        store.upsert_entries(s, read_faq(small_faq).entries, origin="faq.csv")
    assert build().decide(query).answer.id == "R2"

    with session_factory() as s:
        items = store.corrections(s)
        written, skipped = export_nlu(items, tmp_path / "nlu.yml")
        assert (written, skipped) == (2, 0)
        nlu = yaml.safe_load((tmp_path / "nlu.yml").read_text(encoding="utf-8"))
        assert {i["intent"]: i["examples"].strip() for i in nlu["nlu"]} == {
            "return_refund": f"- {query}", "chitchat": "- 你们支持以旧换新吗"}
        assert export_faq(s, items, tmp_path / "faq.csv") == 2
    rows = list(csv.DictReader(open(tmp_path / "faq.csv", encoding="utf-8")))
    assert [r["id"] for r in rows] == ["R2", "corr-2"]
    assert query in rows[0]["similar"].split("|")
    # the exported rows import cleanly again (same ids: no duplicates)
    assert not read_faq(tmp_path / "faq.csv").errors


def test_correction_validation(session_factory, small_faq):
    with session_factory() as s, s.begin():
        store.upsert_entries(s, read_faq(small_faq).entries, origin="faq.csv")
        with pytest.raises(ValueError):
            store.add_correction(s, "q", right_entry_id="NOPE")
        with pytest.raises(ValueError):
            store.add_correction(s, "q")
        with pytest.raises(ValueError):
            store.add_correction(s, "q", right_entry_id="R1", new_answer="both")
        with pytest.raises(ValueError):
            store.add_correction(s, "  ", right_entry_id="R1")
    with session_factory() as s, pytest.raises(sa.exc.IntegrityError):
        # the database itself refuses a correction that names neither
        s.add(KnowledgeCorrection(query="x", staff="", note=""))
        s.commit()


def _cli(*args, env_url, stdin=None):
    import os

    env = {**os.environ, "DATABASE_URL": env_url}
    return subprocess.run([sys.executable, "-m", "knowledge", *args], cwd=REPO, input=stdin, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_import_corrections_and_export(database_url, small_faq, tmp_path):
    bad = write_faq(tmp_path / "more.csv", [["X1", "可以寄到月球吗", "月球暂不发货。", "", "", "", "", ""],
                                            ["X2", "坏行", "", "", "", "", "", ""]])
    out = tmp_path / "index"
    proc = _cli("import", "--faq", str(small_faq), "--faq", str(bad), "--out", str(out), env_url=database_url)
    assert proc.returncode == 0, proc.stderr
    assert "more.csv:3: empty answer" in proc.stderr and "1 new" in proc.stderr
    proc = _cli("import", "--faq", str(small_faq), "--out", str(out), env_url=database_url)
    assert f"0 new, {len(SMALL_FAQ)} replaced" in proc.stderr

    proc = _cli("corrections", "add", "--query", "能寄去月亮上不", "--right-id", "X1", "--intent", "shipping_policy",
                env_url=database_url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["right_entry_id"] == "X1"
    assert _cli("corrections", "add", "--query", "x", "--right-id", "NOPE", env_url=database_url).returncode == 2

    proc = _cli("corrections", "export", "--nlu", str(tmp_path / "n.yml"), "--faq", str(tmp_path / "f.csv"),
                env_url=database_url)
    assert proc.returncode == 0, proc.stderr
    assert "能寄去月亮上不" in (tmp_path / "n.yml").read_text(encoding="utf-8")
    assert "能寄去月亮上不" in (tmp_path / "f.csv").read_text(encoding="utf-8")

    proc = _cli("build", "--from-db", "--out", str(out), env_url=database_url)
    assert proc.returncode == 0, proc.stderr
    search = _cli("search", "--index", str(out), "--json", "能寄去月亮上不", env_url=database_url)
    assert json.loads(search.stdout)[0]["id"] == "X1"
