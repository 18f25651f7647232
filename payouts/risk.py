"""PPS operator risk and pool luck.

Under PPS the operator pays ``(1 - f) * p * B`` per share and receives ``B``
when a share is a block (probability ``p``). Starting from a reserve ``R``,
the probability of ever running out is ``exp(-kappa * R / B)``, where
``kappa > 0`` solves ``1 - kappa * (1 - f) = exp(-kappa)`` (reference §4;
the diffusion approximation is ``kappa = 2f``). These are estimates, not
payouts: they use 50-digit ``Decimal`` arithmetic, never binary floats, so
results are reproducible. Luck is exact: found blocks against the sum of
share scores ``d / D`` (the expected number of blocks).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_CEILING, Decimal, localcontext
from fractions import Fraction

from .fees import BPS, check_fee_bps
from .records import Number, ShareRecord, check_sat, to_fraction

PRECISION = 50
_BISECTION_STEPS = 200


def _decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def ruin_exponent(fee_bps: int, exact: bool = True) -> Decimal:
    """``kappa``: the ruin probability decays as ``exp(-kappa * R / B)``.

    ``exact=False`` gives the diffusion approximation ``2f``. A zero fee has
    no positive root (ruin is certain in the long run), so it is refused.
    """
    if check_fee_bps(fee_bps) in (0, BPS):
        raise ValueError("ruin exponent needs a fee strictly between 0 and 10000 bp")
    with localcontext() as ctx:
        ctx.prec = PRECISION
        fee = Decimal(fee_bps) / BPS
        if not exact:
            return 2 * fee
        # g(k) = 1 - k(1-f) - exp(-k) is positive just above 0 and negative
        # from k = 1/(1-f) on; bisect for its positive root.
        low, high = Decimal(0), 1 / (1 - fee)
        for _ in range(_BISECTION_STEPS):
            middle = (low + high) / 2
            if 1 - middle * (1 - fee) - (-middle).exp() > 0:
                low = middle
            else:
                high = middle
        return +low


def ruin_probability(reserve: int, block_value: int, fee_bps: int, exact: bool = True) -> Decimal:
    """Probability that a PPS operator with ``reserve`` sat ever goes bankrupt."""
    check_sat(reserve, "reserve")
    if check_sat(block_value, "block_value") == 0:
        raise ValueError("block value must be positive")
    kappa = ruin_exponent(fee_bps, exact)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return (-kappa * reserve / block_value).exp()


def required_reserve(block_value: int, fee_bps: int, ruin: Number, exact: bool = True) -> int:
    """Satoshis of reserve for ruin probability at most ``ruin``: ``B ln(1/ruin) / kappa``, rounded up."""
    if check_sat(block_value, "block_value") == 0:
        raise ValueError("block value must be positive")
    probability = to_fraction(ruin)
    if not 0 < probability < 1:
        raise ValueError(f"ruin probability must be strictly between 0 and 1, got {probability}")
    kappa = ruin_exponent(fee_bps, exact)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        reserve = block_value * (1 / _decimal(probability)).ln() / kappa
        return int(reserve.to_integral_value(rounding=ROUND_CEILING))


def expected_blocks(shares: Iterable[ShareRecord]) -> Fraction:
    """How many blocks ``shares`` should have found: the sum of ``d / D``."""
    return sum((share.score for share in shares), Fraction(0))


def luck(blocks_found: int, shares: Iterable[ShareRecord]) -> Fraction:
    """Blocks found over blocks expected; above 1 is lucky."""
    if isinstance(blocks_found, bool) or not isinstance(blocks_found, int) or blocks_found < 0:
        raise ValueError(f"blocks found must be a non-negative int, got {blocks_found!r}")
    expected = expected_blocks(shares)
    if expected == 0:
        raise ValueError("no shares: expected block count is zero")
    return Fraction(blocks_found) / expected


def round_effort(shares_since_last_block: Iterable[ShareRecord]) -> Fraction:
    """Work in the current round in multiples of network difficulty; 1 is par.

    Each share counts at the difficulty in force when it was submitted, so a
    retarget mid-round is accounted for.
    """
    return expected_blocks(shares_since_last_block)
