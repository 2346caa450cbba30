"""Retrieval quality of the knowledge base on the labelled evaluation set, against two baselines.

    .venv/bin/python bench/knowledge_eval.py

Writes docs/KNOWLEDGE_EVAL.md and the "knowledge-quality" section of docs/BENCHMARKS.md.

* Evaluation set: knowledge/eval/questions.csv (paraphrases written by the team, independent of the
  相似问 that are indexed, incl. typos; plus out-of-scope questions with an empty expected_id).
* Thresholds are calibrated without these questions: on held-out 相似问 / entries and a generic
  out-of-scope list (what `build --faq` does for any shop), optionally plus the separate labelled
  calibration split knowledge/eval/calibration.csv. Both variants are reported.
* Baselines computed in the same run on the same FAQ: plain jieba (global dictionary, no shop words) +
  Okapi BM25 over each entry's questions and answer, and character 1-3-gram TF-IDF cosine over the same
  text; their thresholds are calibrated on the same calibration queries with the same procedure.
"""
from __future__ import annotations

import csv
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
from knowledge.kb import KnowledgeBase  # noqa: E402
from knowledge.sparse import BM25, TFIDF, SparseIndex  # noqa: E402
from knowledge.text import char_ngrams, normalize  # noqa: E402

FAQ = ROOT / "knowledge" / "demo" / "faq.csv"
DOCS = ROOT / "knowledge" / "demo" / "docs"
QUESTIONS = ROOT / "knowledge" / "eval" / "questions.csv"
CALIBRATION = ROOT / "knowledge" / "eval" / "calibration.csv"
REPORT = ROOT / "docs" / "KNOWLEDGE_EVAL.md"
TYPOS = ROOT / "knowledge" / "eval" / "typos.txt"  # which evaluation questions carry deliberate typos

Query = Tuple[str, Optional[str]]
Ranker = Callable[[str], Tuple[List[str], List[float]]]


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


def observations(ranker: Ranker, queries: Sequence[Query]) -> List[Observation]:
    out = []
    for q, expected in queries:
        ids, scores = ranker(q)
        out.append(Observation(expected, tuple(ids), tuple(scores)))
    return out


def metrics(obs: Sequence[Observation], thresholds: Dict) -> Dict[str, float]:
    pos = [o for o in obs if o.expected]
    neg = [o for o in obs if not o.expected]
    decisions = [outcome(o, thresholds) for o in obs]
    dpos = [d for o, d in zip(obs, decisions) if o.expected]
    dneg = [d for o, d in zip(obs, decisions) if not o.expected]
    answered = [(d, o) for o, d in zip(obs, decisions) if d[0] == "answer"]
    c = Counter(d for d, _ in dpos)
    return {
        "top1": np.mean([bool(o.ids) and o.ids[0] == o.expected for o in pos]),
        "recall3": np.mean([o.expected in o.ids[:3] for o in pos]),
        "answer": c["answer"] / len(pos),
        "answer_right": sum(1 for d, ok in dpos if d == "answer" and ok) / len(pos),
        "clarify": c["clarify"] / len(pos),
        "clarify_useful": sum(1 for d, ok in dpos if d == "clarify" and ok) / len(pos),
        "decline": c["decline"] / len(pos),
        "precision": (sum(1 for (d, ok), _ in answered if ok) / len(answered)) if answered else float("nan"),
        "oos_decline": sum(1 for d, _ in dneg if d == "decline") / len(neg),
        "oos_clarify": sum(1 for d, _ in dneg if d == "clarify") / len(neg),
        "oos_answer": sum(1 for d, _ in dneg if d == "answer") / len(neg),
    }


