"""Share aggregates: compacted shares per worker and time bucket.

``stope db compact`` folds share rows payouts no longer need into these, so
hashrate history is kept while the shares table stays small.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "share_aggregates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bucket_seconds", sa.Integer(), nullable=False),
        sa.Column("share_count", sa.BigInteger(), nullable=False),
        sa.Column("difficulty_sum", sa.Text(), nullable=False),
        sa.UniqueConstraint("worker_id", "bucket_start", "bucket_seconds"),
    )
    op.create_index("ix_share_aggregates_bucket_start", "share_aggregates", ["bucket_start"])


def downgrade() -> None:
    op.drop_index("ix_share_aggregates_bucket_start", table_name="share_aggregates")
    op.drop_table("share_aggregates")
