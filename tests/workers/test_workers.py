"""``stope run --workers 2``: two Stratum processes on one port, one job source, one database.

The real command line as a subprocess on the embedded devnet. Miners connect
until the kernel has put some on each worker (told apart by the
extranonce1 prefix, the worker's server id); each gets shares accepted, every
accepted share lands in the one database, and a block found through one
worker reaches every miner on both workers as a clean job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pool.bitcoin.target import difficulty_to_target
from pool.cpuminer import search
from pool.storage.db import make_engine
from pool.storage.models import Block, Share, Worker
from pool.workers import leftover_spools, worker_spool
from tests.conftest import REPO_ROOT
from tests.pg import free_port

ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"
NETWORK_DIFFICULTY = Fraction(3, 100000)  # ~130 000 hashes a block: well under a second of hashlib
TINY = "1e-12"  # every nonce is a share


class Miner:
    """A scripted Stratum client: subscribe, authorize, submit, watch notifies."""

    def __init__(self, stream: trio.SocketStream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.buf = b""
        self.extranonce1 = b""
        self.extranonce2_size = 4
        self.notifies: list[list[Any]] = []
        self.replies: dict[int, dict[str, Any]] = {}
        self.ids = 10

    async def send(self, method: str, params: list[Any], rid: int | None = None) -> int:
        if rid is None:
            self.ids += 1
            rid = self.ids
        await self.stream.send_all(json.dumps({"id": rid, "method": method, "params": params}).encode() + b"\n")
        return rid

    async def pump(self) -> None:
        """Read one chunk and file what it held."""
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"{self.name}: server closed the connection")
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("method") == "mining.notify":
                self.notifies.append(msg["params"])
            elif msg.get("id") is not None and "method" not in msg:
                self.replies[msg["id"]] = msg

    async def reply(self, rid: int) -> dict[str, Any]:
        while rid not in self.replies:
            await self.pump()
        return self.replies.pop(rid)

    async def start(self) -> None:
        await self.send("mining.subscribe", ["stope-test/1"], 1)
        await self.send("mining.authorize", [f"{ADDRESS}.{self.name}", "x"], 2)
        sub = await self.reply(1)
        self.extranonce1 = bytes.fromhex(sub["result"][1])
        self.extranonce2_size = sub["result"][2]
        assert (await self.reply(2))["result"] is True
        while not self.notifies:
            await self.pump()

    async def submit(self, extranonce2: bytes, nonce: int, job: list[Any] | None = None) -> dict[str, Any]:
        job = job or self.notifies[-1]
        rid = await self.send("mining.submit", [f"{ADDRESS}.{self.name}", job[0], extranonce2.hex(), job[7], f"{nonce:08x}"])
        return await self.reply(rid)


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "pool.toml"
    config.write_text(f"""
[pool]
data_dir = "{tmp_path / 'data'}"

[devnet]
port = 0
difficulty = "{NETWORK_DIFFICULTY.numerator}/{NETWORK_DIFFICULTY.denominator}"

[stratum]
host = "127.0.0.1"
port = {port}
start_difficulty = "{TINY}"
min_difficulty = "{TINY}"
max_difficulty = "{TINY}"

[metrics]
port = 0

[database]
flush_interval = 0.05

