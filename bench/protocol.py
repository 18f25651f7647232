"""Sans-IO microbenchmark of the Stratum state machine (``stratum/protocol.py``).

No sockets, no event loop: what the protocol layer itself costs per
connection and per message, each figure beside a baseline measured in the
same run (this box is shared, so ratios are what compare across runs)::

    .venv/bin/python -m bench.protocol            # about 15 s
    .venv/bin/python -m bench.protocol --quick    # a smoke test

**broadcast**: ``job_notification`` for every one of N working connections
(the server's per-connection protocol call when a new job goes out), against
a loop that only appends the shared notify bytes to a list.  The figure that
matters is the difference: the protocol's µs per connection.  Every
connection already has a full job book (``max_jobs`` jobs), as an hour into
a pool's life.  Also the cyclic-GC objects each connection holds (what a
full collection walks) and the time of a full collection.

**submit**: one ``mining.submit`` line through ``receive_line`` and the
accepted ``share_result``, shares arriving at the vardiff target rate (so the
difficulty sits settled, as for a real miner), against a bare
``json.loads`` of the same line and a ``json.dumps`` of the reply.
**no-op**: ``mining.extranonce.subscribe`` through ``receive_line``, the same
baseline.

**memory**: tracemalloc bytes per connection for N connections driven to the
idle state the idle benchmark holds (configure, subscribe, authorize, first
job; one firmware string, every miner its own worker name), plus the
``LineBuffer`` the server keeps per connection after reading those lines;
then the same after ``max_jobs`` more broadcasts (a full job book).
Baseline: a ``__slots__`` record holding just the irreducible per-miner
values (session id, extranonce1, worker name, difficulty, job reference).

The module only uses the protocol's public API, so it runs unchanged on an
older copy of the package (``cd /copy && python -m bench.protocol``).
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import statistics
import sys
import time
import tracemalloc
from fractions import Fraction
from typing import Any

from stratum.extranonce import ExtranonceAllocator, SessionRegistry
from stratum.jobs import JobBook, StratumJob
from stratum.messages import LineBuffer
from stratum.protocol import AuthorizeRequested, ProtocolSettings, ServerConnection, ShareSubmitted

NTIME = 0x6553F100
#: A mainnet-sized network difficulty (every connection's difficulty is far below it).
NETWORK = Fraction(83_148_355_189_239)
WORKER = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew.rig1"


def make_job(n: int, generation: int = 1) -> StratumJob:
    """A job the size the broadcast benchmark sends (~1 KB notify: 8 merkle steps)."""
    return StratumJob(
        job_id=f"{n:x}",
        prevhash=f"{generation:064x}",
        coinb1="02000000010000000000000000000000000000000000000000000000000000000000000000ffffffff35"
        + "03a0bb0d" + "2f53746f70652f" + "00" * 8,
        coinb2="ffffffff02" + "00f2052a01000000" + "16" + "0014" + "ab" * 20 + "0000000000000000266a24aa21a9ed" + "cd" * 32
        + "00000000",
        merkle_branch=tuple(f"{i:02x}" * 32 for i in range(8)),
        version=0x20000000,
        nbits=0x17034219,
        ntime=NTIME,
        clean_jobs=True,
        generation=generation,
        ntime_min=NTIME - 600,
        ntime_max=NTIME + 7200,
    )


def settings() -> ProtocolSettings:
    return ProtocolSettings(start_difficulty=Fraction(1024), min_difficulty=Fraction(1, 1000))


def handshake(worker: str = WORKER) -> list[bytes]:
    return [
        b'{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}',
        b'{"id":2,"method":"mining.subscribe","params":["bitaxe/BM1370/v2.4.0"]}',
        b'{"id":3,"method":"mining.authorize","params":["' + worker.encode() + b'","x"]}',
    ]


def working_connection(jobs: JobBook, registry: SessionRegistry, conf: ProtocolSettings, worker: str = WORKER) -> ServerConnection:
    """Subscribe, configure version rolling, authorize: work starts with the book's current job."""
    conn = ServerConnection(conf, jobs, registry, network_difficulty=NETWORK)
    configure, subscribe, authorize = handshake(worker)
    conn.receive_line(configure, 0.0)
    conn.receive_line(subscribe, 0.0)
    for event in conn.receive_line(authorize, 0.0):
        if isinstance(event, AuthorizeRequested):
            conn.authorize_result(event.request_id, event.username, True, None, 0.0)
    return conn


