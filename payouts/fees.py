"""The pool fee: basis points, floored, on the value miners are paid from.

The fee is ``floor(base * fee_bps / 10000)`` so it is a whole number of
satoshis and never rounds against miners. Transaction fees are either shared
(the fee base is the whole coinbase value) or kept by the pool (the base is
the subsidy and the pool also keeps the transaction fees).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .records import BlockRecord, check_sat

BPS = 10_000


def check_fee_bps(fee_bps: object) -> int:
    """A pool fee in basis points: an int from 0 to 10000."""
    if isinstance(fee_bps, bool) or not isinstance(fee_bps, int):
        raise TypeError(f"fee_bps must be an int number of basis points, got {type(fee_bps).__name__}")
    if not 0 <= fee_bps <= BPS:
        raise ValueError(f"fee_bps must be between 0 and {BPS}, got {fee_bps}")
    return fee_bps


def fee_fraction(fee_bps: int) -> Fraction:
    """The fee as an exact fraction: 200 bp is 1/50."""
    return Fraction(check_fee_bps(fee_bps), BPS)


def pool_fee(amount: int, fee_bps: int) -> int:
    """Whole satoshis of fee on ``amount``, rounded down."""
    check_sat(amount, "amount")
    return amount * check_fee_bps(fee_bps) // BPS


@dataclass(frozen=True)
class BlockSplit:
    """A block's value before it is divided among miners."""

    fee_base: int
    fee: int
    kept_tx_fees: int
    pot: int


def split_block(block: BlockRecord, fee_bps: int, share_tx_fees: bool) -> BlockSplit:
    """Separate the pool's part of a block from the pot miners share.

    ``fee + kept_tx_fees + pot == block.value`` exactly.
    """
    fee_base = block.value if share_tx_fees else block.subsidy
    fee = pool_fee(fee_base, fee_bps)
    return BlockSplit(
        fee_base=fee_base,
        fee=fee,
        kept_tx_fees=block.value - fee_base,
        pot=fee_base - fee,
    )
