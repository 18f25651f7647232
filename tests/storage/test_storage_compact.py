"""Retention: compaction keeps what payouts need and all of the hashrate history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from fractions import Fraction

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pool.cli import main
from pool.storage.compact import compact, difficulty_history, plan_compaction
from pool.storage.db import make_engine, upgrade
from pool.storage.models import Block, LedgerEntry, Miner, Share, ShareAggregate
from pool.storage.store import ShareStore
from tests.storage.helpers import T0, make_share, share_hash

N = 600  # one share a minute for ten hours, two workers; each scores d/D = 1/3
NOW = T0 + dt.timedelta(days=1)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    ShareStore(engine).write([
        make_share(i, worker=f"rig{i % 2}", at=T0 + dt.timedelta(minutes=i), is_block=(i == 300)) for i in range(N)
    ])
    with Session(engine) as session, session.begin():
        worker_id = session.scalar(select(Share.worker_id).where(Share.share_hash == share_hash(300)))
        session.add(Block(height=101, hash=share_hash(300), prevhash="00" * 32, worker_id=worker_id, reward=50, status="pending"))
    yield engine
    engine.dispose()


def id_of(engine: Engine, i: int) -> int:
    with Session(engine) as session:
        return session.scalar(select(Share.id).where(Share.share_hash == share_hash(i)))


def history(engine: Engine) -> dict:
    with Session(engine) as session:
        return difficulty_history(session)


def test_pplns_windows_of_tip_and_unpaid_block_are_kept(engine: Engine):
    before = history(engine)
    with Session(engine) as session:
        plan = plan_compaction(session, older_than=dt.timedelta(0), window_factor=Fraction(2), now=NOW)
    # X = 2 at 1/3 per share: the block's window is the 6 shares ending at share 300.
    assert plan.keep_from_id == id_of(engine, 295)
    result = compact(engine, plan)
    assert result.shares == 295 and result.difficulty == Fraction(295, 10000)
    with Session(engine) as session:
        left = set(session.scalars(select(Share.share_hash)))
        assert left == {share_hash(i) for i in range(295, N)}
        assert session.scalar(select(func.sum(ShareAggregate.share_count))) == 295
    assert history(engine) == before  # hashrate history unchanged


def test_paid_block_no_longer_protects_and_block_shares_stay(engine: Engine):
    with Session(engine) as session, session.begin():
        block = session.scalar(select(Block))
        block.status = "confirmed"
        session.add(LedgerEntry(miner_id=session.scalar(select(Miner.id)), kind="pplns", amount=50, block_id=block.id))
    before = history(engine)
    with Session(engine) as session:
        plan = plan_compaction(session, older_than=dt.timedelta(0), window_factor=Fraction(2), now=NOW)
    assert plan.keep_from_id == id_of(engine, N - 6)
    assert compact(engine, plan).shares == N - 6 - 1  # the block-solving share is never compacted
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Share)) == 7
    assert history(engine) == before


def test_pps_keeps_uncredited_shares_and_age_cutoff_applies(engine: Engine):
    with Session(engine) as session, session.begin():
        session.add(LedgerEntry(miner_id=session.scalar(select(Miner.id)), kind="pps", amount=0,
                                remainder=Fraction(1, 3), share_id_through=id_of(engine, 99)))
    with Session(engine) as session:
        plan = plan_compaction(session, older_than=dt.timedelta(0), window_factor=None, pps=True, now=NOW)
        assert plan.keep_from_id == id_of(engine, 99) + 1
    assert compact(engine, plan).shares == 100
    # The cut-off by age: only shares before T0 + 150 min, in a second run that adds to the same buckets.
    before = history(engine)
    with Session(engine) as session:
        by_age = plan_compaction(session, older_than=NOW - (T0 + dt.timedelta(minutes=150)), window_factor=None, now=NOW)
    assert by_age.keep_from_id is None
    assert compact(engine, by_age).shares == 50
    assert history(engine) == before


def test_no_credit_under_pps_means_nothing_goes(engine: Engine):
    with Session(engine) as session:
        plan = plan_compaction(session, older_than=dt.timedelta(0), window_factor=None, pps=True, now=NOW)
    assert plan.keep_from_id == 0 and compact(engine, plan).shares == 0


def test_cli_compact(db_url: str, engine: Engine):
    runner = CliRunner()
    result = runner.invoke(main, ["db", "compact", "--url", db_url, "--older-than", "0", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "compactable shares: 295" in result.output
    result = runner.invoke(main, ["db", "compact", "--url", db_url, "--older-than", "0", "--bucket-seconds", "600"])
    assert result.exit_code == 0, result.output
    assert "compacted 295 share(s)" in result.output
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Share)) == N - 295
        assert set(session.scalars(select(ShareAggregate.bucket_seconds))) == {600}