# --- broadcast ---------------------------------------------------------------------------
def bench_broadcast(n: int, rounds: int) -> dict[str, float]:
    conf = settings()
    jobs = JobBook(max_jobs=conf.max_jobs)
    jobs.add(make_job(1))
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=1))
    conns = [working_connection(jobs, registry, conf) for _ in range(n)]
    # Every connection has a full job book, as after an hour of running.
    job_no = 1
    for _ in range(conf.max_jobs):
        job_no += 1
        job = make_job(job_no)
        jobs.add(job)
        for c in conns:
            c.job_notification(job, 0.0, NETWORK)

    gc.collect()
    before = len(gc.get_objects())
    extra = [working_connection(jobs, registry, conf) for _ in range(1000)]
    for j in range(job_no - conf.max_jobs + 1, job_no + 1):
        for c in extra:
            c.job_notification(jobs.get(f"{j:x}") or make_job(j), 0.0, NETWORK)
    gc.collect()
    gc_objects = (len(gc.get_objects()) - before) / len(extra)
    del extra

    base_t: list[float] = []
    proto_t: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            job_no += 1
            job = make_job(job_no)
            jobs.add(job)
            now = float(job_no)
            out: list[Any] = []
            append = out.append
            t0 = time.perf_counter()
            for c in conns:
                append(job.notify_line)
            base_t.append((time.perf_counter() - t0) / n)
            out = []
            append = out.append
            t0 = time.perf_counter()
            for c in conns:
                append(c.job_notification(job, now, NETWORK))
            proto_t.append((time.perf_counter() - t0) / n)
            assert out[0] == job.notify_line
    finally:
        if gc_was:
            gc.enable()
    t0 = time.perf_counter()
    gc.collect()
    collect = time.perf_counter() - t0
    return {
        "base": statistics.median(base_t),
        "proto": statistics.median(proto_t),
        "gc_objects": gc_objects,
        "collect": collect,
        "n": n,
    }


# --- submit ----------------------------------------------------------------------------
def submit_lines(count: int, job_id: str) -> list[bytes]:
    return [
        b'{"id":%d,"method":"mining.submit","params":["%s","%s","%08x","%08x","%08x","%08x"]}'
        % (i + 10, WORKER.encode(), job_id.encode(), i >> 32, NTIME + 1, i & 0xFFFFFFFF, (i & 0xFF) << 13)
        for i in range(count)
    ]


def bench_submit(count: int, rounds: int) -> dict[str, float]:
    conf = settings()
    base_t: list[float] = []
    proto_t: list[float] = []
    noop_t: list[float] = []
    dumps, loads = json.dumps, json.loads
    noop_lines = [b'{"id":%d,"method":"mining.extranonce.subscribe","params":[]}' % (i + 10) for i in range(count)]
    changes = 0
    for r in range(rounds):
        jobs = JobBook(max_jobs=conf.max_jobs)
        jobs.add(make_job(1))
        registry = SessionRegistry(ExtranonceAllocator(4, server_id=1))
        conn = working_connection(jobs, registry, conf)
        lines = submit_lines(count, "1")

        t0 = time.perf_counter()
        for line in lines:
            msg = loads(line)
            dumps({"id": msg["id"], "result": True, "error": None}, separators=(",", ":")).encode()
        base_t.append((time.perf_counter() - t0) / count)

        # One share per target interval at the difficulty in force: vardiff stays settled.
        now = 0.0
        step = conf.target_share_interval
        t0 = time.perf_counter()
        for line in lines:
            now += step
            for event in conn.receive_line(line, now):
                if type(event) is ShareSubmitted:
                    out = conn.share_result(event.request_id, event.share, None, now)
                    if len(out) > 1:
                        changes += 1
                else:
                    raise AssertionError(f"unexpected {event}")
        proto_t.append((time.perf_counter() - t0) / count)

        t0 = time.perf_counter()
        for line in noop_lines:
            conn.receive_line(line, now)
        noop_t.append((time.perf_counter() - t0) / count)
    return {
        "base": statistics.median(base_t),
        "proto": statistics.median(proto_t),
        "noop": statistics.median(noop_t),
        "changes": changes / rounds,
    }


# --- memory ------------------------------------------------------------------------------
class _Floor:
    __slots__ = ("difficulty", "extranonce1", "job", "session_id", "worker")

    def __init__(self, session_id: str, extranonce1: bytes, worker: str, difficulty: Fraction, job: StratumJob) -> None:
        self.session_id = session_id
        self.extranonce1 = extranonce1
        self.worker = worker
        self.difficulty = difficulty
        self.job = job


