"""Durable share storage: SQLite (embedded, WAL) or PostgreSQL, no acknowledged share lost.

* ``models``   typed SQLAlchemy models (miners, workers, shares, blocks,
  payout batches and items, ledger entries, share aggregates)
* ``db``       ``make_engine``, Alembic ``upgrade``/``downgrade``/``current_revision``
  (migrations live in ``pool/migrations``)
* ``spool``    the write-ahead spool: CRC-framed segment files (a frame per
  ``append_many`` call), group-committed fsync
* ``store``    batched, idempotent inserts through the raw driver (SQLite
  multi-row ``INSERT ... VALUES``, PostgreSQL COPY)
* ``writer``   ``ShareWriter``: ``await record_many(shares)`` / ``record(share)``
  (durable on return), the bounded queue, retries while the database is away,
  crash replay, ``stats()`` for the metrics
* ``compact``  retention: fold old shares into per-worker aggregates
* ``cli``      ``stope db upgrade|downgrade|current|compact|replay``
"""
