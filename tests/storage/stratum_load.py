"""A Stratum client that submits shares as fast as the pool answers them.

For the storage fault and crash tests: the pool runs at a share difficulty
so low that every nonce is a share, so no hashing loop is needed; the client
computes each share's header hash exactly as the pool will (display hex,
the ``shares.share_hash`` key) and remembers which ones got ``true``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import trio

# Every hash meets this share difficulty: the target saturates at 2**256 - 1.
TINY_DIFFICULTY = str(Fraction(1, 2**40))
# [stratum] settings for a load test: every nonce a share, and no per-connection
# rate limit (the hardening default would cap each connection at 50 messages/s).
LOAD_STRATUM = {
    "start_difficulty": TINY_DIFFICULTY,
    "min_difficulty": TINY_DIFFICULTY,
    "max_difficulty": TINY_DIFFICULTY,
    "limits": {"max_messages_per_second": 1_000_000, "message_burst": 1_000_000},
}


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _swap_words(hex32: str) -> bytes:
    raw = bytes.fromhex(hex32)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))


@dataclass
class LoadStats:
    submitted: int = 0
    acked: set[str] = field(default_factory=set)
    rejected: list[Any] = field(default_factory=list)


class LoadClient:
    def __init__(self, host: str, port: int, username: str, *, window: int = 16, stats: LoadStats | None = None) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.window = window
        self.stats = stats or LoadStats()
        self._ids = itertools.count(10)
        self._outstanding: dict[int, str] = {}
        self._slots = trio.Semaphore(window)
        self._job: list[Any] | None = None
        self._job_ready = trio.Event()
        self._extranonce1 = b""
        self._en2_size = 4
        self._prefix: bytes = b""
        self._en2 = b""
        self._nonces = itertools.count()
        self._en2_counter = itertools.count(1)
        self._all_answered = trio.Event()

    def _prepare(self, job: list[Any]) -> None:
        """Fix the header prefix for a job (one extranonce2 per job; the nonce varies)."""
        _job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, _clean = job
        self._en2 = next(self._en2_counter).to_bytes(self._en2_size, "big")
        coinbase = bytes.fromhex(coinb1) + self._extranonce1 + self._en2 + bytes.fromhex(coinb2)
        root = _sha256d(coinbase)
        for step in branch:
            root = _sha256d(root + bytes.fromhex(step))
        self._prefix = (
            struct.pack("<I", int(version, 16)) + _swap_words(prevhash) + root + struct.pack("<II", int(ntime, 16), int(nbits, 16))
        )
        self._nonces = itertools.count()
        self._job = job

    async def run(self, stop: trio.Event, *, drain_timeout: float = 10.0) -> LoadStats:
        """Submit until ``stop`` is set, then wait for the answers still due (or the connection to die)."""
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError:
            return self.stats
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(self._read_loop, stream, nursery.cancel_scope)
            await self._send(stream, 1, "mining.subscribe", ["stope-load/0.1"])
            await self._send(stream, 2, "mining.authorize", [self.username, "x"])
            await self._job_ready.wait()
            try:
                while not stop.is_set():
                    await self._slots.acquire()
                    if stop.is_set():
                        break
                    await self._submit(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()
                return self.stats
            with trio.move_on_after(drain_timeout):
                while self._outstanding:
                    self._all_answered = trio.Event()
                    await self._all_answered.wait()
            nursery.cancel_scope.cancel()
        return self.stats

    async def _send(self, stream: trio.SocketStream, request_id: int, method: str, params: list[Any]) -> None:
        line = json.dumps({"id": request_id, "method": method, "params": params}) + "\n"
        await stream.send_all(line.encode())

    async def _submit(self, stream: trio.SocketStream) -> None:
        assert self._job is not None
        nonce = next(self._nonces)
        header = self._prefix + struct.pack("<I", nonce)
        share_hash = _sha256d(header)[::-1].hex()
        request_id = next(self._ids)
        self._outstanding[request_id] = share_hash
        self.stats.submitted += 1
        job = self._job
        await self._send(stream, request_id, "mining.submit", [self.username, job[0], self._en2.hex(), job[7], f"{nonce:08x}"])

    async def _read_loop(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        buf = b""
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:  # the pool went away: what was not answered was not acknowledged
                scope.cancel()
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self._handle(json.loads(line))

    def _handle(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "mining.notify":
            self._prepare(msg["params"])
            self._job_ready.set()
            return
        if method is not None:
            return
        request_id = msg.get("id")
        if request_id == 1 and msg.get("result"):
            self._extranonce1 = bytes.fromhex(msg["result"][1])
            self._en2_size = int(msg["result"][2])
            return
        share_hash = self._outstanding.pop(request_id, None)
        if share_hash is None:
            return
        if msg.get("result") is True and msg.get("error") is None:
            self.stats.acked.add(share_hash)
        else:
            self.stats.rejected.append(msg.get("error"))
        self._slots.release()
        if not self._outstanding:
            self._all_answered.set()
