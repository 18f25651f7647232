"""The trio server over real TCP, with a scripted backend instead of the pool."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import trio
import trio.lowlevel

from stratum import errors
from stratum.errors import StratumError
from stratum.protocol import ProtocolSettings, Share
from stratum.limits import Limits
from stratum.server import ServerSettings, StratumServer
from tests.stratum.helpers import NTIME, make_job
from tests.stratum.lineclient import LineClient


class Backend:
    def __init__(self) -> None:
        self.shares: list[Share] = []
        self.rejected: list[tuple[str | None, StratumError]] = []
        self.counts: list[tuple[int, int]] = []
        self.gate: trio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail = False

    async def authorize(self, username: str, password: str) -> tuple[bool, str | None]:
        return (not username.startswith("bad"), "go away" if username.startswith("bad") else None)

    async def submit_share(self, share: Share) -> StratumError | None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                raise RuntimeError("boom")
            self.shares.append(share)
            return None
        finally:
            self.in_flight -= 1

    def share_rejected(self, worker: str | None, error: StratumError) -> None:
        self.rejected.append((worker, error))

    def connections_changed(self, connected: int, working: int) -> None:
        self.counts.append((connected, working))


SETTINGS = ServerSettings(
    protocol=ProtocolSettings(start_difficulty=Fraction(8)), tick_interval=0.5, server_id=42, resume_window=30
)


async def start_server(nursery: trio.Nursery, settings: ServerSettings = SETTINGS) -> tuple[StratumServer, Backend]:
    backend = Backend()
    server = StratumServer(backend, settings)
    server.broadcast(make_job(1, clean=True))
    await nursery.start(server.serve, "127.0.0.1", 0)
    return server, backend


async def working_client(server: StratumServer, user: str = "w") -> tuple[LineClient, dict]:
    assert server.port is not None
    client = await LineClient.connect(server.port)
    await client.send({"id": 1, "method": "mining.subscribe", "params": ["test"]})
    sub = await client.reply_to(1)
    await client.send({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
    await client.recv_until(lambda m: m.get("method") == "mining.notify")
    return client, sub


def submit(nonce: int, job: str = "1", id: int | None = None) -> dict:
    return {"id": id if id is not None else 100 + nonce, "method": "mining.submit", "params": ["w", job, "00000000", f"{NTIME:08x}", f"{nonce:08x}"]}


async def test_session_over_tcp():
    async with trio.open_nursery() as nursery:
        server, backend = await start_server(nursery)
        client, sub = await working_client(server)
        assert sub["result"][1].startswith("2a")  # server id 42
        methods = [m.get("method") for m in client.seen]
        assert methods == [None, None, "mining.set_difficulty", "mining.notify"]
        await client.send(submit(1))
        assert await client.reply_to(101) == {"id": 101, "result": True, "error": None}
        assert backend.shares[0].difficulty == 8 and backend.counts[-1] == (1, 1)
        # Several requests in one TCP write, one split over two writes.
        await client.send_raw(b'{"id":7,"method":"mining.extranonce.subscribe","params":[]}\n{"id":8,"meth')
        await client.send_raw(b'od":"nope","params":[]}\n')
        assert (await client.reply_to(7))["result"] is True
        assert (await client.reply_to(8))["error"] == [20, "Unknown method: nope", None]
        await client.aclose()
        while backend.counts[-1] != (0, 0):
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_refused_worker_gets_24():
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery)
        client = await LineClient.connect(server.port)
        await client.send({"id": 1, "method": "mining.authorize", "params": ["bad.worker", "x"]})
        assert await client.reply_to(1) == {"id": 1, "result": False, "error": [24, "go away", None]}
        nursery.cancel_scope.cancel()


async def test_submits_of_one_connection_are_judged_concurrently():
    async with trio.open_nursery() as nursery:
        server, backend = await start_server(nursery)
        client, _ = await working_client(server)
        backend.gate = trio.Event()
        for nonce in range(1, 5):
            await client.send(submit(nonce))
        with trio.fail_after(5):
            while backend.in_flight < 4:
                await trio.sleep(0.01)
        backend.gate.set()
        replies = {(await client.recv_until(lambda m: "result" in m))["id"] for _ in range(4)}
        assert replies == {101, 102, 103, 104} and backend.max_in_flight == 4
        nursery.cancel_scope.cancel()


async def test_a_failing_backend_costs_one_share_not_the_server():
    async with trio.open_nursery() as nursery:
        server, backend = await start_server(nursery)
        client, _ = await working_client(server)
        backend.fail = True
        await client.send(submit(1))
        assert (await client.reply_to(101))["error"] == [20, errors.INTERNAL_ERROR.message, None]
        backend.fail = False
        await client.send(submit(1, id=200))  # retryable: not a duplicate
        assert (await client.reply_to(200))["result"] is True
        nursery.cancel_scope.cancel()


async def test_shares_in_flight_are_judged_after_the_miner_hangs_up():
    async with trio.open_nursery() as nursery:
        server, backend = await start_server(nursery)
        client, _ = await working_client(server)
        backend.gate = trio.Event()
        await client.send(submit(1))
        while backend.in_flight < 1:
            await trio.sleep(0.01)
        await client.aclose()
        await trio.sleep(0.05)
        backend.gate.set()
        with trio.fail_after(5):
            while not backend.shares:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_resume_over_tcp_and_takeover_of_a_half_dead_connection():
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery)
        first, sub = await working_client(server)
        session_id, en1 = sub["result"][0][1][1], sub["result"][1]
        # The miner reconnects while the server still holds the old socket.
        second = await LineClient.connect(server.port)
        await second.send({"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.12.1", session_id]})
        assert (await second.reply_to(1))["result"][1] == en1
        with trio.fail_after(5):
            assert await first.closed()
        await second.aclose()
        # Parked now: a third connection resumes it again.
        with trio.fail_after(5):
            while server.registry.parked != 1:
                await trio.sleep(0.01)
        third = await LineClient.connect(server.port)
        await third.send({"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.12.1", session_id]})
        assert (await third.reply_to(1))["result"][1] == en1
        nursery.cancel_scope.cancel()


async def test_server_initiated_messages():
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery)
        client = await LineClient.connect(server.port)
        await client.send({"id": 0, "method": "mining.configure", "params": [["version-rolling", "subscribe-extranonce"], {"version-rolling.mask": "ffffffff"}]})
        assert (await client.reply_to(0))["result"]["version-rolling.mask"] == "1fffe000"
        await client.send({"id": 1, "method": "mining.subscribe", "params": []})
        await client.send({"id": 2, "method": "mining.authorize", "params": ["w", ""]})
        await client.recv_until(lambda m: m.get("method") == "mining.notify")
        server.set_version_mask(0x00FFE000)
        assert (await client.recv())["params"] == ["00ffe000"]
        assert server.renew_extranonces() == 1
        assert (await client.recv())["method"] == "mining.set_extranonce"
        assert (await client.recv())["method"] == "mining.notify"
        server.show_message("maintenance at noon")
        assert (await client.recv()) == {"id": None, "method": "client.show_message", "params": ["maintenance at noon"]}
        server.broadcast(make_job(2))
        assert (await client.recv())["params"][0] == "2"
        server.reconnect_all()
        assert (await client.recv())["method"] == "client.reconnect"
        nursery.cancel_scope.cancel()


async def test_vardiff_silence_is_driven_by_the_ticker():
    settings = ServerSettings(protocol=ProtocolSettings(start_difficulty=Fraction(8), target_share_interval=0.2, max_share_rate=20), tick_interval=0.1)
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, settings)
        client, _ = await working_client(server)
        with trio.fail_after(5):
            msg = await client.recv_until(lambda m: m.get("method") == "mining.set_difficulty")
        assert Fraction(str(msg["params"][0])) < 8
        nursery.cancel_scope.cancel()


async def test_garbage_closes_the_connection():
    settings = ServerSettings(protocol=ProtocolSettings(max_bad_lines=2))
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, settings)
        client = await LineClient.connect(server.port)
        await client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            assert (await client.recv())["error"][0] == 20
            assert await client.closed()
        nursery.cancel_scope.cancel()


async def test_a_miner_that_stops_reading_is_dropped():
    settings = ServerSettings(limits=Limits(max_send_buffer=4096))
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, settings)
        _client, _ = await working_client(server)  # connected, never reads again
        big = dataclasses.replace(make_job(2), coinb2="00" * 200_000)
        with trio.fail_after(10):
            n = 2
            while server.sessions:
                server.broadcast(dataclasses.replace(big, job_id=f"{n:x}"))
                n += 1
                await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()


class BatchBackend(Backend):
    """A backend with ``submit_shares``: the server hands it whole batches."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, int]]] = []

    async def submit_shares(self, shares: list[Share]) -> list[StratumError | None]:
        self.batches.append([(s.extranonce1.hex(), s.nonce) for s in shares])
        if self.gate is not None:
            await self.gate.wait()
        # Odd nonces are accepted, even ones refused: each verdict must reach its own request.
        return [None if s.nonce % 2 else errors.LOW_DIFFICULTY for s in shares]


