"""Turning per-miner weights for one block into an ``Allocation``.

Every block-paying scheme (PROP, PPLNS, SOLO) differs only in how it weighs
miners; the fee, the rounding and the undistributed remainder are done here
once, so every scheme keeps the same exact-sum guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from .fees import split_block
from .records import Allocation, BlockRecord, ShareRecord
from .rounding import largest_remainder

# Rounding keys: miners sort before the pool's undistributed slot on a tie.
_MINER = 0
_UNDISTRIBUTED = (1, "")


def weights_by_miner(scored: Iterable[tuple[str, Fraction]]) -> dict[str, Fraction]:
    """Sum (miner, weight) pairs per miner."""
    totals: dict[str, Fraction] = {}
    for miner, weight in scored:
        totals[miner] = totals.get(miner, Fraction(0)) + weight
    return totals


def difficulty_weights(shares: Iterable[ShareRecord]) -> dict[str, Fraction]:
    """Each miner's summed share difficulty."""
    return weights_by_miner((share.miner, share.difficulty) for share in shares)


def score_weights(shares: Iterable[ShareRecord]) -> dict[str, Fraction]:
    """Each miner's summed score ``d / D`` (difficulty at submission)."""
    return weights_by_miner((share.miner, share.score) for share in shares)


def allocate_block(
    scheme: str,
    block: BlockRecord,
    weights: Mapping[str, Fraction],
    fee_bps: int,
    share_tx_fees: bool,
    score_total: Fraction | None = None,
    params: Mapping[str, str] | None = None,
) -> Allocation:
    """Split ``block`` among miners by ``weights`` after the pool's fee.

    With ``score_total`` larger than the weights' sum, the difference is an
    explicit undistributed slot (kept by the pool); it takes part in the
    largest-remainder rounding like a miner, so no amount is off by a whole
    satoshi from its exact share.
    """
    exact = {miner: Fraction(weight) for miner, weight in weights.items()}
    weight_sum = sum(exact.values(), Fraction(0))
    if weight_sum <= 0:
        raise ValueError("no positive weight to allocate the block to")
    total = weight_sum if score_total is None else Fraction(score_total)
    if total < weight_sum:
        raise ValueError(f"score total {total} is below the weights' sum {weight_sum}")

    split = split_block(block, fee_bps, share_tx_fees)
    slots: dict[tuple[int, str], Fraction] = {(_MINER, miner): weight for miner, weight in exact.items()}
    if total > weight_sum:
        slots[_UNDISTRIBUTED] = total - weight_sum
    amounts = largest_remainder(split.pot, slots)
    return Allocation(
        scheme=scheme,
        height=block.height,
        block_value=block.value,
        fee_base=split.fee_base,
        pool_fee=split.fee + split.kept_tx_fees,
        kept_tx_fees=split.kept_tx_fees,
        pot=split.pot,
        miners={miner: amounts[(_MINER, miner)] for miner in exact},
        undistributed=amounts.get(_UNDISTRIBUTED, 0),
        scores=exact,
        score_total=total,
        params={"fee_bps": str(fee_bps), "share_tx_fees": str(share_tx_fees).lower(), **(params or {})},
    )
