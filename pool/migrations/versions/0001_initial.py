"""Initial schema: miners, workers, shares, blocks, payout batches, ledger.

Also adopts a database created before migrations existed (by
``create_all``): tables already present are left as they are, missing ones
are created, so such a database upgrades in place.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def _missing(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _missing("miners"):
        op.create_table(
            "miners",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("address", sa.String(128), nullable=False),
            sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
            sa.UniqueConstraint("address"),
        )
    if _missing("workers"):
        op.create_table(
            "workers",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("miner_id", sa.Integer(), sa.ForeignKey("miners.id"), nullable=False),
            sa.Column("name", sa.String(128), nullable=False),
            sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
            sa.UniqueConstraint("miner_id", "name"),
        )
    if _missing("shares"):
        op.create_table(
            "shares",
            sa.Column("id", BIG_ID, primary_key=True),
            sa.Column("share_hash", sa.String(64), nullable=False),
            sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=False),
            sa.Column("job_id", sa.String(32), nullable=False),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("difficulty", sa.String(120), nullable=False),
            sa.Column("network_difficulty", sa.String(120), nullable=False),
            sa.Column("is_block", sa.Boolean(), nullable=False),
            sa.Column("created_at", TZ, nullable=False),
            sa.UniqueConstraint("share_hash"),
        )
        op.create_index("ix_shares_created_at", "shares", ["created_at"])
        op.create_index("ix_shares_worker", "shares", ["worker_id", "created_at"])
    if _missing("blocks"):
        op.create_table(
            "blocks",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("height", sa.Integer(), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("prevhash", sa.String(64), nullable=False),
            sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=True),
            sa.Column("reward", sa.BigInteger(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("submit_result", sa.String(128), nullable=True),
            sa.Column("confirmations", sa.Integer(), nullable=False),
            sa.Column("created_at", TZ, nullable=False),
            sa.Column("updated_at", TZ, nullable=False),
            sa.UniqueConstraint("hash"),
        )
        op.create_index("ix_blocks_height", "blocks", ["height"])
    if _missing("payout_batches"):
        op.create_table(
            "payout_batches",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("idempotency_key", sa.String(128), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("txid", sa.String(64), nullable=True),
            sa.Column("fee", sa.BigInteger(), nullable=False),
            sa.Column("created_at", TZ, nullable=False),
            sa.Column("sent_at", TZ, nullable=True),
            sa.UniqueConstraint("idempotency_key"),
        )
    if _missing("payout_batch_items"):
        op.create_table(
            "payout_batch_items",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("batch_id", sa.Integer(), sa.ForeignKey("payout_batches.id"), nullable=False),
            sa.Column("miner_id", sa.Integer(), sa.ForeignKey("miners.id"), nullable=False),
            sa.Column("amount", sa.BigInteger(), nullable=False),
            sa.UniqueConstraint("batch_id", "miner_id"),
        )
    if _missing("ledger_entries"):
        op.create_table(
            "ledger_entries",
            sa.Column("id", BIG_ID, primary_key=True),
            sa.Column("miner_id", sa.Integer(), sa.ForeignKey("miners.id"), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("amount", sa.BigInteger(), nullable=False),
            sa.Column("remainder", sa.Text(), nullable=False),
            sa.Column("block_id", sa.Integer(), sa.ForeignKey("blocks.id"), nullable=True),
            sa.Column("batch_id", sa.Integer(), sa.ForeignKey("payout_batches.id"), nullable=True),
            sa.Column("share_id_through", sa.BigInteger(), nullable=True),
            sa.Column("memo", sa.String(256), nullable=True),
            sa.Column("created_at", TZ, nullable=False),
        )
        op.create_index("ix_ledger_miner", "ledger_entries", ["miner_id", "id"])
        op.create_index("ix_ledger_entries_block_id", "ledger_entries", ["block_id"])
        op.create_index("ix_ledger_entries_batch_id", "ledger_entries", ["batch_id"])


def downgrade() -> None:
    for table in ("ledger_entries", "payout_batch_items", "payout_batches", "blocks", "shares", "workers", "miners"):
        op.drop_table(table)
