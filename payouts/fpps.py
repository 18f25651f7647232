"""FPPS: PPS priced on the subsidy plus the expected transaction fees.

The expected fees per block ``F`` are the (optionally trimmed) mean of the
fees in recent blocks. The value used is stored in every credit, so a
payout can be audited against the fee estimate in force when the share was
credited. The operator carries the estimation risk: actual fees of the
blocks it finds may differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction

from .pps import share_credit
from .records import Credit, Number, ShareRecord, check_sat, to_fraction


def average_block_fees(recent_fees: Sequence[int], trim: int = 0) -> Fraction:
    """The mean fee per block of ``recent_fees``, exactly.

    ``trim`` drops that many of the lowest and of the highest values first,
    so one block stuffed with fees (or an empty one) does not move the
    estimate much.
    """
    fees = sorted(check_sat(fee, "recent block fee") for fee in recent_fees)
    if isinstance(trim, bool) or not isinstance(trim, int) or trim < 0:
        raise ValueError(f"trim must be a non-negative int, got {trim!r}")
    kept = fees[trim : len(fees) - trim]
    if not kept:
        raise ValueError(f"no block fees left to average ({len(fees)} given, trim {trim})")
    return Fraction(sum(kept), len(kept))


def fpps_credit(share: ShareRecord, subsidy: int, expected_fees: Number, fee_bps: int) -> Credit:
    """The FPPS credit for one share: ``(1 - fee) * (subsidy + F) * d / D``."""
    estimate = to_fraction(expected_fees)
    if estimate < 0:
        raise ValueError(f"expected fees must not be negative, got {estimate}")
    return share_credit(share, check_sat(subsidy, "subsidy") + estimate, fee_bps, expected_fees=estimate)


def fpps_credits(
    shares: Iterable[ShareRecord], subsidy: int, expected_fees: Number, fee_bps: int
) -> list[Credit]:
    """FPPS credits for a run of shares at a fixed subsidy and fee estimate."""
    return [fpps_credit(share, subsidy, expected_fees, fee_bps) for share in shares]
