"""The pool's side of bitcoind: JSON-RPC clients, health, fail-over, ZMQ.

python-bitcoinrpc is synchronous; every call runs in a trio worker thread
under a deadline so a slow or dead node never stalls the event loop.

``NodePool`` watches every configured node (one monitor task each, so a
wedged node cannot delay news from the others), picks the template source
(the first healthy node, in configured order, that is not behind the best
tip any healthy node reports), submits blocks to all nodes and checks with
``getblockhash(height)`` that a block made it into the chain. New tips are
noticed from ZMQ ``hashblock`` when configured, and by polling otherwise (the
long-poll lives in ``pool.jobs``, which owns the templates).
"""

from __future__ import annotations

import http.client
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import trio
import zmq
from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

if TYPE_CHECKING:
    from .config import NodeEndpoint, NodeSection

log = logging.getLogger(__name__)

# python-bitcoinrpc's codes for an HTTP answer that is not JSON (bitcoind
# answers a bad password with a bare 401) and a JSON answer without result.
_NON_JSON_REPLY = -342
_NO_RESULT = -343


class NodeError(Exception):
    """The node answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class NodeUnavailable(Exception):
    """The node could not be reached or did not answer in time."""


class NodeAuthError(NodeUnavailable):
    """The node refused our credentials (wrong rpcuser/rpcpassword or stale cookie)."""


def url_with_cookie(url: str, cookie_file: Path | None) -> str:
    """Put bitcoind's ``.cookie`` credentials into the URL, as bitcoin-cli does."""
    if cookie_file is None:
        return url
    user, _, password = Path(cookie_file).read_text().strip().partition(":")
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_credentials(url: str) -> str:
    """python-bitcoinrpc needs user:password in the URL; an open node gets empty ones."""
    parts = urlsplit(url)
    if parts.username is not None:
        return url
    return urlunsplit((parts.scheme, ":@" + parts.netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """The URL without credentials, for logs and metrics labels."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class NodeClient:
    """One bitcoind JSON-RPC endpoint.

    ``timeout`` bounds every call (connect + answer); a call may ask for a
    longer one (the long-poll). Credentials come from the URL or from
    bitcoind's cookie file, re-read on every call because a restarted node
    writes a new cookie.
    """

    def __init__(self, url: str, *, timeout: float = 10.0, cookie_file: Path | None = None) -> None:
        self._url = url
        self._cookie_file = cookie_file
        self.timeout = timeout
        self.name = redact(url)

    def _call_sync(self, method: str, params: tuple[Any, ...], timeout: float) -> Any:
        # A proxy per call: AuthServiceProxy shares one HTTPConnection and is
        # not safe across threads.
        try:
            url = with_credentials(url_with_cookie(self._url, self._cookie_file))
        except OSError as exc:
            raise NodeAuthError(f"{self.name}: cannot read cookie file {self._cookie_file}: {exc}") from exc
        proxy = AuthServiceProxy(url, timeout=timeout)
        try:
            return getattr(proxy, method)(*params)
        except JSONRPCException as exc:
            err = exc.error if isinstance(exc.error, dict) else {}
            code = int(err.get("code", -1))
            message = str(err.get("message", exc))
            if code == _NON_JSON_REPLY and "401" in message:
                raise NodeAuthError(f"{self.name}: credentials refused (HTTP 401)") from exc
            if code in (_NON_JSON_REPLY, _NO_RESULT):
                raise NodeUnavailable(f"{self.name}: {method}: {message}") from exc
            raise NodeError(code, message) from exc
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            raise NodeUnavailable(f"{self.name}: {method}: {exc!r}") from exc

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Run one RPC in a worker thread; ``NodeUnavailable`` after the deadline."""
        limit = self.timeout if timeout is None else timeout
        try:
            with trio.fail_after(limit + 1):
                return await trio.to_thread.run_sync(self._call_sync, method, params, limit, abandon_on_cancel=True)
        except trio.TooSlowError as exc:
            raise NodeUnavailable(f"{self.name}: {method} timed out after {limit}s") from exc

    async def getblocktemplate(self) -> dict[str, Any]:
        return await self.call("getblocktemplate", {"rules": ["segwit"]})

    async def longpoll_template(self, longpollid: str, *, timeout: float) -> dict[str, Any]:
        """BIP22 long-poll: the node answers once the template differs from ``longpollid``'s."""
        return await self.call("getblocktemplate", {"rules": ["segwit"], "longpollid": longpollid}, timeout=timeout)

    async def submitblock(self, block_hex: str) -> str | None:
        return await self.call("submitblock", block_hex)

    async def getbestblockhash(self) -> str:
        return await self.call("getbestblockhash")

    async def getblockhash(self, height: int) -> str:
        return await self.call("getblockhash", height)

    async def getblockchaininfo(self) -> dict[str, Any]:
        return await self.call("getblockchaininfo")


@dataclass
class NodeState:
    """What the last health check saw."""

    healthy: bool = False
    height: int = -1
    best_hash: str = ""
    error: str = ""
    checked_at: float = 0.0


@dataclass
class ManagedNode:
    """A node in the pool's list: client, health, and its ZMQ endpoint."""

    index: int
    client: NodeClient
    zmq_hashblock: str = ""
    state: NodeState = field(default_factory=NodeState)
    # After a failed getblocktemplate the node is not asked for templates
    # again until this (trio) time, so a half-broken node cannot flap.
    holdoff_until: float = 0.0
    zmq_messages: int = 0
    _poke: trio.Event = field(default_factory=trio.Event)

    @property
    def name(self) -> str:
        return self.client.name

    def poke(self) -> None:
        """Check this node's tip now instead of at the next poll."""
        self._poke.set()

    async def wait_poked(self, timeout: float) -> None:
        """Sleep until poked or ``timeout`` passed (the monitor's pace)."""
        with trio.move_on_after(timeout):
            await self._poke.wait()
        self._poke = trio.Event()


@dataclass(frozen=True)
class NodeSubmitResult:
    """One node's answer to ``submitblock``.

    ``result`` is bitcoind's string (None = accepted); ``error`` is set
    instead when no answer came (``node-unavailable``) or the RPC failed.
    """

    node: str
    result: str | None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        if self.error is not None:
            return self.error
        return "accepted" if self.result is None else self.result


class NodePool:
    """The configured nodes, in order of preference.

    Run ``run`` (``pool.jobs.JobManager`` does) to keep the health view
    current; ``version`` increases on every change a template decision
    depends on (a node's health, height or tip), and ``wait_changed`` waits
    for that.
    """

    def __init__(
        self,
        clients: Sequence[NodeClient],
        *,
        zmq_hashblock: Sequence[str] = (),
        poll_interval: float = 0.5,
        holdoff: float = 5.0,
        max_lag: int = 0,
    ) -> None:
        if not clients:
            raise ValueError("NodePool needs at least one node")
        zmq_list = list(zmq_hashblock) + [""] * (len(clients) - len(zmq_hashblock))
        self.nodes = [ManagedNode(i, c, zmq_list[i]) for i, c in enumerate(clients)]
        self.poll_interval = poll_interval
        self.holdoff = holdoff
        self.max_lag = max_lag
        self.version = 0
        self._changed = trio.Event()
        # Called with a block hash (display hex) whenever a node reports a tip
        # not seen before (metrics: when the pool learned of a block).
        self.tip_listeners: list[Callable[[str], None]] = []
        self._tips_seen: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        section: NodeSection,
        endpoints: Sequence[NodeEndpoint] | None = None,
        *,
        client: Callable[..., NodeClient] = NodeClient,
    ) -> NodePool:
        """Nodes from the ``[node]`` section (or the given endpoints); ``client`` builds each client."""
        eps = list(endpoints) if endpoints is not None else section.node_endpoints()
        clients = [
            client(ep.url, timeout=section.timeout, cookie_file=ep.cookie_file or section.cookie_file) for ep in eps
        ]
        return cls(
            clients,
            zmq_hashblock=[ep.zmq_hashblock for ep in eps],
            poll_interval=section.poll_interval,
            holdoff=section.failover_holdoff,
        )

    # --- health ------------------------------------------------------------
    @property
    def name(self) -> str:
        return ", ".join(n.name for n in self.nodes)

    @property
    def uses_zmq(self) -> bool:
        return any(n.zmq_hashblock for n in self.nodes)

    def note_tip(self, block_hash: str) -> None:
        """A node named ``block_hash`` as its tip (or a template built on it)."""
        if block_hash in self._tips_seen:
            return
        if len(self._tips_seen) > 1024:
            self._tips_seen.clear()
        self._tips_seen.add(block_hash)
        for listener in list(self.tip_listeners):
            listener(block_hash)

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, seen: int) -> int:
        """Wait until ``version`` differs from ``seen``; return the new version."""
        while self.version == seen:
            await self._changed.wait()
        return self.version

    def poke_all(self) -> None:
        for node in self.nodes:
            node.poke()

    async def check(self, node: ManagedNode) -> None:
        """One health check: reachable, not in initial sync, and where its tip is."""
        old = (node.state.healthy, node.state.height, node.state.best_hash)
        try:
            info = await node.client.getblockchaininfo()
            if info.get("initialblockdownload"):
                raise NodeError(-10, "node is in initial block download")
            node.state.height = int(info["blocks"])
            node.state.best_hash = str(info["bestblockhash"])
            node.state.healthy = True
            node.state.error = ""
            self.note_tip(node.state.best_hash)
        except (NodeError, NodeUnavailable, KeyError, TypeError, ValueError) as exc:
            if node.state.healthy or not node.state.error:
                log.warning("node %s unhealthy: %s", node.name, exc)
            node.state.healthy = False
            node.state.error = str(exc)
        node.state.checked_at = trio.current_time()
        if (node.state.healthy, node.state.height, node.state.best_hash) != old:
            if node.state.healthy and not old[0]:
                log.info("node %s healthy at height %d", node.name, node.state.height)
            self._bump()

    def mark_failed(self, node: ManagedNode, error: str) -> None:
        """A call on ``node`` failed: stop preferring it until it answers again."""
        node.holdoff_until = trio.current_time() + self.holdoff
        was = node.state.healthy
        node.state.healthy = False
        node.state.error = error
        if was:
            log.warning("node %s failed: %s", node.name, error)
            self._bump()
        node.poke()

    def best_height(self) -> int:
        return max((n.state.height for n in self.nodes if n.state.healthy), default=-1)

    def candidates(self) -> list[ManagedNode]:
        """Template sources in order: healthy and up to date first, then the rest as a last resort."""
        best = self.best_height()
        now = trio.current_time()
        good = [
            n for n in self.nodes
            if n.state.healthy and n.state.height >= best - self.max_lag and n.holdoff_until <= now
        ]
        return good + [n for n in self.nodes if n not in good]

    def preferred(self) -> ManagedNode | None:
        """The node templates should come from now, or None if no node is healthy."""
        first = self.candidates()[0]
        return first if first.state.healthy and first.holdoff_until <= trio.current_time() else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Monitor every node (and listen to ZMQ) until cancelled."""
        context = zmq.Context() if self.uses_zmq else None
        try:
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as first_round:
                    for node in self.nodes:
                        first_round.start_soon(self.check, node)
                for node in self.nodes:
                    nursery.start_soon(self._monitor, node)
                    if node.zmq_hashblock and context is not None:
                        sub = HashblockSubscriber(node.zmq_hashblock, self._on_hashblock(node), context=context)
                        nursery.start_soon(sub.run)
                task_status.started()
        finally:
            if context is not None:
                context.destroy(linger=0)

    def _on_hashblock(self, node: ManagedNode) -> Callable[[str, int], None]:
        def handle(block_hash: str, _sequence: int) -> None:
            node.zmq_messages += 1
            log.debug("zmq hashblock %s from %s", block_hash, node.name)
            node.poke()

        return handle

    async def _monitor(self, node: ManagedNode) -> None:
        while True:
            await node.wait_poked(self.poll_interval)
            await self.check(node)

    # --- calls with fail-over ----------------------------------------------
    async def call(self, method: str, *params: Any) -> Any:
        """Any RPC on the preferred node, falling over to the next one if it cannot be reached.

        A JSON-RPC error is an answer, not a failure, and is raised as is.
        """
        errors = []
        for node in self.candidates():
            try:
                return await node.client.call(method, *params)
            except NodeUnavailable as exc:
                errors.append(str(exc))
                self.mark_failed(node, f"{method}: {exc}")
        raise NodeUnavailable(f"no node answered {method}: " + "; ".join(errors))

    async def getblocktemplate(self) -> tuple[ManagedNode, dict[str, Any]]:
        """A template from the preferred node, falling over to the next on failure."""
        errors = []
        for node in self.candidates():
            try:
                return node, await node.client.getblocktemplate()
            except (NodeError, NodeUnavailable) as exc:
                errors.append(f"{node.name}: {exc}")
                self.mark_failed(node, f"getblocktemplate: {exc}")
        raise NodeUnavailable("no node gave a template: " + "; ".join(errors))

    async def submit_block(self, block_hex: str) -> list[NodeSubmitResult]:
        """``submitblock`` on every node at once (a block must reach the network any way it can)."""
        results: list[NodeSubmitResult | None] = [None] * len(self.nodes)

        async def one(node: ManagedNode) -> None:
            try:
                answer = await node.client.submitblock(block_hex)
                results[node.index] = NodeSubmitResult(node.name, None if answer is None else str(answer))
            except NodeError as exc:
                results[node.index] = NodeSubmitResult(node.name, None, f"rpc-error: {exc.message}")
            except NodeUnavailable as exc:
                log.error("block not submitted to %s: %s", node.name, exc)
                results[node.index] = NodeSubmitResult(node.name, None, "node-unavailable")

        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(one, node)
        self.poke_all()
        return [r for r in results if r is not None]

    async def block_in_chain(self, height: int, block_hash: str) -> bool | None:
        """Whether any node has ``block_hash`` at ``height`` of its active chain (None: no node answered)."""
        answers: list[bool] = []

        async def one(node: ManagedNode) -> None:
            try:
                answers.append(await node.client.getblockhash(height) == block_hash)
            except NodeError:
                answers.append(False)  # height out of range: not (yet) in this node's chain
            except NodeUnavailable:
                pass

        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(one, node)
        if not answers:
            return None
        return any(answers)


class HashblockSubscriber:
    """ZMQ SUB on bitcoind's ``-zmqpubhashblock`` endpoint.

    Waits on the socket's file descriptor with trio (no thread, no busy
    loop). ZMQ's descriptor is edge-triggered, so the socket is drained
    after every wake-up, and a periodic re-check guards against a missed
    edge. ZMQ reconnects by itself when the node comes back.
    """

    def __init__(
        self,
        endpoint: str,
        on_block: Callable[[str, int], None],
        *,
        context: zmq.Context | None = None,
        recheck: float = 1.0,
    ) -> None:
        self.endpoint = endpoint
        self.on_block = on_block
        self.context = context or zmq.Context.instance()
        self.recheck = recheck
        self.received = 0
        self.last_sequence: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = self.context.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 1000)
            sock.setsockopt(zmq.SUBSCRIBE, b"hashblock")
            sock.connect(self.endpoint)
            fd = sock.getsockopt(zmq.FD)
            task_status.started()
            while True:
                while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    self._handle(sock.recv_multipart(zmq.NOBLOCK))
                with trio.move_on_after(self.recheck):
                    await trio.lowlevel.wait_readable(fd)
        finally:
            sock.close(linger=0)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 3 or frames[0] != b"hashblock" or len(frames[1]) != 32 or len(frames[2]) != 4:
            log.warning("unexpected ZMQ message from %s: %d frames", self.endpoint, len(frames))
            return
        (sequence,) = struct.unpack("<I", frames[2])
        if self.last_sequence is not None and sequence != (self.last_sequence + 1) & 0xFFFFFFFF:
            log.info("zmq %s: sequence %d after %d (notifications missed)", self.endpoint, sequence, self.last_sequence)
        self.last_sequence = sequence
        self.received += 1
        self.on_block(frames[1].hex(), sequence)


__all__ = [
    "HashblockSubscriber",
    "ManagedNode",
    "NodeAuthError",
    "NodeClient",
    "NodeError",
    "NodePool",
    "NodeState",
    "NodeSubmitResult",
    "NodeUnavailable",
    "redact",
    "url_with_cookie",
    "with_credentials",
]
