"""The devnet wallet answers bitcoind's wallet RPCs through the pool's real client.

What the payout job relies on: ``sendmany`` with exact string amounts and a
comment, the error codes of a refusal, ``listtransactions`` paging (most
recent ``count`` after ``skip``, oldest first) carrying the comment, and
``gettransaction``'s fee and confirmations.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
import trio

from pool.devnet.chain import DevnetChain, RPCError
from pool.devnet.node import DevnetNode
from pool.devnet.wallet import DevnetWallet, amount_from_value
from pool.node import NodeClient, NodeError

ADDR1 = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
ADDR2 = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"


def test_amounts_parse_exactly_like_core():
    assert amount_from_value("0.00000001") == 1
    assert amount_from_value(0.1) == 10_000_000  # a JSON number read as the decimal it prints as
    assert amount_from_value("21000000") == 2_100_000_000_000_000
    for bad in ("0.000000001", "-1", "abc", True, "21000000.00000001"):
        with pytest.raises(RPCError):
            amount_from_value(bad)


async def test_wallet_rpcs_over_http():
    chain = DevnetChain(difficulty=Fraction(1, 10**6), synthetic_txs=0)
    wallet = DevnetWallet(chain, funded=100_000_000, owns_coinbases=False)
    node = DevnetNode(chain, wallet=wallet)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        client = NodeClient(node.url, timeout=5)
        assert await client.call("getbalance") == Decimal("1.00000000")

        txid = await client.call("sendmany", "", {ADDR1: "0.25000000", ADDR2: "0.00001000"}, 1, "batch-1", [])
        assert len(txid) == 64
        assert wallet.paid_to() == {ADDR1: 25_000_000, ADDR2: 1_000}
        second = await client.call("sendmany", "", {ADDR1: "0.10000000"}, 1, "batch-2", [ADDR1])
        # The fee came out of the only subtracting output.
        assert wallet.paid_to()[ADDR1] == 25_000_000 + 10_000_000 - wallet.txs[1].fee

        entries = await client.call("listtransactions", "*", 10, 0)
        assert [(e["txid"], e.get("comment")) for e in entries] == [(txid, "batch-1"), (txid, "batch-1"), (second, "batch-2")]
        assert entries[0]["category"] == "send" and entries[0]["amount"] == Decimal("-0.25000000")
        # Paging: skip the newest entry, take two -> the two outputs of the first transaction.
        assert [e["txid"] for e in await client.call("listtransactions", "*", 2, 1)] == [txid, txid]

        chain.generate(2)
        tx = await client.call("gettransaction", txid)
        assert tx["confirmations"] == 2 and tx["comment"] == "batch-1" and tx["fee"] < 0

        for params, code in (
            (("", {"not-an-address": "0.1"}, 1, "x", []), -5),
            (("", {ADDR1: "0"}, 1, "x", []), -3),
            (("", {ADDR1: "0.000000001"}, 1, "x", []), -3),
            (("", {ADDR1: "5"}, 1, "x", []), -6),
        ):
            with pytest.raises(NodeError) as info:
                await client.call("sendmany", *params)
            assert info.value.code == code
        with pytest.raises(NodeError) as info:
            await client.call("gettransaction", "00" * 32)
        assert info.value.code == -5
        assert len(wallet.txs) == 2  # no refused call sent anything
        nursery.cancel_scope.cancel()


def test_wallet_owns_mature_coinbases():
    chain = DevnetChain(difficulty=Fraction(1, 10**6), synthetic_txs=0)
    wallet = DevnetWallet(chain)
    chain.generate(100)
    assert wallet.balance() == 0  # the first coinbase has 100 confirmations: still immature
    chain.generate(1)
    assert wallet.balance() == 50 * 100_000_000
