"""Work propagation: new tip to the last miner notified, beside the kernel floor.

Processes: the pool (``bench.server``, embedded devnet), the floor sender
(``bench.floor``: a plain loop of socket sends), and client processes
(``bench.clients``) holding N connections to each. Every client connection
timestamps the arrival of the complete clean ``mining.notify`` line with
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for all processes).

A pool trial: the server mines a block on the devnet; the pool learns of it
(long-poll), fetches the template, builds the job, and broadcasts. Two
figures per trial: from the job reaching the pool's ``on_job`` to the last
miner's receipt (what the broadcast costs, comparable with the floor), and
from the node having the tip to the last receipt (adds the template fetch
and job build). A floor trial: the floor process writes the same notify
bytes to its N sockets; from before its first send to the last receipt.
Pool and floor trials alternate, so background load hits both alike.

The notify is ~1 KB (a devnet template with 255 transactions: a merkle
branch of 8 hashes), like a mainnet job.

Alone it also prints the time the cyclic garbage collector paused the pool
during each trial (p50/p99, and how many full collections there were): a
full collection landing in a broadcast is what its p99 is made of.

Run alone: ``.venv/bin/python -m bench.broadcast [--quick] [--sizes 1000,10000]``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, Child, module_args, percentile

PER_CLIENT = 5000


def server_settings() -> dict[str, Any]:
    return {
        # The regtest limit: the devnet mines its block in a couple of hashes.
        "devnet": {"port": 0, "difficulty": "0.000000001", "synthetic_txs": 255},
        "stratum": {"host": "127.0.0.1", "port": 0, "limits": {"max_connections": 0, "max_connections_per_ip": 0}},
        "metrics": {"port": 0},
        "node": {"refresh_interval": 3600},
    }


def _gather(clients: list[Child], timeout: float) -> tuple[float, int]:
    """The last receipt time over all clients, and how many receipts there were."""
    last = -math.inf
    count = 0
    for c in clients:
        msg = c.recv(timeout)
        if msg.get("event") != "received":
            raise BenchError(f"unexpected client message {msg}")
        times = msg["times"]
        if len(times) < msg["connections"]:
            raise BenchError(f"only {len(times)} of {msg['connections']} connections got the notify")
        if times:
            last = max(last, times[-1])
        count += len(times)
    return last, count


def _arm(clients: list[Child], group: str) -> None:
    for c in clients:
        c.send({"cmd": "arm", "group": group})
    for c in clients:
        if c.recv(10).get("event") != "armed":
            raise BenchError("client did not arm")


def measure_size(tmp: Path, n: int, trials: int) -> dict[str, Any]:
    server = Child(
        module_args("server", "--settings", json.dumps(server_settings()), "--data-dir", str(tmp / f"bc{n}-data")),
        log_path=tmp / f"broadcast-{n}-server.log",
    )
    floor = Child(module_args("floor"), log_path=tmp / f"broadcast-{n}-floor.log")
    nclients = max(1, math.ceil(n / PER_CLIENT))
    clients = [Child(module_args("clients"), log_path=tmp / f"broadcast-{n}-client{i}.log") for i in range(nclients)]
    pool_job: list[float] = []
    pool_tip: list[float] = []
    pool_return: list[float] = []
    floor_last: list[float] = []
    floor_loop: list[float] = []
    gc_seconds: list[float] = []
    gc_full = 0
    try:
        ready = server.recv(timeout=180)
        # A clean job's line, for the floor to send (same bytes the pool sends).
        server.call({"cmd": "tip"}, timeout=30)
        line = server.call({"cmd": "notify_line"})["line"]
        fport = floor.call({"cmd": "listen"})["port"]
        shares = [n // nclients + (1 if i < n % nclients else 0) for i in range(nclients)]
        for i, (c, count) in enumerate(zip(clients, shares)):
            c.send({"cmd": "open", "port": fport, "count": count, "source": f"127.0.0.{2 + i}", "stratum": False, "group": "floor"})
        floor.call({"cmd": "accept", "count": n}, timeout=120)
        for c in clients:
            opened = c.recv(120)
            if opened["ready"] != shares[clients.index(c)]:
                raise BenchError(f"floor connections: {opened}")
        for i, (c, count) in enumerate(zip(clients, shares)):
            c.send({"cmd": "open", "port": ready["port"], "count": count, "source": f"127.0.0.{2 + i}", "stratum": True, "group": "pool"})
        for i, c in enumerate(clients):
            opened = c.recv(300)
            if opened["ready"] != shares[i]:
                raise BenchError(f"pool connections: {opened}")
        working = server.call({"cmd": "stats"})["working"]
        if working != n:
            raise BenchError(f"{working} working connections on the pool, wanted {n}")
        time.sleep(0.5)
        for _ in range(trials):
            _arm(clients, "floor")
            sent = floor.call({"cmd": "send", "data": line})
            last, count = _gather(clients, 30)
            floor_last.append(last - sent["t0"])
            floor_loop.append(sent["t1"] - sent["t0"])
            time.sleep(0.1)
            _arm(clients, "pool")
            tip = server.call({"cmd": "tip"}, timeout=30)
            last, count = _gather(clients, 30)
            pool_job.append(last - tip["t_job"])
            pool_tip.append(last - tip["t_tip"])
            pool_return.append(tip["t_return"] - tip["t_job"])
            gc_seconds.append(sum(tip["gc_seconds"]))
            gc_full += tip["gc_collections"][2]
            time.sleep(0.1)
        notify_bytes = len(line.encode())
    finally:
        for c in clients:
            c.close()
        floor.close()
        server.close()

    def stats(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": percentile(xs, 50) * 1e3, "p99_ms": percentile(xs, 99) * 1e3}

    return {
        "miners": n, "trials": trials, "notify_bytes": notify_bytes,
        "pool_job": stats(pool_job), "pool_tip": stats(pool_tip), "pool_return": stats(pool_return),
        "floor": stats(floor_last), "floor_loop": stats(floor_loop),
        "gc": {**stats(gc_seconds), "full_collections": gc_full},
    }


def measure(tmp: Path, *, quick: bool = False, sizes: tuple[int, ...] = (1000, 10000)) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        trials = (10 if quick else 30) if n <= 2000 else (5 if quick else 15)
        out.append(measure_size(tmp, n, trials))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="stope-bench-") as d:
        for r in measure(Path(d), quick=args.quick, sizes=sizes):
            print(json.dumps(r))


if __name__ == "__main__":
    main()
