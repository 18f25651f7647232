"""Crash test: the pool process is SIGKILLed while shares flow.

After a restart on the same data directory, every share that got ``true``
before the kill is in the database exactly once (the spool is replayed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pool.storage.db import make_engine
from tests.conftest import REPO_ROOT
from tests.pg import free_port
from tests.storage.helpers import ADDRESS, hash_counts
from tests.storage.stratum_load import TINY_DIFFICULTY, LoadClient, LoadStats


def write_config(tmp_path: Path, stratum_port: int, db_url: str) -> Path:
    config = tmp_path / "pool.toml"
    config.write_text(f"""
[pool]
data_dir = "{tmp_path / 'data'}"

[devnet]
port = 0
difficulty = 1

[stratum]
host = "127.0.0.1"
port = {stratum_port}
start_difficulty = "{TINY_DIFFICULTY}"
min_difficulty = "{TINY_DIFFICULTY}"
max_difficulty = "{TINY_DIFFICULTY}"

[stratum.limits]
max_messages_per_second = 1000000
message_burst = 1000000

[metrics]
enabled = false

[database]
url = "{db_url}"
# Commit every quarter second, so at the kill many acknowledged shares are in the spool only.
batch_size = 100000
flush_interval = 0.25

[node]
poll_interval = 0.1
""")
    return config


def start_pool(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pool", "--log-level", "info", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=config.parent, env=env,
        )


async def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    with trio.fail_after(60):
        while True:
            assert proc.poll() is None, f"pool exited early:\n{log.read_text()[-3000:]}"
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


@pytest.mark.slow
async def test_sigkill_loses_no_acknowledged_share(db_url: str, tmp_path: Path):
    port = free_port()
    config = write_config(tmp_path, port, db_url)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    proc = start_pool(config, first_log)
    try:
        await wait_listening(port, proc, first_log)
        stats = LoadStats()
        stop = trio.Event()
        async with trio.open_nursery() as clients:
            for k in range(4):
                clients.start_soon(LoadClient("127.0.0.1", port, f"{ADDRESS}.w{k}", stats=stats).run, stop)
            with trio.fail_after(60):
                while len(stats.acked) < 3000:
                    await trio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)  # mid-flow: submits are in flight on every connection
            await trio.to_thread.run_sync(proc.wait)
            stop.set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked = set(stats.acked)
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 3000 and not stats.rejected

    engine = make_engine(db_url)
    try:
        at_kill = hash_counts(engine)  # what had reached the database when the process died
        leftover = sorted(p.name for p in (tmp_path / "data" / "spool").glob("seg-*"))
        assert leftover, "the kill left no spool segment: nothing was exercised"

        proc = start_pool(config, second_log)
        try:
            await wait_listening(port, proc, second_log)
            with trio.fail_after(60):
                while not acked <= set(hash_counts(engine)):
                    await trio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                await trio.to_thread.run_sync(lambda: proc.wait(timeout=15))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        counts = hash_counts(engine)
    finally:
        engine.dispose()

    assert acked <= set(counts), f"{len(acked - set(counts))} acknowledged shares missing"
    assert set(counts.values()) == {1}  # exactly once
    assert len(counts) >= len(acked)  # plus any share written but not yet answered when the process died
    assert len(acked - set(at_kill)) > 0, "every acknowledged share had reached the database: the spool was not needed"
    assert "left by a previous run" in second_log.read_text()
    print(f"acked {len(acked)}, in the database at the kill {len(at_kill)}, after restart {len(counts)}; spool left: {leftover}")
