"""Merkle trees the way Bitcoin builds them (odd levels duplicate their last node)."""

from __future__ import annotations

from collections.abc import Sequence

from .serialize import sha256d

# BIP141: the coinbase's leaf in the witness tree, in place of its wtxid.
WITNESS_COINBASE_LEAF = b"\x00" * 32


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over internal-order hashes; a single leaf is its own root."""
    if not leaves:
        raise ValueError("a merkle tree needs at least one leaf")
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def coinbase_branch(txids: Sequence[bytes]) -> list[bytes]:
    """Branch that folds the coinbase (leaf 0) up to the root.

    ``txids`` are the non-coinbase transactions' txids in internal order.
    """
    branch: list[bytes] = []
    level: list[bytes | None] = [None, *txids]
    while len(level) > 1:
        branch.append(level[1])  # type: ignore[arg-type]
        if len(level) % 2:
            level.append(level[-1])
        nxt: list[bytes | None] = [None]
        for i in range(2, len(level), 2):
            nxt.append(sha256d(level[i] + level[i + 1]))  # type: ignore[operator]
        level = nxt
    return branch


def fold_branch(leaf: bytes, branch: Sequence[bytes]) -> bytes:
    """Merkle root from the coinbase txid and its branch."""
    root = leaf
    for step in branch:
        root = sha256d(root + step)
    return root


def witness_merkle_root(wtxids: Sequence[bytes]) -> bytes:
    """BIP141 witness root over the NON-coinbase wtxids (internal order).

    The coinbase's own leaf is defined as 32 zero bytes (its wtxid would
    depend on the commitment it carries), so it is supplied here; pass the
    template's ``hash`` fields reversed, in block order. An empty list (empty
    template) gives the zero root, which is its own root.
    """
    return merkle_root([WITNESS_COINBASE_LEAF, *wtxids])
