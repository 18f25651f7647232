"""The trio TCP server: moves bytes between sockets and ``ServerConnection``.

All protocol decisions live in ``protocol.py``; the pool's decisions
(is this address acceptable, is this share valid) come from a ``PoolBackend``.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from typing import Protocol

import trio

from .errors import StratumError
from .extranonce import ExtranonceAllocator
from .jobs import JobBook, StratumJob
from .messages import LineBuffer, LineTooLong
from .protocol import (
    AuthorizeRequested,
    Close,
    Event,
    ProtocolSettings,
    Send,
    ServerConnection,
    Share,
    ShareRejected,
    ShareSubmitted,
)

log = logging.getLogger(__name__)


class PoolBackend(Protocol):
    async def authorize(self, username: str, password: str) -> tuple[bool, str | None]:
        """Accept or refuse a worker name; the message explains a refusal."""

    async def submit_share(self, share: Share) -> StratumError | None:
        """Judge a share; None means accepted (and durably recorded)."""

    def share_rejected(self, worker: str | None, error: StratumError) -> None:
        """A share the protocol refused before it reached the pool."""

    def connections_changed(self, connected: int, working: int) -> None:
        """Connection counts, for metrics."""


@dataclass(frozen=True)
class ServerSettings:
    protocol: ProtocolSettings = ProtocolSettings()
    extranonce1_size: int = 4
    server_id: int = 0
    outbox_size: int = 256
    tick_interval: float = 5.0


class ClientSession:
    """One connected miner: its socket, protocol state and outbound queue."""

    def __init__(self, stream: trio.SocketStream, proto: ServerConnection, outbox_size: int) -> None:
        self.stream = stream
        self.proto = proto
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](outbox_size)
        self.cancel_scope = trio.CancelScope()
        try:
            self.peer = "%s:%s" % stream.socket.getpeername()[:2]
        except OSError:
            self.peer = "?"

    def queue(self, data: bytes) -> bool:
        """Queue bytes for the socket; False if the client is not reading (slow reader)."""
        try:
            self.send_channel.send_nowait(data)
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False


class StratumServer:
    def __init__(self, backend: PoolBackend, settings: ServerSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or ServerSettings()
        self.jobs = JobBook()
        self.sessions: set[ClientSession] = set()
        self.extranonces = ExtranonceAllocator(self.settings.extranonce1_size, self.settings.server_id)
        self.port: int | None = None
        self.network_difficulty = None

    # --- work -------------------------------------------------------------------
    def broadcast(self, job: StratumJob) -> int:
        """Announce a job to every working connection; returns how many got it."""
        self.jobs.add(job)
        sent = 0
        for session in list(self.sessions):
            session.proto.network_difficulty = self.network_difficulty
            data = session.proto.job_notification(job)
            if data is None:
                continue
            if session.queue(data):
                sent += 1
            else:
                self._drop(session, "slow reader: outbound queue full")
        return sent

    def reconnect_all(self) -> None:
        for session in list(self.sessions):
            session.queue(session.proto.reconnect())

    def _drop(self, session: ClientSession, reason: str) -> None:
        log.info("dropping miner %s: %s", session.peer, reason)
        session.cancel_scope.cancel()

    # --- serving -----------------------------------------------------------------
    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("stratum listening on %s:%s", host, self.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ticker)
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners)

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.settings.tick_interval)
            now = trio.current_time()
            for session in list(self.sessions):
                for event in session.proto.tick(now):
                    if isinstance(event, Send) and not session.queue(event.data):
                        self._drop(session, "slow reader: outbound queue full")

    def _counts(self) -> None:
        working = sum(1 for s in self.sessions if s.proto.working)
        self.backend.connections_changed(len(self.sessions), working)

    async def _handle(self, stream: trio.SocketStream) -> None:
        extranonce1 = self.extranonces.allocate()
        proto = ServerConnection(extranonce1, self.settings.protocol, self.jobs)
        proto.network_difficulty = self.network_difficulty
        session = ClientSession(stream, proto, self.settings.outbox_size)
        self.sessions.add(session)
        self._counts()
        try:
            with session.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, session)
                    await self._reader(session)
                    nursery.cancel_scope.cancel()
        finally:
            self.sessions.discard(session)
            self.extranonces.release(extranonce1)
            self._counts()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _writer(self, session: ClientSession) -> None:
        try:
            async for data in session.receive_channel:
                await session.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session.cancel_scope.cancel()

    async def _reader(self, session: ClientSession) -> None:
        buffer = LineBuffer()
        while True:
            try:
                data = await session.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                lines = buffer.feed(data)
            except LineTooLong as exc:
                log.info("closing %s: %s", session.peer, exc)
                return
            for line in lines:
                events = session.proto.receive_line(line, trio.current_time())
                if not await self._dispatch(session, events):
                    return

    async def _dispatch(self, session: ClientSession, events: list[Event]) -> bool:
        """Act on protocol events; False when the connection must close."""
        proto = session.proto
        pending = list(events)
        while pending:
            event = pending.pop(0)
            if isinstance(event, Send):
                if not session.queue(event.data):
                    log.info("closing %s: slow reader", session.peer)
                    return False
            elif isinstance(event, AuthorizeRequested):
                ok, message = await self.backend.authorize(event.username, event.password)
                pending[:0] = proto.authorize_result(event.request_id, event.username, ok, message, trio.current_time())
                self._counts()
            elif isinstance(event, ShareSubmitted):
                error = await self.backend.submit_share(event.share)
                pending[:0] = proto.share_result(event.request_id, event.share, error, trio.current_time())
            elif isinstance(event, ShareRejected):
                self.backend.share_rejected(event.worker, event.error)
            elif isinstance(event, Close):
                log.info("closing %s: %s", session.peer, event.reason)
                return False
        return True


