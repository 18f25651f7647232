"""Exact fractional balances, paid in whole satoshis with the rest carried.

PPS and FPPS credits are fractions of a satoshi. Flooring each credit would
lose almost all of them; rounding each would invent satoshis. Instead a
miner's credits add up exactly, a payout takes the whole satoshis, and the
fractional remainder stays in the balance for next time: over any number of
payouts nothing is lost or created.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from .records import Credit, Settlement, check_sat


def accumulate(credits: Iterable[Credit], balances: Mapping[str, Fraction] | None = None) -> dict[str, Fraction]:
    """Add ``credits`` to ``balances`` (not modified), per miner, exactly."""
    totals = {miner: Fraction(amount) for miner, amount in (balances or {}).items()}
    for credit in credits:
        totals[credit.miner] = totals.get(credit.miner, Fraction(0)) + credit.amount
    return totals


def settle(balances: Mapping[str, Fraction], minimum: int = 0) -> Settlement:
    """Pay the whole satoshis of each balance of at least ``minimum`` sat.

    ``pay[m] + carry[m] == balances[m]`` exactly; a paid balance carries less
    than one satoshi, an unpaid one carries all of it.
    """
    check_sat(minimum, "minimum")
    pay: dict[str, int] = {}
    carry: dict[str, Fraction] = {}
    for miner, balance in balances.items():
        exact = Fraction(balance)
        if exact < 0:
            raise ValueError(f"balance of {miner!r} is negative: {exact}")
        whole = exact.numerator // exact.denominator
        paid = whole if whole >= minimum else 0
        pay[miner] = paid
        carry[miner] = exact - paid
    return Settlement(pay=pay, carry=carry)