def kb_ranker(kb: KnowledgeBase) -> Ranker:
    def rank(q: str):
        hits = kb.search(q, k=4)
        return [h.entry.id for h in hits], [h.score for h in hits]
    return rank


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def main() -> None:
    entries = read_faq(FAQ).entries
    rows = list(csv.DictReader(open(QUESTIONS, encoding="utf-8")))
    eval_queries: List[Query] = [(r["query"], r["expected_id"] or None) for r in rows]
    labelled = read_labelled(CALIBRATION)
    generic_oos = calibration.out_of_scope_queries()
    typos = {line.strip() for line in TYPOS.read_text(encoding="utf-8").splitlines() if line.strip()}
    guarded = [(q, e, asks_database_fact(q)) for q, e in eval_queries if asks_database_fact(q)]

    systems: Dict[str, Tuple[Ranker, Dict]] = {}
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        docs = read_sources(docs=[DOCS]).entries
        for label, extra, config, indexed in (
                ("hybrid, self-calibrated (build --faq)", [], None, entries),
                ("hybrid, + labelled calibration split", labelled, None, entries),
                ("hybrid, LSA vectors instead of USE", [], {"dense_model": "lsa"}, entries),
                ("hybrid, FAQ + product documents indexed", [], None, entries + docs)):
            out = Path(tmp) / str(len(systems))
            t = time.perf_counter()
            report = build_and_publish(indexed, out, labelled=extra, config=config)
            timings[label] = time.perf_counter() - t
            kb = KnowledgeBase(out, refresh_seconds=0)
            kb.refresh(force=True)
            systems[f"{label} [{kb.index.config['dense_model']}]"] = (kb_ranker(kb), report.thresholds)

        calib_queries = labelled + generic_oos
        for name, analyzer, scheme in (("plain jieba + BM25", plain_jieba(), BM25),
                                       ("char 1-3-gram TF-IDF", lambda t: char_ngrams(t, 1, 3), TFIDF)):
            base = Baseline(name, entries, analyzer, scheme)
            th = choose_thresholds(observations(base.rank, calib_queries))
            systems[name] = (base.rank, th)

        results = {}
        for name, (ranker, th) in systems.items():
            obs = observations(ranker, eval_queries)
            results[name] = (metrics(obs, th), th)
            typo_obs = [o for o, r in zip(obs, rows) if r["expected_id"] and r["query"] in typos]
            results[name][0]["typo_top1"] = (
                np.mean([o.ids[:1] == (o.expected,) for o in typo_obs]) if typo_obs else float("nan")
            )

    n_pos = sum(1 for _, e in eval_queries if e)
    n_neg = len(eval_queries) - n_pos
    header = ("| system | top-1 | recall@3 | typo top-1 | answered | answered right | precision of answers "
              "| clarify (useful) | declined | out-of-scope declined / clarified / answered "
              "| thresholds (answer, margin, clarify) |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = []
    for name, (m, th) in results.items():
        lines.append(f"| {name} | {pct(m['top1'])} | {pct(m['recall3'])} | {pct(m['typo_top1'])} | "
                     f"{pct(m['answer'])} | {pct(m['answer_right'])} | {pct(m['precision'])} | "
                     f"{pct(m['clarify'])} ({pct(m['clarify_useful'])}) | {pct(m['decline'])} | "
                     f"{pct(m['oos_decline'])} / {pct(m['oos_clarify'])} / {pct(m['oos_answer'])} | "
                     f"{th['answer']:.2f}, {th['margin']:.2f}, {th['clarify']:.2f} |")
    table = header + "\n".join(lines)
    summary = (
        "## Knowledge base: retrieval quality\n\n"
        f"`bench/knowledge_eval.py` on {n_pos} paraphrased customer questions and {n_neg} out-of-scope ones "
        f"(knowledge/eval/questions.csv) against the demo FAQ ({len(entries)} entries). Top-1 / recall@3 are "
        "rankings without thresholds; the other columns are the decisions at each system's thresholds, which "
        "were calibrated on queries that are not in the evaluation set. Rates of the paraphrases unless marked "
        "out-of-scope. Details: docs/KNOWLEDGE_EVAL.md.\n\n" + table + "\n"
    )
    write_section("knowledge-quality", summary)
    guard_lines = "\n".join(f"- {q} -> {fact} (expected {e or 'decline'})" for q, e, fact in guarded) or "- none"
    REPORT.write_text(
        "# Knowledge base evaluation\n\n"
        "Generated by `bench/knowledge_eval.py`; re-run it after changing the FAQ, the retrieval or the data.\n\n"
        "## Data\n\n"
        f"- FAQ: knowledge/demo/faq.csv, {len(entries)} entries with {sum(len(e.similar) for e in entries)} 相似问.\n"
        f"- Evaluation: knowledge/eval/questions.csv, {n_pos} paraphrases "
        f"({sum(1 for r in rows if r['query'] in typos)} with deliberate typos, mostly homophones) and {n_neg} "
        "out-of-scope questions. Written by the team "
        "independently of the 相似问; none is identical to an indexed question.\n"
        f"- Calibration: knowledge/eval/calibration.csv ({len(labelled)} labelled paraphrases, disjoint from the "
        f"evaluation set) and knowledge/data/out_of_scope.txt ({len(generic_oos)} generic out-of-scope messages, "
        "disjoint too). The self-calibrated variant uses no labelled data at all: only 相似问 and entries held out "
        "of a copy of the index, plus the generic out-of-scope list.\n\n"
        "## Results\n\n" + table + "\n\n"
        "- *answered right*: share of all paraphrases answered with the expected entry; *precision of answers*: "
        "right answers / all answers; *clarify (useful)*: the bot offered choices, and in brackets how often the "
        "expected entry was among them.\n"
        "- *LSA vectors instead of USE*: the same hybrid without the sentence-encoder wheel (vectors from an SVD "
        "of the shop's own TF-IDF); this is the measurement behind making USE the default.\n"
        "- *FAQ + product documents*: the four demo documents (passages with headings) indexed too, as distractors "
        "for these FAQ questions; a document passage counts as wrong here.\n"
        "- Baselines use whole-entry text (questions + answer) in one field, the usual setup; their thresholds "
        "come from the same calibration procedure (score = cosine, or BM25 divided by the query's self-score).\n"
        "- Build time of the demo index incl. calibration: "
        + ", ".join(f"{k}: {v:.1f} s" for k, v in timings.items()) + ".\n\n"
        "## How the configuration was chosen\n\n"
        "- Fusion weights, the whole-entry character field and USE over LSA were chosen on the labelled calibration "
        "split and on held-out 相似问, never on these evaluation questions (top-1 on the calibration split: LSA "
        "fusion 0.89, + whole-entry char n-grams 0.93, + USE vectors 0.92-0.93 with better held-out recall).\n"
        "- The scorer is a logistic regression constrained to non-negative weights (an unconstrained fit learned "
        "negative weights for correlated similarities, so an exact match scored below a paraphrase); thresholds "
        "maximise a utility in which a wrong answer costs 3, a right one earns 1, a useful clarification 0.3, a "
        "useless one costs 0.3 and declining an answerable question 0.1, using out-of-fold probabilities.\n"
        "- Tried and rejected on the calibration split: adding homophone-typo copies of held-out 相似问 to "
        "calibration (thresholds became timid: 57 instead of 83 of 110 answered, 4 fewer wrong answers).\n"
        "- One fix was prompted by this report: the *FAQ + documents* variant answered only 23 % because held-out "
        "FAQ questions that a document passage legitimately answers were counted as wrong answers during "
        "calibration; passages are no longer counted as wrong for held-out FAQ questions.\n"
        "- Known weak spots: long, wordy questions and questions phrased entirely differently from every 相似问 "
        "get a low confidence and are declined (about a quarter of the paraphrases), which hands them to a "
        "colleague; adding the misunderstood question through the 错题本 fixes each one at the next build.\n\n"
        "## Database facts (never answered from the knowledge base)\n\n"
        "Evaluation questions the price / stock / order guard routes to the catalog or order actions (the "
        "guard is not applied in the table above, which measures retrieval; three false positives found in this "
        "list, about 包邮, 价格单 and a refund that 什么时候到, were fixed and are now unit tests):\n\n"
        + guard_lines + "\n",
        encoding="utf-8")
    print(summary)


if __name__ == "__main__":
    main()
