"""Shares: share_hash as 32 raw bytes; no foreign key from shares to workers.

``shares`` is the one hot table: every accepted share is a row, inserted in
batches by the share writer. Two changes make those inserts cheaper, measured
with ``bench/db.py`` and with the raw drivers on the same rows (2 vCPUs,
300 000 rows in 20 000-row transactions, 50 workers, the 0002 indexes):

* ``share_hash`` VARCHAR(64) of display hex -> BLOB (SQLite) / bytea
  (PostgreSQL) of the 32 bytes. The unique index on it, which every insert
  probes and updates at a random position, holds half the bytes: SQLite
  inserts take 10-15 % less time, and table plus indexes are about 25 %
  smaller on both databases. Python still reads and writes hex
  (``models.HexHash``); in SQL, ``hex(share_hash)`` (SQLite) or
  ``encode(share_hash, 'hex')`` (PostgreSQL) shows it.
* The FOREIGN KEY ``shares.worker_id -> workers.id`` is dropped. On
  PostgreSQL it fires a referential-integrity trigger for every inserted
  row (a ``SELECT ... FOR KEY SHARE`` on ``workers``): 25-35 % of a COPY's
  time. On SQLite it costs little, but the model is one for both. The
  guarantee it gave is kept by the only code that inserts shares
  (``ShareStore.write``): it stores only worker ids it resolved (``INSERT ...
  ON CONFLICT DO NOTHING`` + ``SELECT``) in the same transaction, and no code
  deletes workers. Readers already join explicitly on ``Worker.id``.

Existing rows are converted in place (PostgreSQL: ``ALTER COLUMN ... TYPE
bytea USING decode(share_hash, 'hex')``; SQLite: the table is rebuilt, as
SQLite cannot alter a column). A database already in the new form (adopted
from a ``create_all`` of the current models) is left as it is. Downgrade
turns the bytes back into lower-case hex and restores the foreign key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)
_COLUMNS = "id, share_hash, worker_id, job_id, height, difficulty, network_difficulty, is_block, created_at"


def _hash_is_binary() -> bool:
    column = next(c for c in sa.inspect(op.get_bind()).get_columns("shares") if c["name"] == "share_hash")
    return isinstance(column["type"], sa.LargeBinary)


def _worker_foreign_keys() -> list[str | None]:
    return [
        fk.get("name")
        for fk in sa.inspect(op.get_bind()).get_foreign_keys("shares")
        if fk["referred_table"] == "workers"
    ]


def _unhex(value: str | bytes | None) -> bytes | None:
    """SQLite function for the rebuild: hex text to bytes (bytes stay bytes)."""
    if value is None or isinstance(value, bytes):
        return value
    return bytes.fromhex(value)


def _rebuild_sqlite(*, binary: bool) -> None:
    """Copy ``shares`` into a new table of the wanted form, ids and order kept."""
    bind = op.get_bind()
    bind.connection.driver_connection.create_function("stope_unhex", 1, _unhex, deterministic=True)
    op.create_table(
        "_stope_shares_new",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("share_hash", sa.LargeBinary() if binary else sa.String(64), nullable=False),
        sa.Column(
            "worker_id", sa.Integer(), *(() if binary else (sa.ForeignKey("workers.id"),)), nullable=False,
        ),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("difficulty", sa.String(120), nullable=False),
        sa.Column("network_difficulty", sa.String(120), nullable=False),
        sa.Column("is_block", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("share_hash"),
    )
    hash_expr = "stope_unhex(share_hash)" if binary else (
        "CASE WHEN typeof(share_hash) = 'blob' THEN lower(hex(share_hash)) ELSE share_hash END"
    )
    op.execute(
        f"INSERT INTO _stope_shares_new ({_COLUMNS}) "
        f"SELECT id, {hash_expr}, worker_id, job_id, height, difficulty, network_difficulty, is_block, created_at "
        "FROM shares ORDER BY id"
    )
    op.drop_table("shares")  # its indexes go with it
    op.rename_table("_stope_shares_new", "shares")
    op.create_index("ix_shares_created_at", "shares", ["created_at"])
    op.create_index("ix_shares_worker", "shares", ["worker_id", "created_at"])


def upgrade() -> None:
    binary, fks = _hash_is_binary(), _worker_foreign_keys()
    if binary and not fks:
        return
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(binary=True)
        return
    for name in fks:
        op.drop_constraint(name, "shares", type_="foreignkey")
    if not binary:
        op.execute("ALTER TABLE shares ALTER COLUMN share_hash TYPE bytea USING decode(share_hash, 'hex')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(binary=False)
        return
    op.execute("ALTER TABLE shares ALTER COLUMN share_hash TYPE varchar(64) USING encode(share_hash, 'hex')")
    if not _worker_foreign_keys():
        op.create_foreign_key("shares_worker_id_fkey", "shares", "workers", ["worker_id"], ["id"])
