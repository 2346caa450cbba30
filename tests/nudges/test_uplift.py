"""The uplift statistics against known values: the pooled two-proportion z test (hand-computed),
Wilson and Newcombe's hybrid score intervals (Newcombe 1998, Stat. Med. 17:873, table II, method 10),
zeros, tiny samples and the bootstrap cross-check."""
from __future__ import annotations

import math
import random

import pytest

from nudges.uplift import bootstrap_ci, newcombe_interval, two_proportions, wilson


def test_a_textbook_difference_is_significant_with_its_z_and_p_value():
    # 200/1000 vs 150/1000: pooled 0.175, se = sqrt(.175 * .825 * 2/1000) = 0.016993, z = 0.05 / se
    result = two_proportions(1000, 200, 1000, 150)
    assert result["treated"] == {"n": 1000, "conversions": 200, "rate": 0.2}
    assert result["control"] == {"n": 1000, "conversions": 150, "rate": 0.15}
    assert result["difference"] == pytest.approx(0.05)
    assert result["relative_lift"] == pytest.approx(1 / 3)
    assert result["z"] == pytest.approx(2.9424, abs=1e-4)
    assert result["p_value"] == pytest.approx(0.003256, abs=1e-5)
    assert result["significant"] and result["enough_data"]
    low, high = result["ci"]
    assert low == pytest.approx(0.0167, abs=1e-4) and high == pytest.approx(0.0832, abs=1e-4)
    assert result["confidence"] == 0.95


def test_the_sign_follows_the_arms_and_the_p_value_is_two_sided():
    better, worse = two_proportions(1000, 200, 1000, 150), two_proportions(1000, 150, 1000, 200)
    assert worse["z"] == pytest.approx(-better["z"])
    assert worse["p_value"] == pytest.approx(better["p_value"])
    assert worse["significant"] and worse["ci"][1] < 0
    assert worse["ci"] == pytest.approx([-better["ci"][1], -better["ci"][0]])


def test_a_small_real_difference_is_not_significant():
    # 110/1000 vs 100/1000: z = 0.01 / sqrt(.105 * .895 * .002) = 0.7294, p = 0.4658
    result = two_proportions(1000, 110, 1000, 100)
    assert result["z"] == pytest.approx(0.7294, abs=1e-4)
    assert result["p_value"] == pytest.approx(0.4658, abs=1e-4)
    assert not result["significant"] and result["enough_data"]
    assert result["ci"][0] < 0 < result["ci"][1]


def test_the_confidence_level_widens_the_interval_and_sets_the_threshold():
    # p = 0.0033: significant at 95% and 99%, not at 99.9%
    ci95, ci99 = two_proportions(1000, 200, 1000, 150)["ci"], two_proportions(1000, 200, 1000, 150, 0.99)["ci"]
    assert ci99[0] < ci95[0] and ci99[1] > ci95[1]
    assert two_proportions(1000, 200, 1000, 150, 0.99)["significant"]
    assert not two_proportions(1000, 200, 1000, 150, 0.999)["significant"]
    with pytest.raises(ValueError):
        two_proportions(10, 1, 10, 1, confidence=1.5)


def test_wilson_interval_matches_known_values():
    # 20/100: 0.1334 to 0.2888; 0/10: 0 to 0.2775; 10/10: 0.7225 to 1
    assert wilson(100, 20) == pytest.approx((0.1334, 0.2888), abs=1e-4)
    assert wilson(10, 0) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) is None


@pytest.mark.parametrize("arms, expected", [
    ((70, 56, 80, 48), (0.0524, 0.3339)),
    ((10, 9, 10, 3), (0.1705, 0.8090)),
    ((7, 6, 7, 2), (0.0582, 0.8062)),
    ((56, 5, 29, 0), (-0.0381, 0.1926)),
    ((10, 0, 20, 0), (-0.1611, 0.2775)),
    ((10, 0, 10, 0), (-0.2775, 0.2775)),
    ((10, 10, 20, 0), (0.6791, 1.0)),
    ((10, 10, 10, 0), (0.6075, 1.0)),
])
def test_newcombe_hybrid_interval_matches_newcombes_table(arms, expected):
    assert newcombe_interval(*arms) == pytest.approx(expected, abs=1e-4)


