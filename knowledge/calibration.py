"""Answer / clarify / decline thresholds, calibrated on data and stored with the index.

Calibration queries come from three places, none of them the questions we report quality on:
  * held-out 相似问: one similar question per sampled entry is removed from a calibration copy of the
    index and asked as a query whose right answer is known (works for any shop's FAQ);
  * held-out entries: whole entries are removed and their questions asked: the right answer is not in
    the index, so the bot should not answer (near-miss negatives, the hard case);
  * a shop-agnostic list of out-of-scope messages (knowledge/data/out_of_scope.txt), plus optionally a
    labelled calibration file written by the shop (query, expected_id; empty id = must not answer).
The thresholds maximise a utility in which a wrong answer costs three times what a right one earns.
"""
from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .entries import DOC, FAQ, Entry

logger = logging.getLogger(__name__)
OUT_OF_SCOPE_FILE = Path(__file__).resolve().parent / "data" / "out_of_scope.txt"

# utility of each outcome (per query)
GAIN_RIGHT_ANSWER = 1.0
COST_WRONG_ANSWER = 3.0
GAIN_USEFUL_CLARIFY = 0.3  # the right entry is among the offered choices
COST_USELESS_CLARIFY = 0.3
COST_DECLINED_ANSWERABLE = 0.1
MIN_QUERIES = 20
MAX_CHOICES = 3


@dataclass(frozen=True)
class Observation:
    expected: Optional[str]  # None: nothing in the index should answer it
    ids: Tuple[str, ...]  # ranked hit ids
    scores: Tuple[float, ...]  # their confidences


FEATURES = ("bm25_q", "bm25_all", "char", "char_all", "pinyin", "dense", "fused", "fused_gap", "rank")
CANDIDATES = 4


@dataclass(frozen=True)
class Probe:
    """One calibration query and the candidates the index returned for it, with their signals."""

    expected: Optional[str]
    ids: Tuple[str, ...]
    signals: Tuple[Dict[str, float], ...]


def probe(index, queries: Iterable[Tuple[str, Optional[str]]], now: Optional[datetime] = None,
          held_out: bool = False) -> List[Probe]:
    """``held_out``: the queries come from removed FAQ entries. A document passage may well answer
    those (the size guide answers a removed sizing question), so passages are not counted as wrong
    candidates for them; labelling them wrong taught the scorer to distrust good matches."""
    out = []
    for query, expected in queries:
        hits = [h for h in index.search(query, k=CANDIDATES, now=now) if not h.exact
                and not (held_out and expected is None and h.entry.kind == DOC)]
        out.append(Probe(expected or None, tuple(h.entry.id for h in hits), tuple(h.signals for h in hits)))
    return out


def observe(index, queries: Iterable[Tuple[str, Optional[str]]], now: Optional[datetime] = None) -> List[Observation]:
    """What the index (with its current scorer) returns, for choosing or checking thresholds."""
    out = []
    for query, expected in queries:
        hits = index.search(query, k=MAX_CHOICES + 1, now=now)
        out.append(Observation(expected or None, tuple(h.entry.id for h in hits), tuple(h.score for h in hits)))
    return out


def fit_scorer(probes: Sequence[Probe], folds: int = 5, seed: int = 0) -> Tuple[Dict, List[Observation]]:
    """Monotone logistic regression P(candidate is the right entry | its signals).

    Returns the scorer and, for threshold selection, observations scored out-of-fold (grouped by
    query), so the thresholds are not chosen on probabilities the model was fitted to.
    """
    X, y, group = [], [], []
    for qi, p in enumerate(probes):
        for cid, sig in zip(p.ids, p.signals):
            X.append([sig.get(f, 0.0) for f in FEATURES])
            y.append(1 if cid == p.expected else 0)
            group.append(qi)
    X_a, y_a, g_a = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(group)
    if len(set(y)) < 2 or y_a.sum() < 5:
        raise ValueError("calibration needs both right and wrong candidates")

    oof = np.zeros(len(y_a))
    rng = np.random.default_rng(seed)
    fold_of_query = rng.integers(0, folds, size=len(probes))
    for f in range(folds):
        test = fold_of_query[g_a] == f
        train = ~test
        if test.any() and len(set(y_a[train])) == 2:
            coef, intercept = _fit_monotone_logistic(X_a[train], y_a[train])
            oof[test] = _sigmoid(X_a[test] @ coef + intercept)
    coef, intercept = _fit_monotone_logistic(X_a, y_a)
    scorer = {"features": list(FEATURES), "coef": [round(float(c), 6) for c in coef],
              "intercept": round(float(intercept), 6)}
    observations = []
    pos = 0
    for p in probes:
        n = len(p.ids)
        scores = oof[pos:pos + n]
        pos += n
        order = np.argsort(-scores, kind="stable")
        observations.append(
            Observation(p.expected, tuple(p.ids[i] for i in order), tuple(float(scores[i]) for i in order))
        )
    return scorer, observations


def outcome(obs: Observation, thresholds: Dict) -> Tuple[str, bool]:
    """The decision the thresholds make on one observation, and whether it helps the customer."""
    top = obs.scores[0] if obs.scores else 0.0
    second = obs.scores[1] if len(obs.scores) > 1 else 0.0
    if top >= thresholds["answer"] and top - second >= thresholds["margin"]:
        return "answer", obs.expected is not None and obs.ids[0] == obs.expected
    if top >= thresholds["clarify"]:
        offered = [i for i, s in zip(obs.ids, obs.scores) if s >= thresholds["clarify"]][:MAX_CHOICES]
        return "clarify", obs.expected is not None and obs.expected in offered
    return "decline", obs.expected is None