def bench_memory(n: int) -> dict[str, Any]:
    conf = settings()
    jobs = JobBook(max_jobs=conf.max_jobs)
    job = make_job(1)
    jobs.add(job)
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=1))
    # Warm every code path (caches, free lists) before measuring.
    warm = [working_connection(jobs, registry, conf, f"{WORKER}-warm{i}") for i in range(50)]
    LineBuffer().feed(b"".join(line + b"\n" for line in handshake()))
    gc.collect()

    # Every miner its own worker name (as on a pool of many owners); one firmware.
    workers = [f"{WORKER}{i}" for i in range(n)]
    later = [make_job(2 + i) for i in range(conf.max_jobs)]
    for j in later:
        assert j.notify_line
    tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot()
    conns = []
    buffers = []
    for worker in workers:
        buf = LineBuffer()
        buf.feed(b"".join(line + b"\n" for line in handshake(worker)))
        conns.append(working_connection(jobs, registry, conf, worker))
        buffers.append(buf)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    # Fresh copies of the values (not the connections' own objects), as a leaner session would hold them.
    floors = [
        _Floor(secrets.token_hex(8), secrets.token_bytes(4), "".join(["w", w[1:]]), c.difficulty, job) for c, w in zip(conns, workers, strict=True)
    ]
    snap2 = tracemalloc.take_snapshot()
    # An hour later: every connection has max_jobs job ids on its book.
    for j in later:
        jobs.add(j)
        for c in conns:
            c.job_notification(j, 0.0, NETWORK)
    gc.collect()
    snap3 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_conn = sum(s.size_diff for s in snap1.compare_to(snap0, "filename")) / n
    floor = sum(s.size_diff for s in snap2.compare_to(snap1, "filename")) / n
    full = per_conn + sum(s.size_diff for s in snap3.compare_to(snap2, "filename")) / n
    top = [
        ("/".join(s.traceback[0].filename.split("/")[-2:]) + f":{s.traceback[0].lineno}", s.size_diff / n)
        for s in snap1.compare_to(snap0, "lineno")[:8]
        if s.size_diff > 0
    ]
    del warm, floors
    return {"per_conn": per_conn, "floor": floor, "full": full, "top": top, "n": n, "max_jobs": conf.max_jobs}


# --- report -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer connections and rounds (smoke test)")
    parser.add_argument("--connections", type=int, default=None, help="broadcast connections (default 10000)")
    args = parser.parse_args(argv)
    n_bcast = args.connections or (1000 if args.quick else 10_000)
    rounds = 3 if args.quick else 15
    submits = 2000 if args.quick else 20_000
    n_mem = 500 if args.quick else 2000

    b = bench_broadcast(n_bcast, rounds)
    s = bench_submit(submits, rounds if not args.quick else 3)
    m = bench_memory(n_mem)

    us = 1e6
    rows = [
        (
            f"broadcast: job_notification x {b['n']:,}",
            f"{b['proto'] * us:.3f} µs/conn (+{(b['proto'] - b['base']) * us:.3f} µs over baseline)",
            f"append shared bytes: {b['base'] * us:.3f} µs/conn",
            f"{b['proto'] / b['base']:.2f}x",
        ),
        (
            "broadcast: GC-tracked objects per working conn",
            f"{b['gc_objects']:.1f} (full collect with {b['n']:,} conns: {b['collect'] * 1e3:.1f} ms)",
            "",
            "",
        ),
        (
            "submit: receive_line + share_result",
            f"{s['proto'] * us:.2f} µs/share ({s['changes']:.0f} difficulty changes per {submits:,})",
            f"json.loads + json.dumps: {s['base'] * us:.2f} µs",
            f"{s['proto'] / s['base']:.2f}x",
        ),
        (
            "no-op: mining.extranonce.subscribe",
            f"{s['noop'] * us:.2f} µs/msg",
            f"json.loads + json.dumps: {s['base'] * us:.2f} µs",
            f"{s['noop'] / s['base']:.2f}x",
        ),
        (
            f"memory: idle ServerConnection + LineBuffer (x{m['n']:,})",
            f"{m['per_conn']:,.0f} B/conn",
            f"slotted record of the same values: {m['floor']:,.0f} B",
            f"{m['per_conn'] / m['floor']:.2f}x",
        ),
        (
            f"memory: the same after {m['max_jobs']} more jobs (full job book)",
            f"{m['full']:,.0f} B/conn",
            f"slotted record of the same values: {m['floor']:,.0f} B",
            f"{m['full'] / m['floor']:.2f}x",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("figure", "protocol", "baseline (same run)", "ratio")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\nlargest allocation sites per idle connection (bytes):")
    for where, size in m["top"]:
        print(f"  {size:8.1f}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
