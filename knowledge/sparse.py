"""Inverted-index scoring on a scipy CSC matrix: BM25 for words, cosine TF-IDF for n-grams.

Weights are precomputed per (row, term) at build time, so a query costs one column slice and one
sparse mat-vec, proportional to the postings of its terms only.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

BM25 = "bm25"
TFIDF = "tfidf"


class SparseIndex:
    def __init__(self, scheme: str, vocab: Dict[str, int], idf: np.ndarray, matrix: sp.csc_matrix,
                 avgdl: float, k1: float = 1.2, b: float = 0.75, max_df_ratio: float = 1.0) -> None:
        self.scheme = scheme
        self.vocab = vocab
        self.idf = idf
        self.matrix = matrix
        self.avgdl = avgdl
        self.k1 = k1
        self.b = b
        self.n_rows = matrix.shape[0]
        # terms in more than this share of rows are skipped at query time: their weight is near zero
        # but their posting lists are the longest, and they dominate latency on large indexes
        self.max_df_ratio = max_df_ratio
        self._df = np.diff(matrix.indptr)

    # --- build ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: Sequence[Sequence[str]], scheme: str, k1: float = 1.2, b: float = 0.75,
              max_df_ratio: float = 1.0) -> "SparseIndex":
        vocab: Dict[str, int] = {}
        rows: List[int] = []
        cols: List[int] = []
        tfs: List[float] = []
        lengths = np.zeros(len(docs), dtype=np.float32)
        for r, tokens in enumerate(docs):
            lengths[r] = len(tokens)
            for term, tf in Counter(tokens).items():
                c = vocab.setdefault(term, len(vocab))
                rows.append(r)
                cols.append(c)
                tfs.append(tf)
        n = max(len(docs), 1)
        rows_a = np.asarray(rows, dtype=np.int32)
        cols_a = np.asarray(cols, dtype=np.int32)
        tf_a = np.asarray(tfs, dtype=np.float32)
        df = np.bincount(cols_a, minlength=len(vocab)).astype(np.float32)
        avgdl = float(lengths.mean()) if len(docs) else 1.0
        if scheme == BM25:
            idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
            dl = lengths[rows_a]
            weights = idf[cols_a] * tf_a * (k1 + 1) / (tf_a + k1 * (1 - b + b * dl / max(avgdl, 1e-9)))
        elif scheme == TFIDF:
            idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
            weights = (1.0 + np.log(tf_a)) * idf[cols_a]
            norms = np.sqrt(np.bincount(rows_a, weights=weights.astype(np.float64) ** 2, minlength=len(docs)))
            weights = weights / np.maximum(norms[rows_a], 1e-12)
        else:
            raise ValueError(scheme)
        matrix = sp.csc_matrix((weights.astype(np.float32), (rows_a, cols_a)), shape=(len(docs), len(vocab)))
        matrix.sort_indices()
        return cls(scheme, vocab, idf, matrix, avgdl, k1, b, max_df_ratio)

    # --- query ---------------------------------------------------------------------------------
    def query_terms(self, tokens: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Column ids and query-side weights of the known terms."""
        counts = Counter(t for t in tokens if t in self.vocab)
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cols = np.fromiter((self.vocab[t] for t in counts), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        if self.max_df_ratio < 1.0 and len(cols) > 1:
            keep = self._df[cols] <= self.max_df_ratio * self.n_rows
            if keep.any():
                cols, tf = cols[keep], tf[keep]
        if self.scheme == BM25:
            return cols, tf  # BM25 sums the row weights once per query occurrence
        w = (1.0 + np.log(tf)) * self.idf[cols]
        return cols, (w / max(float(np.linalg.norm(w)), 1e-12)).astype(np.float32)

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """A dense score per row (BM25 score, or cosine for TF-IDF)."""
        cols, w = self.query_terms(tokens)
        if len(cols) == 0:
            return np.zeros(self.n_rows, dtype=np.float32)
        return np.asarray(self.matrix[:, cols] @ w, dtype=np.float32).ravel()

    def self_score(self, tokens: Sequence[str]) -> float:
        """BM25 of the query against itself as a document: the score a perfect paraphrase would get,
        used to map BM25 onto [0, 1]. For TF-IDF this is 1 by construction."""
        if self.scheme != BM25:
            return 1.0
        counts = Counter(tokens)
        dl = sum(counts.values())
        total = 0.0
        n = self.n_rows
        for term, tf in counts.items():
            c = self.vocab.get(term)
            idf = float(self.idf[c]) if c is not None else math.log(1.0 + (n + 0.5) / 0.5)
            total += idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * dl / max(self.avgdl, 1e-9)))
        return total

    # --- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path, name: str) -> None:
        sp.save_npz(directory / f"{name}.npz", self.matrix, compressed=False)
        np.save(directory / f"{name}.idf.npy", self.idf)
        terms = [None] * len(self.vocab)
        for term, i in self.vocab.items():
            terms[i] = term
        meta = {"scheme": self.scheme, "avgdl": self.avgdl, "k1": self.k1, "b": self.b,
                "max_df_ratio": self.max_df_ratio, "terms": terms}
        (directory / f"{name}.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, name: str) -> "SparseIndex":
        meta = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
        matrix = sp.load_npz(directory / f"{name}.npz").tocsc()
        idf = np.load(directory / f"{name}.idf.npy")
        vocab = {t: i for i, t in enumerate(meta["terms"])}
        return cls(meta["scheme"], vocab, idf, matrix, meta["avgdl"], meta["k1"], meta["b"], meta["max_df_ratio"])
