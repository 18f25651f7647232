"""PPLNS: pay the last N difficulty-weighted shares before each block.

Rosenfeld's score form: a share scores ``d / D`` with ``D`` the network
difficulty when it was submitted, and the window holds the most recent
shares (the block-solving one included) up to a total score of ``X``, i.e.
``N = X * D`` diff-1 shares when ``D`` is constant. The share that crosses
the window boundary counts only for the part inside. Each share is paid
``pot * score / X`` per block, so its expected pay is ``pot * d / D`` whatever
the pool's history: the scheme cannot be hopped.

While the pool has less than ``X`` of score in total, the window is not
full. ``unfilled="keep"`` pays exactly ``score / X`` as above and states the
rest as undistributed (kept by the pool; miningcore's behaviour, still
hop-proof); ``unfilled="normalize"`` spreads the whole pot over the shares
present (what most small pools do; young-pool shares are then overpaid).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

from .allocate import allocate_block, weights_by_miner
from .records import Allocation, BlockRecord, Number, ShareRecord, to_fraction
from .rounds import shares_until

DEFAULT_WINDOW_FACTOR = 2
Unfilled = Literal["keep", "normalize"]


def window_factor_of(window_factor: Number) -> Fraction:
    """The window size ``X`` in multiples of network difficulty (> 0)."""
    factor = to_fraction(window_factor)
    if factor <= 0:
        raise ValueError(f"window factor must be positive, got {factor}")
    return factor


def pplns_window(
    shares: Sequence[ShareRecord],
    window_factor: Number = DEFAULT_WINDOW_FACTOR,
) -> list[tuple[ShareRecord, Fraction]]:
    """The shares in the window ending at the last share, with the score each counts for.

    Returned oldest first. Every share counts ``d / D`` except the oldest
    one, which counts ``X`` minus the rest when it crosses the boundary.
    """
    factor = window_factor_of(window_factor)
    window: list[tuple[ShareRecord, Fraction]] = []
    accumulated = Fraction(0)
    for share in reversed(shares):
        if accumulated >= factor:
            break
        counted = min(share.score, factor - accumulated)
        window.append((share, counted))
        accumulated += counted
    window.reverse()
    return window


def pplns(
    shares: Sequence[ShareRecord],
    block: BlockRecord,
    fee_bps: int,
    window_factor: Number = DEFAULT_WINDOW_FACTOR,
    unfilled: Unfilled = "keep",
    share_tx_fees: bool = True,
) -> Allocation:
    """Allocate ``block`` over its PPLNS window.

    ``shares`` is the share log oldest first; shares after the block's
    solving share (``block.share_id``) are ignored.
    """
    if unfilled not in ("keep", "normalize"):
        raise ValueError(f"unknown unfilled-window policy {unfilled!r}")
    factor = window_factor_of(window_factor)
    window = pplns_window(shares_until(shares, block), factor)
    if not window:
        raise ValueError("a PPLNS window needs at least the block-solving share")
    weights = weights_by_miner((share.miner, counted) for share, counted in window)
    filled = sum(weights.values(), Fraction(0))
    return allocate_block(
        "pplns",
        block,
        weights,
        fee_bps,
        share_tx_fees,
        score_total=factor if unfilled == "keep" else filled,
        params={
            "window_factor": str(factor),
            "window_filled": str(filled),
            "window_shares": str(len(window)),
            "unfilled": unfilled,
        },
    )
