"""Run every benchmark and print one table, each figure beside a baseline from the same run.

    .venv/bin/python -m bench              # the full suite (about 5 minutes)
    .venv/bin/python -m bench --quick      # shorter runs, fewer connections (a smoke test)
    .venv/bin/python -m bench --only throughput,broadcast --markdown out.md

Benchmarks (each its own module, runnable alone; see bench/README.md):

* ``throughput``: validated-and-recorded shares/s over TCP, 100 miners, 1 and 8
  in flight, p50/p99 submit latency; baseline: the same server answering a
  method that does nothing (the loop floor).
* ``idle``: idle connections one process holds and memory per connection;
  baseline: a bare trio server holding the same connections.
* ``workers``: connections held by ``stope run --workers N`` on this box.
* ``broadcast``: new tip to the last miner notified, 1 000 and 10 000 miners;
  baseline: the same bytes sent to as many sockets in a plain loop.
* ``checker``, ``db``: the existing ``bench/checker.py`` and ``bench/db.py``,
  run as they are, their key figures quoted.

Every row also shows the machine's *background* load while it ran (busy
cores minus what the benchmark's own processes used): on a shared machine a
figure taken beside someone else's test run is not the machine's figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import broadcast, idle, throughput
from bench.common import PYTHON, REPO, BusyMeter, machine

ALL = ("throughput", "idle", "workers", "broadcast", "checker", "db")


@dataclass
class Row:
    bench: str
    figure: str
    result: str
    baseline: str
    target: str = ""
    verdict: str = ""
    background: str = ""


def _own_cpu() -> float:
    """CPU seconds of this process and every child it has waited for (grandchildren included)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run_throughput(tmp: Path, quick: bool) -> list[Row]:
    out = throughput.measure(tmp, quick=quick)
    runs = {(r["method"], r["inflight"]): r for r in out["runs"]}
    rows = []
    for inflight, target in ((1, 20_000), (8, 50_000)):
        s, f = runs[("submit", inflight)], runs[("noop", inflight)]
        per_core = s["ok_rate"] / max(s["server_cpu"], 1e-9)
        rejected = f", {s['rejected']} refused" if s["rejected"] else ""
        rows.append(Row(
            "throughput", f"shares/s, 100 miners, {inflight} in flight",
            f"{s['ok_rate']:,.0f}/s (p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms){rejected}; "
            f"server {s['server_cpu']:.2f} cores = {per_core:,.0f}/s per core",
            f"no-op {f['rate']:,.0f}/s (p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms); server {f['server_cpu']:.2f} cores",
            f">= {target:,}/s per core", _met(per_core >= target and not s["rejected"]),
            f"{s['background_cpu']:.2f}",
        ))
    single = runs[("submit", 8)]
    multi = throughput.measure_workers(tmp, 2, inflight=8, rate=2 * single["vardiff_rate"], quick=quick)
    wruns = {r["method"]: r for r in multi["runs"]}
    s, f = wruns["submit"], wruns["noop"]
    rows.append(Row(
        "throughput", "shares/s, 100 miners, 8 in flight, stope run --workers 2",
        f"{s['ok_rate']:,.0f}/s (p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms); "
        f"{s['ok_rate'] / single['ok_rate']:.2f}x one process; processes {s['server_cpu']:.2f} cores",
        f"no-op {f['rate']:,.0f}/s (p50 {f['p50_ms']:.2f} ms); processes {f['server_cpu']:.2f} cores",
        "", "", f"{s['background_cpu']:.2f}",
    ))
    recorded = out["rows_written"] >= out["accepted"]
    rows.append(Row(
        "throughput", "accepted shares in the database",
        f"{out['rows_written']:,} of {out['accepted']:,.0f} (writer drained in {out['drain_seconds']:.2f} s after load)",
        f"{out['checked']:,} checked in {out['batches']:,} checker batches; {out['fsyncs']:,} spool fsyncs",
        "all", _met(recorded),
    ))
    return rows


def run_idle(tmp: Path, quick: bool) -> list[Row]:
    n = 5_000 if quick else 19_000
    floor = idle.measure_single(tmp, n, floor=True)
    pool = idle.measure_single(tmp, n)
    worst = max(pool["bytes_per_connection"], pool.get("bytes_per_connection_after_jobs", 0.0))
    steady = (
        f"; {_kb(pool['bytes_per_connection_after_jobs'])} after {pool['jobs_after']} more jobs"
        if "bytes_per_connection_after_jobs" in pool else ""
    )
    return [Row(
        "idle", f"idle connections, one process ({n:,})",
        f"{pool['working']:,} held, {_kb(pool['bytes_per_connection'])} per connection with its first job{steady}",
        f"bare trio: {_kb(floor['bytes_per_connection'])} per connection",
        ">= 19,000 at <= 8 KB", _met(pool["working"] >= 19_000 and worst <= 8192),
    )]


