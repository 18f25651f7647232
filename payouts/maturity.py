"""Block maturity: pending blocks become confirmed, or orphaned and reversed.

A coinbase is spendable from 101 confirmations (Bitcoin Core's wallet;
reference §7), so a found block's credits stay immature until the node
reports at least ``maturity`` confirmations for it. A block the node reports
off its active chain (``confirmations == -1``), or does not know although it
is past that height, is orphaned: its credits are cancelled by reversing
entries in the same transaction as the status change, so no balance ever
counts an orphan.

The node is only asked, never trusted blindly: a node in initial block
download, or one not yet at the block's height, cannot say a block is gone,
and the block stays pending (the false-orphan complaint of reference §11).

The node is an injected ``NodeRPC`` (a ``pool.node.NodeClient`` in the CLI,
anything with an async ``call`` in tests); this module opens no socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from pool.node import NodeError
from pool.storage.models import (
    BLOCK_CONFIRMED,
    BLOCK_ORPHANED,
    BLOCK_PENDING,
    Block,
    LedgerEntry,
)

from .ledger import KIND_ORPHAN_REVERSAL, Progress, no_progress, reverse_block

# bitcoind's RPC_INVALID_ADDRESS_OR_KEY: "Block not found".
RPC_NOT_FOUND = -5


class NodeRPC(Protocol):
    """The one method the payout job needs from a node client."""

    async def call(self, method: str, *params: Any) -> Any: ...


@dataclass
class MaturityReport:
    """What one maturity pass saw, block by block (height, hash)."""

    confirmed: list[tuple[int, str]] = field(default_factory=list)
    orphaned: list[tuple[int, str]] = field(default_factory=list)
    pending: list[tuple[int, str, int]] = field(default_factory=list)
    repaired: list[tuple[int, str]] = field(default_factory=list)
    node_height: int | None = None
    skipped: str | None = None


def classify(confirmations: int | None, maturity: int, node_height: int, block_height: int) -> str:
    """The status a pending block moves to.

    ``confirmations`` None means the node does not know the block. Orphaned
    needs evidence: -1 from the node, or an unknown block at a height the
    node has already passed.
    """
    if confirmations is None:
        return BLOCK_ORPHANED if node_height > block_height else BLOCK_PENDING
    if confirmations < 0:
        return BLOCK_ORPHANED
    if confirmations >= maturity:
        return BLOCK_CONFIRMED
    return BLOCK_PENDING


async def block_confirmations(node: NodeRPC, block_hash: str) -> int | None:
    """``getblockheader(hash).confirmations``; None when the node does not know the block."""
    try:
        header = await node.call("getblockheader", block_hash)
    except NodeError as exc:
        if exc.code == RPC_NOT_FOUND:
            return None
        raise
    return int(header["confirmations"])


def _unreversed_orphans(session: Session) -> list[Block]:
    """Orphaned blocks with credits but no reversal (status set by someone else)."""
    return list(
        session.scalars(
            select(Block).where(
                Block.status == BLOCK_ORPHANED,
                exists().where(LedgerEntry.block_id == Block.id),
                ~exists().where(LedgerEntry.block_id == Block.id, LedgerEntry.kind == KIND_ORPHAN_REVERSAL),
            )
        )
    )


async def update_maturity(
    session: Session, node: NodeRPC, maturity: int, *, progress: Progress = no_progress, commit: bool = True
) -> MaturityReport:
    """Ask the node about every pending block and move it along.

    Each block's status change (and its reversal) is one transaction when
    ``commit``; a dry run passes ``commit=False`` and rolls back itself.
    """
    report = MaturityReport()
    for block in _unreversed_orphans(session):
        reverse_block(session, block)
        report.repaired.append((block.height, block.hash))
    if commit:
        session.commit()
    info = await node.call("getblockchaininfo")
    if info.get("initialblockdownload"):
        report.skipped = "node is in initial block download: block maturity not checked"
        return report
    node_height = int(info["blocks"])
    report.node_height = node_height
    pending = list(session.scalars(select(Block).where(Block.status == BLOCK_PENDING).order_by(Block.id)))
    for done, block in enumerate(pending, 1):
        confirmations = await block_confirmations(node, block.hash)
        status = classify(confirmations, maturity, node_height, block.height)
        if confirmations is not None:
            block.confirmations = confirmations
        if status == BLOCK_ORPHANED:
            block.status = BLOCK_ORPHANED
            reverse_block(session, block)
            report.orphaned.append((block.height, block.hash))
        elif status == BLOCK_CONFIRMED:
            block.status = BLOCK_CONFIRMED
            report.confirmed.append((block.height, block.hash))
        else:
            report.pending.append((block.height, block.hash, max(confirmations or 0, 0)))
        if commit:
            session.commit()
        else:
            session.flush()
        progress("checking maturity", done, len(pending))
    return report
