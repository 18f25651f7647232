"""Shares: no unique index on share_hash, no worker index; a unique index on block shares' hashes.

Every accepted share is a row in ``shares``, and every index on it is updated
by every insert. Measured with raw sqlite3 (batches of 250 rows, WAL,
``synchronous=NORMAL``, a 64 MB page cache; CPU per row for insert and commit,
once the table holds 200 000 rows, up to 1.2 million):

* the 0003 indexes (unique ``share_hash``, ``ix_shares_worker``,
  ``ix_shares_created_at``): 30.6 us/row;
* without the ``share_hash`` unique: 11.1 us/row;
* ``ix_shares_created_at`` only: 3.2 us/row (no secondary index: 2.6).

``bench/db.py`` (the writer's insert, batches of 1 000 rows, 2 cores) shows
the growth: with the 0003 indexes 10 us/row into an empty table, 28-30 us/row
into one of a million rows; with these, about 4 us/row in both.

The unique index holds 32 random bytes per share, so each insert touches a
random page of it; ``ix_shares_worker (worker_id, created_at)`` has one
insertion point per worker, with many workers random pages too. Both costs
grow with the table, which holds a day or more of shares (tens of millions of
rows): the unique index had become the largest CPU cost per share in the
end-to-end benchmark. ``ix_shares_created_at`` only ever appends.

What the two indexes were for, and what does it now:

* The unique ``share_hash`` made a replayed spool idempotent (``ON CONFLICT
  DO NOTHING``). The writer now replays with ``ShareStore.write(replay=True)``,
  which first reads the hashes stored within the batch's ``created_at`` range
  (``ix_shares_created_at``) and skips those; every replay path and every
  retry after a storage error uses it.
* It also found the share that solved a block (``share_hash`` = the block's
  hash). That look-up now has ``ux_shares_block_hash``: unique, on
  ``share_hash``, over block shares only (``WHERE is_block``; a handful of
  rows). The queries say ``AND is_block`` so the index applies: on SQLite,
  only when the query holds the index's term as written, which is why the
  index's condition is ``is_block = 1`` there (what SQLAlchemy renders for
  ``where(Share.is_block)``) and ``is_block`` on PostgreSQL.
* No query reads ``ix_shares_worker``: stats select by ``created_at``,
  payouts by ranges of ``shares.id`` joined to ``workers``.

SQLite: the unique was declared inline by 0003's table rebuild (an automatic
index that cannot be dropped), so the table is rebuilt again, ids and order
kept (every row is copied once: about 3 s per million rows on two cores,
and the table's size in free disk). PostgreSQL: the unique constraint (found
by inspection, normally ``shares_share_hash_key``) and the index are
dropped, the partial index created (0.1 s for a million rows). A database
already in the new form (adopted from a ``create_all`` of the current
models) is left as it is. Downgrade restores the 0003 indexes; a share hash
stored more than once in the meantime keeps only its first row (the unique
index would refuse the others).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)
_COLUMNS = "id, share_hash, worker_id, job_id, height, difficulty, network_difficulty, is_block, created_at"
BLOCK_INDEX = "ux_shares_block_hash"
# As the models give it (models.BLOCK_SHARE_WHERE), here as of this revision.
BLOCK_WHERE = {"sqlite": "is_block = 1", "postgresql": "is_block"}
PG_UNIQUE_NAME = "shares_share_hash_key"  # what PostgreSQL names 0001's unnamed UNIQUE (share_hash)


def _dialect() -> str:
    return op.get_bind().dialect.name


def _indexes() -> dict[str, dict[str, Any]]:
    return {ix["name"]: ix for ix in sa.inspect(op.get_bind()).get_indexes("shares") if ix["name"]}


def _is_partial(ix: dict[str, Any]) -> bool:
    return any(k.endswith("_where") and v is not None for k, v in (ix.get("dialect_options") or {}).items())


def _full_hash_uniques() -> tuple[list[str | None], list[str]]:
    """Unique constraints, and unique indexes not backing one, on ``share_hash`` alone (not partial)."""
    insp = sa.inspect(op.get_bind())
    constraints = [uc.get("name") for uc in insp.get_unique_constraints("shares") if uc["column_names"] == ["share_hash"]]
    indexes = [
        name for name, ix in _indexes().items()
        if ix["unique"] and ix["column_names"] == ["share_hash"] and not _is_partial(ix)
        and "duplicates_constraint" not in ix
    ]
    return constraints, indexes


def _create_block_index() -> None:
    op.create_index(
        BLOCK_INDEX, "shares", ["share_hash"], unique=True,
        sqlite_where=sa.text(BLOCK_WHERE["sqlite"]), postgresql_where=sa.text(BLOCK_WHERE["postgresql"]),
    )


def _rebuild_sqlite(*, unique_hash: bool) -> None:
    """Copy ``shares`` into a new table (ids and order kept); ``unique_hash``: the 0003 form
    (inline UNIQUE, later rows of a hash stored twice dropped), else the 0004 form."""
    op.create_table(
        "_stope_shares_new",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("share_hash", sa.LargeBinary(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("difficulty", sa.String(120), nullable=False),
        sa.Column("network_difficulty", sa.String(120), nullable=False),
        sa.Column("is_block", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        *((sa.UniqueConstraint("share_hash"),) if unique_hash else ()),
    )
    op.execute(
        f"INSERT {'OR IGNORE ' if unique_hash else ''}INTO _stope_shares_new ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM shares ORDER BY id"
    )
    if unique_hash:
        bind = op.get_bind()
        dropped = bind.exec_driver_sql("SELECT (SELECT count(*) FROM shares) - (SELECT count(*) FROM _stope_shares_new)").scalar()
        if dropped:
            log.warning("shares: %d later row(s) of share hashes stored twice dropped (the 0003 unique index)", dropped)
    op.drop_table("shares")  # its indexes go with it
    op.rename_table("_stope_shares_new", "shares")
    op.create_index("ix_shares_created_at", "shares", ["created_at"])
    if unique_hash:
        op.create_index("ix_shares_worker", "shares", ["worker_id", "created_at"])
    else:
        _create_block_index()


def upgrade() -> None:
    constraints, indexes = _full_hash_uniques()
    if _dialect() == "sqlite" and constraints:
        _rebuild_sqlite(unique_hash=False)
        return
    for name in constraints:
        op.drop_constraint(name or PG_UNIQUE_NAME, "shares", type_="unique")
    for name in indexes:
        op.drop_index(name, table_name="shares")
    present = _indexes()
    if "ix_shares_worker" in present:
        op.drop_index("ix_shares_worker", table_name="shares")
    if "ix_shares_created_at" not in present:
        op.create_index("ix_shares_created_at", "shares", ["created_at"])
    if BLOCK_INDEX not in present:
        _create_block_index()


def downgrade() -> None:
    if _dialect() == "sqlite":
        _rebuild_sqlite(unique_hash=True)
        return
    dropped = op.get_bind().exec_driver_sql(
        "DELETE FROM shares a USING shares b WHERE a.share_hash = b.share_hash AND a.id > b.id"
    ).rowcount
    if dropped:
        log.warning("shares: %d later row(s) of share hashes stored twice dropped (the 0003 unique index)", dropped)
    op.drop_index(BLOCK_INDEX, table_name="shares")
    op.create_unique_constraint(PG_UNIQUE_NAME, "shares", ["share_hash"])
    op.create_index("ix_shares_worker", "shares", ["worker_id", "created_at"])
