"""Share load generator: N miners over TCP, K requests in flight each, in its own process.

Driven by the controller over stdin/stdout (JSON lines). ``setup`` opens the
connections (subscribe + authorize, waits for the first ``mining.notify``);
each ``run`` then keeps ``inflight`` requests outstanding on every
connection for ``warmup + seconds`` and answers how many came back in the
measured ``seconds``, with their latency percentiles.

Requests are ``mining.submit`` (a fresh extranonce2 per share, so none is a
duplicate; at the bench's share difficulty every nonce is a valid share) or,
for the loop-floor baseline, ``mining.extranonce.subscribe``: a method the
server answers without any work, over the same connections, so the
difference between the two is what judging and recording a share costs.

Written for speed in plain Python (epoll, blocking sends of a few hundred
bytes, byte-level parsing of the replies): the controller reports this
process's CPU use beside the result, to show the generator was not the
bottleneck.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from typing import Any

from bench.common import (
    MINER_ADDRESS,
    cpu_seconds,
    emit,
    percentile,
    raise_nofile,
    read_commands,
)

SUBMIT = b'{"id":%d,"method":"mining.submit","params":["%s","%s","%s","%s","%08x"]}\n'
NOOP = b'{"id":%d,"method":"mining.extranonce.subscribe","params":[]}\n'


class Miner:
    __slots__ = ("buf", "en2", "en2_size", "errors", "fd", "job_id", "next_id", "ntime", "sent", "sock", "worker")

    def __init__(self, sock: socket.socket, worker: bytes) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.worker = worker
        self.job_id = b""
        self.ntime = b""
        self.en2_size = 4
        self.en2 = 0
        self.next_id = 100
        self.sent: dict[int, float] = {}
        self.errors = 0

    def notify(self, line: bytes) -> None:
        params = json.loads(line)["params"]
        self.job_id = params[0].encode()
        self.ntime = params[7].encode()


def setup(port: int, miners: int, host: str = "127.0.0.1") -> list[Miner]:
    out = []
    for i in range(miners):
        sock = socket.create_connection((host, port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        m = Miner(sock, f"{MINER_ADDRESS}.m{i}".encode())
        sock.sendall(
            b'{"id":1,"method":"mining.subscribe","params":["stope-loadgen/1"]}\n'
            + b'{"id":2,"method":"mining.authorize","params":["%s","x"]}\n' % m.worker
        )
        out.append(m)
    for m in out:
        buf = b""
        while not m.job_id:
            chunk = m.sock.recv(65536)
            if not chunk:
                raise SystemExit("server closed a connection during setup")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("id") == 1:
                    m.en2_size = int(msg["result"][2])
                elif msg.get("method") == "mining.notify":
                    m.notify(line)
        m.buf = buf
        m.sock.settimeout(None)
    return out


def run(miners: list[Miner], *, method: str, inflight: int, seconds: float, warmup: float) -> dict[str, Any]:
    ep = select.epoll()
    by_fd = {m.fd: m for m in miners}
    for m in miners:
        ep.register(m.fd, select.EPOLLIN)
    submit = method == "submit"
    width = 2 * miners[0].en2_size

    def requests(m: Miner, n: int, now: float) -> bytes:
        parts = []
        sent = m.sent
        for _ in range(n):
            rid = m.next_id
            m.next_id = rid + 1
            if submit:
                m.en2 += 1
                parts.append(SUBMIT % (rid, m.worker, m.job_id, b"%0*x" % (width, m.en2), m.ntime, rid & 0xFFFFFFFF))
            else:
                parts.append(NOOP % rid)
            sent[rid] = now
        return b"".join(parts)

    started = time.monotonic()
    measure_from = started + warmup
    measure_to = measure_from + seconds
    latencies: list[float] = []
    ok = 0
    rejected = 0
    error_sample: list[str] = []
    cpu_at_start: float | None = None
    for m in miners:
        m.sock.sendall(requests(m, inflight, started))
    sending = True
    outstanding = len(miners) * inflight
    drain_until = measure_to + 10.0
    while outstanding:
        events = ep.poll(0.5)
        now = time.monotonic()
        if sending and now >= measure_to:
            sending = False
        if cpu_at_start is None and now >= measure_from:
            cpu_at_start = cpu_seconds(os.getpid())
        if now > drain_until:
            break
        in_window = measure_from <= now < measure_to
        for fd, _ev in events:
            m = by_fd[fd]
            data = m.sock.recv(262144)
            if not data:
                raise SystemExit("server closed a connection")
            lines = (m.buf + data).split(b"\n")
            m.buf = lines.pop()
            done = 0
            sent = m.sent
            for line in lines:
                if line.startswith(b'{"id":null'):
                    if b'"mining.notify"' in line:
                        m.notify(line)
                    continue
                rid = int(line[6 : line.index(b",", 6)])
                t0 = sent.pop(rid, None)
                if t0 is None:
                    continue
                done += 1
                good = line.endswith(b'"result":true,"error":null}')
                if in_window:
                    latencies.append(now - t0)
                    if good:
                        ok += 1
                    else:
                        rejected += 1
                if not good and len(error_sample) < 5:
                    error_sample.append(line.decode(errors="replace"))
            outstanding -= done
            if sending and done:
                m.sock.sendall(requests(m, done, now))
                outstanding += done
    cpu_used = cpu_seconds(os.getpid()) - (cpu_at_start or 0.0)
    ep.close()
    return {
        "method": method, "inflight": inflight, "miners": len(miners), "seconds": seconds,
        "ok": ok, "rejected": rejected, "rate": (ok + rejected) / seconds, "ok_rate": ok / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
        "lost": outstanding, "errors": error_sample, "loadgen_cpu": cpu_used / (seconds + (time.monotonic() - measure_to)),
    }


def main() -> None:
    raise_nofile()
    miners: list[Miner] = []
    for cmd in read_commands():
        if cmd["cmd"] == "setup":
            miners = setup(cmd["port"], cmd["miners"])
            emit({"event": "setup", "miners": len(miners)})
        elif cmd["cmd"] == "run":
            emit(run(miners, method=cmd["method"], inflight=cmd["inflight"], seconds=cmd["seconds"], warmup=cmd["warmup"]))
    for m in miners:
        m.sock.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
