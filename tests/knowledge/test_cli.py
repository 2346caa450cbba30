"""The CLI contract used for evaluation: build --faq / search --json [--batch] [--no-threshold]."""
import json
import subprocess
import sys

import pytest
from kb_testdata import REPO


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "knowledge", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from kb_testdata import SMALL_FAQ, write_faq

    tmp = tmp_path_factory.mktemp("cli")
    faq = write_faq(tmp / "faq.csv", SMALL_FAQ + [["BAD", "", "没有问题", "", "", "", "", ""]])
    out = tmp / "index"
    proc = run("build", "--faq", str(faq), "--out", str(out))
    return proc, out


def test_build_reports_bad_rows_on_stderr_and_writes_nothing_to_stdout(built):
    proc, out = built
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "faq.csv:14: empty question" in proc.stderr
    assert (out / "CURRENT").exists()


def test_search_prints_one_json_list_with_the_contract_fields(built):
    _, out = built
    proc = run("search", "--index", str(out), "--top-k", "3", "--json", "退货运费谁出")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    hits = json.loads(lines[0])
    assert hits and hits[0]["id"] == "R2"
    assert set(hits[0]) == {"id", "question", "answer", "score", "source"}
    assert hits[0]["source"] == "售后政策 第3条"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert len(hits) <= 3


def test_batch_keeps_order_and_declines_print_empty_lists(built):
    _, out = built
    queries = ["可以开发票吗", "今天天气怎么样", "", "XM-CUP-350 保温杯多少钱", "能分期吗"]
    proc = run("search", "--index", str(out), "--top-k", "2", "--json", "--batch", stdin="\n".join(queries) + "\n")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(queries)
    assert results[0][0]["id"] == "I1"
    assert results[1] == [] and results[2] == []
    assert results[3] == []  # a price: answered by the catalog, never by the knowledge base
    assert results[4][0]["id"] == "P1"


def test_no_threshold_returns_ranked_hits_even_when_declined(built):
    _, out = built
    proc = run("search", "--index", str(out), "--top-k", "2", "--json", "--batch", "--no-threshold",
               stdin="今天天气怎么样\nXM-CUP-350 保温杯多少钱\n")
    first, second = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(first) <= 2
    assert second and second[0]["id"] == "C1"


def test_search_without_index_fails_cleanly(tmp_path):
    proc = run("search", "--index", str(tmp_path / "none"), "--json", "x")
    assert proc.returncode == 1 and proc.stdout == ""
