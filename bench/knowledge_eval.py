"""Retrieval quality of the knowledge base on labelled evaluation sets, against two baselines.

    .venv/bin/python bench/knowledge_eval.py                 # writes docs/KNOWLEDGE_EVAL.md (+ BENCHMARKS section)
    .venv/bin/python bench/knowledge_eval.py --json out.json --no-write [--faq OLD.csv]   # numbers only

* Realistic set: knowledge/eval/realistic.csv, chat-style customer messages written by the team (greeting +
  context + question in one message, colloquial, typos, confirmation questions, indirect statements) with
  the expected entry, plus out-of-scope messages; two folds (column ``fold``).
* Paraphrase set: knowledge/eval/questions.csv (short paraphrases written by the team, incl. typos).
* Thresholds are calibrated without these questions: on held-out 相似问 / standard questions / entries
  and a generic out-of-scope list (what `build --faq` does for any shop). The "+ labelled realistic"
  variant adds one fold of the realistic set as labelled calibration data and is reported on the other
  fold (both ways, pooled): it never sees the messages it is scored on.
* Baselines computed in the same run on the same FAQ: plain jieba (global dictionary, no shop words) +
  Okapi BM25 over each entry's questions and answer, and character 1-3-gram TF-IDF cosine over the same
  text; their thresholds are calibrated with the same procedure on knowledge/eval/calibration.csv plus
  the generic out-of-scope list.
* Held-out 相似问 (a stand-in for paraphrase retrieval at scale): one 相似问 per entry removed from the
  index and asked, over three random splits, for the hybrid and both baselines.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.report import write_section  # noqa: E402
from knowledge import calibration  # noqa: E402
from knowledge.builder import build_and_publish  # noqa: E402
from knowledge.calibration import Observation, choose_thresholds, outcome, read_labelled  # noqa: E402
from knowledge.guard import asks_database_fact  # noqa: E402
from knowledge.importer import read_faq, read_sources  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.kb import KnowledgeBase  # noqa: E402
from knowledge.sparse import BM25, TFIDF, SparseIndex  # noqa: E402
from knowledge.text import char_ngrams, normalize  # noqa: E402

FAQ = ROOT / "knowledge" / "demo" / "faq.csv"
DOCS = ROOT / "knowledge" / "demo" / "docs"
QUESTIONS = ROOT / "knowledge" / "eval" / "questions.csv"
REALISTIC = ROOT / "knowledge" / "eval" / "realistic.csv"
CALIBRATION = ROOT / "knowledge" / "eval" / "calibration.csv"
# this script's numbers for the code before the long-message / threshold work
BEFORE = ROOT / "knowledge" / "eval" / "before.json"
REPORT = ROOT / "docs" / "KNOWLEDGE_EVAL.md"
TYPOS = ROOT / "knowledge" / "eval" / "typos.txt"  # which evaluation questions carry deliberate typos

Query = Tuple[str, Optional[str]]
Ranker = Callable[[str], Tuple[List[str], List[float]]]
HYBRID = "hybrid, self-calibrated (build --faq)"
LABELLED_REALISTIC = "hybrid, + labelled realistic calibration (other fold)"
NO_PREPROCESSING = "hybrid, whole message only (no clause matching)"
LABELLED_PARAPHRASES = "hybrid, + labelled calibration.csv"
LSA = "hybrid, LSA vectors instead of USE"
WITH_DOCS = "hybrid, FAQ + product documents indexed"
JIEBA_BM25 = "plain jieba + BM25"
CHAR_TFIDF = "char 1-3-gram TF-IDF"


class Baseline:
    """A single-field lexical retriever over whole entries; score in [0, 1] for thresholding."""

    def __init__(self, name: str, entries, analyzer: Callable[[str], List[str]], scheme: str) -> None:
        self.name = name
        self.entries = entries
        self.analyzer = analyzer
        self.index = SparseIndex.build([analyzer(" ".join(e.questions) + " " + e.answer) for e in entries], scheme)

    def rank(self, query: str, k: int = 4) -> Tuple[List[str], List[float]]:
        tokens = self.analyzer(query)
        scores = self.index.scores(tokens)
        if self.index.scheme == BM25:
            norm = self.index.self_score(tokens)
            scores = np.minimum(1.0, scores / norm) if norm > 0 else scores * 0
        order = np.argsort(-scores)[:k]
        return [self.entries[i].id for i in order if scores[i] > 0], [float(scores[i]) for i in order if scores[i] > 0]


def plain_jieba() -> Callable[[str], List[str]]:
    import jieba

    tk = jieba.Tokenizer()  # jieba's own dictionary only: "plain"
    tk.initialize()
    return lambda text: [t for t in tk.lcut(normalize(text)) if t.strip() and any(c.isalnum() for c in t)]


def char_analyzer(text: str) -> List[str]:
    return char_ngrams(text, 1, 3)


def observations(ranker: Ranker, queries: Sequence[Query], source: str = "") -> List[Observation]:
    out = []
    for q, expected in queries:
        ids, scores = ranker(q)
        out.append(Observation(expected, tuple(ids), tuple(scores), source))
    return out


def metrics(obs: Sequence[Observation], thresholds: Dict) -> Dict[str, float]:
    return aggregate(obs, [outcome(o, thresholds) for o in obs])


def aggregate(obs: Sequence[Observation], decisions: Sequence[Tuple[str, bool]]) -> Dict[str, float]:
    pos = [o for o in obs if o.expected]
    neg = [o for o in obs if not o.expected]
    dpos = [d for o, d in zip(obs, decisions) if o.expected]
    dneg = [d for o, d in zip(obs, decisions) if not o.expected]
    c = Counter(d for d, _ in dpos)
    answered_pos = [ok for d, ok in dpos if d == "answer"]
    return {
        "n": len(pos), "n_oos": len(neg),
        "top1": float(np.mean([bool(o.ids) and o.ids[0] == o.expected for o in pos])),
        "recall3": float(np.mean([o.expected in o.ids[:3] for o in pos])),
        "answer": c["answer"] / len(pos),
        "answer_right": sum(answered_pos) / len(pos),
        # the share of answers to in-scope questions that name the expected entry
        "precision": (sum(answered_pos) / len(answered_pos)) if answered_pos else float("nan"),
        "clarify": c["clarify"] / len(pos),
        "clarify_useful": sum(1 for d, ok in dpos if d == "clarify" and ok) / len(pos),
        "decline": c["decline"] / len(pos),
        "oos_decline": sum(1 for d, _ in dneg if d == "decline") / len(neg) if neg else float("nan"),
        "oos_clarify": sum(1 for d, _ in dneg if d == "clarify") / len(neg) if neg else float("nan"),
        "oos_answer": sum(1 for d, _ in dneg if d == "answer") / len(neg) if neg else float("nan"),
    }


def kb_ranker(kb: KnowledgeBase) -> Ranker:
    def rank(q: str):
        hits = kb.search(q, k=4)
        return [h.entry.id for h in hits], [h.score for h in hits]
    return rank


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def build(entries, out: Path, labelled=(), config=None) -> Tuple[Ranker, Dict, float]:
    t = time.perf_counter()
    report = build_and_publish(entries, out, labelled=labelled, config=config)
    seconds = time.perf_counter() - t
    kb = KnowledgeBase(out, refresh_seconds=0)
    kb.refresh(force=True)
    return kb_ranker(kb), report.thresholds, seconds


def read_realistic(path: Path = REALISTIC) -> List[Tuple[str, Optional[str], str]]:
    with open(path, encoding="utf-8") as fh:
        return [(r["query"], r["expected_id"] or None, r["fold"]) for r in csv.DictReader(fh)]


def held_out_similar(entries, seeds=(13, 41, 71)) -> Dict[str, float]:
    """Top-1 of held-out 相似问: one 相似问 per sampled entry removed from the index and asked."""
    right: Dict[str, List[bool]] = {"hybrid": [], JIEBA_BM25: [], CHAR_TFIDF: []}
    jieba_analyzer = plain_jieba()
    for seed in seeds:
        kept, queries = calibration.holdout_split(entries, seed=seed, max_negative=0)
        queries = [(q, e) for q, e in queries if e]
        index = KnowledgeIndex.build(kept)
        bm25 = Baseline(JIEBA_BM25, kept, jieba_analyzer, BM25)
        char = Baseline(CHAR_TFIDF, kept, char_analyzer, TFIDF)
        for q, e in queries:
            hits = index.search(q, k=1)
            right["hybrid"].append(bool(hits) and hits[0].entry.id == e)
            right[JIEBA_BM25].append(bm25.rank(q, 1)[0][:1] == [e])
            right[CHAR_TFIDF].append(char.rank(q, 1)[0][:1] == [e])
    return {name: float(np.mean(v)) for name, v in right.items()} | {"n": len(right["hybrid"])}


def evaluate(faq: Path, quick: bool = False) -> Dict:
    entries = read_faq(faq).entries
    paraphrases: List[Query] = [(r["query"], r["expected_id"] or None)
                                for r in csv.DictReader(open(QUESTIONS, encoding="utf-8"))]
    realistic_rows = read_realistic()
    realistic: List[Query] = [(q, e) for q, e, _ in realistic_rows]
    labelled = read_labelled(CALIBRATION)
    generic_oos = calibration.out_of_scope_queries()
    typos = {line.strip() for line in TYPOS.read_text(encoding="utf-8").splitlines() if line.strip()}
    sets = {"realistic": realistic, "paraphrases": paraphrases}

    results: Dict[str, Dict] = {}
    timings: Dict[str, float] = {}

    def record(name: str, ranker: Ranker, th: Dict, only: Sequence[str] = ("realistic", "paraphrases")) -> None:
        results[name] = {"thresholds": {k: th[k] for k in ("answer", "margin", "clarify")}}
        for set_name in only:
            obs = observations(ranker, sets[set_name])
            m = metrics(obs, th)
            if set_name == "realistic":  # fold 2 was never looked at while the method was developed
                for fold in ("1", "2"):
                    results[name][f"realistic fold {fold}"] = metrics(
                        [o for o, (_, _, f) in zip(obs, realistic_rows) if f == fold], th)
            if set_name == "paraphrases":
                typo_obs = [o for o, (q, e) in zip(obs, paraphrases) if e and q in typos]
                m["typo_top1"] = float(np.mean([o.ids[:1] == (o.expected,) for o in typo_obs])) if typo_obs else None
            results[name][set_name] = m

    with tempfile.TemporaryDirectory() as tmp:
        docs = read_sources(docs=[DOCS]).entries
        variants = [(HYBRID, [], None, entries)]
        if not quick:
            variants += [(NO_PREPROCESSING, [], {"query_variants": "off"}, entries),
                         (LABELLED_PARAPHRASES, labelled, None, entries),
                         (LSA, [], {"dense_model": "lsa"}, entries),
                         (WITH_DOCS, [], None, entries + docs)]
        for label, extra, config, indexed in variants:
            ranker, th, seconds = build(indexed, Path(tmp) / str(len(timings)), extra, config)
            timings[label] = seconds
            record(label, ranker, th)

        # labelled realistic calibration, two-fold: calibrate on one fold, score the other
        pooled: List[Tuple[Observation, Dict]] = []
        fold_thresholds = {}
        for fold in sorted({f for _, _, f in realistic_rows}):
            train = [(q, e) for q, e, f in realistic_rows if f != fold]
            test = [(q, e) for q, e, f in realistic_rows if f == fold]
            ranker, th, seconds = build(entries, Path(tmp) / f"fold{fold}", train, None)
            timings[f"{LABELLED_REALISTIC}, fold {fold}"] = seconds
            fold_thresholds[fold] = {k: th[k] for k in ("answer", "margin", "clarify")}
            pooled += [(o, th) for o in observations(ranker, test)]
        results[LABELLED_REALISTIC] = {"thresholds": fold_thresholds, "realistic": pooled_metrics(pooled)}

        for name, analyzer, scheme in ((JIEBA_BM25, plain_jieba(), BM25), (CHAR_TFIDF, char_analyzer, TFIDF)):
            base = Baseline(name, entries, analyzer, scheme)
            calib = (observations(base.rank, labelled, getattr(calibration, "LABELLED", ""))
                     + observations(base.rank, generic_oos, getattr(calibration, "OUT_OF_SCOPE", "")))
            record(name, base.rank, choose_thresholds(calib))

    guarded = [(q, e, asks_database_fact(q)) for q, e in paraphrases + realistic if asks_database_fact(q)]
    return {
        "faq": str(faq), "entries": len(entries), "similar": sum(len(e.similar) for e in entries),
        "sets": {name: {"in_scope": sum(1 for _, e in qs if e), "out_of_scope": sum(1 for _, e in qs if not e)}
                 for name, qs in sets.items()},
        "typos": sum(1 for q, e in paraphrases if e and q in typos),
        "calibration": {"labelled": len(labelled), "generic_oos": len(generic_oos)},
        "results": results, "timings": timings,
        "held_out_similar": held_out_similar(entries) if not quick else None,
        "guarded": guarded,
    }


def pooled_metrics(pooled: Sequence[Tuple[Observation, Dict]]) -> Dict[str, float]:
    """metrics() over observations that each come with the thresholds of their own fold."""
    return aggregate([o for o, _ in pooled], [outcome(o, th) for o, th in pooled])


def table(results: Dict, set_name: str, before: Optional[Dict] = None) -> str:
    header = ("| system | top-1 | recall@3 | answered (in-scope) | answered right | precision of answers | "
              "clarify (useful) | declined | out-of-scope declined / clarified / answered | thresholds "
              "(answer, margin, clarify) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    rows = []
    named = list(results.items())
    if before:
        named = [(f"*before* {name}", r) for name, r in before["results"].items() if set_name in r] + named
    for name, r in named:
        if set_name not in r:
            continue
        m = r[set_name]
        th = r["thresholds"]
        th_text = ("; ".join(f"fold {f}: {t['answer']:.2f}, {t['margin']:.2f}, {t['clarify']:.2f}"
                             for f, t in th.items()) if "answer" not in th
                   else f"{th['answer']:.2f}, {th['margin']:.2f}, {th['clarify']:.2f}")
        rows.append(f"| {name} | {pct(m['top1'])} | {pct(m['recall3'])} | {pct(m['answer'])} | "
                    f"{pct(m['answer_right'])} | {pct(m['precision'])} | {pct(m['clarify'])} "
                    f"({pct(m['clarify_useful'])}) | {pct(m['decline'])} | {pct(m['oos_decline'])} / "
                    f"{pct(m['oos_clarify'])} / {pct(m['oos_answer'])} | {th_text} |")
    return header + "\n".join(rows)


def write_report(data: Dict, before: Optional[Dict]) -> str:
    res = data["results"]
    real = data["sets"]["realistic"]
    para = data["sets"]["paraphrases"]

    def delta(name: str, set_name: str = "realistic") -> str:
        return f"{100 * (res[HYBRID][set_name]['top1'] - res[name][set_name]['top1']):+.1f}"

    ho = data.get("held_out_similar")
    held = ""
    if ho:
        held = ("| held-out 相似问 top-1 | hybrid | plain jieba + BM25 | char 1-3-gram TF-IDF |\n"
                "| --- | --- | --- | --- |\n"
                f"| {ho['n']} questions, 3 splits | {pct(ho['hybrid'])} | {pct(ho[JIEBA_BM25])} | "
                f"{pct(ho[CHAR_TFIDF])} |\n")
        if before and before.get("held_out_similar"):
            b = before["held_out_similar"]
            held += (f"| *before* ({b['n']} questions) | {pct(b['hybrid'])} | {pct(b[JIEBA_BM25])} | "
                     f"{pct(b[CHAR_TFIDF])} |\n")
    summary = (
        "## Knowledge base: retrieval quality\n\n"
        f"`bench/knowledge_eval.py` against the demo FAQ ({data['entries']} entries). Realistic chat messages "
        f"(knowledge/eval/realistic.csv, {real['in_scope']} in scope, {real['out_of_scope']} out of scope; written by "
        "the team, so a smoke test, not a measurement on real customers): top-1 hybrid "
        f"{pct(res[HYBRID]['realistic']['top1'])} vs char TF-IDF {pct(res[CHAR_TFIDF]['realistic']['top1'])} "
        f"({delta(CHAR_TFIDF)} points) and jieba BM25 {pct(res[JIEBA_BM25]['realistic']['top1'])}; self-calibrated "
        f"it answers {pct(res[HYBRID]['realistic']['answer'])} of the in-scope messages, "
        f"{pct(res[HYBRID]['realistic']['precision'])} of them right, and declines "
        f"{pct(res[HYBRID]['realistic']['oos_decline'])} of the out-of-scope ones. Details and the paraphrase set: "
        "docs/KNOWLEDGE_EVAL.md.\n\n" + table(res, "realistic") + "\n"
    )
    guard_lines = "\n".join(f"- {q} -> {fact} (expected {e or 'decline'})"
                            for q, e, fact in data["guarded"]) or "- none"
    before_note = ""
    if before:
        before_note = (
            "Rows marked *before* are the same script run on the code and FAQ before the long-message / threshold "
            f"work (commit {before.get('commit', '?')}, FAQ of {before['entries']} entries; realistic messages whose "
            "expected entry did not exist yet count as misses), kept in knowledge/eval/before.json.\n\n")
    text = (
        "# Knowledge base evaluation\n\n"
        "Generated by `bench/knowledge_eval.py`; re-run it after changing the FAQ, the retrieval or the data.\n\n"
        "**These sets are smoke tests.** Every question in them was written by the team for the demo shop; "
        "they show regressions and the effect of a change, not how the bot does on a real shop's customers "
        "(the held-out measurement on real customer questions is run separately and is the one that counts).\n\n"
        "## Data\n\n"
        f"- FAQ: knowledge/demo/faq.csv, {data['entries']} entries with {data['similar']} 相似问.\n"
        f"- Realistic messages: knowledge/eval/realistic.csv, {real['in_scope']} in-scope chat messages with the "
        f"expected entry and {real['out_of_scope']} out-of-scope ones, written in the style of real customers and "
        "not as paraphrases of the FAQ: greeting + context + question in one message, colloquial wording, typos, "
        "confirmation questions (…吧 / 对吧 / 是吗), indirect statements (\"快递显示签收了 我没收到\"); the "
        "out-of-scope ones include near misses (products the shop does not sell, services it does not offer). "
        "Two folds (column `fold`) for the labelled-calibration variant.\n"
        f"- Paraphrases: knowledge/eval/questions.csv, {para['in_scope']} short paraphrases ({data['typos']} with "
        f"deliberate typos, mostly homophones) and {para['out_of_scope']} out-of-scope questions.\n"
        f"- Calibration: nothing of the above. `build --faq` calibrates on the shop's own FAQ (held-out standard "
        "questions, also wrapped in chat noise by `calibration.roughen`, and held-out entries) "
        f"and knowledge/data/out_of_scope.txt ({data['calibration']['generic_oos']} generic out-of-scope messages, "
        "short and long, disjoint from the evaluation sets). knowledge/eval/calibration.csv "
        f"({data['calibration']['labelled']} labelled paraphrases) is the optional labelled split of the older "
        "variant; the realistic variant calibrates on one fold and is scored on the other.\n\n"
        "## Results: realistic chat messages\n\n" + before_note + table(res, "realistic", before) + "\n\n"
        "Per fold (the method was developed looking at fold 1 and the paraphrases only; fold 2 stayed unseen "
        "until the end):\n\n" + table({f"{name}, {fold}": {"thresholds": r["thresholds"], "x": r[fold]}
                                        for name, r in res.items() for fold in ("realistic fold 1", "realistic fold 2")
                                        if fold in r and name in (HYBRID, NO_PREPROCESSING, CHAR_TFIDF)}, "x")
        + "\n\n## Results: short paraphrases\n\n" + table(res, "paraphrases", before) + "\n\n"
        "- *answered*: share of the in-scope questions answered; *answered right*: share answered with the "
        "expected entry; *precision of answers*: right answers / answers to in-scope questions (out-of-scope "
        "answers are in the last column); *clarify (useful)*: the bot offered choices, and in brackets how "
        "often the expected entry was among them.\n"
        "- *whole message only*: the same hybrid with query preprocessing off (`query_variants: off`), i.e. "
        "without matching the question clause of long messages.\n"
        "- *LSA vectors instead of USE*: the same hybrid without the sentence-encoder wheel.\n"
        "- *FAQ + product documents*: the four demo documents indexed too, as distractors; a document passage "
        "counts as wrong here.\n"
        "- Baselines use whole-entry text (questions + answer) in one field; their thresholds come from the "
        "calibration split and the generic out-of-scope list with the same threshold rule.\n"
        "- Build time of the demo index incl. calibration: "
        + ", ".join(f"{k}: {v:.1f} s" for k, v in data["timings"].items()) + ".\n\n"
        "## Held-out 相似问 (paraphrase retrieval)\n\n"
        "One 相似问 per entry removed from the index and asked (three random splits); the closest thing here "
        "to a large paraphrase set. No thresholds.\n\n" + held + "\n"
        "## How it works and how it was chosen\n\n"
        "- Long messages: `knowledge/query.py` splits a message into clauses at punctuation and spaces, drops "
        "greetings, politeness and fillers (你好 / 在吗 / 亲 / 想问一下 / 谢谢…) and trailing particles and "
        "confirmation tails (…吧 / 对吧 / 是吗), and finds the last clause that asks something. The index "
        "ranks entries with the whole message; only when it would not answer that message does it also ask the "
        "question clause, the question with the clause before it and the cleaned message (in this order, "
        "stopping once sure; the readings reuse the message's sentence vector). When a reading has the same "
        "best entry as the whole message, the more confident reading's score is kept. The ranking never "
        "changes; a long message whose question clause clearly names the same entry gets the confidence that "
        "clause deserves. A message that is only greetings or thanks (在吗 / 好的谢谢) is not looked up "
        "(`reason: empty`).\n"
        "- Thresholds: the answer threshold and margin are the ones that answer the most calibration questions "
        "while at least 90 % of the answers to held-out standard questions (and labelled questions, when given) "
        "are right, at most 5 % of the generic out-of-scope messages and 30 % of the held-out entries' questions "
        "are answered (`calibration.TARGET_PRECISION`, `MAX_NEGATIVES_ANSWERED`); the clarify threshold then "
        "maximises the utility of before (wrong answer -3, right +1, useful clarification +0.3, useless -0.3, "
        "declining an answerable question -0.1), on out-of-fold probabilities of the monotone logistic scorer.\n"
        "- Why held-out standard questions: held-out 相似问 are terse keywords (积分从哪来) and their entry "
        "loses a needed phrasing when one is removed, so the right entry ranks first for only 55-60 % of them "
        "(~80 % for held-out standard questions, ~90 % for the team's questions). Choosing thresholds on them "
        "made the bot answer a fraction of what it could: the old rule put the answer threshold at 0.50-0.74 "
        "(it moved with every FAQ edit), where the realistic messages are answered 98-100 % right but only "
        "18-33 % of them are answered at all.\n"
        "- Chat noise in calibration: held-out standard questions and the out-of-scope list are also asked "
        "wrapped in greetings, context and particles (`calibration.roughen`, shop-agnostic lists), so the "
        "thresholds see long messages of both kinds.\n"
        "- Fusion weights were re-chosen on held-out 相似问 and held-out standard questions of the demo shop "
        "(never on these sets): whole-entry fields and sentence vectors count more, single question rows less "
        "(held-out 相似问 top-1 54 -> 58 %, held-out standard questions 79 -> 82 %; a larger weight for the "
        "sentence vectors helped the paraphrases, +3 points, but cost the realistic fold 1 two points).\n"
        "- Tried and not kept (measured on fold 1 of the realistic set and the paraphrases, never on fold 2): "
        "calibrating on held-out 相似问 as well and asking every probe a second time with the scorer of the "
        "first round (same thresholds and quality, three times the calibration time); "
        "matching every reading and keeping the most confident one (top-1 fell from 89 % to 84-86 %: a short "
        "clause like 运费多少 beats the message it came from); fusing the rankings of all readings (top-1 86 %); "
        "matching only the cleaned message (no gain: the retrievers already ignore greetings and particles); "
        "encoding every reading with the sentence encoder (at most 2 points more coverage at equal precision, "
        "twice the 95th-percentile latency); "
        "the old threshold utility with held-out standard questions (answer threshold 0.65, still timid).\n"
        "- Known weak spots: a product name in an after-sales question pulls towards the product's own entry "
        "(\"充电宝外壳有划痕\" -> the power bank's charging entry instead of the small-defects policy); "
        "questions that need the context of an earlier message.\n\n"
        "## Latency\n\n"
        "Clause-wise matching costs only for long messages the index is unsure of; `bench/knowledge_bench.py "
        "--demo` measures `decide()` on these messages with it on and off, alternating on the same index, and "
        "`bench/knowledge_bench.py` the generated 1k-100k-entry shops (docs/BENCHMARKS.md).\n\n"
        "## Database facts (never answered from the knowledge base)\n\n"
        "Evaluation questions the price / stock / order guard routes to the catalog or order actions (the guard "
        "is not applied in the tables above, which measure retrieval):\n\n" + guard_lines + "\n")
    REPORT.write_text(text, encoding="utf-8")
    write_section("knowledge-quality", summary)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", type=Path, default=FAQ)
    parser.add_argument("--json", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    parser.add_argument("--quick", action="store_true", help="only the self-calibrated hybrid and the baselines")
    parser.add_argument("--from-json", type=Path, help="write the report from the numbers of an earlier --json run")
    args = parser.parse_args(argv)
    data = (json.loads(args.from_json.read_text(encoding="utf-8")) if args.from_json
            else evaluate(args.faq, quick=args.quick))
    if args.json:
        args.json.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.no_write:
        print(json.dumps({k: v for k, v in data.items() if k != "guarded"}, ensure_ascii=False, indent=1))
        return
    before = json.loads(BEFORE.read_text(encoding="utf-8")) if BEFORE.exists() else None
    print(write_report(data, before))


if __name__ == "__main__":
    main()
