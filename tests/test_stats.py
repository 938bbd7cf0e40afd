"""Bootstrap intervals, the exact McNemar test and compact per-image storage (common.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common import stats
from common.evaluation import interval, paired_test, summarize


def correct(n_right: int, n: int) -> np.ndarray:
    return np.arange(n) < n_right


@pytest.mark.parametrize(("a_only", "b_only", "p"), [
    (0, 0, 1.0),          # nothing discordant: no evidence either way
    (5, 0, 2 / 32),       # 2 * 0.5^5
    (6, 1, 2 * 8 / 128),  # 2 * (C(7,0) + C(7,1)) / 2^7
    (0, 10, 2 / 1024),
    (3, 3, 1.0),
])
def test_mcnemar_exact_p_values(a_only, b_only, p):
    n_both = 20
    a = np.array([True] * a_only + [False] * b_only + [True] * n_both + [False] * 7)
    b = np.array([False] * a_only + [True] * b_only + [True] * n_both + [False] * 7)
    mc = stats.mcnemar_exact(a, b)
    assert (mc.first_only, mc.second_only) == (a_only, b_only)
    assert mc.p_value == pytest.approx(p, rel=1e-12)


def test_mcnemar_many_discordant_images_is_exact_and_finite():
    # 40 discordant images, 25 against 15: about 0.154, not significant at 0.05
    assert stats.binomial_two_sided_p(15, 40) == pytest.approx(
        2 * sum(math.comb(40, i) for i in range(16)) / 2 ** 40)
    assert 0.15 < stats.binomial_two_sided_p(15, 40) < 0.16
    p = stats.binomial_two_sided_p(3000, 6100)  # beyond float range for 2**n
    assert 0.0 < p < 1.0


def test_accuracy_interval_is_seeded_and_about_the_normal_width():
    c = correct(555, 600)  # 92.5 %
    ci = stats.accuracy_interval(c)
    assert ci == stats.accuracy_interval(c)  # seeded: the same every time
    assert ci.lo < 92.5 < ci.hi and ci.level == 0.95
    normal = 1.96 * math.sqrt(0.925 * 0.075 / 600) * 100  # 2.1 points
    assert ci.half_width == pytest.approx(normal, rel=0.15)
    assert stats.accuracy_interval(correct(600, 600)) == stats.Interval(100.0, 100.0)


def test_paired_interval_is_narrower_than_unpaired_for_the_same_images():
    rng = np.random.default_rng(0)
    a = rng.random(600) < 0.92
    b = a.copy()
    flip = rng.choice(np.flatnonzero(a), 12, replace=False)
    b[flip] = False  # b lost 12 images a got right: 2.0 points
    paired = stats.paired_difference_interval(a, b)
    assert 0.0 < paired.lo <= 2.0 <= paired.hi
    unpaired = stats.unpaired_difference_interval(int(a.sum()), 600, int(b.sum()), 600)
    assert unpaired.lo < 0.0 < unpaired.hi  # without pairing, 2 points on 600 images is noise
    assert paired.half_width < unpaired.half_width / 2
    assert stats.paired_difference_interval(a, a) == stats.Interval(0.0, 0.0)


def test_paired_functions_refuse_unequal_image_sets():
    with pytest.raises(ValueError, match="same images"):
        stats.mcnemar_exact(correct(3, 5), correct(3, 6))
    with pytest.raises(ValueError, match="0/1"):
        stats.accuracy_interval(np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="no images"):
        stats.accuracy_interval(np.array([], dtype=bool))


def test_pack_round_trip_and_wrong_lengths():
    rng = np.random.default_rng(1)
    for n in (1, 7, 8, 9, 600):
        c = rng.random(n) < 0.5
        text = stats.pack(c)
        assert len(text) == 2 * ((n + 7) // 8)
        assert (stats.unpack(text, n) == c).all()
    with pytest.raises(ValueError, match="expected 600 images"):
        stats.unpack(stats.pack(correct(3, 8)), 600)
    with pytest.raises(ValueError, match="not hex"):
        stats.unpack("zz", 8)


def test_plus_minus_is_compact():
    assert stats.plus_minus(92.5, stats.Interval(91.4, 93.6)) == "92.5 \u00b11.1"
    assert stats.plus_minus(92.5, None) == "92.5"
    assert stats.plus_minus(None, None) == "\u2013"


def test_summarize_gives_intervals_and_per_image_results():
    labels = np.arange(60) % 3
    probs = np.full((60, 3), 0.1)
    probs[np.arange(60), labels] = 0.8
    probs[:6] = [0.8, 0.1, 0.1]  # six images predicted class 0, four of them wrongly
    s = summarize(probs, labels, 3)
    assert s["top1"] == pytest.approx(100 * 56 / 60)
    assert s["top1_ci"].lo < s["top1"] < s["top1_ci"].hi
    assert s["per_image"].count == 60
    assert (stats.unpack(s["per_image"].top1, 60) == s["top1_correct"]).all()
    assert s["top1_ci"] == interval(s["top1_correct"])
    t = paired_test(np.ones(60, bool), s["top1_correct"])
    assert (t.first_only, t.second_only, t.diff) == (4, 0, pytest.approx(100 * 4 / 60, abs=1e-3))
    assert t.p_value == pytest.approx(2 / 16)
