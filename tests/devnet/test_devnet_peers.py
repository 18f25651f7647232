"""Peer devnet chains: relayed blocks, a node that falls behind, side branches, re-orgs."""

from __future__ import annotations

from pool.bitcoin.block import deser_block
from pool.devnet.chain import DevnetRelay
from tests.node.helpers import easy_chain, job_from, mine_job


def test_peers_share_blocks_and_transactions() -> None:
    a = easy_chain()
    b = a.spawn_peer()
    DevnetRelay(a, b)
    assert b.active == a.active
    a.generate(2)
    assert b.active == a.active and b.height == 2
    entry = b.add_synthetic_transaction()
    assert entry.tx.txid in {m.tx.txid for m in a.mempool}
    # A block with the relayed transaction is valid on both.
    b.generate(1)
    assert a.active == b.active
    assert entry.tx.txid in {tx.txid for tx in a.tip.block.txs}


def test_a_paused_peer_falls_behind_and_catches_up() -> None:
    a = easy_chain()
    b = a.spawn_peer()
    relay = DevnetRelay(a, b)
    relay.pause()
    b.generate(3)
    assert (a.height, b.height) == (0, 3)
    relay.resume()
    assert a.active == b.active


def test_side_branch_is_inconclusive_until_it_is_longer() -> None:
    chain = easy_chain()
    rival = chain.spawn_peer()  # not relayed: it builds its own branch
    ours = mine_job(job_from(chain.block_template()))
    rival.generate(2)
    assert chain.submit_block(ours) is None
    main_tip = chain.tip.hash
    first, second = (rival.blocks[h].block.serialize() for h in rival.active[1:])
    assert chain.submit_block(first) == "inconclusive"
    assert chain.tip.hash == main_tip
    assert chain.submit_block(first) == "duplicate"
    # The side branch is now the longer one: the chain re-organises onto it.
    assert chain.submit_block(second) is None
    assert chain.active == rival.active
    assert deser_block(ours).header.hash not in chain.active
