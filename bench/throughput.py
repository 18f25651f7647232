"""End-to-end share throughput: validated-and-recorded shares/s over TCP, beside the loop floor.

One server process (``bench.server``: the whole pool on the embedded devnet,
SQLite), one load-generator process (``bench.loadgen``: 100 miners). Share
difficulty is pinned at 1e-12 (min = max = start), so every nonce the load
generator sends is a valid share: each one is rebuilt into a header and
hashed by the real batched checker, spooled with fsync before ``true`` goes
back, and inserted into SQLite by the writer. After the runs the controller
waits for the writer to drain and checks that the database holds every
accepted share.

The baseline, measured in the same run over the same connections, is the
loop floor: the same server answering ``mining.extranonce.subscribe``, a
method that does no work, with the same number in flight.

Two settings differ from production, because 100 connections stand in for
tens of thousands of real miners: the per-connection message-rate limit is
lifted, and vardiff's target interval is matched to the per-connection rate
actually achieved (one calibration round per level; the server restarts if
the first guess is off by more than 1.3x), so vardiff stays settled instead
of retargeting every few shares of a flood the pinned difficulty will not
let it slow down.

``measure_workers`` runs the same load against ``stope run --workers N``.

Run alone: ``.venv/bin/python -m bench.throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    BusyMeter,
    Child,
    child_pids,
    cpu_seconds,
    module_args,
    to_toml,
    wait_running,
)

SHARE_DIFFICULTY = "1e-12"


#: First guesses of the per-connection share rate (shares/s) at 1 and 8 in flight; calibrated below.
GUESS_RATE = {1: 150.0, 8: 400.0}


def server_settings(rate_per_connection: float = 200.0, **overrides: dict[str, Any]) -> dict[str, Any]:
    """The pool as configured for the throughput runs (devnet, SQLite, pinned share difficulty).

    ``rate_per_connection``: vardiff's target interval is set to match it, so
    vardiff sits settled as it does for a real miner at its difficulty (a few
    shares a minute) instead of retargeting every few shares of a flood that
    the pinned difficulty will not let it slow down.
    """
    data: dict[str, dict[str, Any]] = {
        "devnet": {"port": 0},
        "stratum": {
            "host": "127.0.0.1", "port": 0,
            "start_difficulty": SHARE_DIFFICULTY, "min_difficulty": SHARE_DIFFICULTY, "max_difficulty": SHARE_DIFFICULTY,
            "target_share_interval": 1.0 / rate_per_connection, "max_share_rate": 1e9,
            # 100 connections carry the load of many thousands of real miners: lift the
            # per-connection message rate limit (a real miner sends a few shares a minute).
            "limits": {"max_messages_per_second": 1e9, "message_burst": 1_000_000},
        },
        "metrics": {"port": 0},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return data


def _noop_then_submit(loadgen: Child, pids: list[int], meter: BusyMeter, *, inflight: int, seconds: float,
                      warmup: float, rate: float) -> list[dict[str, Any]]:
    """The baseline (no-op) run, then the share run, each with the server's CPU
    (summed over ``pids``) and the background load measured over it."""
    runs = []
    for method in ("noop", "submit"):
        cpu0, gen0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(loadgen.pid)
        meter.start()
        t0 = time.monotonic()
        result = loadgen.call(
            {"cmd": "run", "method": method, "inflight": inflight, "seconds": seconds, "warmup": warmup},
            timeout=seconds + warmup + 60,
        )
        elapsed = time.monotonic() - t0
        busy = meter.stop()
        result["server_cpu"] = (sum(cpu_seconds(p) for p in pids) - cpu0) / elapsed
        result["background_cpu"] = max(0.0, busy - result["server_cpu"] - (cpu_seconds(loadgen.pid) - gen0) / elapsed)
        result["vardiff_rate"] = rate
        runs.append(result)
    return runs


def _level(tmp: Path, inflight: int, *, miners: int, seconds: float, warmup: float,
           overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One in-flight level: a server calibrated to the load, the no-op run, the share run, the drain."""
    rate = GUESS_RATE[inflight]
    meter = BusyMeter()
    for attempt in range(3):
        settings = server_settings(rate, **overrides)
        server = Child(
            module_args("server", "--settings", json.dumps(settings), "--data-dir", str(tmp / f"tp{inflight}-{attempt}")),
            log_path=tmp / f"throughput-{inflight}-server.log",
        )
        loadgen = Child(module_args("loadgen"), log_path=tmp / f"throughput-{inflight}-loadgen.log")
        try:
            ready = server.recv(timeout=180)
            loadgen.call({"cmd": "setup", "port": ready["port"], "miners": miners}, timeout=60)
            probe = loadgen.call(
                {"cmd": "run", "method": "submit", "inflight": inflight, "seconds": warmup, "warmup": warmup},
                timeout=2 * warmup + 60,
            )
            measured = probe["rate"] / miners
            if attempt < 2 and not rate / 1.3 <= measured <= rate * 1.3:
                rate = measured  # vardiff would not settle at this rate: start over matched to it
                continue
            runs = _noop_then_submit(loadgen, [server.pid], meter, inflight=inflight, seconds=seconds, warmup=warmup, rate=rate)
            before = server.call({"cmd": "stats"})
            drained = server.call({"cmd": "drain", "timeout": 120}, timeout=130)
            after = server.call({"cmd": "stats"})
            return {
                "runs": runs, "accepted": after["accepted"], "rows_written": drained["rows_written"],
                "drain_seconds": drained["drain_seconds"], "batches": after["batches"], "checked": after["checked"],
                "fsyncs": after["fsyncs"], "queued_at_end": before["accepted"] - before["rows_written"],
            }
        finally:
            loadgen.close()
            server.close()
    raise AssertionError("unreachable")


