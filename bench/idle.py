"""Idle connections held, and memory per connection.

One process: the pool (``bench.server``) alone, ``--connections`` miners
(default 19 000, under the 20 000 open-file limit of one process) opened
from a client process, each subscribed and authorized and holding its
first job. Memory per connection is the server's RSS growth divided by the
connections (its RSS before the first connection is the zero). The
baseline is ``bench.triofloor`` measured the same way: a bare trio server,
one task per socket answering the handshake with canned bytes.

Several processes: ``stope run --workers N`` (the real command line, SQLite,
embedded devnet) and ``--total`` connections (default 50 000) from several
client processes, each on its own loopback source address (127.0.0.x) so no
client runs out of ephemeral ports. RSS is summed over the parent and its
children; connections per process are counted from /proc.

Run alone: ``.venv/bin/python -m bench.idle [--connections N] [--total N --workers N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    BenchError,
    Child,
    child_pids,
    module_args,
    rss_bytes,
    wait_running,
)

PER_CLIENT = 17_000
# Every connection comes from loopback: no server-wide or per-address cap.
UNLIMITED_CONNECTIONS = {"max_connections": 0, "max_connections_per_ip": 0}


def server_settings() -> dict[str, Any]:
    return {
        # The regtest limit: a new block (for the after-jobs reading) in a couple of hashes.
        "devnet": {"port": 0, "difficulty": "0.000000001"},
        "stratum": {"host": "127.0.0.1", "port": 0, "limits": UNLIMITED_CONNECTIONS},
        "metrics": {"port": 0},
    }


def _open(clients: list[Child], port: int, total: int, *, timeout: float = 600) -> tuple[int, float]:
    shares = [total // len(clients) + (1 if i < total % len(clients) else 0) for i in range(len(clients))]
    started = time.monotonic()
    for i, (c, count) in enumerate(zip(clients, shares)):
        c.send({"cmd": "open", "port": port, "count": count, "source": f"127.0.0.{2 + i}", "stratum": True, "window": 512})
    ready = 0
    for c in clients:
        msg = c.recv(timeout)
        if msg.get("failed") or msg.get("stuck"):
            raise BenchError(f"client could not open every connection: {msg}")
        ready += msg["ready"]
    return ready, time.monotonic() - started


#: New jobs broadcast before the second memory reading: more than a connection's
#: job book holds (protocol ``max_jobs``), so the steady state is measured, not
#: a connection that has seen one job.
JOBS_AFTER = 70


def measure_single(tmp: Path, connections: int, *, floor: bool = False, jobs_after: int = JOBS_AFTER) -> dict[str, Any]:
    """The pool (or, with ``floor``, the bare trio server) holding ``connections`` idle miners.

    For the pool, a second reading follows ``jobs_after`` new blocks (each a
    clean job broadcast to every miner): what a connection costs once its
    job book is full, as it is after half an hour of real work.
    """
    if floor:
        server = Child(module_args("triofloor"), log_path=tmp / "idle-floor.log")
    else:
        server = Child(
            module_args("server", "--settings", json.dumps(server_settings()), "--data-dir", str(tmp / "idle-data")),
            log_path=tmp / "idle-server.log",
        )
    clients = [Child(module_args("clients"), log_path=tmp / f"idle-client{i}.log") for i in range(math.ceil(connections / PER_CLIENT))]
    try:
        ready = server.recv(timeout=180)
        time.sleep(1.0)
        before = server.call({"cmd": "stats"})["rss"]
        held, seconds = _open(clients, ready["port"], connections)
        time.sleep(1.0)
        after = server.call({"cmd": "stats"})
        steady = None
        if not floor and jobs_after:
            for _ in range(jobs_after):
                server.call({"cmd": "tip"}, timeout=120)
            time.sleep(1.0)
            steady = server.call({"cmd": "stats"})
    finally:
        for c in clients:
            c.close()
        server.close()
    if after["working"] != connections:
        raise BenchError(f"{after['working']} of {connections} connections working")
    result = {
        "connections": held, "working": after["working"], "open_seconds": seconds,
        "rss_before": before, "rss_after": after["rss"], "bytes_per_connection": (after["rss"] - before) / connections,
    }
    if steady is not None:
        if steady["working"] != connections:
            raise BenchError(f"{steady['working']} of {connections} connections working after {jobs_after} jobs")
        result.update(jobs_after=jobs_after, rss_after_jobs=steady["rss"],
                      bytes_per_connection_after_jobs=(steady["rss"] - before) / connections)
    return result


def _sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            continue
    return n


def measure_workers(tmp: Path, total: int, workers: int) -> dict[str, Any]:
    data = tmp / "workers-data"
    config = tmp / "workers.toml"
    config.write_text(
        f'[pool]\ndata_dir = "{data}"\n[devnet]\nport = 0\n[stratum]\nhost = "127.0.0.1"\nport = 0\n'
        '[stratum.limits]\nmax_connections = 0\nmax_connections_per_ip = 0\n[metrics]\nport = 0\n'
    )
    log = tmp / "workers-server.log"
    server = Child([PYTHON, "-m", "pool", "--log-level", "info", "run", "--workers", str(workers), "--config", str(config)],
                   log_path=log)
    clients = [Child(module_args("clients"), log_path=tmp / f"workers-client{i}.log") for i in range(math.ceil(total / PER_CLIENT))]
    try:
        port = wait_running(server, log)
        time.sleep(1.0)
        pids = [server.pid, *child_pids(server.pid)]
        before = sum(rss_bytes(p) for p in pids)
        held, seconds = _open(clients, port, total)
        time.sleep(2.0)
        after = sum(rss_bytes(p) for p in pids)
        per_process = [_sockets(p) for p in child_pids(server.pid)]
    finally:
        for c in clients:
            c.close()
        server.close()
    return {
        "workers": workers, "connections": held, "open_seconds": seconds, "rss_before": before, "rss_after": after,
        "bytes_per_connection": (after - before) / total, "sockets_per_worker": per_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=19_000)
    parser.add_argument("--total", type=int, default=0, help="connections for the --workers run (0: skip)")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stope-bench-") as d:
        if args.connections:
            print(json.dumps(measure_single(Path(d), args.connections, floor=True)))
            print(json.dumps(measure_single(Path(d), args.connections)))
        if args.total:
            print(json.dumps(measure_workers(Path(d), args.total, args.workers)))


if __name__ == "__main__":
    main()
