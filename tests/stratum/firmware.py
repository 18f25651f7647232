"""Scripted miners that speak Stratum the way real firmware does, and mine for real.

Each script reproduces one firmware's session shape (message order, whether
it waits for replies, parameter shapes, JSON spacing, how it applies
``mining.set_difficulty``), taken from the firmware sources:

* cgminer / bmminer (Antminer): ``initiate_stratum`` subscribes (with the
  session id when resuming), authorizes, optionally
  ``mining.extranonce.subscribe``; bmminer sends ``mining.configure`` first
  for version rolling; ``parse_diff`` applies the first difficulty at once
  and later ones at the next notify.
* ESP-Miner (Bitaxe): writes configure (mask ``ffffffff``), subscribe,
  authorize, suggest_difficulty back to back without waiting (older builds:
  subscribe, configure, suggest, authorize); six-param submits; applies a
  new difficulty to the work it generates from then on.
* NerdMiner: subscribe and wait, authorize, suggest_difficulty written with
  ``%.10g`` (so ``1e-05``), resent later as a keepalive; five-param submits.
* cpuminer (pooler): subscribe, authorize, every submit with ``"id":4``.

Shares are found with hashlib at the devnet's tiny difficulties.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import trio

from tests.stratum.lineclient import LineClient

DIFF1 = 0xFFFF << 208


def _swap_words(hex32: str) -> bytes:
    raw = bytes.fromhex(hex32)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))


def find_nonce(job: list[Any], extranonce1: bytes, extranonce2: bytes, difficulty: Fraction, version: int, start: int, count: int) -> int | None:
    """Scan nonces; return the first whose header hash meets ``difficulty``."""
    _id, prevhash, coinb1, coinb2, branch, _version, nbits, ntime, _clean = job
    coinbase = bytes.fromhex(coinb1) + extranonce1 + extranonce2 + bytes.fromhex(coinb2)
    root = hashlib.sha256(hashlib.sha256(coinbase).digest()).digest()
    for step in branch:
        root = hashlib.sha256(hashlib.sha256(root + bytes.fromhex(step)).digest()).digest()
    prefix = struct.pack("<I", version) + _swap_words(prevhash) + root + struct.pack("<II", int(ntime, 16), int(nbits, 16))
    target = DIFF1 * difficulty.denominator // difficulty.numerator
    base = hashlib.sha256(prefix[:64])
    tail = prefix[64:]
    for nonce in range(start, start + count):
        h = base.copy()
        h.update(tail + struct.pack("<I", nonce))
        if int.from_bytes(hashlib.sha256(h.digest()).digest(), "little") <= target:
            return nonce
    return None


@dataclass
class Found:
    job_id: str
    extranonce2: str
    ntime: str
    nonce: str
    version_bits: str | None

    def params(self, worker: str) -> list[str]:
        base = [worker, self.job_id, self.extranonce2, self.ntime, self.nonce]
        return base if self.version_bits is None else [*base, self.version_bits]


@dataclass
class FirmwareMiner:
    """State a firmware keeps, fed by a background reader."""

    client: LineClient
    worker: str
    applies_difficulty: Literal["next-notify", "immediate"] = "next-notify"
    extranonce1: bytes = b""
    extranonce2_size: int = 4
    session_id: str | None = None
    version_mask: int = 0
    difficulty: Fraction | None = None
    pending_difficulty: Fraction | None = None
    job: list[Any] | None = None
    difficulties: list[Fraction] = field(default_factory=list)
    notifies: list[list[Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[Any, dict[str, Any]] = field(default_factory=dict)
    _changed: trio.Event = field(default_factory=trio.Event)
    _en2: int = 0
    _roll: int = 0

    async def run_reader(self) -> None:
        try:
            while True:
                self._handle(await self.client.recv())
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def _handle(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if method == "mining.set_difficulty":
            new = Fraction(str(msg["params"][0]))
            self.difficulties.append(new)
            if self.applies_difficulty == "immediate" or self.difficulty is None:
                self.difficulty = new
            else:
                self.pending_difficulty = new
        elif method == "mining.notify":
            self.notifies.append(msg["params"])
            self.job = msg["params"]
            if self.pending_difficulty is not None:
                self.difficulty, self.pending_difficulty = self.pending_difficulty, None
        elif method == "mining.set_version_mask":
            self.version_mask = int(msg["params"][0], 16)
        elif method is not None:
            self.other.append(msg)
        else:
            self.replies[msg.get("id")] = msg
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def reply(self, req_id: Any) -> dict[str, Any]:
        await self.wait_for(lambda: req_id in self.replies)
        return self.replies.pop(req_id)

    def take_subscribe(self, reply: dict[str, Any]) -> None:
        pairs, en1, size = reply["result"]
        self.extranonce1 = bytes.fromhex(en1)
        self.extranonce2_size = size
        # cgminer keeps the id of the mining.notify subscription for resuming.
        self.session_id = next(p[1] for p in pairs if p[0] == "mining.notify")

    async def find_share(self, *, roll: Literal["none", "bits", "xor"] = "none") -> Found:
        """Mine the current job at the difficulty the firmware hashes at now."""
        await self.wait_for(lambda: self.job is not None and self.difficulty is not None)
        while True:
            job, difficulty = self.job, self.difficulty
            assert job is not None and difficulty is not None
            self._en2 += 1
            extranonce2 = self._en2.to_bytes(self.extranonce2_size, "big")
            job_version = int(job[5], 16)
            version, bits = job_version, None
            if roll != "none" and self.version_mask:
                self._roll += 1
                mask = self.version_mask
                # Walk the rollable bits, as an ASIC's version roller does.
                rolled = 0
                free = [b for b in range(32) if mask >> b & 1]
                for i, bit in enumerate(free):
                    if self._roll >> i & 1:
                        rolled |= 1 << bit
                version = (job_version & ~mask) | rolled
                bits = f"{(version ^ job_version) if roll == 'xor' else rolled:08x}"
            start = 0
            while start < 1 << 32:
                nonce = await trio.to_thread.run_sync(find_nonce, job, self.extranonce1, extranonce2, difficulty, version, start, 20_000)
                if nonce is not None:
                    return Found(job[0], extranonce2.hex(), job[7], f"{nonce:08x}", bits)
                start += 20_000
                if self.job is not job or self.difficulty != difficulty:
                    break  # new work or difficulty: start over as firmware does
