"""Sparse text features for Chinese customer messages, in three blocks that are each TF-IDF
weighted and L2-normalised: character n-grams (robust to segmentation errors and typos), words
from the tokenizer (jieba with the shop dictionary), and pinyin syllable n-grams (homophone typos
like 定单/订单, and customers who type pinyin: "qu xiao ding dan")."""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
from pypinyin import lazy_pinyin

_WS = re.compile(r"\s+")
_SYLLABLE = re.compile(r"[a-z]+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _WS.sub(" ", text).strip()


def char_ngrams(text: str, lo: int, hi: int) -> List[str]:
    out = []
    for n in range(lo, hi + 1):
        out.extend(text[i:i + n] for i in range(len(text) - n + 1))
    return out


def word_ngrams(words: Sequence[str], lo: int, hi: int) -> List[str]:
    words = [w for w in words if w.strip()]
    out = []
    for n in range(lo, hi + 1):
        out.extend(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    return out


def pinyin_syllables(text: str) -> List[str]:
    syllables: List[str] = []
    for part in lazy_pinyin(text):
        syllables.extend(_SYLLABLE.findall(part))
    return syllables


@dataclass
class Block:
    """One feature block: its vocabulary and inverse document frequencies."""

    vocabulary: Dict[str, int] = field(default_factory=dict)
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def fit(self, documents: Iterable[List[str]]) -> "Block":
        df: Dict[str, int] = {}
        n_docs = 0
        for terms in documents:
            n_docs += 1
            for term in set(terms):
                df[term] = df.get(term, 0) + 1
        self.vocabulary = {term: i for i, term in enumerate(sorted(df))}
        # smooth idf, as scikit-learn's TfidfTransformer
        idf = np.zeros(len(self.vocabulary), dtype=np.float32)
        for term, index in self.vocabulary.items():
            idf[index] = math.log((1 + n_docs) / (1 + df[term])) + 1.0
        self.idf = idf
        return self

    def row(self, terms: List[str]) -> Tuple[List[int], List[float]]:
        counts: Dict[int, int] = {}
        for term in terms:
            index = self.vocabulary.get(term)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        if not counts:
            return [], []
        indices = list(counts)
        values = np.array([(1.0 + math.log(counts[i])) * self.idf[i] for i in indices], dtype=np.float64)
        values /= np.linalg.norm(values) or 1.0
        return indices, values.tolist()


@dataclass
class TextFeaturizer:
    char_range: Tuple[int, int] = (1, 3)
    word_range: Tuple[int, int] = (1, 1)
    pinyin_range: Tuple[int, int] = (1, 2)
    blocks: List[Block] = field(default_factory=list)

    def terms(self, text: str, words: Optional[Sequence[str]]) -> List[List[str]]:
        norm = normalise(text)
        tokens = [normalise(w) for w in words] if words is not None else norm.split(" ")
        return [
            char_ngrams(norm, *self.char_range),
            word_ngrams(tokens, *self.word_range),
            word_ngrams(pinyin_syllables(norm), *self.pinyin_range),
        ]

    def fit(self, texts: Sequence[str], words: Sequence[Optional[Sequence[str]]]) -> "TextFeaturizer":
        all_terms = [self.terms(t, w) for t, w in zip(texts, words)]
        self.blocks = [Block().fit(terms[b] for terms in all_terms) for b in range(3)]
        return self

    @property
    def n_features(self) -> int:
        return sum(len(b.vocabulary) for b in self.blocks)

    def transform(self, texts: Sequence[str], words: Sequence[Optional[Sequence[str]]]) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for r, (text, toks) in enumerate(zip(texts, words)):
            offset = 0
            for block, terms in zip(self.blocks, self.terms(text, toks)):
                indices, values = block.row(terms)
                rows.extend([r] * len(indices))
                cols.extend(i + offset for i in indices)
                vals.extend(values)
                offset += len(block.vocabulary)
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), self.n_features), dtype=np.float64)
