"""SIGTERM during mining: miners get client.reconnect, no acknowledged share is lost, exit 0.

The pool runs as a real process (``python -m pool run --config FILE``) on the
embedded devnet. Three miners hash for real (hashlib) and keep submitting
through the shutdown; every share answered ``true`` must be in the database
(by its header hash, which the miner computes itself) once the process has
exited. Then the pool is started again on the same data directory and
serves miners again.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import trio
from sqlalchemy import create_engine, text

from tests.hardening.realminer import Miner

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "pool.toml"
    config.write_text(
        f"""
[pool]
data_dir = "{(tmp_path / 'data').as_posix()}"
[devnet]
port = 0
difficulty = 1
[node]
poll_interval = 0.1
[stratum]
host = "127.0.0.1"
port = {port}
start_difficulty = 0.00002
min_difficulty = 0.00001
target_share_interval = 0.5
max_share_rate = 40
[stratum.shutdown]
grace = 1.0
timeout = 10.0
[checker]
backend = "scalar"
[metrics]
enabled = false
"""
    )
    return config


async def start_pool(config: Path, log: Path) -> trio.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "pool", "--log-level", "info", "run", "--config", str(config)],
            stdout=err,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
    return proc


async def wait_listening(port: int, proc: trio.Process, log: Path) -> None:
    with trio.fail_after(60):
        while True:
            assert proc.returncode is None, log.read_text()[-3000:]
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return


def stored_hashes(tmp_path: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{(tmp_path / 'data' / 'stope.sqlite3').as_posix()}")
    try:
        with engine.connect() as conn:
            # Raw SQL sees the stored form: 32 bytes (the ORM speaks hex).
            return {bytes(row[0]).hex() for row in conn.execute(text("SELECT share_hash FROM shares"))}
    finally:
        engine.dispose()


async def test_sigterm_loses_no_acknowledged_share_and_sends_reconnect(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port)
    log = tmp_path / "pool.log"
    proc = await start_pool(config, log)
    try:
        await wait_listening(port, proc, log)
        miners = [Miner(port, f"rig{i}") for i in range(3)]
        async with trio.open_nursery() as nursery:
            for miner in miners:
                nursery.start_soon(miner.run)
            with trio.fail_after(60):
                while min(len(m.accepted) for m in miners) < 5:
                    await trio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            signalled = trio.current_time()
            with trio.fail_after(20):
                returncode = await proc.wait()
            stopped_in = trio.current_time() - signalled
        logs = log.read_text()
        assert returncode == 0, logs[-3000:]
        assert stopped_in < 8.0, stopped_in
        for miner in miners:
            assert miner.reconnects == [[]], (miner.name, miner.reconnects)
        acknowledged = set().union(*(m.accepted for m in miners))
        stored = stored_hashes(tmp_path)
        assert acknowledged and acknowledged <= stored, sorted(acknowledged - stored)[:5]
        assert "client.reconnect sent to 3 miners" in logs
        assert "every accepted share is committed" in logs

        # Started again on the same data: the spool and database are taken over and miners are served.
        proc = await start_pool(config, log)
        await wait_listening(port, proc, log)
        again = Miner(port, "rig9")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(again.run)
            with trio.fail_after(30):
                while len(again.accepted) < 2:
                    await trio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await proc.wait() == 0
        assert acknowledged | again.accepted <= stored_hashes(tmp_path)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
