"""A real (hashlib) Stratum miner for whole-pool tests: it computes each share's header hash
itself, so a test can check the database by ``shares.share_hash``."""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import trio

from pool.bitcoin.target import difficulty_to_target
from pool.cpuminer import search

ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def header_hash(job: list[Any], extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int) -> str:
    """The share's block-header hash in display hex (the database's shares.share_hash)."""
    _job_id, prevhash, coinb1, coinb2, branch, version, nbits, _ntime, _clean = job
    root = dsha(bytes.fromhex(coinb1) + extranonce1 + extranonce2 + bytes.fromhex(coinb2))
    for step in branch:
        root = dsha(root + bytes.fromhex(step))
    prev = bytes.fromhex(prevhash)
    prev = b"".join(prev[i : i + 4][::-1] for i in range(0, 32, 4))
    header = struct.pack("<I", int(version, 16)) + prev + root + struct.pack("<III", ntime, int(nbits, 16), nonce)
    return dsha(header)[::-1].hex()


@dataclass
class Miner:
    """Mines until the server closes the connection, remembering what was acknowledged."""

    port: int
    name: str
    accepted: set[str] = field(default_factory=set)
    rejected: list[Any] = field(default_factory=list)
    reconnects: list[Any] = field(default_factory=list)
    submitted_after_reconnect: int = 0
    messages: list[str] = field(default_factory=list)
    notifies: list[list[Any]] = field(default_factory=list)
    #: (trio time, True for accepted / the error otherwise), in the order answers came.
    answers: list[tuple[float, Any]] = field(default_factory=list)

    async def run(self) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        ids = itertools.count(10)
        waiting: dict[int, str] = {}
        state: dict[str, Any] = {"job": None, "difficulty": Fraction(1), "en1": b"", "en2size": 4}
        work = trio.Event()

        async def send(obj: dict[str, Any]) -> None:
            await stream.send_all(json.dumps(obj).encode() + b"\n")

        async def read(cancel: trio.CancelScope) -> None:
            nonlocal work
            buf = b""
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        msg = json.loads(line)
                        method = msg.get("method")
                        if method == "mining.notify":
                            self.notifies.append(msg["params"])
                            state["job"] = msg["params"]
                            work.set()
                        elif method == "mining.set_difficulty":
                            state["difficulty"] = Fraction(str(msg["params"][0]))
                        elif method == "client.reconnect":
                            self.reconnects.append(msg["params"])
                        elif method == "client.show_message":
                            self.messages.append(msg["params"][0])
                        elif msg.get("id") == 1:
                            state["en1"] = bytes.fromhex(msg["result"][1])
                            state["en2size"] = msg["result"][2]
                        elif msg.get("id") in waiting:
                            share = waiting.pop(msg["id"])
                            if msg.get("result") is True:
                                self.accepted.add(share)
                                self.answers.append((trio.current_time(), True))
                            else:
                                self.rejected.append(msg.get("error"))
                                self.answers.append((trio.current_time(), msg.get("error")))
            except trio.BrokenResourceError:
                pass
            cancel.cancel()

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(read, nursery.cancel_scope)
            await send({"id": 1, "method": "mining.subscribe", "params": [f"restart-test/{self.name}"]})
            await send({"id": 2, "method": "mining.authorize", "params": [f"{ADDRESS}.{self.name}", "x"]})
            await work.wait()
            en2_counter = itertools.count(int.from_bytes(self.name.encode(), "big") << 16)
            while True:
                job = state["job"]
                extranonce2 = (next(en2_counter) % (1 << 32)).to_bytes(state["en2size"], "big")
                target = difficulty_to_target(state["difficulty"])
                found = await trio.to_thread.run_sync(search, job, state["en1"], extranonce2, target, 0, 200_000)
                if found is None:
                    continue
                nonce, ntime = found
                req = next(ids)
                waiting[req] = header_hash(job, state["en1"], extranonce2, ntime, nonce)
                if self.reconnects:
                    self.submitted_after_reconnect += 1
                try:
                    await send({"id": req, "method": "mining.submit", "params": [f"{ADDRESS}.{self.name}", job[0], extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"]})
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
