"""Fault test: PostgreSQL stops for several seconds while shares flow.

Every share the pool answered ``true`` must be in the database afterwards,
exactly once; while the server is down the pool keeps acknowledging shares
(they are in the spool) and reports the outage.
"""

from __future__ import annotations

import pytest
import trio
from sqlalchemy import select
from sqlalchemy.orm import Session

from pool.service import run_pool
from pool.storage.db import make_engine
from pool.storage.models import Share
from tests.pg import ExternalPostgres, PostgresCluster, services_required
from tests.pool_fixtures import devnet_settings
from tests.storage.helpers import ADDRESS, hash_counts
from tests.storage.stratum_load import LOAD_STRATUM, LoadClient, LoadStats

OUTAGE_SECONDS = 4.0


async def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_outage_loses_no_acknowledged_share(pg_server: PostgresCluster | ExternalPostgres, tmp_path, caplog):
    if not pg_server.can_restart:
        reason = "the fault test needs a throwaway cluster it can stop (not STOPE_TEST_POSTGRES_URL)"
        pytest.fail(reason) if services_required() else pytest.skip(reason)
    url = pg_server.create_database()
    settings = devnet_settings(
        tmp_path,
        database={"url": url},
        devnet={"difficulty": "1"},  # no blocks (and so no stale shares) during the test
        stratum=LOAD_STRATUM,
        metrics={"enabled": False},
    )
    stats = LoadStats()
    stop = trio.Event()
    counts = {}
    try:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_pool, settings)
            writer = running.pool.writer
            async with trio.open_nursery() as clients:
                for k in range(4):
                    client = LoadClient("127.0.0.1", running.stratum_port, f"{ADDRESS}.w{k}", stats=stats)
                    clients.start_soon(client.run, stop)
                await wait_for(lambda: len(stats.acked) >= 300, 30, "shares flowing")
                assert writer.db_up
                await trio.to_thread.run_sync(pg_server.stop)
                at_stop = len(stats.acked)
                await wait_for(lambda: not writer.db_up, 10, "the writer to notice the outage")
                await trio.sleep(OUTAGE_SECONDS)
                during = len(stats.acked) - at_stop
                backlog = writer.pending
                spooled = writer.stats().spool_bytes
                await trio.to_thread.run_sync(pg_server.start)
                await trio.sleep(1.0)
                stop.set()
            with trio.fail_after(30):
                await writer.drained()
            assert writer.db_up and writer.outages >= 1
            nursery.cancel_scope.cancel()
    finally:
        if not pg_server.running:
            pg_server.start()

    print(f"acked {len(stats.acked)}, {during} during the outage, backlog {backlog}, spool {spooled} bytes")
    assert during > 100, f"only {during} shares acknowledged while the database was down"
    assert backlog > 0 and spooled > 0
    assert not stats.rejected, stats.rejected[:3]
    engine = make_engine(url)
    try:
        counts = hash_counts(engine)
        with Session(engine) as session:
            assert session.scalar(select(Share.id).limit(1)) is not None
    finally:
        engine.dispose()
    assert set(counts.values()) == {1}
    # Every acknowledged share, exactly once, and nothing else (every submit got its answer).
    assert set(counts) == stats.acked
    assert "database unavailable" in caplog.text and "available again" in caplog.text
