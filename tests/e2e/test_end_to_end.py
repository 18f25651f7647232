"""A miner connects over TCP, mines for real, and finds a block on the devnet."""

from __future__ import annotations

import gc
import urllib.request

import trio
from sqlalchemy import select
from sqlalchemy.orm import Session

from pool.bitcoin.block import deser_block
from pool.bitcoin.script import address_to_script
from pool.cpuminer import CPUMiner
from pool.service import GC_YOUNG_THRESHOLD, run_pool
from pool.storage.db import make_engine
from pool.storage.models import Block, Miner, Share, Worker
from tests.pool_fixtures import devnet_settings

MINER_ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"


async def test_miner_finds_block_end_to_end(tmp_path):
    settings = devnet_settings(tmp_path)
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_pool, settings)
        # Running: the start-up heap is out of the cyclic GC's reach, young collections are rarer.
        assert gc.get_freeze_count() > 10_000 and gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        devnet = running.devnet
        start_height = devnet.height
        miner = CPUMiner("127.0.0.1", running.stratum_port, f"{MINER_ADDRESS}.rig1")

        def first_block_found(_hash: bytes, _height: int) -> None:
            # Stop submitting the moment the devnet connects our block, so one
            # more lucky share on the old job cannot blur what is asserted.
            miner.paused = True

        devnet.on_new_tip.append(first_block_found)
        with trio.fail_after(240):
            nursery.start_soon(miner.run)
            while devnet.height == start_height:
                await trio.sleep(0.1)
            # The new tip must reach the miner as a clean job on the new prevhash.
            while not any(n[8] and n[1] != miner.stats.notifies[0][1] for n in miner.stats.notifies):
                await trio.sleep(0.05)
            await running.pool.writer.drained()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics").read().decode()
        nursery.cancel_scope.cancel()

    assert devnet.height == start_height + 1
    stored = devnet.tip.block
    # Round-trip the stored block through our parser and check the payout.
    block = deser_block(stored.serialize())
    coinbase = block.txs[0]
    pool_script = address_to_script(settings.pool.address, "regtest")
    paid = sum(o.value for o in coinbase.outputs if o.script_pubkey == pool_script)
    assert paid == sum(o.value for o in coinbase.outputs) > 0
    assert settings.pool.tag.encode() in coinbase.inputs[0].script_sig
    assert len(block.txs) > 1  # synthetic transactions were included

    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        shares = session.scalars(select(Share)).all()
        assert len(shares) >= 1
        assert len(shares) == miner.stats.accepted or len(shares) >= miner.stats.accepted - 1
        worker = session.scalar(select(Worker).where(Worker.name == "rig1"))
        assert worker is not None
        assert session.scalar(select(Miner.address).where(Miner.id == worker.miner_id)) == MINER_ADDRESS
        assert all(s.worker_id == worker.id for s in shares)
        block_hash = stored.header.hash[::-1].hex()
        block_shares = session.scalars(select(Share.share_hash).where(Share.is_block)).all()
        assert block_hash in block_shares
        blocks = session.scalars(select(Block).where(Block.hash == block_hash)).all()
        assert len(blocks) == 1
        assert blocks[0].height == start_height + 1
        assert blocks[0].submit_result == "accepted"
        assert blocks[0].reward == paid
    engine.dispose()
    assert "stope_blocks_found_total" in metrics
    assert 'stope_blocks_submitted_total{result="accepted"} 1.0' in metrics
    assert "stope_shares_accepted_total" in metrics