[node]
poll_interval = 0.1
""")
    return config


def start_pool(config: Path, log: Path, *, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pool", "--log-level", "info", "run", "--workers", str(workers), "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=config.parent, env=env,
        )


async def wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    with trio.fail_after(90):
        while "pool running" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"stope run --workers exited early:\n{log.read_text()[-4000:]}"
            await trio.sleep(0.1)


async def connect_to_both_workers(port: int, miners: list[Miner]) -> dict[int, list[Miner]]:
    """Connect working miners (appended to ``miners``) until each of two workers has two,
    told apart by the extranonce1 prefix; the kernel picks the worker for each connection."""
    by_prefix: dict[int, list[Miner]] = {}
    with trio.fail_after(30):
        while len(miners) < 64 and (len(by_prefix) < 2 or min(len(v) for v in by_prefix.values()) < 2):
            m = Miner(await trio.open_tcp_stream("127.0.0.1", port), f"m{len(miners)}")
            await m.start()
            miners.append(m)
            by_prefix.setdefault(m.extranonce1[0], []).append(m)
    return by_prefix


async def test_two_workers_share_one_port_job_source_and_database(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    log = tmp_path / "pool.log"
    proc = start_pool(config, log, workers=2)
    miners: list[Miner] = []
    try:
        await wait_ready(proc, log)
        by_prefix = await connect_to_both_workers(port, miners)
        assert sorted(by_prefix) == [0, 1], f"extranonce1 prefixes seen: {sorted(by_prefix)}"
        assert len({m.extranonce1 for m in miners}) == len(miners)
        first_prevhash = miners[0].notifies[-1][1]
        assert all(m.notifies[-1][1] == first_prevhash for m in miners)  # one job source

        # Shares on both workers, all accepted.
        accepted = 0
        with trio.fail_after(30):
            for m in miners:
                for k in range(3):
                    reply = await m.submit(k.to_bytes(m.extranonce2_size, "big"), 0x1000 + k)
                    assert reply["result"] is True and reply["error"] is None, reply
                    accepted += 1

        # A block through worker 1: found for real at the devnet's difficulty.
        finder = by_prefix[1][0]
        job = finder.notifies[-1]
        extranonce2 = (99).to_bytes(finder.extranonce2_size, "big")
        target = difficulty_to_target(NETWORK_DIFFICULTY)
        found = None
        start = 0
        with trio.fail_after(60):
            while found is None:
                found = await trio.to_thread.run_sync(search, job, finder.extranonce1, extranonce2, target, start, 200_000)
                start += 200_000
        reply = await finder.submit(extranonce2, found[0], job)
        assert reply["result"] is True, reply
        accepted += 1

        # The new tip reaches every miner, on both workers, as a clean job.
        with trio.fail_after(20):
            for m in miners:
                while not any(n[8] and n[1] != first_prevhash for n in m.notifies):
                    await m.pump()

        # Every accepted share is in the one database, from miners of both workers.
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'stope.sqlite3'}")
        try:
            with trio.fail_after(20):
                while True:
                    with Session(engine) as session:
                        stored = session.scalar(select(func.count()).select_from(Share))
                        blocks = session.scalars(select(Block.submit_result)).all()
                    if stored == accepted and blocks:
                        break
                    await trio.sleep(0.1)
            with Session(engine) as session:
                names = set(session.scalars(select(Worker.name)).all())
            assert {m.name for m in miners} <= names
            assert blocks == ["accepted"]
        finally:
            engine.dispose()
    finally:
        for m in miners:
            await m.stream.aclose()
        proc.send_signal(signal.SIGINT)
        try:
            await trio.to_thread.run_sync(lambda: proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"stope run --workers did not stop on SIGINT:\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    # Each worker had its own spool beside the single-process one.
    spool = tmp_path / "data" / "spool"
    assert worker_spool(spool, 0).is_dir() and worker_spool(spool, 1).is_dir()


def test_leftover_spools_are_found_for_replay(tmp_path: Path) -> None:
    """A single-process spool, and those of workers beyond N, are replayed by the parent."""
    base = tmp_path / "spool"
    for path in (base, worker_spool(base, 0), worker_spool(base, 2), worker_spool(base, 3)):
        path.mkdir(parents=True)
    for path in (base, worker_spool(base, 0), worker_spool(base, 3)):
        (path / "seg-000000000001.spool").write_bytes(b"x")
    assert leftover_spools(base, 2) == [base, worker_spool(base, 3)]
    assert leftover_spools(base, 4) == [base]


def worker_pids(parent: int) -> list[int]:
    """The parent's child processes (its workers), from /proc."""
    return [
        int(pid) for task in Path(f"/proc/{parent}/task").iterdir() for pid in (task / "children").read_text().split()
    ]


async def assert_refused(port: int, attempts: int = 8) -> None:
    """New connections from this address are closed at once, whichever worker takes them."""
    with trio.fail_after(20):
        for _ in range(attempts):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                assert await stream.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass
            finally:
                await stream.aclose()


async def test_a_ban_in_one_worker_is_a_ban_in_every_worker(tmp_path: Path) -> None:
    """Junk from an address on worker 0 bans it; its miners on worker 1 are dropped too,
    and workers restarted after a crash refuse it for the rest of the ban."""
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + "\n[stratum.abuse]\nban_junk = 4\nban_duration = 60\n")
    log = tmp_path / "pool.log"
    proc = start_pool(config, log, workers=2)
    miners: list[Miner] = []
    try:
        await wait_ready(proc, log)
        by_prefix = await connect_to_both_workers(port, miners)
        assert sorted(by_prefix) == [0, 1]
        offender = by_prefix[0][0]
        for _ in range(8):
            await offender.stream.send_all(b"this is not json\n")
        # Every miner from that address is dropped, on worker 1 as well as on worker 0.
        with trio.fail_after(20):
            for m in by_prefix[1] + by_prefix[0]:
                with pytest.raises((EOFError, trio.BrokenResourceError)):
                    while True:
                        await m.pump()
        assert "decided by another process" in log.read_text(errors="replace")
        # New connections are refused, whichever worker the kernel picks.
        await assert_refused(port)
        # Workers that crash and are restarted serve what is left of the ban.
        for pid in worker_pids(proc.pid):
            os.kill(pid, signal.SIGKILL)
        with trio.fail_after(60):
            while log.read_text(errors="replace").count(" ready (pid ") < 4:
                await trio.sleep(0.1)
        await assert_refused(port)
    finally:
        for m in miners:
            await m.stream.aclose()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
