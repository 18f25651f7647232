"""Hand-computed values for every metric in pool.concentration.

Each expected value is worked out in the comment next to it (or taken from
shared/docs/concentration-reference.md), never produced by the code under test.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction as F

import pytest

from pool.concentration import (
    EMPTY_BAND,
    ConcentrationReport,
    concentration_report,
    effective_entities_entropy,
    effective_entities_hhi,
    gini,
    hhi,
    hhi_band,
    nakamoto_coefficient,
    shannon_entropy,
    top_k_share,
)

# shares 1/2, 1/3, 1/6 of 6 blocks
ABC = {"A": 3, "B": 2, "C": 1}


def test_three_pools_hand_computed() -> None:
    # HHI = 10000 (1/4 + 1/9 + 1/36) = 10000 * 14/36 = 35000/9
    assert hhi(ABC) == F(35000, 9)
    # top-1 is exactly 1/2: not a majority; top-2 = 5/6 > 1/2
    assert nakamoto_coefficient(ABC) == 2
    # ascending 1,2,3: 2*(1*1+2*2+3*3)/(3*6) - 4/3 = 28/18 - 24/18 = 2/9
    # pairwise: 2*(1+2+1) / (2*9*2) = 8/36 = 2/9
    assert gini(ABC) == F(2, 9)
    # H = 1/2*1 + 1/3*log2 3 + 1/6*(1 + log2 3) = 2/3 + (1/2) log2 3
    assert shannon_entropy(ABC) == pytest.approx(2 / 3 + math.log2(3) / 2, abs=1e-12)
    # 2**H = 2**(2/3) * 3**(1/2)
    assert effective_entities_entropy(ABC) == pytest.approx(2 ** (2 / 3) * math.sqrt(3), abs=1e-12)
    # 1 / (7/18)
    assert effective_entities_hhi(ABC) == F(18, 7)
    assert top_k_share(ABC, 0) == 0
    assert top_k_share(ABC, 1) == F(1, 2)
    assert top_k_share(ABC, 2) == F(5, 6)
    assert top_k_share(ABC, 3) == 1
    assert top_k_share(ABC, 5) == 1


def test_equal_four() -> None:
    # reference test vector equal_4: HHI exactly 2500, the 2010 moderate/high boundary
    w = {"a": 1, "b": 1, "c": 1, "d": 1}
    report = concentration_report(w)
    assert report.hhi == 2500
    assert report.hhi_band == "moderately concentrated"
    assert report.nakamoto == 3  # top-2 = exactly 50 %
    assert report.gini == 0
    assert report.entropy_bits == pytest.approx(2.0, abs=1e-12)
    assert report.effective_entities_entropy == pytest.approx(4.0, abs=1e-12)
    assert report.effective_entities_hhi == 4
    assert (report.top1, report.top2, report.top4, report.top5) == (F(1, 4), F(1, 2), 1, 1)


def test_tie_at_exactly_half_needs_a_third_entity() -> None:
    # 30/20/20/15/15: top-2 = 50 exactly -> NC 3
    w = [30, 20, 20, 15, 15]
    assert nakamoto_coefficient(w) == 3
    # 900 + 400 + 400 + 225 + 225
    assert hhi(w) == 2150
    # ascending 15,15,20,20,30: sum i*x = 15+30+60+80+150 = 335; 670/500 - 6/5 = 7/50
    assert gini(w) == F(7, 50)
    assert top_k_share(w, 4) == F(85, 100)
    # -(.3 log2 .3 + 2 * .2 log2 .2 + 2 * .15 log2 .15) = .5210897 + .9287712 + .8210897
    assert shannon_entropy(w) == pytest.approx(2.2709506, abs=1e-6)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([1, 1], 2),  # 50 % is not > 50 %
        ([50, 30, 20], 2),  # top-1 exactly 50 %
        ([51, 49], 1),
        ([5000001, 4999999], 1),
        ([F(1, 3), F(1, 3), F(1, 3)], 2),
        ([1, 1, 1, 1, 1, 1], 4),  # 3/6 is exactly half
        ([0, 5, 0], 1),
    ],
)
def test_nakamoto_strict_majority(weights: list, expected: int) -> None:
    assert nakamoto_coefficient(weights) == expected


def test_b10c_illustrative_vector() -> None:
    # reference §4: rounded 2025 shares, "HHI 2835.5, NC 2"
    # 40² + 30² + 14.5² + 10² + 5² + 0.5² = 1600 + 900 + 210.25 + 100 + 25 + 0.25
    w = {
        "AntPool & friends": 40,
        "Foundry": 30,
        "ViaBTC": F("14.5"),
        "F2Pool": 10,
        "MARA": 5,
        "other": F("0.5"),
    }
    assert hhi(w) == F("2835.5")
    assert nakamoto_coefficient(w) == 2


def test_finbold_three_year_window_nakamoto_two() -> None:
    # reference §4: Foundry 46,076 + AntPool 34,365 = 80,441 of 160,432 = 50.14 %;
    # the other 79,991 blocks counted as single-block entities (worst case for NC).
    w = {"Foundry USA": 46076, "AntPool": 34365}
    w.update({f"unknown:{i}": 1 for i in range(160432 - 80441)})
    assert nakamoto_coefficient(w) == 2
    assert top_k_share(w, 2) == F(80441, 160432)
    assert top_k_share(w, 1) == F(46076, 160432)


def test_single_entity() -> None:
    report = concentration_report({"solo": 7})
    assert report.hhi == 10000
    assert report.hhi_band == "highly concentrated"
    assert report.nakamoto == 1
    assert report.gini == 0
    assert report.entropy_bits == 0.0
    assert report.effective_entities_entropy == 1.0
    assert report.effective_entities_hhi == 1
    assert report.top1 == 1 and report.top5 == 1
    assert report.share("solo") == 1


@pytest.mark.parametrize("weights", [{}, {"a": 0, "b": 0}, {"a": 0.0}])
def test_empty_and_all_zero(weights: dict) -> None:
    report = concentration_report(weights)
    assert report.is_empty
    assert report.entities == len(weights)
    assert report.active_entities == 0
    assert report.hhi == 0
    assert report.hhi_band == EMPTY_BAND
    assert report.nakamoto == 0
    assert report.gini == 0
    assert report.entropy_bits == 0.0
    assert report.effective_entities_entropy == 0.0
    assert report.effective_entities_hhi == 0
    assert report.top1 == 0 and report.top5 == 0
    assert report.share("a") == 0
    json.dumps(report.to_dict())


def test_empty_iterables() -> None:
    assert hhi([]) == 0
    assert nakamoto_coefficient([]) == 0
    assert gini([]) == 0
    assert shannon_entropy([]) == 0.0
    assert effective_entities_entropy([]) == 0.0
    assert effective_entities_hhi([]) == 0
    assert top_k_share([], 3) == 0


def test_zero_weights_count_only_in_gini() -> None:
    # a single holder among n: 1 - 1/n
    assert gini([1, 0]) == F(1, 2)
    assert gini([1, 0, 0, 0]) == F(3, 4)
    assert gini([3, 0]) == gini({"x": 7, "y": 0})
    assert hhi([3, 0]) == 10000
    assert shannon_entropy([1, 1, 0]) == pytest.approx(1.0, abs=1e-12)
    assert effective_entities_hhi([2, 2, 0, 0]) == 2
    report = concentration_report({"a": 2, "b": 0})
    assert (report.entities, report.active_entities) == (2, 1)


def test_gini_four_values() -> None:
    # ascending 1,2,3,4: 2*30/(4*10) - 5/4 = 1/4; pairwise 20/(2*16*2.5) = 1/4
    assert gini([4, 1, 3, 2]) == F(1, 4)


def test_types_exact_and_float() -> None:
    assert isinstance(hhi([1, 2]), F)
    assert isinstance(hhi([Decimal("0.1"), Decimal("0.2")]), F)
    # 0.1 and 0.2 as decimals are exact: shares 1/3, 2/3 -> 10000 * 5/9
    assert hhi([Decimal("0.1"), Decimal("0.2")]) == F(50000, 9)
    # binary-exact floats: 2500 + 625 + 625
    assert hhi([0.5, 0.25, 0.25]) == 3750.0
    assert isinstance(hhi([0.5, 0.25, 0.25]), float)
    assert isinstance(gini([1, 2.0]), float)
    assert isinstance(top_k_share([1, 2.0], 1), float)
    assert isinstance(effective_entities_hhi([1.0]), float)
    # an exact-50 % tie survives float inputs because comparisons are exact
    assert nakamoto_coefficient([0.1, 0.2, 0.3, 0.0]) == 2  # 0.3 alone is exactly half
    report = concentration_report({"a": 1.0, "b": 3})
    assert isinstance(report.total, float) and report.total == 4.0


def test_mapping_iterable_and_generator_agree() -> None:
    assert hhi(ABC) == hhi([3, 2, 1]) == hhi(x for x in (1, 2, 3))


def test_tiny_float_weights_do_not_break_entropy() -> None:
    h = shannon_entropy([5e-324, 1.0])
    assert 0.0 <= h < 1e-300  # the tiny share contributes about 5e-324 * 1074 bits
    assert nakamoto_coefficient([5e-324, 1.0]) == 1


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), Decimal("NaN"), Decimal("-0.5")])
def test_invalid_weights_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        hhi([1, bad])


@pytest.mark.parametrize("bad", [True, "3", None, 1j])
def test_non_numbers_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        concentration_report({"a": bad})


def test_top_k_rejects_negative() -> None:
    with pytest.raises(ValueError):
        top_k_share([1], -1)


@pytest.mark.parametrize(
    ("guideline", "value", "label"),
    [
        ("2010", 1499, "unconcentrated"),
        ("2010", 1500, "moderately concentrated"),
        ("2010", 2500, "moderately concentrated"),
        ("2010", F(25001, 10), "highly concentrated"),
        ("1992", 999, "unconcentrated"),
        ("1992", 1000, "moderately concentrated"),
        ("1992", 1800, "moderately concentrated"),
        ("1992", 1801, "highly concentrated"),
        ("2023", 100, "not highly concentrated"),
        ("2023", 1800, "not highly concentrated"),
        ("2023", 1800.5, "highly concentrated"),
    ],
)
def test_hhi_bands(guideline: str, value: object, label: str) -> None:
    assert hhi_band(value, guideline) == label  # type: ignore[arg-type]


def test_unknown_guideline_rejected() -> None:
    with pytest.raises(ValueError):
        hhi_band(100, "2099")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        concentration_report({"a": 1}, guideline="2099")  # type: ignore[arg-type]


def test_report_ranking_and_json() -> None:
    report = concentration_report({"b": 1, "a": 1, "c": 2}, guideline="2023")
    assert isinstance(report, ConcentrationReport)
    assert report.ranking == (("c", 2), ("a", 1), ("b", 1))  # ties by name
    assert report.share("c") == F(1, 2)
    assert report.share("nobody") == 0
    # 2500 + 625 + 625
    assert report.hhi == 3750 and report.hhi_band == "highly concentrated"
    d = json.loads(json.dumps(report.to_dict()))
    assert d["hhi"] == 3750 and d["nakamoto"] == 2  # c alone is exactly 50 %
    assert d["ranking"][0] == {"entity": "c", "weight": 2, "share": 0.5}
    assert d["gini"] == pytest.approx(1 / 6)  # ascending 1,1,2: 2*7/(3*4) - 4/3 = 1/6
