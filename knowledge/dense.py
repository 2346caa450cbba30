"""Vectors in faiss: a latent semantic (LSA) embedding of the question rows.

The vectors come from a truncated SVD of the shop's own TF-IDF matrix (words + character bigrams), so
they need no model download and adapt to the shop's vocabulary: phrasings that share context words
with an entry's 相似问 land near it even without exact term overlap. Small indexes use an exact flat
index; large ones an IVF index, which keeps p99 latency flat as the shop grows.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import faiss
import numpy as np
import scipy.sparse as sp

FLAT_LIMIT = 40_000
NPROBE = 24


class DenseIndex:
    def __init__(self, vocab: Dict[str, int], idf: np.ndarray, components: np.ndarray, index: "faiss.Index") -> None:
        self.vocab = vocab
        self.idf = idf
        self.components_t = np.ascontiguousarray(components.T)  # V x d, so a query is a row gather
        self.index = index
        self.dims = components.shape[0]

    @classmethod
    def build(cls, docs: Sequence[Sequence[str]], dims: int = 128, min_df: int = 2, max_features: int = 50_000,
              seed: int = 0) -> "DenseIndex":
        from sklearn.decomposition import TruncatedSVD

        df = Counter(t for tokens in docs for t in set(tokens))
        terms = [t for t, c in df.most_common(max_features) if c >= min_df]
        vocab = {t: i for i, t in enumerate(terms)}
        n = len(docs)
        idf = np.array([np.log((1.0 + n) / (1.0 + df[t])) + 1.0 for t in terms], dtype=np.float32)
        matrix = _tfidf_rows(docs, vocab, idf)
        d = max(1, min(dims, min(matrix.shape) - 1))
        if matrix.shape[1] < 2 or matrix.shape[0] < 3:
            components = np.zeros((1, max(1, len(vocab))), dtype=np.float32)
            vectors = np.zeros((n, 1), dtype=np.float32)
        else:
            svd = TruncatedSVD(n_components=d, algorithm="randomized", n_iter=5, random_state=seed)
            vectors = svd.fit_transform(matrix).astype(np.float32)
            components = svd.components_.astype(np.float32)
        faiss.normalize_L2(vectors)
        return cls(vocab, idf, components, _faiss_index(vectors, seed))

    def embed(self, tokens: Sequence[str]) -> np.ndarray:
        counts = Counter(t for t in tokens if t in self.vocab)
        vec = np.zeros((1, self.dims), dtype=np.float32)
        if not counts:
            return vec
        cols = np.fromiter((self.vocab[t] for t in counts), dtype=np.int64, count=len(counts))
        w = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))) * self.idf[cols]
        w /= max(float(np.linalg.norm(w)), 1e-12)
        vec[0] = w @ self.components_t[cols]
        faiss.normalize_L2(vec)
        return vec

    def search(self, vec: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        if not vec.any() or self.index.ntotal == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        sims, rows = self.index.search(vec, min(k, self.index.ntotal))
        keep = rows[0] >= 0
        return rows[0][keep], sims[0][keep]

    def similarity(self, vec: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine between the query and given rows (for candidates another retriever found)."""
        if len(rows) == 0 or not vec.any():
            return np.zeros(len(rows), dtype=np.float32)
        stored = self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        return stored @ vec[0]

    def save(self, directory: Path, name: str) -> None:
        terms = [None] * len(self.vocab)
        for t, i in self.vocab.items():
            terms[i] = t
        (directory / f"{name}.json").write_text(json.dumps({"terms": terms}, ensure_ascii=False), encoding="utf-8")
        np.save(directory / f"{name}.idf.npy", self.idf)
        np.save(directory / f"{name}.components.npy", np.ascontiguousarray(self.components_t.T))
        faiss.write_index(self.index, str(directory / f"{name}.faiss"))

    @classmethod
    def load(cls, directory: Path, name: str) -> "DenseIndex":
        terms = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))["terms"]
        index = faiss.read_index(str(directory / f"{name}.faiss"))
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = NPROBE
            index.make_direct_map()
        return cls({t: i for i, t in enumerate(terms)}, np.load(directory / f"{name}.idf.npy"),
                   np.load(directory / f"{name}.components.npy"), index)


def _tfidf_rows(docs: Sequence[Sequence[str]], vocab: Dict[str, int], idf: np.ndarray) -> sp.csr_matrix:
    indptr: List[int] = [0]
    indices: List[int] = []
    data: List[float] = []
    for tokens in docs:
        counts = Counter(t for t in tokens if t in vocab)
        cols = [vocab[t] for t in counts]
        w = np.array([(1.0 + np.log(c)) for c in counts.values()], dtype=np.float32) * idf[cols] if cols else np.zeros(0, np.float32)
        norm = float(np.linalg.norm(w)) or 1.0
        indices.extend(cols)
        data.extend((w / norm).tolist())
        indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                          np.asarray(indptr, dtype=np.int64)), shape=(len(docs), len(vocab)))


def _faiss_index(vectors: np.ndarray, seed: int) -> "faiss.Index":
    n, d = vectors.shape
    if n <= FLAT_LIMIT:
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        return index
    nlist = int(4 * np.sqrt(n))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, size=min(n, nlist * 40), replace=False)]
    index.train(sample)
    index.add(vectors)
    index.nprobe = NPROBE
    index.make_direct_map()
    return index
