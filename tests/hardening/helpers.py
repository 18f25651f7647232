"""A scripted pool, a well-behaved miner that measures its latency, and attacker sockets.

Every attacker connects from its own loopback address (127.0.0.2, 127.0.0.3,
...; Linux routes all of 127/8 to lo) so per-address limits and bans hit the
attacker and never the well-behaved miner on 127.0.0.1, as on the internet.
"""

from __future__ import annotations

import json
import logging
import socket
import statistics
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import trio
import trio.lowlevel

from stratum import errors
from stratum.errors import StratumError
from stratum.protocol import ProtocolSettings, Share
from stratum.server import ServerSettings, StratumServer
from tests.stratum.helpers import NTIME, make_job
from tests.stratum.lineclient import LineClient

log = logging.getLogger(__name__)

GOOD_IP = "127.0.0.1"
#: Nonces at or above this are refused as low-difficulty by ``Backend``.
BAD_NONCE = 0x8000_0000


class Backend:
    """Accepts every share below ``BAD_NONCE`` and every worker not named bad*."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refused = 0
        self.rejected: list[StratumError] = []
        self.counts: list[tuple[int, int]] = []
        self.stale: list[Share] = []

    async def authorize(self, username: str, password: str) -> tuple[bool, str | None]:
        if username.startswith("bad"):
            return False, "go away"
        return True, None

    async def submit_share(self, share: Share) -> StratumError | None:
        await trio.lowlevel.checkpoint()
        if share.stale:
            self.stale.append(share)
            return errors.STALE_JOB
        if share.nonce >= BAD_NONCE:
            self.refused += 1
            return errors.LOW_DIFFICULTY
        self.accepted += 1
        return None

    def share_rejected(self, worker: str | None, error: StratumError) -> None:
        self.rejected.append(error)

    def connections_changed(self, connected: int, working: int) -> None:
        self.counts.append((connected, working))


def settings(**kwargs: Any) -> ServerSettings:
    base: dict[str, Any] = {
        "protocol": ProtocolSettings(start_difficulty=Fraction(8), max_share_rate=1000, target_share_interval=10),
        "tick_interval": 0.5,
    }
    base.update(kwargs)
    return ServerSettings(**base)


async def start_server(nursery: trio.Nursery, server_settings: ServerSettings | None = None) -> tuple[StratumServer, Backend]:
    backend = Backend()
    server = StratumServer(backend, server_settings or settings())
    server.broadcast(make_job(1, clean=True))
    await nursery.start(server.serve, "127.0.0.1", 0)
    return server, backend


async def connect(port: int, source: str = GOOD_IP, *, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP connection to the server from ``source`` (a loopback address)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def line_client(port: int, source: str = GOOD_IP) -> LineClient:
    return LineClient(await connect(port, source))


async def working(port: int, source: str = GOOD_IP, user: str = "w") -> LineClient:
    """Subscribed and authorized, first notify read."""
    client = await line_client(port, source)
    await client.send({"id": 1, "method": "mining.subscribe", "params": ["test"]})
    await client.reply_to(1)
    await client.send({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
    await client.recv_until(lambda m: m.get("method") == "mining.notify")
    return client


def submit(nonce: int, req_id: int, job: str = "1", user: str = "w") -> dict[str, Any]:
    return {"id": req_id, "method": "mining.submit", "params": [user, job, "00000000", f"{NTIME:08x}", f"{nonce:08x}"]}


async def closed_by_server(stream: trio.SocketStream, within: float = 5.0) -> bool:
    """True once the server closed ``stream`` (EOF or reset), reading and discarding anything before."""
    with trio.move_on_after(within):
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return True
    return False


@dataclass
class Latency:
    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def __str__(self) -> str:
        if not self.samples:
            return "n=0"
        return f"n={len(self.samples)} p50={self.p50 * 1000:.1f}ms p99={self.p99 * 1000:.1f}ms"


class GoodMiner:
    """A well-behaved miner: submits a valid share every ``interval`` and times each answer.

    It also follows every job it is sent (submitting on the newest), so it
    doubles as the check that broadcasts keep reaching it.
    """

    def __init__(self, port: int, interval: float = 0.05) -> None:
        self.port = port
        self.interval = interval
        self.nonce = 0
        self.job = "1"
        self.jobs_seen: list[str] = []
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.failures: list[Any] = []
        self.client: LineClient | None = None
        self.messages: list[dict[str, Any]] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.client = client = await working(self.port)
        for msg in client.seen:
            self._note(msg)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, client)
            task_status.started()
            while True:
                self.nonce += 1
                req_id = 1000 + self.nonce
                self.sent[req_id] = trio.current_time()
                await client.send(submit(self.nonce, req_id, self.job))
                await trio.sleep(self.interval)

    def _note(self, msg: dict[str, Any]) -> None:
        if msg.get("method") == "mining.notify":
            self.job = msg["params"][0]
            self.jobs_seen.append(self.job)
        elif msg.get("method") is not None:
            self.messages.append(msg)

    async def _read(self, client: LineClient) -> None:
        while True:
            msg = await client.recv()
            self._note(msg)
            started = self.sent.pop(msg.get("id"), None) if isinstance(msg.get("id"), int) else None
            if started is None:
                continue
            if msg.get("result") is True:
                self.latencies.append(trio.current_time() - started)
            else:
                self.failures.append(msg.get("error"))

    def window(self) -> Latency:
        """Latencies since the last call."""
        out, self.latencies = Latency(self.latencies), []
        return out

    async def window_since(self, started: float, at_least: float = 0.6) -> Latency:
        """The window opened at ``started`` (a short attack: wait until it spans ``at_least``)."""
        await trio.sleep_until(started + at_least)
        return self.window()

    async def measure(self, seconds: float) -> Latency:
        self.window()
        await trio.sleep(seconds)
        return self.window()


def assert_unharmed(baseline: Latency, attack: Latency, miner: GoodMiner) -> None:
    """The stated bound: under attack the good miner's shares are all accepted, and its
    p99 submit latency is at most 5x its own baseline p99 plus 250 ms."""
    log.info("good miner: baseline %s, under attack %s", baseline, attack)
    assert not miner.failures, miner.failures
    assert len(attack.samples) >= 5, f"good miner starved: {attack}"
    assert attack.p99 <= 5 * baseline.p99 + 0.25, f"baseline {baseline}, under attack {attack}"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"
