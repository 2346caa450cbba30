"""Answer / clarify / decline thresholds, calibrated on data and stored with the index.

Calibration queries come from three places, none of them the questions we report quality on:
  * held-out standard questions: the standard question of a sampled entry is removed from a calibration
    copy of the index (a 相似问 takes its place) and asked as a query whose right answer is known, as
    written and wrapped in chat noise (``roughen``: greetings, context, particles); works for any shop's
    FAQ (held-out 相似问 work the same way and are kept as an option, see ``holdout_split``);
  * held-out entries: whole entries are removed and their questions asked: the right answer is not in
    the index, so the bot should not answer (near-miss negatives, the hard case);
  * a shop-agnostic list of out-of-scope messages (knowledge/data/out_of_scope.txt, short and long), plus
    optionally a labelled calibration file written by the shop (query, expected_id; empty id = must not
    answer).
The answer threshold and margin answer as many questions as possible while 90 % of the answers to
held-out standard (and labelled) questions are right and few must-not-answer probes are answered; the
clarify threshold maximises a utility in which a wrong answer costs three times what a right one earns.
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
    # where the query comes from (HELD_SIMILAR, HELD_QUESTION, LABELLED, OUT_OF_SCOPE...): thresholds
    # may trust some sources more than others
    source: str = ""


FEATURES = ("bm25_q", "bm25_all", "char", "char_all", "pinyin", "dense", "fused", "fused_gap", "rank")
CANDIDATES = 4


@dataclass(frozen=True)
class Probe:
    """One calibration query and the candidates the index returned for it, with their signals."""

    expected: Optional[str]
    ids: Tuple[str, ...]
    signals: Tuple[Dict[str, float], ...]
    source: str = ""


# probe sources
HELD_SIMILAR = "held_similar"  # a 相似问 removed from its entry
HELD_QUESTION = "held_question"  # a standard question removed from its entry (a 相似问 stands in)
HELD_ENTRY = "held_entry"  # the question of an entry removed whole: must not be answered
OUT_OF_SCOPE = "out_of_scope"
LABELLED = "labelled"


def probe(index, queries: Iterable[Tuple[str, Optional[str]]], now: Optional[datetime] = None,
          held_out: bool = False, source: str = "") -> List[Probe]:
    """``held_out``: the queries come from removed FAQ entries. A document passage may well answer
    those (the size guide answers a removed sizing question), so passages are not counted as wrong
    candidates for them; labelling them wrong taught the scorer to distrust good matches."""
    out = []
    for query, expected in queries:
        hits = [h for h in index.search(query, k=CANDIDATES, now=now) if not h.exact
                and not (held_out and expected is None and h.entry.kind == DOC)]
        kind = source if expected or not held_out else HELD_ENTRY
        out.append(Probe(expected or None, tuple(h.entry.id for h in hits), tuple(h.signals for h in hits), kind))
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
        observations.append(Observation(p.expected, tuple(p.ids[i] for i in order),
                                        tuple(float(scores[i]) for i in order), p.source))
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


# answering rule: as many in-scope questions as possible while the answers stay right (precision on the
# in-scope probes) and few of the must-not-answer probes get an answer
TARGET_PRECISION = 0.9
MAX_NEGATIVES_ANSWERED = {OUT_OF_SCOPE: 0.05, HELD_ENTRY: 0.3, LABELLED: 0.1}
# probes whose precision the rule trusts; held-out 相似问 are too pessimistic (see holdout_split) and
# only count when nothing else is there
PRECISION_SOURCES = (HELD_QUESTION, LABELLED)
RULE = "precision"  # or "utility": the utility below for the answer threshold too


def choose_thresholds(observations: Sequence[Observation], rule: Optional[str] = None) -> Dict:
    if len(observations) < MIN_QUERIES:
        raise ValueError(f"need at least {MIN_QUERIES} calibration queries, got {len(observations)}")
    rule = rule or RULE
    n = len(observations)
    top = np.array([o.scores[0] if o.scores else 0.0 for o in observations])
    second = np.array([o.scores[1] if len(o.scores) > 1 else 0.0 for o in observations])
    positive = np.array([o.expected is not None for o in observations])
    right1 = np.array([bool(o.ids) and o.expected is not None and o.ids[0] == o.expected for o in observations])
    margin = top - second
    clarify_grid = np.arange(0.10, 0.96, 0.02)
    useful_at = {round(float(t), 4): _useful(observations, t) for t in clarify_grid}
    source = np.array([o.source for o in observations])
    trusted = positive & np.isin(source, PRECISION_SOURCES)
    if trusted.sum() < MIN_QUERIES // 2:
        trusted = positive
    caps = [(source == s) & ~positive for s in MAX_NEGATIVES_ANSWERED]
    caps = [(mask, MAX_NEGATIVES_ANSWERED[s]) for mask, s in zip(caps, MAX_NEGATIVES_ANSWERED) if mask.any()]
    best = None
    for t_answer in np.arange(0.05 if rule == "precision" else 0.20, 0.96, 0.01):
        for t_margin in np.arange(0.0, 0.21, 0.01):
            answered = (top >= t_answer) & (margin >= t_margin)
            u_answer = np.where(answered, np.where(right1, GAIN_RIGHT_ANSWER, -COST_WRONG_ANSWER), 0.0)
            if rule == "precision":
                n_trusted = int((answered & trusted).sum())
                feasible = (n_trusted > 0 and (answered & trusted & right1).sum() >= TARGET_PRECISION * n_trusted
                            and all((answered & mask).sum() <= cap * mask.sum() for mask, cap in caps))
                if not feasible:
                    continue
                # most right answers first; the clarify threshold below only breaks ties
                primary = int((answered & right1).sum())
            else:
                primary = 0
            rest = ~answered
            for t_clarify in clarify_grid[clarify_grid <= t_answer + 1e-9]:
                clar = rest & (top >= t_clarify)
                useful = useful_at[round(float(t_clarify), 4)]
                u = u_answer + np.where(clar, np.where(useful, GAIN_USEFUL_CLARIFY, -COST_USELESS_CLARIFY), 0.0)
                u = u + np.where(rest & ~clar & positive, -COST_DECLINED_ANSWERABLE, 0.0)
                total = float(u.sum())
                key = (primary, round(total, 6), -t_answer, -t_clarify)
                if best is None or key > best[0]:
                    best = (key, float(t_answer), float(t_margin), float(t_clarify), total)
    if best is None:
        logger.warning("no threshold reaches %.0f %% precision on the calibration probes: utility rule",
                       100 * TARGET_PRECISION)
        return choose_thresholds(observations, rule="utility")
    _, t_answer, t_margin, t_clarify, total = best
    thresholds = {"answer": round(t_answer, 2), "margin": round(t_margin, 2), "clarify": round(t_clarify, 2)}
    decisions = [outcome(o, thresholds) for o in observations]
    thresholds.update({
        "rule": rule,
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


# what customers put around a question (greetings, a bit of context, particles): shop-agnostic, so
# calibration also sees long, chatty messages and not only the FAQ's tidy phrasings
_GREETINGS = ("你好，", "您好，", "在吗？", "亲，", "客服你好，", "哈喽 ", "你好呀，", "在吗 ", "hello，", "打扰一下，")
_CONTEXT = ("我前几天在你们家买了东西，", "我昨天刚下的单，", "东西今天刚到，", "我是第一次在你们这买，",
            "我是老顾客了，", "有个问题想问一下，", "帮朋友问的，", "我看了半天没找到，", "家里人让我问问，",
            "我上周买的，", "刚收到货，")
_LEADS = ("想问一下", "请问", "我想知道", "麻烦问下", "就是")
_TAILS = ("啊", "呀", "呢", "哈", "？", "，谢谢", "，急", "，麻烦了", "，在线等", "对吧", "是吗")


def roughen(query: str, rng: random.Random) -> str:
    """The query as a customer might type it in a chat: maybe a greeting, maybe some context, maybe a
    filler before and a particle or thanks after."""
    parts = []
    if rng.random() < 0.6:
        parts.append(rng.choice(_GREETINGS))
    if rng.random() < 0.6:
        parts.append(rng.choice(_CONTEXT))
    if rng.random() < 0.4:
        parts.append(rng.choice(_LEADS))
    parts.append(query.rstrip("？?。！! "))
    if rng.random() < 0.7:
        parts.append(rng.choice(_TAILS))
    return "".join(parts)


def roughened(queries: Sequence[Tuple[str, Optional[str]]], seed: int = 5) -> List[Tuple[str, Optional[str]]]:
    rng = random.Random(seed)
    return [(roughen(q, rng), expected) for q, expected in queries]


def holdout_split(entries: Sequence[Entry], max_positive: int = 300, max_negative: int = 120,
                  seed: int = 13, hold: str = HELD_SIMILAR) -> Tuple[List[Entry], List[Tuple[str, Optional[str]]]]:
    """A copy of the entries with some questions and some whole entries removed, and the queries that test it.

    ``hold``: HELD_SIMILAR removes one 相似问 per sampled entry and asks it; HELD_QUESTION removes the
    standard question (its first 相似问 takes its place) and asks that. Standard questions are full
    sentences, like customers' questions; 相似问 are often terse keywords ("积分从哪来") whose entry has
    lost a needed phrasing when one is removed: on the demo shop the right entry ranks first for 60 % of
    held-out 相似问 but 81 % of held-out standard questions, against 89 % for the team's paraphrases.

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
            if hold == HELD_QUESTION:
                queries.append((e.question, e.id))
                e = replace(e, question=e.similar[0], similar=e.similar[1:])
            else:
                held = rng.randrange(len(e.similar))
                queries.append((e.similar[held], e.id))
                e = replace(e, similar=e.similar[:held] + e.similar[held + 1:])
        kept.append(e)
    return kept, queries
