"""Placing a block in the share log.

Shares are given oldest first. A block's ``share_id`` names the share that
solved it; that share is a valid share and belongs to the block's round and
PPLNS window. Without a ``share_id`` the last share given is taken as the
solving one.
"""

from __future__ import annotations

from collections.abc import Sequence

from .records import BlockRecord, ShareRecord


def _index_of(shares: Sequence[ShareRecord], share_id: int) -> int:
    for index, share in enumerate(shares):
        if share.share_id == share_id:
            return index
    raise ValueError(f"share {share_id} is not in the share log")


def shares_until(shares: Sequence[ShareRecord], block: BlockRecord) -> list[ShareRecord]:
    """The shares up to and including the one that solved ``block``."""
    if block.share_id is None:
        return list(shares)
    return list(shares[: _index_of(shares, block.share_id) + 1])


def round_shares(
    shares: Sequence[ShareRecord],
    block: BlockRecord,
    previous_block: BlockRecord | None = None,
) -> list[ShareRecord]:
    """The round that ``block`` ends: shares after ``previous_block``'s solving share.

    Pass the previous block that really ended a round: an orphaned block does
    not, so its shares roll into the next round.
    """
    until = shares_until(shares, block)
    if previous_block is None:
        return until
    if previous_block.share_id is None:
        raise ValueError("the previous block has no share_id to start the round from")
    start = _index_of(until, previous_block.share_id) + 1
    return until[start:]