def choose_thresholds(observations: Sequence[Observation]) -> Dict:
    if len(observations) < MIN_QUERIES:
        raise ValueError(f"need at least {MIN_QUERIES} calibration queries, got {len(observations)}")
    n = len(observations)
    top = np.array([o.scores[0] if o.scores else 0.0 for o in observations])
    second = np.array([o.scores[1] if len(o.scores) > 1 else 0.0 for o in observations])
    positive = np.array([o.expected is not None for o in observations])
    right1 = np.array([bool(o.ids) and o.expected is not None and o.ids[0] == o.expected for o in observations])
    margin = top - second
    clarify_grid = np.arange(0.10, 0.96, 0.02)
    useful_at = {round(float(t), 4): _useful(observations, t) for t in clarify_grid}
    best = None
    for t_answer in np.arange(0.20, 0.96, 0.01):
        for t_margin in np.arange(0.0, 0.21, 0.01):
            answered = (top >= t_answer) & (margin >= t_margin)
            u_answer = np.where(answered, np.where(right1, GAIN_RIGHT_ANSWER, -COST_WRONG_ANSWER), 0.0)
            rest = ~answered
            for t_clarify in clarify_grid[clarify_grid <= t_answer + 1e-9]:
                clar = rest & (top >= t_clarify)
                useful = useful_at[round(float(t_clarify), 4)]
                u = u_answer + np.where(clar, np.where(useful, GAIN_USEFUL_CLARIFY, -COST_USELESS_CLARIFY), 0.0)
                u = u + np.where(rest & ~clar & positive, -COST_DECLINED_ANSWERABLE, 0.0)
                total = float(u.sum())
                key = (round(total, 6), -t_answer, -t_clarify)
                if best is None or key > best[0]:
                    best = (key, float(t_answer), float(t_margin), float(t_clarify), total)
    _, t_answer, t_margin, t_clarify, total = best
    thresholds = {"answer": round(t_answer, 2), "margin": round(t_margin, 2), "clarify": round(t_clarify, 2)}
    decisions = [outcome(o, thresholds) for o in observations]
    thresholds.update({
        "utility_per_query": round(total / n, 4),
        "queries": n, "positives": int(positive.sum()), "negatives": int((~positive).sum()),
        "answer_precision": _ratio(sum(1 for d, ok in decisions if d == "answer" and ok),
                                   sum(1 for d, _ in decisions if d == "answer")),
    })
    return thresholds


def _useful(observations: Sequence[Observation], t_clarify: float) -> np.ndarray:
    """Per observation: would the choices offered at this clarify threshold include the right entry."""
    return np.array([
        o.expected is not None and o.expected in [i for i, s in zip(o.ids, o.scores) if s >= t_clarify][:MAX_CHOICES]
        for o in observations])


def _ratio(a: int, b: int) -> Optional[float]:
    return round(a / b, 4) if b else None


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _fit_monotone_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0) -> Tuple[np.ndarray, float]:
    """L2-regularised logistic regression whose coefficients are all >= 0.

    Every feature is a similarity or a rank signal, so a candidate that is more similar must never
    look less likely to be right; an unconstrained fit on a few hundred queries happily learns
    negative weights for correlated features, and then an exact match scores lower than a paraphrase.
    """
    from scipy.optimize import minimize

    n, d = X.shape

    def loss(w):
        z = X @ w[:d] + w[d]
        p = _sigmoid(z)
        eps = 1e-12
        value = -np.sum(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)) + 0.5 * l2 * np.dot(w[:d], w[:d])
        grad_z = p - y
        grad = np.concatenate([X.T @ grad_z + l2 * w[:d], [grad_z.sum()]])
        return value, grad

    bounds = [(0.0, None)] * d + [(None, None)]
    result = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return result.x[:d], float(result.x[d])


def read_labelled(path: Path) -> List[Tuple[str, Optional[str]]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [(row["query"], (row.get("expected_id") or "").strip() or None) for row in csv.DictReader(fh)
                if (row.get("query") or "").strip()]


def out_of_scope_queries(path: Path = OUT_OF_SCOPE_FILE) -> List[Tuple[str, Optional[str]]]:
    return [(line.strip(), None) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def holdout_split(entries: Sequence[Entry], max_positive: int = 300, max_negative: int = 120,
                  seed: int = 13) -> Tuple[List[Entry], List[Tuple[str, Optional[str]]]]:
    """A copy of the entries with some 相似问 and some whole entries removed, and the queries that test it.

    (Also asking held-out 相似问 with homophone typos was tried: on the labelled calibration split it
    made the thresholds more timid, 57 instead of 83 of 110 answered, for 4 fewer wrong answers.)
    """
    rng = random.Random(seed)
    faq = [e for e in entries if e.kind == FAQ]
    order = list(range(len(faq)))
    rng.shuffle(order)
    n_neg = min(max_negative, len(faq) // 5)
    negatives = {faq[i].id for i in order[:n_neg]}
    with_similar = [faq[i] for i in order[n_neg:] if faq[i].similar]
    positives = {e.id for e in with_similar[:max_positive]}
    kept: List[Entry] = []
    queries: List[Tuple[str, Optional[str]]] = []
    for e in entries:
        if e.id in negatives:
            queries.append((e.question, None))
            if e.similar:
                queries.append((rng.choice(e.similar), None))
            continue
        if e.id in positives:
            held = rng.randrange(len(e.similar))
            queries.append((e.similar[held], e.id))
            e = replace(e, similar=e.similar[:held] + e.similar[held + 1:])
        kept.append(e)
    return kept, queries
