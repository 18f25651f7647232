"""Hashrate-concentration metrics over a distribution of non-negative weights.

A *weight* is anything proportional to an entity's share of mining power:
blocks found in a window (network view, one entity per pool), or accepted
share difficulty (pool view, one entity per miner).  Definitions follow
``shared/docs/concentration-reference.md`` §2.

Exactness: every figure except the entropy family is a rational function of
the weights, so it is computed exactly (weights are brought to a common
integer scale, results are ``Fraction``).  When every weight is exact
(``int``, ``Fraction`` or ``Decimal``) the result is a ``Fraction``; if any
weight is a ``float`` the same exact computation is done on the float's exact
binary value and the result is returned as ``float``, so the return type
tells the caller whether the figure is exact.  Entropy and ``2**H`` are
irrational in general and are always ``float``.

Conventions, chosen once and used by every function here:

* **Shares** (top-k, total share) are fractions in ``[0, 1]``; HHI is on the
  percent-squared scale ``0..10000``.
* **Entities** are the weights given, zeros included.  Zero-weight entities
  change only the Gini coefficient (which is defined over a population, so an
  entity with nothing is counted as maximally unequal) and the entity count;
  HHI, Nakamoto, entropy and top-k are unaffected by them.
* **Empty or all-zero input** (no mining power at all) has no share vector.
  Rather than raising or returning ``None``, every function returns the value
  of its sums over an empty share vector: HHI 0, Nakamoto 0, Gini 0, entropy
  0.0, both effective numbers 0, every top-k share 0.  None of these (except
  Gini 0 and entropy 0) is attainable by a non-empty distribution (HHI >= 10000/n,
  Nakamoto >= 1, effective number >= 1), so they cannot be mistaken for one;
  ``ConcentrationReport.is_empty`` says so explicitly.
* **Ties** never change a figure: all metrics are symmetric functions of the
  multiset of weights.  Where an order is shown (``ConcentrationReport.ranking``)
  ties are broken by entity name so output is deterministic.
* **Negative, NaN or infinite** weights and ``bool`` weights raise ``ValueError``
  / ``TypeError``: they are bugs upstream, not distributions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

Weight = int | float | Fraction | Decimal
"""One entity's weight (blocks, share difficulty, hashrate...)."""

Weights = Mapping[Any, Weight] | Iterable[Weight]
"""A distribution: a mapping entity -> weight, or just the weights."""

Figure = Fraction | float
"""A computed figure: ``Fraction`` when every input was exact, else ``float``."""

Guideline = Literal["1992", "2010", "2023"]

HHI_MAX = 10000
"""HHI of a monopoly on the percent-squared scale."""

EMPTY_BAND = "no data"
"""The report's HHI label for empty / all-zero input, which no guideline covers."""


@dataclass(frozen=True)
class _Prepared:
    """Validated weights on a common integer scale.

    Every figure here is invariant to scaling all weights by one positive
    factor, so exact inputs are multiplied by the LCM of their denominators
    and the metrics run on plain ints (fast, and still exact).
    """

    values: tuple[int, ...]
    """``weight_i * scale``; all non-negative ints."""
    scale: int
    total: int
    exact: bool

    @property
    def positive(self) -> tuple[int, ...]:
        return tuple(v for v in self.values if v > 0)

    def out(self, value: Fraction) -> Figure:
        return value if self.exact else float(value)

    def weight(self, value: int) -> Figure:
        """A scaled value back in the caller's units."""
        return self.out(Fraction(value, self.scale))


def _to_ratio(weight: object) -> tuple[int, int, bool]:
    """Exact (numerator, denominator) of one weight and whether its type was exact."""
    if type(weight) is int:  # the common case (block counts), kept cheap
        return weight, 1, True
    if isinstance(weight, bool):
        raise TypeError("bool is not a weight (True would silently count as 1)")
    if isinstance(weight, numbers.Integral):  # int subclasses, numpy integers
        return int(weight), 1, True
    if isinstance(weight, numbers.Rational):  # Fraction
        return int(weight.numerator), int(weight.denominator), True
    if isinstance(weight, Decimal):
        if not weight.is_finite():
            raise ValueError(f"weight must be finite, got {weight!r}")
        num, den = weight.as_integer_ratio()
        return num, den, True
    if isinstance(weight, numbers.Real):  # float, numpy floats
        value = float(weight)
        if not math.isfinite(value):
            raise ValueError(f"weight must be finite, got {weight!r}")
        num, den = value.as_integer_ratio()
        return num, den, False
    raise TypeError(f"weight must be int, float, Fraction or Decimal, got {type(weight).__name__}")


