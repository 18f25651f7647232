"""The share writer's health as Prometheus figures (SamplerSources.writer),
read from a real ShareWriter whose SQLite database goes away and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client import generate_latest

from pool.metrics import WRITER_GAUGES, WRITER_TOTALS, PoolMetrics, SamplerSources
from pool.storage.db import make_engine, upgrade
from pool.storage.spool import SpoolFull
from pool.storage.store import ShareStore
from pool.storage.writer import ShareWriter
from tests.storage.helpers import make_share, share_count


def value(metrics: PoolMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_writer_figures_absent_until_a_writer_is_wired() -> None:
    """A process without a writer must not read as "database down" (no stope_db_up 0)."""
    m = PoolMetrics()
    trio.run(m.sample, SamplerSources())
    text = generate_latest(m.registry).decode()
    for name, _, _ in WRITER_GAUGES:
        assert f"\n{name} " not in text
    for name, _, _ in WRITER_TOTALS:
        assert f"{name}_total" not in text


async def test_writer_gauges_through_an_outage(tmp_path: Path) -> None:
    db = tmp_path / "db" / "stope.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    ShareStore(engine).write([make_share(i) for i in range(3)])  # stored already: duplicates when recorded again
    writer = ShareWriter(
        engine, tmp_path / "spool", batch_size=50, flush_interval=0.005, fsync_interval=0, segment_age=0.05,
        spool_max_bytes=40_000, retry_min=0.01, retry_max=0.05,
    )
    m = PoolMetrics()
    sources = SamplerSources(writer=writer.stats)
    bad = make_share(99)
    bad = type(bad)(**{**bad.__dict__, "share_hash": "not hex"})

    async def sample() -> None:
        await m.sample(sources)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            with trio.fail_after(30):
                await writer.record_many([make_share(i) for i in range(10)] + [bad])
                await writer.drained()
                await sample()
                assert value(m, "stope_db_up") == 1.0 and value(m, "stope_spool_full") == 0.0
                assert value(m, "stope_db_rows_written_total") == 7.0
                assert value(m, "stope_db_rows_duplicate_total") == 3.0
                assert value(m, "stope_db_quarantined_records_total") == 1.0
                assert value(m, "stope_db_outages_total") == 0.0
                assert value(m, "stope_spool_fsyncs_total") >= 1.0

                # The database goes away: its file is moved and a directory takes its place.
                engine.dispose()
                db.rename(db.with_suffix(".away"))
                db.mkdir()
                accepted, refused = 10, 0
                for k in range(200):
                    try:
                        await writer.record_many([make_share(1000 + k * 5 + i) for i in range(5)])
                        accepted += 5
                    except SpoolFull:
                        refused += 5
                        break
                    await trio.sleep(0)
                while writer.db_up:
                    await trio.sleep(0.01)
                await sample()
                assert refused == 5, "the spool limit was not reached"
                assert value(m, "stope_db_up") == 0.0 and value(m, "stope_spool_full") == 1.0
                assert value(m, "stope_db_outages_total") == 1.0
                assert value(m, "stope_spool_refused_shares_total") == 5.0
                assert value(m, "stope_spool_segments") >= 1.0

                # It comes back: the writer catches up and the figures say so.
                db.rmdir()
                db.with_suffix(".away").rename(db)
                await writer.drained()
                with trio.fail_after(5):
                    while writer.spool.segments:
                        await trio.sleep(0.02)
                await sample()
                assert value(m, "stope_db_up") == 1.0 and value(m, "stope_spool_full") == 0.0
                assert value(m, "stope_spool_segments") == 0.0
                assert value(m, "stope_db_outages_total") == 1.0
                assert value(m, "stope_db_rows_written_total") == accepted - 3
                assert value(m, "stope_spool_fsyncs_total") == float(writer.spool.fsyncs)
                assert value(m, "stope_spool_bytes") == 0.0 and value(m, "stope_db_queue_depth") == 0.0
            nursery.cancel_scope.cancel()
        assert share_count(engine) == accepted
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", [n for n, _, _ in WRITER_GAUGES] + [f"{n}_total" for n, _, _ in WRITER_TOTALS])
def test_writer_figures_are_documented(name: str) -> None:
    from pool.storage.writer import WriterStats

    m = PoolMetrics()
    stats = WriterStats(db_up=True, queue_depth=0, pending=0, spool_bytes=0, spool_segments=0, spool_full=False,
                        spool_refused=0, fsyncs=0, rows_written=0, rows_duplicate=0, batches=0, outages=0, quarantined=0)
    m.sample_writer(stats)
    text = generate_latest(m.registry).decode()
    kind = "counter" if name.endswith("_total") else "gauge"
    assert f"# HELP {name} " in text and f"# TYPE {name} {kind}" in text
    assert value(m, name) == (1.0 if name == "stope_db_up" else 0.0)