def measure_workers(tmp: Path, workers: int, *, inflight: int, rate: float, quick: bool = False,
                    miners: int = 100) -> dict[str, Any]:
    """The same share load against ``stope run --workers N`` (the real command line).

    The kernel spreads the 100 connections over the workers; CPU is summed over
    the parent and its workers. ``rate``: vardiff's per-connection rate, from the
    single-process run (no calibration round here).
    """
    seconds = 3.0 if quick else 6.0
    warmup = 1.0 if quick else 2.0
    settings = server_settings(rate)
    settings["pool"] = {"data_dir": str(tmp / f"tpw{workers}-data")}
    config = tmp / f"throughput-workers{workers}.toml"
    config.write_text(to_toml(settings))
    log = tmp / f"throughput-workers{workers}.log"
    server = Child([PYTHON, "-m", "pool", "--log-level", "info", "run", "--workers", str(workers), "--config", str(config)],
                   log_path=log)
    loadgen = Child(module_args("loadgen"), log_path=tmp / f"throughput-workers{workers}-loadgen.log")
    meter = BusyMeter()
    try:
        port = wait_running(server, log)
        pids = [server.pid, *child_pids(server.pid)]
        loadgen.call({"cmd": "setup", "port": port, "miners": miners}, timeout=60)
        runs = _noop_then_submit(loadgen, pids, meter, inflight=inflight, seconds=seconds, warmup=warmup, rate=rate)
    finally:
        loadgen.close()
        server.close(timeout=60)
    return {"workers": workers, "runs": runs}


def measure(tmp: Path, *, quick: bool = False, miners: int = 100,
            overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    seconds = 3.0 if quick else 6.0
    warmup = 1.0 if quick else 2.0
    levels = [_level(tmp, k, miners=miners, seconds=seconds, warmup=warmup, overrides=overrides or {}) for k in (1, 8)]
    return {
        "runs": [r for level in levels for r in level["runs"]],
        **{key: sum(level[key] for level in levels) for key in ("accepted", "rows_written", "batches", "checked", "fsyncs")},
        "drain_seconds": max(level["drain_seconds"] for level in levels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--settings", default=None, help="extra pool settings as JSON, merged over the bench's")
    args = parser.parse_args()
    extra = json.loads(args.settings) if args.settings else {}
    with tempfile.TemporaryDirectory(prefix="stope-bench-") as d:
        out = measure(Path(d), quick=args.quick, overrides=extra)
    for r in out["runs"]:
        print(
            f"{r['method']:>6} x{r['inflight']}: {r['rate']:>9,.0f}/s ok={r['ok']} rejected={r['rejected']} "
            f"p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms server_cpu={r['server_cpu']:.2f} "
            f"loadgen_cpu={r['loadgen_cpu']:.2f} background={r['background_cpu']:.2f} vardiff_rate={r['vardiff_rate']:.0f} {r['errors'][:1]}"
        )
    print({k: v for k, v in out.items() if k != "runs"})


if __name__ == "__main__":
    main()