def _prepare(weights: Weights) -> _Prepared:
    raw = weights.values() if isinstance(weights, Mapping) else weights
    ratios: list[tuple[int, int]] = []
    exact = True
    for weight in raw:
        num, den, is_exact = _to_ratio(weight)
        if num < 0:
            raise ValueError(f"weights must be non-negative, got {weight!r}")
        ratios.append((num, den))
        exact = exact and is_exact
    scale = math.lcm(*{den for _, den in ratios}) if ratios else 1
    values = tuple(num if den == scale else num * (scale // den) for num, den in ratios)
    return _Prepared(values, scale, sum(values), exact)


def _sum_squares_share(p: _Prepared) -> Fraction:
    """Σ s_i² in (0, 1]; 0 for an empty distribution."""
    if p.total == 0:
        return Fraction(0)
    return Fraction(sum(v * v for v in p.values), p.total * p.total)


def _hhi(p: _Prepared) -> Figure:
    return p.out(HHI_MAX * _sum_squares_share(p))


def _nakamoto(p: _Prepared) -> int:
    if p.total == 0:
        return 0
    running = 0
    for count, value in enumerate(sorted(p.values, reverse=True), start=1):
        running += value
        if 2 * running > p.total:
            return count
    raise AssertionError("unreachable: the full sum exceeds half of a positive total")


def _gini(p: _Prepared) -> Figure:
    n = len(p.values)
    if n == 0 or p.total == 0:
        return p.out(Fraction(0))
    ranked = sum(i * v for i, v in enumerate(sorted(p.values), start=1))
    return p.out(Fraction(2 * ranked, n * p.total) - Fraction(n + 1, n))


def _entropy(p: _Prepared) -> float:
    if p.total == 0:
        return 0.0
    # log2 on the ints themselves, so a share too small for a float is still fine
    log_total = math.log2(p.total)
    terms = [(v / p.total) * (log_total - math.log2(v)) for v in p.positive]
    return max(0.0, math.fsum(terms))


def _effective_entropy(p: _Prepared) -> float:
    return 0.0 if p.total == 0 else 2.0 ** _entropy(p)


def _effective_hhi(p: _Prepared) -> Figure:
    squares = _sum_squares_share(p)
    return p.out(1 / squares if squares else Fraction(0))


def _top_k(p: _Prepared, k: int) -> Figure:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if p.total == 0:
        return p.out(Fraction(0))
    largest = sorted(p.values, reverse=True)[:k]
    return p.out(Fraction(sum(largest), p.total))


def hhi(weights: Weights) -> Figure:
    """Herfindahl–Hirschman index ``Σ (100·s_i)²`` in ``[10000/n, 10000]``.

    The percent-squared scale is the one antitrust guidelines (and their
    1500/1800/2500 thresholds) use.  Empty / all-zero input gives 0.
    """
    return _hhi(_prepare(weights))


def nakamoto_coefficient(weights: Weights) -> int:
    """Fewest entities whose combined share is *strictly* above 50 %, in ``[1, n]``.

    Exactly 50 % is not a majority (it cannot out-mine the rest), so two equal
    entities give 2, not 1.  Empty / all-zero input gives 0.
    """
    return _nakamoto(_prepare(weights))


def gini(weights: Weights) -> Figure:
    """Gini coefficient ``Σ_i Σ_j |x_i − x_j| / (2 n² x̄)`` in ``[0, 1 − 1/n]``.

    Zero-weight entities count (Gini is over the population given, so a
    listed entity with nothing is maximal inequality: ``[1, 0]`` gives 1/2).
    One entity, all-equal, empty and all-zero input give 0.
    """
    return _gini(_prepare(weights))


def shannon_entropy(weights: Weights) -> float:
    """Shannon entropy ``−Σ s_i log2 s_i`` in bits, in ``[0, log2 n]``.

    Zero weights contribute nothing (``0·log 0 = 0``); a single entity and
    empty / all-zero input give 0.0.
    """
    return _entropy(_prepare(weights))


def effective_entities_entropy(weights: Weights) -> float:
    """Hill number N₁ = 2**H: how many equal entities would give this entropy.

    Empty / all-zero input gives 0.0 (not 2**0 = 1: there are no entities).
    """
    return _effective_entropy(_prepare(weights))


def effective_entities_hhi(weights: Weights) -> Figure:
    """Hill number N₂ = 1/Σ s_i² = 10000/HHI, with N₂ <= N₁ <= n.

    Weighs large entities more than N₁, so it is the more pessimistic of the
    two.  Empty / all-zero input gives 0.
    """
    return _effective_hhi(_prepare(weights))


def top_k_share(weights: Weights, k: int) -> Figure:
    """Combined share of the ``k`` largest entities (concentration ratio CR_k).

    ``k = 0`` gives 0; ``k >= n`` gives 1; ties do not matter (tied entities
    have the same weight, whichever is counted).  Empty / all-zero input gives
    0.  Negative ``k`` raises ``ValueError``.
    """
    return _top_k(_prepare(weights), k)


# US DOJ/FTC bands: (upper bound of "unconcentrated" exclusive,
# upper bound of "moderately concentrated" inclusive).  The 2023 guidelines
# define only "highly concentrated" (> 1800).
_HHI_BANDS: dict[str, tuple[int | None, int]] = {
    "1992": (1000, 1800),
    "2010": (1500, 2500),
    "2023": (None, 1800),
}


def hhi_band(value: Figure, guideline: Guideline = "2010") -> str:
    """Label an HHI with one named generation of the DOJ/FTC merger guidelines.

    Boundaries follow the guideline wording "below / between / above": the
    lower bound of the moderate band is moderate and its upper bound is still
    moderate (2010: 1500 and 2500 are both "moderately concentrated").  The
    2023 guidelines have no safe harbour, so they label only "highly
    concentrated" (> 1800) versus "not highly concentrated".  Empty input
    (HHI 0) is labelled "unconcentrated"/"not highly concentrated" like any
    other small value; check ``ConcentrationReport.is_empty`` first.
    """
    if guideline not in _HHI_BANDS:
        raise ValueError(f"unknown guideline {guideline!r}; use one of {sorted(_HHI_BANDS)}")
    low, high = _HHI_BANDS[guideline]
    if value > high:
        return "highly concentrated"
    if low is None:
        return "not highly concentrated"
    return "unconcentrated" if value < low else "moderately concentrated"


@dataclass(frozen=True)
class ConcentrationReport:
    """Every concentration figure for one distribution (see module docstring)."""

    entities: int
    """Entities given, zero-weight ones included."""
    active_entities: int
    """Entities with a positive weight."""
    total: Figure
    """Sum of the weights (blocks in the window, total difficulty...)."""
    hhi: Figure
    hhi_guideline: Guideline
    hhi_band: str
    """``hhi_band(hhi, hhi_guideline)``, or ``EMPTY_BAND`` when there is no weight."""
    nakamoto: int
    gini: Figure
    entropy_bits: float
    effective_entities_entropy: float
    """Hill N₁ = 2**H."""
    effective_entities_hhi: Figure
    """Hill N₂ = 10000/HHI."""
    top1: Figure
    top2: Figure
    top4: Figure
    top5: Figure
    ranking: tuple[tuple[str, Figure], ...]
    """(entity, weight) by descending weight, ties by entity name."""

    @property
    def is_empty(self) -> bool:
        """True when there is no mining power at all (every figure is 0)."""
        return self.active_entities == 0

    def share(self, entity: str) -> Figure:
        """One entity's share of the total (0 for an unknown entity or empty input)."""
        for name, weight in self.ranking:
            if name == entity and self.total:
                return weight / self.total
        return 0.0 if isinstance(self.total, float) else Fraction(0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; exact figures become floats."""

        def num(x: Figure) -> int | float:
            if isinstance(x, Fraction) and x.denominator == 1:
                return int(x)
            return float(x)

        return {
            "entities": self.entities,
            "active_entities": self.active_entities,
            "total": num(self.total),
            "hhi": num(self.hhi),
            "hhi_guideline": self.hhi_guideline,
            "hhi_band": self.hhi_band,
            "nakamoto": self.nakamoto,
            "gini": num(self.gini),
            "entropy_bits": self.entropy_bits,
            "effective_entities_entropy": self.effective_entities_entropy,
            "effective_entities_hhi": num(self.effective_entities_hhi),
            "top1": num(self.top1),
            "top2": num(self.top2),
            "top4": num(self.top4),
            "top5": num(self.top5),
            "ranking": [
                {
                    "entity": name,
                    "weight": num(weight),
                    "share": num(weight / self.total) if self.total else 0,
                }
                for name, weight in self.ranking
            ],
        }


def concentration_report(
    weights: Mapping[str, Weight], *, guideline: Guideline = "2010"
) -> ConcentrationReport:
    """All figures for ``entity -> weight``, validated and converted once."""
    if guideline not in _HHI_BANDS:
        raise ValueError(f"unknown guideline {guideline!r}; use one of {sorted(_HHI_BANDS)}")
    p = _prepare(weights)
    ranking = tuple(
        (str(name), p.weight(value))
        for name, value in sorted(
            zip(weights.keys(), p.values, strict=True), key=lambda item: (-item[1], str(item[0]))
        )
    )
    index = _hhi(p)
    return ConcentrationReport(
        entities=len(p.values),
        active_entities=len(p.positive),
        total=p.weight(p.total),
        hhi=index,
        hhi_guideline=guideline,
        hhi_band=hhi_band(index, guideline) if p.positive else EMPTY_BAND,
        nakamoto=_nakamoto(p),
        gini=_gini(p),
        entropy_bits=_entropy(p),
        effective_entities_entropy=_effective_entropy(p),
        effective_entities_hhi=_effective_hhi(p),
        top1=_top_k(p, 1),
        top2=_top_k(p, 2),
        top4=_top_k(p, 4),
        top5=_top_k(p, 5),
        ranking=ranking,
    )
