"""Crash test: ``stope payouts run`` killed mid-batch, then rerun, pays each miner once.

The job runs as a real subprocess (``python -m pool payouts run``) against a
devnet node served over HTTP by this test, so the production path is the
one exercised: config, NodeClient, JSON-RPC, the devnet wallet's
``sendmany``/``listtransactions``. ``STOPE_PAYOUTS_FAULT`` makes the job
SIGKILL itself right after ``sendmany`` returned (before the txid is
recorded) or right after the batch was written (before sending).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import trio
from sqlalchemy import select
from sqlalchemy.orm import Session

from payouts.batch import FAULT_ENV
from payouts.ledger import KIND_PAYOUT, entries_sum
from pool.bitcoin.serialize import internal_to_display
from pool.devnet.chain import DevnetChain
from pool.devnet.node import DevnetNode
from pool.devnet.wallet import DevnetWallet
from pool.storage.models import LedgerEntry, Miner, PayoutBatch
from tests.payouts.ledger_helpers import ShareLog, new_engine, regtest_address

REPO = Path(__file__).resolve().parents[2]
MINERS = [regtest_address(i) for i in range(1, 6)]
REWARD = 5_000_000


def _setup(tmp_path: Path) -> tuple[DevnetChain, DevnetWallet, Path]:
    """A devnet chain with one pool block 3 deep, and the pool's database for it."""
    chain = DevnetChain(difficulty=Fraction(1, 10**6), synthetic_txs=0)
    [found] = chain.generate(1)
    chain.generate(2)
    wallet = DevnetWallet(chain, funded=10**12, owns_coinbases=False)
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    # Every miner has shares in the window (X = 2 at D = 10: 20 difficulty).
    log.shares([(MINERS[i % 5], 1 + i % 3, 10) for i in range(12)], height=1)
    # The block row and its solving share carry the real devnet block hash.
    log.block(0, MINERS[0], 10, reward=REWARD, height=1, hash_=internal_to_display(found))
    engine.dispose()
    return chain, wallet, tmp_path / "stope.sqlite3"


def _config(tmp_path: Path, port: int, db: Path) -> Path:
    path = tmp_path / "pool.toml"
    path.write_text(
        f'[pool]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[node]\nurl = "http://127.0.0.1:{port}/"\ntimeout = 5.0\n'
        f'[database]\nurl = "sqlite:///{db}"\n'
        "[payouts]\nmaturity = 3\nminimum_payout = 1000\nfee_bps = 100\n"
    )
    return path


async def _payouts_run(config: Path, fault: str | None = None) -> trio.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return await trio.run_process(
        [sys.executable, "-m", "pool", "payouts", "run", "--config", str(config), "--json"],
        cwd=REPO, env=env, capture_stdout=True, capture_stderr=True, check=False,
    )


def _debits(db: Path) -> dict[str, int]:
    engine = new_engine(db.parent)
    try:
        with Session(engine) as session:
            out = {}
            for miner in session.scalars(select(Miner)):
                paid = -entries_sum(session, LedgerEntry.miner_id == miner.id, LedgerEntry.kind == KIND_PAYOUT)
                if paid:
                    out[miner.address] = int(paid)
            batches = [(b.status, b.txid) for b in session.scalars(select(PayoutBatch))]
        return out | {"_batches": batches}  # type: ignore[dict-item]
    finally:
        engine.dispose()


@pytest.mark.parametrize("fault", ["after-send", "after-prepare"])
async def test_killed_batch_then_rerun_pays_each_miner_exactly_once(tmp_path, fault):
    chain, wallet, db = _setup(tmp_path)
    node = DevnetNode(chain, wallet=wallet)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        config = _config(tmp_path, node.port, db)

        crashed = await _payouts_run(config, fault)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
        state = _debits(db)
        [(status, txid)] = state.pop("_batches")
        assert (status, txid) == ("draft", None)  # written before sending, txid never recorded
        assert len(wallet.txs) == (1 if fault == "after-send" else 0)

        rerun = await _payouts_run(config)
        assert rerun.returncode == 0, rerun.stderr.decode()
        report = json.loads(rerun.stdout)
        [batch] = report["batches"]
        expected_note = "reconciled with the wallet" if fault == "after-send" else "sent"
        assert batch["note"] == expected_note and batch["status"] == "sent"

        # The wallet saw exactly one transaction, one output per miner, and the DB agrees.
        [tx] = wallet.txs
        assert wallet.send_calls == 1
        assert batch["txid"] == tx.txid
        paid = wallet.paid_to()
        assert sorted(paid) == sorted(MINERS)
        state = _debits(db)
        assert state.pop("_batches") == [("sent", tx.txid)]
        assert state == paid
        assert sum(paid.values()) == REWARD - REWARD // 100  # pot after the 1 % fee, every satoshi paid

        if fault == "after-send":  # (one more subprocess is enough: they are slow to start)
            third = await _payouts_run(config)
            assert third.returncode == 0, third.stderr.decode()
            assert json.loads(third.stdout)["batches"] == []
            assert wallet.send_calls == 1 and len(wallet.txs) == 1
        nursery.cancel_scope.cancel()
