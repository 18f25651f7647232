"""One devnet node: a chain behind bitcoind's JSON-RPC and ZMQ interfaces.

Several nodes can serve one chain or peer chains (``DevnetChain.spawn_peer``
+ ``DevnetRelay``), each stoppable on its own: that is how fail-over is
tested against the pool's real RPC path.
"""

from __future__ import annotations

import logging

import trio

from .chain import DevnetChain
from .notify import HashblockPublisher
from .rpc import DEFAULT_LONGPOLL_TIMEOUT, DevnetRPC
from .server import DevnetHTTPServer
from .wallet import DevnetWallet

log = logging.getLogger(__name__)


class DevnetNode:
    """Serve ``chain`` over HTTP JSON-RPC (and ZMQ ``hashblock`` when asked).

    ``run`` serves until ``stop()`` (or cancellation); it can be run again
    later and takes the same port back, like a restarted bitcoind. ``hang()``
    keeps the port open but stops answering.
    """

    def __init__(
        self,
        chain: DevnetChain,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rpc_user: str = "",
        rpc_password: str = "",
        zmq_hashblock: str | None = None,
        longpoll_timeout: float = DEFAULT_LONGPOLL_TIMEOUT,
        wallet: DevnetWallet | None = None,
    ) -> None:
        self.chain = chain
        # Kept across restarts, like a wallet file.
        self.wallet = wallet if wallet is not None else DevnetWallet(chain)
        self.host = host
        self.port = port
        self.rpc_user = rpc_user
        self.rpc_password = rpc_password
        self.zmq_bind = zmq_hashblock
        self.zmq_endpoint: str | None = None
        self.longpoll_timeout = longpoll_timeout
        self.http: DevnetHTTPServer | None = None
        self.publisher: HashblockPublisher | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._hung = False

    @property
    def url(self) -> str:
        """The JSON-RPC URL, with credentials when the node requires them."""
        creds = f"{self.rpc_user}:{self.rpc_password}@" if (self.rpc_user or self.rpc_password) else ""
        return f"http://{creds}{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def run(self, *, task_status: trio.TaskStatus[DevnetNode] = trio.TASK_STATUS_IGNORED) -> None:
        rpc = DevnetRPC(self.chain, longpoll_timeout=self.longpoll_timeout, wallet=self.wallet)
        self.http = DevnetHTTPServer(rpc, user=self.rpc_user, password=self.rpc_password)
        if self._hung:
            self.http.hang()
        if self.zmq_bind:
            # Re-bind the port we got the first time, so subscribers reconnect.
            self.publisher = HashblockPublisher(self.zmq_endpoint or self.zmq_bind)
            self.zmq_endpoint = self.publisher.endpoint
            self.chain.on_new_tip.append(self.publisher.publish)
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(self.http.serve, self.host, self.port)
                    log.info("devnet node up on %s (zmq %s)", self.port, self.zmq_endpoint)
                    task_status.started(self)
        finally:
            self._scope = None
            rpc.close()
            if self.publisher is not None:
                if self.publisher.publish in self.chain.on_new_tip:
                    self.chain.on_new_tip.remove(self.publisher.publish)
                self.publisher.close()
                self.publisher = None
            self._stopped.set()

    def stop(self) -> None:
        """Take the node off the network (connections refused from now on)."""
        if self._scope is not None:
            self._scope.cancel()

    async def stopped(self) -> None:
        await self._stopped.wait()

    def hang(self) -> None:
        """Keep accepting connections but answer nothing (a wedged node)."""
        self._hung = True
        if self.http is not None:
            self.http.hang()

    def resume(self) -> None:
        self._hung = False
        if self.http is not None:
            self.http.resume()
