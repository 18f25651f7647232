"""Shared plumbing for the benchmarks: child processes spoken to in JSON lines,
/proc readings (RSS, CPU time), percentiles and the machine description.

Every benchmark process (server, load generator, clients) is a separate OS
process started from the controller (``bench/run.py``), so the load is
generated outside the server being measured, and talks to the controller over
its stdin/stdout, one JSON object per line.  Timestamps are
``time.monotonic()``, which on Linux is CLOCK_MONOTONIC: one clock for every
process on the machine, so a server's "sent at" and a client's "received at"
can be subtracted.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# A regtest payout address (not the pool's own), used as the miners' username.
MINER_ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"


class BenchError(RuntimeError):
    """A benchmark process misbehaved (died, timed out, answered nonsense)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def raise_nofile() -> int:
    """Lift this process's open-file soft limit to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class BusyMeter:
    """Cores busy machine-wide between ``start()`` and ``stop()`` (from /proc/stat).

    Subtracting what the benchmark's own processes used gives the background
    load: on a shared machine a figure measured beside someone's test run is
    not the machine's figure, and the table says so.
    """

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        total = sum(fields[:8])
        idle = fields[3] + fields[4]
        return total - idle, total

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        assert self._start is not None
        busy, total = self._read()
        d_total = total - self._start[1]
        if d_total <= 0:
            return 0.0
        return (busy - self._start[0]) / d_total * (os.cpu_count() or 1)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from every thread's children list)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nofile": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
    }


class Child:
    """A benchmark process driven over JSON lines on its stdin/stdout.

    stderr goes to a log file (kept for post-mortems: its tail is quoted
    when the process dies unexpectedly).
    """

    def __init__(self, args: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process; closed in close()
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO, env=full_env,
        )
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise BenchError(f"{self.args[:4]} died: {self.tail()}") from exc

    def recv(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line from the process (lines not starting with '{' are skipped)."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"{"):
                    return json.loads(line)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.args[:4]}: no answer in {timeout:.0f}s; log: {self.tail()}")
            if not self._sel.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self.proc.wait(5)
                raise BenchError(f"{self.args[:4]} exited with {self.proc.returncode}: {self.tail()}")
            self._buf += chunk

    def call(self, obj: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(obj)
        return self.recv(timeout)

    def tail(self, lines: int = 15) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(text[-lines:])

    def close(self, timeout: float = 15.0) -> None:
        """Ask politely (stdin closed), then terminate, then kill."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._sel.close()
        self._log.close()


def wait_running(server: Child, log: Path, timeout: float = 180) -> int:
    """The Stratum port, from the parent's "pool running: stratum+tcp://HOST:PORT" log line."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"pool running: stratum\+tcp://[^ ]+:(\d+) on", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"stope run --workers did not start: {server.tail()}")
        time.sleep(0.2)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Pool settings (sections of plain values and sub-sections) as a TOML file's text."""
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in data.items() if isinstance(v, dict)}
    out = [f"[{prefix}]"] if prefix and plain else []
    for key, value in plain.items():
        out.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(out) + ("\n" if out else "")
    for key, value in nested.items():
        text += to_toml(value, f"{prefix}.{key}" if prefix else key)
    return text


def module_args(module: str, *args: str) -> list[str]:
    """``python -m bench.<module> args...``."""
    return [PYTHON, "-m", f"bench.{module}", *args]


def emit(obj: dict[str, Any]) -> None:
    """One JSON line to the controller (benchmark processes only)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_commands() -> Any:
    """Commands from the controller, one JSON object per stdin line, until EOF."""
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield json.loads(line)
