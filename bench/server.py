"""The server under test: the real pool (``run_pool``: devnet, job manager,
Stratum server, batched checker, spool + SQLite writer, metrics) in its own
process, plus a control channel on stdin/stdout for the controller.

Run by the controller as ``python -m bench.server --settings JSON --data-dir DIR``.
It prints ``{"event": "ready", ...}`` once the pool is serving, then answers
one JSON command per stdin line:

* ``stats``: RSS, connections, shares accepted so far, rows written.
* ``drain``: wait until every accepted share is in the database.
* ``tip``: mine a block on the embedded devnet and wait until the pool has
  broadcast work on it; answers the monotonic times the node had the tip
  (``t_tip``), the job reached ``Pool._on_job`` (``t_job``) and the broadcast
  call returned (``t_return``), so clients' receipt times can be subtracted.

Nothing here changes how the pool works: the only hook is a wrapper around
the job manager's ``on_job`` callback that notes the time.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import emit, raise_nofile, rss_bytes
from pool.config import settings_from_mapping
from pool.jobs import Job
from pool.service import RunningPool, run_pool


class GcClock:
    """Time the cyclic garbage collector spends, by generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.paused = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            gen = info["generation"]
            self.paused[gen] += time.perf_counter() - self._started
            self.count[gen] += 1

    def snapshot(self) -> tuple[list[float], list[int]]:
        return list(self.paused), list(self.count)


GC = GcClock()


class JobClock:
    """Wraps the job manager's ``on_job``: when each job arrived and its broadcast returned."""

    def __init__(self, running: RunningPool) -> None:
        self.running = running
        self.inner = running.pool.jobs.on_job
        self.seen: list[tuple[Job, float, float]] = []
        self.changed = trio.Event()
        running.pool.jobs.on_job = self

    def __call__(self, job: Job) -> None:
        started = time.monotonic()
        self.inner(job)
        self.seen.append((job, started, time.monotonic()))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for_prevhash(self, prevhash: bytes, timeout: float = 10.0) -> tuple[Job, float, float]:
        with trio.fail_after(timeout):
            while True:
                for entry in self.seen:
                    if entry[0].prevhash == prevhash:
                        return entry
                await self.changed.wait()


async def handle(cmd: dict[str, Any], running: RunningPool, clock: JobClock) -> dict[str, Any]:
    pool = running.pool
    what = cmd.get("cmd")
    if what == "stats":
        if cmd.get("gc"):
            gc.collect()
        sessions = pool.stratum.sessions
        return {
            "rss": rss_bytes(os.getpid()),
            "connections": len(sessions),
            "working": sum(1 for s in sessions if s.proto.working),
            "accepted": pool.metrics.shares_accepted._value.get(),
            "rows_written": pool.writer.rows_written,
            "checked": pool.validator.checked,
            "batches": pool.validator.batches,
            "fsyncs": pool.writer.spool.fsyncs,
        }
    if what == "drain":
        started = time.monotonic()
        with trio.fail_after(cmd.get("timeout", 120)):
            await pool.writer.drained()
        return {"rows_written": pool.writer.rows_written, "drain_seconds": time.monotonic() - started}
    if what == "tip":
        chain = running.devnet
        assert chain is not None, "the bench server runs on the embedded devnet"
        working = sum(1 for s in pool.stratum.sessions if s.proto.working)
        paused0, count0 = GC.snapshot()
        chain.generate(1)
        t_tip = time.monotonic()
        job, t_job, t_return = await clock.wait_for_prevhash(chain.tip.hash)
        paused1, count1 = GC.snapshot()
        return {
            "t_tip": t_tip, "t_job": t_job, "t_return": t_return, "working": working,
            "job_id": job.job_id, "notify_bytes": len(job.stratum_job().notify_line),
            "gc_seconds": [b - a for a, b in zip(paused0, paused1)], "gc_collections": [b - a for a, b in zip(count0, count1)],
        }
    if what == "notify_line":
        job = pool.jobs.current
        assert job is not None
        return {"line": job.stratum_job().notify_line.decode()}
    return {"error": f"unknown command {what!r}"}


async def serve(settings_json: str, data_dir: Path) -> None:
    data = json.loads(settings_json)
    data.setdefault("pool", {})["data_dir"] = str(data_dir)
    settings = settings_from_mapping(data)
    async with trio.open_nursery() as nursery:
        running: RunningPool = await nursery.start(run_pool, settings)
        clock = JobClock(running)
        current = running.pool.jobs.current
        emit({
            "event": "ready", "pid": os.getpid(), "port": running.stratum_port, "rss": rss_bytes(os.getpid()),
            "notify_bytes": len(current.stratum_job().notify_line) if current else 0,
        })
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    emit(await handle(json.loads(line), running, clock))
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True, help="pool settings as JSON (sections as in the TOML)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--profile", type=Path, default=os.environ.get("STOPE_BENCH_PROFILE") or None,
                        help="write cProfile stats of the event-loop thread here (or $STOPE_BENCH_PROFILE)")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_nofile()
    if args.profile is None:
        trio.run(serve, args.settings, args.data_dir)
        return
    import cProfile

    profiler = cProfile.Profile(time.thread_time)  # CPU time of the loop thread: robust to a busy machine
    try:
        profiler.runcall(trio.run, serve, args.settings, args.data_dir)
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
