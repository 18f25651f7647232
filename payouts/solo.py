"""SOLO: the miner who finds the block takes it, less the pool fee.

Custodial SOLO is an ``Allocation`` like the other schemes (the pool's
wallet receives the coinbase and credits the finder). Non-custodial SOLO
puts the finder's script straight into the coinbase; ``solo_coinbase_outputs``
computes those outputs so that they add up to the coinbase value exactly.
"""

from __future__ import annotations

from fractions import Fraction

from .allocate import allocate_block
from .fees import pool_fee
from .records import Allocation, BlockRecord, check_sat


def solo(block: BlockRecord, fee_bps: int, share_tx_fees: bool = True) -> Allocation:
    """Credit the whole pot of ``block`` to its finder."""
    return allocate_block("solo", block, {block.finder: Fraction(1)}, fee_bps, share_tx_fees)


def solo_coinbase_outputs(
    block_value: int,
    miner_script: bytes,
    pool_script: bytes,
    fee_bps: int,
) -> list[tuple[int, bytes]]:
    """The coinbase outputs ``(value, scriptPubKey)`` for non-custodial SOLO.

    The fee is floored and the miner's output takes the rest, so the values
    sum to ``block_value`` exactly; a zero fee output is left out (an empty
    output would be non-standard dust). The miner's output comes first.
    Whether a small fee output is above the dust limit is the caller's call.
    """
    check_sat(block_value, "block_value")
    fee = pool_fee(block_value, fee_bps)
    outputs = [(block_value - fee, bytes(miner_script))]
    if fee:
        outputs.append((fee, bytes(pool_script)))
    return outputs