def test_zeros_everywhere_have_no_effect_and_no_errors():
    result = two_proportions(500, 0, 50, 0)
    assert result["difference"] == 0 and result["relative_lift"] is None
    assert result["z"] == 0 and result["p_value"] == 1
    assert not result["significant"] and not result["enough_data"]
    assert result["ci"][0] < 0 < result["ci"][1]
    # all converted: the same, from the other side
    everyone = two_proportions(500, 500, 50, 50)
    assert everyone["z"] == 0 and everyone["p_value"] == 1 and everyone["relative_lift"] == 0


def test_an_empty_arm_gives_nothing_to_compare():
    result = two_proportions(0, 0, 0, 0)
    assert result["treated"]["rate"] is None and result["control"]["rate"] is None
    assert result["difference"] is None and result["ci"] is None and result["z"] is None and result["p_value"] is None
    assert not result["significant"] and not result["enough_data"]
    only_treated = two_proportions(100, 30, 0, 0)
    assert only_treated["treated"]["rate"] == 0.3 and only_treated["difference"] is None
    assert not only_treated["significant"]


def test_tiny_samples_are_not_enough_data_even_with_a_small_p_value():
    # 9/10 vs 1/10: z = 0.8 / sqrt(.5 * .5 * .2) = 3.578, p = 0.00035, but arms of 10 are too few
    result = two_proportions(10, 9, 10, 1)
    assert result["z"] == pytest.approx(3.5777, abs=1e-4) and result["p_value"] < 0.001
    assert not result["enough_data"] and not result["significant"]
    assert -1 <= result["ci"][0] < result["ci"][1] <= 1


def test_few_expected_conversions_are_not_enough_data():
    # 1000 vs 100 nudges but only 4 conversions in all: expected control conversions 0.36
    assert not two_proportions(1000, 4, 100, 0)["enough_data"]
    # 30 per arm and expected counts of at least 5 are enough
    assert two_proportions(30, 10, 30, 5)["enough_data"]
    assert not two_proportions(29, 10, 30, 5)["enough_data"]


def test_invalid_counts_are_refused():
    with pytest.raises(ValueError):
        two_proportions(10, 11, 10, 1)
    with pytest.raises(ValueError):
        two_proportions(10, 1, 10, -1)


def test_bootstrap_agrees_with_the_score_interval_and_is_reproducible():
    score = two_proportions(1000, 200, 1000, 150)["ci"]
    boot = bootstrap_ci(1000, 200, 1000, 150, rounds=1000, seed=7)
    assert boot == bootstrap_ci(1000, 200, 1000, 150, rounds=1000, seed=7)
    assert math.isclose(boot[0], score[0], abs_tol=0.01) and math.isclose(boot[1], score[1], abs_tol=0.01)
    assert bootstrap_ci(0, 0, 10, 1) is None
    # no variation at all: a zero-width interval, not an error
    assert bootstrap_ci(20, 0, 20, 0, rounds=50) == (0.0, 0.0)


def test_the_interval_covers_the_true_difference_about_as_often_as_it_says():
    # 400 seeded experiments of the report's test size (1800 nudged at 30%, 200 held out at 15%)
    rnd = random.Random(11)
    covered = significant = 0
    for _ in range(400):
        treated = sum(rnd.random() < 0.30 for _ in range(1800))
        control = sum(rnd.random() < 0.15 for _ in range(200))
        result = two_proportions(1800, treated, 200, control)
        covered += result["ci"][0] <= 0.15 <= result["ci"][1]
        significant += result["significant"]
    assert 0.92 <= covered / 400 <= 0.98
    # and the effect is found nearly every time (power ~ 99.9%)
    assert significant >= 395
