"""Is a rule doing anything? Treatment (nudged) against control (held out) conversion, pure statistics.

`two_proportions` compares two conversion rates:

- the difference's confidence interval is Newcombe's hybrid score interval (Newcombe 1998, method
  10): each arm's Wilson score interval, combined. Unlike the textbook Wald interval it stays inside
  [-1, 1], is not zero-width at 0/n or n/n, and keeps close to its nominal coverage down to small
  samples, so it is what the console shows;
- the test is the pooled two-proportion z test (two-sided p-value through `math.erfc`); at the
  sizes where `enough_data` holds it agrees with the interval (which excludes 0 exactly when the test
  is significant, up to rare borderline cases);
- `enough_data` is False when either arm has fewer than MIN_ARM members or any expected count under
  "no effect" (n x pooled rate, n x (1 - pooled rate)) is below MIN_EXPECTED: the normal
  approximation is then unreliable and the console says 样本不足. `significant` is never True then.

`bootstrap_ci` is a seeded percentile bootstrap of the same difference, a cross-check of the interval.
No scipy: the normal quantile comes from `statistics.NormalDist`.
"""
from __future__ import annotations

import math
import random
from statistics import NormalDist
from typing import Optional, Tuple

MIN_ARM = 30
MIN_EXPECTED = 5


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check(n: int, x: int) -> None:
    if n < 0 or x < 0 or x > n:
        raise ValueError(f"need 0 <= conversions <= n, got {x} of {n}")


def wilson(n: int, x: int, confidence: float = 0.95) -> Optional[Tuple[float, float]]:
    """Wilson score interval of x/n; None when n is 0."""
    _check(n, x)
    if n == 0:
        return None
    z = _z(confidence)
    p = x / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # exact bounds at 0/n and n/n (the formula gives them up to rounding)
    return (0.0 if x == 0 else max(0.0, centre - half), 1.0 if x == n else min(1.0, centre + half))


def newcombe_interval(treated_n: int, treated_x: int, control_n: int, control_x: int,
                      confidence: float = 0.95) -> Optional[Tuple[float, float]]:
    """Newcombe's hybrid score interval of treated rate - control rate; None when an arm is empty."""
    treated, control = wilson(treated_n, treated_x, confidence), wilson(control_n, control_x, confidence)
    if treated is None or control is None:
        return None
    p1, p2 = treated_x / treated_n, control_x / control_n
    (l1, u1), (l2, u2) = treated, control
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def two_proportions(treated_n: int, treated_x: int, control_n: int, control_x: int,
                    confidence: float = 0.95) -> dict:
    """Treatment (treated_x conversions of treated_n) against control (control_x of control_n).

    Returns {"treated": {"n", "conversions", "rate"}, "control": {...}, "difference" (treated rate -
    control rate, absolute), "relative_lift" (difference / control rate), "ci": [low, high] of the
    difference (Newcombe hybrid score), "confidence", "z" (pooled), "p_value" (two-sided),
    "significant", "enough_data"}. Rates, difference, lift, ci, z and p_value are None where they are
    undefined (an empty arm; lift with a control rate of 0); with no variance at all (both arms 0% or
    both 100%) z is 0 and p_value 1.
    """
    _check(treated_n, treated_x)
    _check(control_n, control_x)
    alpha = 1 - confidence
    _z(confidence)
    p1 = treated_x / treated_n if treated_n else None
    p2 = control_x / control_n if control_n else None
    difference = p1 - p2 if p1 is not None and p2 is not None else None
    lift = difference / p2 if difference is not None and p2 else None
    ci = newcombe_interval(treated_n, treated_x, control_n, control_x, confidence)
    z = p_value = None
    enough = False
    if difference is not None:
        pooled = (treated_x + control_x) / (treated_n + control_n)
        se = math.sqrt(pooled * (1 - pooled) * (1 / treated_n + 1 / control_n))
        z = difference / se if se > 0 else 0.0
        p_value = math.erfc(abs(z) / math.sqrt(2))
        expected = [n * q for n in (treated_n, control_n) for q in (pooled, 1 - pooled)]
        enough = min(treated_n, control_n) >= MIN_ARM and min(expected) >= MIN_EXPECTED
    return {
        "treated": {"n": treated_n, "conversions": treated_x, "rate": p1},
        "control": {"n": control_n, "conversions": control_x, "rate": p2},
        "difference": difference,
        "relative_lift": lift,
        "ci": list(ci) if ci else None,
        "confidence": confidence,
        "z": z,
        "p_value": p_value,
        "significant": bool(enough and p_value is not None and p_value < alpha),
        "enough_data": enough,
    }


def _binomial(rnd: random.Random, n: int, p: float) -> int:
    if p <= 0 or p >= 1:
        return round(n * p)
    draw = rnd.random
    return sum(1 for _ in range(n) if draw() < p)


def bootstrap_ci(treated_n: int, treated_x: int, control_n: int, control_x: int, confidence: float = 0.95,
                 rounds: int = 2000, seed: int = 0) -> Optional[Tuple[float, float]]:
    """Percentile bootstrap interval of the difference: each round resamples both arms (a binomial
    draw at the arm's observed rate, the same as resampling its 0/1 outcomes) with a `random.Random`
    seeded with `seed`, so the answer is reproducible. None when an arm is empty. Costs
    rounds x (treated_n + control_n) draws: a cross-check, not for the console's hot path."""
    _check(treated_n, treated_x)
    _check(control_n, control_x)
    _z(confidence)
    if not treated_n or not control_n:
        return None
    rnd = random.Random(seed)
    p1, p2 = treated_x / treated_n, control_x / control_n
    differences = sorted(_binomial(rnd, treated_n, p1) / treated_n - _binomial(rnd, control_n, p2) / control_n
                         for _ in range(rounds))
    tail = (1 - confidence) / 2
    low = differences[max(0, math.floor(tail * rounds))]
    high = differences[min(rounds - 1, math.ceil((1 - tail) * rounds) - 1)]
    return low, high
