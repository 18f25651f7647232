"""Builders for the ledger and batch tests: a database with shares and blocks,
regtest addresses, and a node whose wallet is the devnet's (in process)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from pool.devnet.chain import DevnetChain, RPCError
from pool.devnet.wallet import DevnetWallet
from pool.node import NodeError, NodeUnavailable
from pool.storage.db import make_engine, upgrade
from pool.storage.records import BlockRecord, ShareRecord
from pool.storage.store import ShareStore, WorkerDirectory, write_block

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if ((top >> i) & 1) else 0
    return chk


def regtest_address(n: int) -> str:
    """A distinct valid P2WPKH regtest address (BIP173) for miner ``n``."""
    program = hashlib.sha256(f"miner-{n}".encode()).digest()[:20]
    acc, bits, data = 0, 0, [0]
    for byte in program:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    hrp = "bcrt"
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


def new_engine(tmp_path: Path, name: str = "stope.sqlite3") -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    upgrade(engine)
    return engine


def block_hash(n: int) -> str:
    return hashlib.sha256(f"block-{n}".encode()).hexdigest()


@dataclass
class ShareLog:
    """Writes shares and blocks through the storage layer, as the pool does."""

    engine: Engine
    counter: int = 0
    directory: WorkerDirectory = field(default_factory=WorkerDirectory)

    def shares(self, items: Iterable[tuple[str, Fraction | int, Fraction | int]], *, height: int = 1000) -> None:
        """(address, difficulty, network difficulty) per share, oldest first."""
        records = []
        for address, difficulty, network in items:
            self.counter += 1
            records.append(ShareRecord(
                share_hash=hashlib.sha256(f"share-{self.counter}".encode()).hexdigest(), address=address, worker="rig",
                job_id="1", height=height, difficulty=Fraction(difficulty), network_difficulty=Fraction(network),
                is_block=False, created_at=T0 + dt.timedelta(seconds=self.counter),
            ))
        ShareStore(self.engine, self.directory).write(records)

    def block(self, n: int, address: str, network: Fraction | int, *, reward: int, height: int = 1000,
              status: str = "pending", difficulty: Fraction | int | None = None, hash_: str | None = None) -> str:
        """A found block: its solving share (hash = the block's) and the blocks row."""
        self.counter += 1
        hash_ = hash_ or block_hash(n)
        share = ShareRecord(
            share_hash=hash_, address=address, worker="rig", job_id="1", height=height,
            difficulty=Fraction(difficulty if difficulty is not None else network), network_difficulty=Fraction(network),
            is_block=True, created_at=T0 + dt.timedelta(seconds=self.counter),
        )
        ShareStore(self.engine, self.directory).write([share])
        write_block(self.engine, self.directory, BlockRecord(
            height=height, hash=hash_, prevhash="00" * 32, address=address, worker="rig", reward=reward,
            status=status, submit_result="accepted",
        ))
        return hash_


class FakeNode:
    """Chain answers from a dict, wallet answers from a ``DevnetWallet``.

    ``confirmations[hash]`` is what ``getblockheader`` reports (missing:
    "Block not found"). ``lose_reply`` makes the next ``sendmany`` go
    through and then look like a timeout; ``down`` makes every call fail.
    """

    def __init__(self, *, height: int = 2000, funded: int = 10**15) -> None:
        self.height = height
        self.confirmations: dict[str, int] = {}
        self.chain = DevnetChain(difficulty=Fraction(1, 10**9), synthetic_txs=0)
        self.wallet = DevnetWallet(self.chain, funded=funded, owns_coinbases=False)
        self.calls: list[str] = []
        self.lose_reply = False
        self.down = False
        self.ibd = False

    async def call(self, method: str, *params: Any) -> Any:
        self.calls.append(method)
        if self.down:
            raise NodeUnavailable(f"fake: {method}: connection refused")
        if method == "getblockchaininfo":
            return {"blocks": self.height, "initialblockdownload": self.ibd}
        if method == "getblockheader":
            if params[0] not in self.confirmations:
                raise NodeError(-5, "Block not found")
            return {"hash": params[0], "confirmations": self.confirmations[params[0]]}
        try:
            result = getattr(self.wallet, method)(*params)
        except RPCError as exc:
            raise NodeError(exc.code, exc.message) from exc
        if method == "sendmany" and self.lose_reply:
            self.lose_reply = False
            raise NodeUnavailable("fake: sendmany timed out")
        return result
