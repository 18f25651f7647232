"""A small CPU miner (hashlib) speaking Stratum V1 over TCP.

For trying a pool without hardware and for the end-to-end tests: it hashes
for real, at a few hundred kH/s, so it only finds shares at the low
difficulties of the embedded devnet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import trio

from .bitcoin.target import difficulty_to_target

log = logging.getLogger(__name__)


@dataclass
class MinerStats:
    accepted: int = 0
    rejected: int = 0
    notifies: list[list[Any]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)


def _swap_words(hex32: str) -> bytes:
    raw = bytes.fromhex(hex32)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))


def search(job: list[Any], extranonce1: bytes, extranonce2: bytes, target: int, start: int, count: int) -> tuple[int, int] | None:
    """Scan ``count`` nonces from ``start``; return (nonce, ntime) of the first hit."""
    _job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, _clean = job
    coinbase = bytes.fromhex(coinb1) + extranonce1 + extranonce2 + bytes.fromhex(coinb2)
    root = hashlib.sha256(hashlib.sha256(coinbase).digest()).digest()
    for step in branch:
        root = hashlib.sha256(hashlib.sha256(root + bytes.fromhex(step)).digest()).digest()
    prefix = struct.pack("<I", int(version, 16)) + _swap_words(prevhash) + root + struct.pack("<II", int(ntime, 16), int(nbits, 16))
    base = hashlib.sha256(prefix[:64])
    tail = prefix[64:]
    pack = struct.Struct("<I").pack
    sha = hashlib.sha256
    for nonce in range(start, start + count):
        h = base.copy()
        h.update(tail + pack(nonce))
        if int.from_bytes(sha(h.digest()).digest(), "little") <= target:
            return nonce, int(ntime, 16)
    return None


class CPUMiner:
    def __init__(self, host: str, port: int, username: str, *, password: str = "x", suggest_difficulty: float | None = None) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.suggest = suggest_difficulty
        self.stats = MinerStats()
        self.extranonce1 = b""
        self.extranonce2_size = 4
        self.difficulty = Fraction(1)
        self.job: list[Any] | None = None
        self._new_work = trio.Event()
        self._ids = itertools.count(1)
        self._stream: trio.SocketStream | None = None
        self.share_accepted = trio.Event()
        # While True the miner keeps hashing but submits nothing (tests use it
        # to stop at exactly one block without tearing the connection down).
        self.paused = False

    async def _send(self, method: str, params: list[Any]) -> None:
        assert self._stream is not None
        line = json.dumps({"id": next(self._ids), "method": method, "params": params}) + "\n"
        await self._stream.send_all(line.encode())

    async def run(self, *, max_shares: int | None = None) -> MinerStats:
        self._stream = await trio.open_tcp_stream(self.host, self.port)
        async with self._stream, trio.open_nursery() as nursery:
            nursery.start_soon(self._read_loop, nursery.cancel_scope)
            await self._send("mining.subscribe", ["stope-cpuminer/0.1"])
            await self._send("mining.authorize", [self.username, self.password])
            if self.suggest is not None:
                await self._send("mining.suggest_difficulty", [self.suggest])
            submitted = await self._mine(max_shares)
            with trio.move_on_after(5):
                # Let the last answers arrive before hanging up.
                while self.stats.accepted + self.stats.rejected < submitted:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return self.stats

    async def _read_loop(self, scope: trio.CancelScope) -> None:
        assert self._stream is not None
        buf = b""
        while True:
            data = await self._stream.receive_some(65536)
            if not data:
                scope.cancel()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    self._handle(json.loads(line))

    def _handle(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "mining.notify":
            self.stats.notifies.append(msg["params"])
            self.job = msg["params"]
            self._new_work.set()
        elif method == "mining.set_difficulty":
            self.difficulty = Fraction(str(msg["params"][0]))
        elif msg.get("id") == 1 and msg.get("result"):
            self.extranonce1 = bytes.fromhex(msg["result"][1])
            self.extranonce2_size = int(msg["result"][2])
        elif msg.get("id", 0) > 2 and method is None and "result" in msg:
            if msg.get("result") is True and msg.get("error") is None:
                self.stats.accepted += 1
                self.share_accepted.set()
            elif msg.get("error") is not None:
                self.stats.rejected += 1
                self.stats.errors.append(msg["error"])

    async def _mine(self, max_shares: int | None) -> int:
        submitted = 0
        en2_counter = itertools.count()
        while max_shares is None or submitted < max_shares:
            if self.job is None:
                await self._new_work.wait()
            self._new_work = trio.Event()
            job = self.job
            assert job is not None
            extranonce2 = next(en2_counter).to_bytes(self.extranonce2_size, "big")
            target = difficulty_to_target(self.difficulty)
            nonce = 0
            while nonce < 1 << 32 and not self._new_work.is_set():
                found = await trio.to_thread.run_sync(search, job, self.extranonce1, extranonce2, target, nonce, 20000)
                nonce += 20000
                if found is not None and self.paused:
                    nonce = found[0] + 1
                elif found is not None:
                    hit, ntime = found
                    await self._send("mining.submit", [self.username, job[0], extranonce2.hex(), f"{ntime:08x}", f"{hit:08x}"])
                    submitted += 1
                    nonce = hit + 1
                    if max_shares is not None and submitted >= max_shares:
                        return submitted
                target = difficulty_to_target(self.difficulty)
        return submitted
