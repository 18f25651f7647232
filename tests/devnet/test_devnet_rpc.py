"""The devnet as bitcoind's stand-in: RPC shape, auth, long-poll, ZMQ, wedged nodes.

Everything goes through the pool's own ``NodeClient`` (python-bitcoinrpc in a
worker thread), so these are also the tests of that client.
"""

from __future__ import annotations

import functools
import struct

import pytest
import trio
import zmq

from pool.bitcoin.serialize import internal_to_display
from pool.devnet.node import DevnetNode
from pool.node import NodeAuthError, NodeClient, NodeError, NodeUnavailable
from tests.node.helpers import POOL_ADDRESS, easy_chain


async def test_getblocktemplate_needs_the_segwit_rule() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain).run)
        client = NodeClient(node.url, timeout=5)
        with pytest.raises(NodeError) as err:
            await client.call("getblocktemplate", {"rules": []})
        assert err.value.code == -8
        assert "segwit rule set" in err.value.message
        template = await client.getblocktemplate()
        assert template["longpollid"] == internal_to_display(chain.tip.hash) + str(chain.mempool_sequence)
        info = await client.getblockchaininfo()
        assert (info["blocks"], info["bestblockhash"]) == (0, template["previousblockhash"])
        hashes = await client.call("generatetoaddress", 2, POOL_ADDRESS)
        assert await client.getblockhash(2) == hashes[1] == await client.getbestblockhash()
        with pytest.raises(NodeError) as err:
            await client.getblockhash(3)
        assert err.value.code == -8
        nursery.cancel_scope.cancel()


async def test_longpoll_waits_for_a_new_block_or_new_transactions() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain, longpoll_timeout=0.5).run)
        client = NodeClient(node.url, timeout=5)
        first = await client.getblocktemplate()

        # Nothing changes: the node holds the request for its long-poll timeout.
        started = trio.current_time()
        same = await client.longpoll_template(first["longpollid"], timeout=5)
        assert trio.current_time() - started >= 0.45
        assert same["longpollid"] == first["longpollid"]

        # A new block answers at once, with the new tip.
        async def block_soon() -> None:
            await trio.sleep(0.1)
            chain.generate(1)

        nursery.start_soon(block_soon)
        started = trio.current_time()
        after_block = await client.longpoll_template(first["longpollid"], timeout=5)
        assert trio.current_time() - started < 0.4
        assert after_block["height"] == first["height"] + 1

        # New transactions answer too (same tip, new longpollid).
        async def tx_soon() -> None:
            await trio.sleep(0.1)
            chain.add_synthetic_transaction()

        nursery.start_soon(tx_soon)
        after_tx = await client.longpoll_template(after_block["longpollid"], timeout=5)
        assert after_tx["previousblockhash"] == after_block["previousblockhash"]
        assert len(after_tx["transactions"]) == len(after_block["transactions"]) + 1

        # Meanwhile other calls are answered (the long-poll holds one connection only).
        nursery.start_soon(functools.partial(client.longpoll_template, after_tx["longpollid"], timeout=5))
        with trio.fail_after(1):
            await client.getbestblockhash()
        nursery.cancel_scope.cancel()


async def test_credentials_password_and_cookie(tmp_path) -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain, rpc_user="__cookie__", rpc_password="s3cret").run)
        good = NodeClient(node.url, timeout=5)
        assert await good.call("getblockcount") == 0
        bare = f"http://127.0.0.1:{node.port}/"
        with pytest.raises(NodeAuthError):
            await NodeClient(bare, timeout=5).call("getblockcount")
        with pytest.raises(NodeAuthError):
            await NodeClient(f"http://__cookie__:wrong@127.0.0.1:{node.port}/", timeout=5).call("getblockcount")
        cookie = tmp_path / ".cookie"
        cookie.write_text("__cookie__:s3cret")
        assert await NodeClient(bare, timeout=5, cookie_file=cookie).call("getblockcount") == 0
        # A restarted bitcoind writes a new cookie; the client reads it on every call.
        node.http.set_credentials("__cookie__", "rotated")
        with pytest.raises(NodeAuthError):
            await NodeClient(bare, timeout=5, cookie_file=cookie).call("getblockcount")
        cookie.write_text("__cookie__:rotated")
        assert await NodeClient(bare, timeout=5, cookie_file=cookie).call("getblockcount") == 0
        with pytest.raises(NodeAuthError, match="cookie"):
            await NodeClient(bare, timeout=5, cookie_file=tmp_path / "missing").call("getblockcount")
        nursery.cancel_scope.cancel()


async def test_every_call_has_a_deadline_and_a_stopped_node_is_unavailable() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        devnet = DevnetNode(chain)
        node = await nursery.start(devnet.run)
        client = NodeClient(node.url, timeout=0.3)
        node.hang()
        started = trio.current_time()
        with pytest.raises(NodeUnavailable, match="timed out"):
            await client.getbestblockhash()
        assert trio.current_time() - started < 2.0
        node.resume()
        assert await client.getbestblockhash() == internal_to_display(chain.tip.hash)

        node.stop()
        await node.stopped()
        with pytest.raises(NodeUnavailable):
            await client.getbestblockhash()
        # Restarted, it is back on the same port.
        await nursery.start(devnet.run)
        assert await client.getbestblockhash() == internal_to_display(chain.tip.hash)
        nursery.cancel_scope.cancel()


async def test_zmq_hashblock_frames_are_bitcoinds() -> None:
    chain = easy_chain()
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    try:
        async with trio.open_nursery() as nursery:
            node = await nursery.start(DevnetNode(chain, zmq_hashblock="tcp://127.0.0.1:*").run)
            assert node.zmq_endpoint.startswith("tcp://127.0.0.1:")
            sub.setsockopt(zmq.SUBSCRIBE, b"hashblock")
            sub.connect(node.zmq_endpoint)
            frames = None
            with trio.fail_after(5):
                # PUB/SUB drops messages until the subscription has arrived: mine until one shows.
                while frames is None:
                    chain.generate(1)
                    await trio.sleep(0.05)
                    if sub.poll(0):
                        frames = sub.recv_multipart()
            topic, body, seq = frames
            assert topic == b"hashblock"
            assert body.hex() == internal_to_display(chain.tip.hash)  # display order, like RPC
            (first_seq,) = struct.unpack("<I", seq)
            chain.generate(1)
            with trio.fail_after(5):
                while not sub.poll(0):
                    await trio.sleep(0.01)
            topic, body, seq = sub.recv_multipart()
            assert body.hex() == internal_to_display(chain.tip.hash)
            assert struct.unpack("<I", seq) == (first_seq + 1,)
            nursery.cancel_scope.cancel()
    finally:
        sub.close(linger=0)
        context.term()