async def test_shares_read_in_one_pass_reach_the_backend_as_one_batch():
    async with trio.open_nursery() as nursery:
        backend = BatchBackend()
        server = StratumServer(backend, SETTINGS)
        server.broadcast(make_job(1, clean=True))
        await nursery.start(server.serve, "127.0.0.1", 0)
        a, _ = await working_client(server)
        b, _ = await working_client(server)
        # Hold the first batch, so both connections' submits are read while it waits.
        backend.gate = trio.Event()
        await a.send(submit(1, id=1))
        with trio.fail_after(5):
            while not backend.batches:
                await trio.sleep(0.01)
        lines = b"".join(json.dumps(submit(n, id=n)).encode() + b"\n" for n in range(2, 8))
        await a.send_raw(lines)
        await b.send_raw(lines)
        with trio.fail_after(5):
            while sum(map(len, backend.batches)) < 13:
                await trio.sleep(0.01)
        backend.gate.set()
        for client in (a, b):
            got = {}
            with trio.fail_after(5):
                while len(got) < (7 if client is a else 6):
                    reply = await client.recv_until(lambda m: "result" in m)
                    got[reply["id"]] = reply
            for n, reply in got.items():
                assert (reply["result"] is True) == bool(n % 2), reply
                if not n % 2:
                    assert reply["error"][0] == errors.LOW_DIFFICULTY.code
        # The first batch held one share; the twelve read meanwhile came in one or two more.
        assert backend.batches[0] == [(backend.batches[0][0][0], 1)]
        assert len(backend.batches) <= 3 and max(len(b) for b in backend.batches[1:]) >= 6
        nursery.cancel_scope.cancel()
