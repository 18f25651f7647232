"""PROP: a block is shared in proportion to the work of its round.

The round is every share since the pool's previous block (see
``rounds.round_shares``). Classic PROP weighs a share by its difficulty;
``weight="score"`` weighs it by ``d / D`` at submission instead (miningcore's
variant), which differs only when the network difficulty changed mid-round.
PROP is hoppable (a share early in a round is worth more); it is offered for
pools that want it, not as the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .allocate import allocate_block, difficulty_weights, score_weights
from .records import Allocation, BlockRecord, ShareRecord

Weighting = Literal["difficulty", "score"]


def prop(
    shares: Sequence[ShareRecord],
    block: BlockRecord,
    fee_bps: int,
    share_tx_fees: bool = True,
    weight: Weighting = "difficulty",
) -> Allocation:
    """Allocate ``block`` over the round's ``shares`` (already cut to the round)."""
    if not shares:
        raise ValueError("a PROP round needs at least the block-solving share")
    if weight == "difficulty":
        weights = difficulty_weights(shares)
    elif weight == "score":
        weights = score_weights(shares)
    else:
        raise ValueError(f"unknown PROP weighting {weight!r}")
    return allocate_block(
        "prop",
        block,
        weights,
        fee_bps,
        share_tx_fees,
        params={"weight": weight, "round_shares": str(len(shares))},
    )
