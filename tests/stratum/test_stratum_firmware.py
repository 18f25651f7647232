"""Firmware session shapes replayed over real TCP against the whole pool.

The pool runs in-process on its embedded devnet (network difficulty 1, so no
block interferes); share difficulties are capped far below 1 so hashlib finds
shares in a fraction of a second.  Every script mines real shares that the
pool hashes and accepts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction

import trio

from pool.service import RunningPool, run_pool
from tests.pool_fixtures import devnet_settings
from tests.stratum.firmware import FirmwareMiner
from tests.stratum.lineclient import LineClient

ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"
MAX_DIFF = Fraction(2, 100000)


@asynccontextmanager
async def running_pool(tmp_path) -> AsyncIterator[RunningPool]:
    settings = devnet_settings(
        tmp_path,
        devnet={"difficulty": "1"},
        stratum={"start_difficulty": "0.00001", "min_difficulty": "0.000001", "max_difficulty": str(float(MAX_DIFF))},
    )
    async with trio.open_nursery() as nursery:
        running: RunningPool = await nursery.start(run_pool, settings)
        yield running
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def miner(port: int, worker: str, applies: str, nursery: trio.Nursery) -> AsyncIterator[FirmwareMiner]:
    client = await LineClient.connect(port)
    m = FirmwareMiner(client, worker, applies_difficulty=applies)  # type: ignore[arg-type]
    nursery.start_soon(m.run_reader)
    try:
        yield m
    finally:
        await client.aclose()


def accepted(reply: dict) -> bool:
    return reply.get("result") is True and reply.get("error") is None


async def test_cgminer_session_with_extranonce_subscribe_and_resume(tmp_path):
    worker = f"{ADDRESS}.avalon"
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "next-notify", nursery) as m:
                await m.client.send({"id": 0, "method": "mining.subscribe", "params": ["cgminer/4.12.1"]}, style="spaced")
                m.take_subscribe(await m.reply(0))
                await m.client.send({"id": 1, "method": "mining.authorize", "params": [worker, "x"]}, style="spaced")
                assert accepted(await m.reply(1))
                await m.client.send({"id": 2, "method": "mining.extranonce.subscribe", "params": []}, style="spaced")
                assert accepted(await m.reply(2))
                shares = []
                for n in range(3, 6):
                    found = await m.find_share()
                    await m.client.send({"params": found.params(worker), "id": n, "method": "mining.submit"}, style="spaced")
                    assert accepted(await m.reply(n))
                    shares.append(found)
                unsent = await m.find_share()  # found just before the connection dies
                session_id, en1 = m.session_id, m.extranonce1
            # cgminer reconnects offering its session id and gets its extranonce1 back.
            async with miner(pool.stratum_port, worker, "next-notify", nursery) as m:
                await m.client.send({"id": 0, "method": "mining.subscribe", "params": ["cgminer/4.12.1", session_id]}, style="spaced")
                m.take_subscribe(await m.reply(0))
                assert m.extranonce1 == en1
                await m.client.send({"id": 1, "method": "mining.authorize", "params": [worker, "x"]}, style="spaced")
                assert accepted(await m.reply(1))
                await m.client.send({"params": unsent.params(worker), "id": 6, "method": "mining.submit"}, style="spaced")
                assert accepted(await m.reply(6))
                await m.client.send({"params": shares[0].params(worker), "id": 7, "method": "mining.submit"}, style="spaced")
                assert (await m.reply(7))["error"] == [22, "Duplicate share", None]


async def test_antminer_bmminer_configure_before_subscribe_with_version_rolling(tmp_path):
    worker = f"{ADDRESS}.s9"
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "next-notify", nursery) as m:
                await m.client.send(
                    {"id": 1, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]},
                    style="spaced",
                )
                configured = await m.reply(1)
                assert configured["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
                m.version_mask = int(configured["result"]["version-rolling.mask"], 16)
                await m.client.send({"id": 2, "method": "mining.subscribe", "params": ["bmminer/2.0.0"]}, style="spaced")
                m.take_subscribe(await m.reply(2))
                await m.client.send({"id": 3, "method": "mining.authorize", "params": [worker, "123"]}, style="spaced")
                assert accepted(await m.reply(3))
                for n in range(4, 7):
                    found = await m.find_share(roll="bits")
                    assert found.version_bits not in (None, "00000000")
                    await m.client.send({"params": found.params(worker), "id": n, "method": "mining.submit"}, style="spaced")
                    assert accepted(await m.reply(n))
                bad = [*found.params(worker)[:5], "00001000"]  # a bit outside the mask
                await m.client.send({"params": bad, "id": 9, "method": "mining.submit"})
                assert (await m.reply(9))["error"][:2] == [20, "Version bits outside the negotiated mask: mask is 1fffe000"]


async def test_bitaxe_esp_miner_pipelined_full_mask_and_suggest(tmp_path):
    """Current ESP-Miner: configure(ffffffff), subscribe, authorize, suggest_difficulty, no waiting."""
    worker = f"{ADDRESS}.bitaxe"
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "immediate", nursery) as m:
                burst = [
                    {"id": 1, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]},
                    {"id": 2, "method": "mining.subscribe", "params": ["bitaxe/BM1370/v2.4.0"]},
                    {"id": 3, "method": "mining.authorize", "params": [worker, "x"]},
                    {"id": 4, "method": "mining.suggest_difficulty", "params": [1000]},
                ]
                await m.client.send_raw(b"".join(json.dumps(r).encode() + b"\n" for r in burst))
                configured = await m.reply(1)
                assert configured["result"]["version-rolling.mask"] == "1fffe000"
                m.version_mask = 0x1FFFE000
                m.take_subscribe(await m.reply(2))
                assert accepted(await m.reply(3)) and accepted(await m.reply(4))
                # The suggestion is a hint within the pool's bounds.
                await m.wait_for(lambda: m.difficulty == MAX_DIFF)
                for n in range(5, 8):
                    found = await m.find_share(roll="xor")
                    await m.client.send({"id": n, "method": "mining.submit", "params": found.params(worker)})
                    assert accepted(await m.reply(n))


async def test_bitaxe_older_esp_miner_suggests_before_authorize(tmp_path):
    """Older ESP-Miner: subscribe, configure, suggest_difficulty, authorize."""
    worker = f"{ADDRESS}.bitaxe-old"
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "immediate", nursery) as m:
                await m.client.send({"id": 1, "method": "mining.subscribe", "params": ["bitaxe/BM1366"]}, style="spaced")
                m.take_subscribe(await m.reply(1))
                await m.client.send({"id": 2, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]}, style="spaced")
                m.version_mask = int((await m.reply(2))["result"]["version-rolling.mask"], 16)
                await m.client.send({"id": 3, "method": "mining.suggest_difficulty", "params": [0.000015]}, style="spaced")
                assert accepted(await m.reply(3))
                await m.client.send({"id": 4, "method": "mining.authorize", "params": [worker, "x"]}, style="spaced")
                assert accepted(await m.reply(4))
                await m.wait_for(lambda: m.difficulties)
                assert m.difficulties[0] == Fraction(15, 10**6)  # the hint is the first difficulty
                for n in range(5, 8):
                    found = await m.find_share(roll="xor")
                    await m.client.send({"id": n, "method": "mining.submit", "params": found.params(worker)}, style="spaced")
                    assert accepted(await m.reply(n))


async def test_nerdminer_difficulty_below_one(tmp_path):
    worker = ADDRESS  # NerdMiner sends the bare address
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "immediate", nursery) as m:
                await m.client.send_raw(b'{"id": 1, "method": "mining.subscribe", "params": ["NerdMinerV2/1.6.3"]}\n')
                m.take_subscribe(await m.reply(1))
                await m.client.send_raw(b'{"params": ["' + worker.encode() + b'", "x"], "id": 2, "method": "mining.authorize"}\n')
                # tx_suggest_difficulty: sprintf("%.10g") of 0.00001 is "1e-05".
                await m.client.send_raw(b'{"id":3,"method":"mining.suggest_difficulty","params":[1e-05]}\n')
                assert accepted(await m.reply(2)) and accepted(await m.reply(3))
                await m.wait_for(lambda: m.difficulty is not None and m.notifies)
                assert m.difficulty == Fraction(1, 100000)
                for n in range(4, 6):
                    found = await m.find_share()
                    await m.client.send_raw(json.dumps({"id": n, "method": "mining.submit", "params": found.params(worker)}).encode() + b"\n")
                    assert accepted(await m.reply(n))
                # The keepalive resends the same suggestion: answered, mining goes on.
                await m.client.send_raw(b'{"id":6,"method":"mining.suggest_difficulty","params":[1e-05]}\n')
                assert accepted(await m.reply(6))
                found = await m.find_share()
                await m.client.send_raw(json.dumps({"id": 7, "method": "mining.submit", "params": found.params(worker)}).encode() + b"\n")
                assert accepted(await m.reply(7))
                assert all(d < 1 for d in m.difficulties)


async def test_cpuminer_plain_stratum_same_id_for_every_submit(tmp_path):
    worker = f"{ADDRESS}.cpu"
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "next-notify", nursery) as m:
                await m.client.send({"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}, style="spaced")
                m.take_subscribe(await m.reply(1))
                await m.client.send({"id": 2, "method": "mining.authorize", "params": [worker, "x"]}, style="spaced")
                assert accepted(await m.reply(2))
                for _ in range(3):
                    found = await m.find_share()
                    await m.client.send({"method": "mining.submit", "params": found.params(worker), "id": 4}, style="spaced")
                    assert accepted(await m.reply(4))
                # The pool really hashes: a nonce that was not found is refused.
                wrong = found.params(worker)
                wrong[4] = f"{(int(wrong[4], 16) + 1) % 2**32:08x}"
                await m.client.send({"method": "mining.submit", "params": wrong, "id": 4}, style="spaced")
                assert (await m.reply(4))["error"] == [23, "Low difficulty share", None]


async def test_authorize_before_subscribe_over_tcp(tmp_path):
    worker = f"{ADDRESS}.proxy"
    async with running_pool(tmp_path) as pool, trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with miner(pool.stratum_port, worker, "next-notify", nursery) as m:
                await m.client.send({"id": "a", "method": "mining.authorize", "params": [worker, ""]})
                assert accepted(await m.reply("a"))
                await m.client.send({"id": "s", "method": "mining.subscribe", "params": []})
                m.take_subscribe(await m.reply("s"))
                found = await m.find_share()
                await m.client.send({"id": "x", "method": "mining.submit", "params": found.params(worker)})
                assert accepted(await m.reply("x"))
