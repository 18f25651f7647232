"""PPS: every accepted share is paid its expected value at once.

A share of difficulty ``d`` at network difficulty ``D`` is a block with
probability ``d / D``, so it is credited ``(1 - fee) * subsidy * d / D``.
The credit is kept as an exact fraction (a diff-1 share is worth a few
millionths of a satoshi); it is rounded only when paid, by
``balances.settle``. The operator keeps every coinbase and carries the
variance (see ``risk``). Classic PPS prices shares on the subsidy only; FPPS
adds expected transaction fees.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

from .fees import fee_fraction
from .records import Credit, Number, ShareRecord, check_sat, to_fraction


def share_credit(
    share: ShareRecord,
    block_value: Number,
    fee_bps: int,
    expected_fees: Fraction | None = None,
) -> Credit:
    """Credit ``share`` at ``(1 - fee) * block_value * d / D`` exactly."""
    value = to_fraction(block_value)
    if value < 0:
        raise ValueError(f"block value must not be negative, got {value}")
    amount = (1 - fee_fraction(fee_bps)) * value * share.score
    return Credit(
        miner=share.miner,
        amount=amount,
        share_id=share.share_id,
        score=share.score,
        block_value=value,
        fee_bps=fee_bps,
        expected_fees=expected_fees,
    )


def pps_credit(share: ShareRecord, subsidy: int, fee_bps: int) -> Credit:
    """The PPS credit for one share, priced on the block subsidy."""
    return share_credit(share, check_sat(subsidy, "subsidy"), fee_bps)


def pps_credits(shares: Iterable[ShareRecord], subsidy: int, fee_bps: int) -> list[Credit]:
    """PPS credits for a run of shares at a fixed subsidy."""
    return [pps_credit(share, subsidy, fee_bps) for share in shares]
