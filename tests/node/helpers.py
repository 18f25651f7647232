"""Shared pieces for the node/devnet tests: easy chains, grinding, a block store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import trio
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from pool.bitcoin.block import Block, BlockHeader, deser_header
from pool.bitcoin.merkle import merkle_root
from pool.bitcoin.script import address_to_script
from pool.bitcoin.tx import TxOut
from pool.devnet.chain import DevnetChain
from pool.jobs import Job, JobManager, build_job
from pool.node import NodePool
from pool.storage.db import create_schema, make_engine
from pool.storage.models import Block as BlockRow
from pool.storage.writer import ShareWriter

POOL_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
POOL_SCRIPT = address_to_script(POOL_ADDRESS, "regtest")
# At the regtest proof-of-work limit about every second hash is a block, so
# tests mine real blocks in a few hashes.
EASIEST = Fraction(1, 2**40)


def easy_chain(**kwargs: Any) -> DevnetChain:
    return DevnetChain(difficulty=EASIEST, **kwargs)


def pay_pool(value: int) -> list[TxOut]:
    return [TxOut(value, POOL_SCRIPT)]


def job_from(template: dict[str, Any], *, extranonce_size: int = 8, tag: bytes = b"/stope/", **kwargs: Any) -> Job:
    """A pool job for a (possibly doctored) devnet template."""
    options: dict[str, Any] = {
        "job_id": "1", "generation": 1, "payout_outputs": pay_pool, "tag": tag,
        "extranonce_size": extranonce_size, "clean_jobs": True,
    }
    options.update(kwargs)
    return build_job(template, **options)


def grind(header: BlockHeader, target: int, *, valid: bool = True) -> BlockHeader:
    """The same header with a nonce whose hash meets ``target`` (or misses it, ``valid=False``)."""
    for nonce in range(1 << 20):
        candidate = dataclasses.replace(header, nonce=nonce)
        if (candidate.hash_int <= target) == valid:
            return candidate
    raise AssertionError("no nonce found; is the chain difficulty easy?")


def mine_job(job: Job, *, extranonce: bytes | None = None, ntime: int | None = None, valid: bool = True) -> bytes:
    """The pool's block bytes for ``job`` with a nonce that meets the job's target."""
    en = extranonce if extranonce is not None else b"\x00" * job.coinbase.extranonce_size
    when = job.curtime if ntime is None else ntime
    header = grind(deser_header(job.header(en, when, 0, job.version)), job.network_target, valid=valid)
    return job.block(en, when, header.nonce, job.version)


def reseal(block: Block, target: int, *, recompute_root: bool = True, **header_changes: Any) -> bytes:
    """Re-serialise a (modified) block with a fresh proof of work."""
    header = block.header
    if recompute_root:
        header = dataclasses.replace(header, merkle_root=merkle_root([tx.txid for tx in block.txs]))
    header = dataclasses.replace(header, **header_changes)
    return Block(grind(header, target), block.txs).serialize()


async def start_block_store(nursery: trio.Nursery, tmp_path: Path) -> tuple[ShareWriter, Engine]:
    """A migrated SQLite database and a running writer (what the pool records blocks with)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'stope.sqlite3'}")
    await trio.to_thread.run_sync(create_schema, engine)
    writer = ShareWriter(engine, tmp_path / "spool")
    await nursery.start(writer.run)
    return writer, engine


def block_rows(engine: Engine) -> dict[str, tuple[str, str | None]]:
    """hash -> (status, submit_result) from the blocks table."""
    with Session(engine) as session:
        return {b.hash: (b.status, b.submit_result) for b in session.scalars(select(BlockRow))}


SLOW = 30.0  # a poll or refresh interval that cannot be what made a test pass


async def start_jobs(nursery: trio.Nursery, nodes: NodePool, **kwargs: Any) -> tuple[JobManager, list[Job]]:
    """A running ``JobManager`` (long-poll and timer off unless asked) and the jobs it announces."""
    jobs: list[Job] = []
    options: dict[str, Any] = {"refresh_interval": SLOW, "longpoll": False}
    options.update(kwargs)
    manager = JobManager(nodes, payout_outputs=pay_pool, tag=b"/stope/", extranonce_size=8, on_job=jobs.append, **options)
    await nursery.start(manager.run)
    return manager, jobs


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
