"""``stope payouts run`` / ``explain`` / ``record-txid`` through the CLI, against a devnet node.

The worked PPLNS example (A 196,000 and B 784,000 sat of a 1,000,000-sat
block, see test_payouts_ledger) on a real devnet block 3 deep (maturity 3).
The CLI runs in a worker thread (it calls ``trio.run`` itself) while this
test serves the devnet's JSON-RPC.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import trio
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pool.bitcoin.serialize import internal_to_display
from pool.cli import main
from pool.devnet.chain import DevnetChain
from pool.devnet.node import DevnetNode
from pool.devnet.wallet import DevnetWallet
from pool.storage.models import LedgerEntry, PayoutBatch
from tests.payouts.ledger_helpers import ShareLog, new_engine, regtest_address

A, B = regtest_address(1), regtest_address(2)


def _setup(tmp_path: Path) -> tuple[DevnetNode, DevnetWallet]:
    chain = DevnetChain(difficulty=Fraction(1, 10**6), synthetic_txs=0)
    [found] = chain.generate(1)
    chain.generate(2)
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    log.shares([(A, 100, 100), (B, 60, 100), (A, 40, 100)], height=1)
    log.block(0, B, 100, reward=1_000_000, height=1, hash_=internal_to_display(found))
    engine.dispose()
    wallet = DevnetWallet(chain, funded=10**10, owns_coinbases=False)
    return DevnetNode(chain, wallet=wallet), wallet


def _config(tmp_path: Path, port: int, **payouts: object) -> Path:
    path = tmp_path / "pool.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in payouts.items())
    path.write_text(
        f'[pool]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[node]\nurl = "http://127.0.0.1:{port}/"\ntimeout = 5.0\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "stope.sqlite3"}"\n'
        f"[payouts]\nmaturity = 3\nminimum_payout = 1000\nfee_bps = 200\n{extra}"
    )
    return path


async def _cli(*args: str) -> Result:
    return await trio.to_thread.run_sync(lambda: CliRunner().invoke(main, ["payouts", *args], catch_exceptions=False))


def _count(tmp_path: Path, model) -> int:  # type: ignore[no-untyped-def]
    engine = new_engine(tmp_path)
    try:
        with Session(engine) as session:
            return session.scalar(select(func.count()).select_from(model)) or 0
    finally:
        engine.dispose()


async def test_run_dry_run_then_run_then_explain(tmp_path):
    node, wallet = _setup(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        config = str(_config(tmp_path, node.port))

        dry = await _cli("run", "--config", config, "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert "DRY RUN" in dry.output and "0.00196000" in dry.output and "0.00784000" in dry.output
        assert _count(tmp_path, LedgerEntry) == 0 and wallet.send_calls == 0

        real = await _cli("run", "--config", config)
        assert real.exit_code == 0, real.output
        assert "sent" in real.output and "miners" in real.output
        assert wallet.paid_to() == {A: 196_000, B: 784_000}

        explained = await _cli("explain", A, "--config", config, "--json")
        assert explained.exit_code == 0, explained.output
        data = json.loads(explained.output)
        [block] = data["blocks"]
        assert block["scheme"] == "pplns" and block["status"] == "confirmed"
        assert (block["pot"], block["pool_fee"]) == (980_000, 20_000)
        assert block["miner_score"] == "2/5" and block["score_total"] == "2"
        assert block["entitlement"] == "196000" and block["computed_sats"] == 196_000
        assert block["ledger_sats"] == 196_000 and block["matches"] is True
        # A's first share (100) is outside the window; its 40 counts 40/100 = 2/5.
        assert [(s["difficulty"], s["counted"]) for s in block["shares"]] == [("40", "2/5")]
        assert block["window"]["first_share"] == 2
        [payout] = data["payouts"]
        assert payout["amount_sats"] == 196_000 and payout["status"] == "sent" and payout["txid"] == wallet.txs[0].txid
        assert data["payable_sats"] == 0 and data["paid_sats"] == 196_000

        table = await _cli("explain", B, "--config", config, "--block", "1")
        assert table.exit_code == 0, table.output
        assert "matches" in table.output and "784000 sat" in table.output

        unknown = await _cli("explain", regtest_address(99), "--config", config)
        assert unknown.exit_code != 0 and "no miner" in unknown.output
        nursery.cancel_scope.cancel()


async def test_csv_batch_then_record_txid(tmp_path):
    node, wallet = _setup(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        config = str(_config(tmp_path, node.port, method="csv", export_dir=str(tmp_path / "out")))
        result = await _cli("run", "--config", config, "--json")
        assert result.exit_code == 0, result.output
        [batch] = json.loads(result.output)["batches"]
        assert batch["status"] == "exported" and wallet.send_calls == 0
        assert (tmp_path / "out" / f"{batch['key']}.csv").read_text().splitlines()[1:] == [
            f"{A},196000,0.00196000", f"{B},784000,0.00784000"]
        txid = "ab" * 32
        recorded = await _cli("record-txid", batch["key"], txid, "--config", config)
        assert recorded.exit_code == 0, recorded.output
        again = await _cli("record-txid", batch["key"], txid, "--config", config)
        assert again.exit_code != 0 and "not changed" in again.output
        engine = new_engine(tmp_path)
        with Session(engine) as session:
            assert [(b.status, b.txid) for b in session.scalars(select(PayoutBatch))] == [("sent", txid)]
        engine.dispose()
        nursery.cancel_scope.cancel()