def run_workers(tmp: Path, quick: bool) -> list[Row]:
    total, workers = (12_000, 2) if quick else (50_000, 3)
    out = idle.measure_workers(tmp, total, workers)
    split = "/".join(f"{n:,}" for n in out["sockets_per_worker"])
    return [Row(
        "workers", f"idle connections, stope run --workers {workers}",
        f"{out['connections']:,} held ({split} sockets per worker), {_kb(out['bytes_per_connection'])} per connection",
        "one process: see the row above",
        ">= 50,000 on this box", _met(out["connections"] >= 50_000),
    )]


def run_broadcast(tmp: Path, quick: bool) -> list[Row]:
    rows = []
    for r in broadcast.measure(tmp, quick=quick):
        pool, floor, tip = r["pool_job"], r["floor"], r["pool_tip"]
        ratio = pool["p50_ms"] / floor["p50_ms"]
        rows.append(Row(
            "broadcast", f"new job to last of {r['miners']:,} miners ({r['notify_bytes']} B notify, {r['trials']} trials)",
            f"p50 {pool['p50_ms']:.1f} ms, p99 {pool['p99_ms']:.1f} ms ({ratio:.2f}x floor); "
            f"from the node's new tip: p50 {tip['p50_ms']:.1f} ms",
            f"raw send loop: p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms",
            "<= 1.25x floor", _met(ratio <= 1.25),
        ))
    return rows


def _script(args: list[str], timeout: float) -> str:
    done = subprocess.run([PYTHON, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode not in (0, 1):  # bench/db.py exits 1 when a target is missed
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def run_checker(tmp: Path, quick: bool) -> list[Row]:
    text = _script(["bench/checker.py", "--seconds", "0.3" if quick else "1.0"], 600)
    rows = []
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)x\s+([\d,]+)", line)
        if m and m.group(1) in ("32", "1024"):
            rows.append(Row(
                "checker", f"bench/checker.py, batch {m.group(1)}",
                f"Numba {m.group(3)} shares/s", f"scalar (hashlib) {m.group(2)} shares/s ({m.group(4)}x)",
            ))
    return rows


def run_db(tmp: Path, quick: bool) -> list[Row]:
    args = ["bench/db.py"] + (["--rows", "50000", "--single-rows", "500", "--pipeline-rows", "20000"] if quick else [])
    text = _script(args, 1800)
    rates: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        m = re.match(r"(sqlite|postgresql)\s+(.+?)\s+(\d+)\s+([\d.]+)\s+([\d,]+)(?:\s+[\d.]+)*\s*$", line)
        if m:
            rates[(m.group(1), m.group(2).strip())] = m.group(5)
    growth = dict(re.findall(r"sqlite growth, indexes of (\d{4}) .*?: (.+)$", text, re.M))
    rows = []
    if "0004" in growth:
        rows.append(Row(
            "db", "bench/db.py, sqlite CPU per inserted row as the table grows",
            f"shares indexes now (0004): {growth['0004']}",
            f"the 0003 indexes, same run: {growth.get('0003', '-')}",
        ))
    for db in ("sqlite", "postgresql"):
        mine = {mode: rate for (name, mode), rate in rates.items() if name == db}
        if not mine:
            continue
        batched = ", ".join(f"{mode.removeprefix('batched ')} {rate}/s" for mode, rate in mine.items() if mode.startswith("batched"))
        pipeline = next((rate for mode, rate in mine.items() if mode.startswith("pipeline")), "-")
        rows.append(Row(
            "db", f"bench/db.py, {db} rows/s",
            f"batched: {batched}; pool pipeline (spool fsync + writer): {pipeline}/s",
            f"one row per transaction: {mine.get('one row per transaction', '-')}/s",
        ))
    return rows


RUNNERS: dict[str, Callable[[Path, bool], list[Row]]] = {
    "throughput": run_throughput,
    "idle": run_idle,
    "workers": run_workers,
    "broadcast": run_broadcast,
    "checker": run_checker,
    "db": run_db,
}


def table(rows: list[Row]) -> str:
    """A markdown table (also what the terminal gets: readable as plain text)."""
    head = ["benchmark", "figure", "result", "baseline (same run)", "target", "", "background cores"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.bench, r.figure, r.result, r.baseline, r.target, r.verdict, r.background]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs and fewer connections (not the targets' sizes)")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the machine and the table here")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    info = machine()
    header = (
        f"Stope benchmarks, {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}{' (--quick)' if args.quick else ''}\n"
        f"machine: {info['cpus']} CPUs ({info['cpu']}), {info['ram']} RAM, Linux {info['kernel']}, "
        f"Python {info['python']}, open files limit {info['nofile']}"
    )
    print(header, flush=True)
    rows: list[Row] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="stope-bench-") as d:
        tmp = Path(d)
        for name in chosen:
            print(f"... {name}", file=sys.stderr, flush=True)
            meter = BusyMeter()
            meter.start()
            own0, t0 = _own_cpu(), time.monotonic()
            try:
                got = RUNNERS[name](tmp, args.quick)
            except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others' figures
                traceback.print_exc()
                got = [Row(name, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", "")]
                failures += 1
            elapsed = time.monotonic() - t0
            background = max(0.0, meter.stop() - (_own_cpu() - own0) / elapsed)
            for row in got:
                row.background = row.background or f"{background:.2f}"
            rows += got
            print(f"    {name}: {elapsed:.0f} s", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(header + "\n\n" + text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
