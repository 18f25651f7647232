"""The trio TCP server: moves bytes between sockets and ``ServerConnection``.

All protocol decisions live in ``protocol.py``; the pool's decisions
(is this worker acceptable, is this share valid) come from a ``PoolBackend``.

Per connection: a reader task feeds lines to the state machine, a writer task
drains an outbound queue (a miner that stops reading is dropped when its
queue fills, so a broadcast never waits on one slow socket), and every share
is judged in its own task, so several submits of one connection can be in
flight at once (replies carry the request id; Stratum needs no ordering).
Share tasks outlive a dropped socket: a share the miner sent is still judged
and recorded, and a block found in it is still submitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import trio

from . import errors
from .errors import StratumError
from .extranonce import ExtranonceAllocator, SessionRegistry
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
    Superseded,
)

log = logging.getLogger(__name__)


def _now() -> float:
    """trio's clock; 0 outside a trio run (a broadcast from synchronous set-up code)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


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
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    extranonce1_size: int = 4
    server_id: int = 0
    #: Seconds a disconnected session keeps its extranonce1 for resumption (0: off).
    resume_window: float = 300.0
    outbox_size: int = 256
    tick_interval: float = 5.0
    #: Shares of one connection being judged at once; reading pauses beyond it.
    max_inflight_submits: int = 64
    #: How long queued replies may take to flush when a connection ends.
    flush_timeout: float = 2.0


class ClientSession:
    """One connected miner: its socket, protocol state and outbound queue."""

    def __init__(self, stream: trio.SocketStream, proto: ServerConnection, settings: ServerSettings) -> None:
        self.stream = stream
        self.proto = proto
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](settings.outbox_size)
        self.cancel_scope = trio.CancelScope()
        self.inflight = trio.Semaphore(settings.max_inflight_submits)
        self.closing = False
        try:
            host, port = stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port}"
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
        self.jobs = JobBook(max_jobs=self.settings.protocol.max_jobs)
        self.sessions: set[ClientSession] = set()
        self.registry = SessionRegistry(
            ExtranonceAllocator(self.settings.extranonce1_size, self.settings.server_id),
            resume_window=self.settings.resume_window,
        )
        self.port: int | None = None
        self.network_difficulty: Fraction | None = None
        self._version_mask = self.settings.protocol.version_mask
        self._by_proto: dict[ServerConnection, ClientSession] = {}

    # --- work -------------------------------------------------------------------
    def broadcast(self, job: StratumJob) -> int:
        """Announce a job to every working connection; returns how many got it."""
        self.jobs.add(job)
        now = _now()
        sent = 0
        for session in list(self.sessions):
            data = session.proto.job_notification(job, now, self.network_difficulty)
            if data is None:
                continue
            if session.queue(data):
                sent += 1
            elif not session.closing:
                self._drop(session, "slow reader: outbound queue full")
        return sent

    @property
    def version_mask(self) -> int:
        return self._version_mask

    def set_version_mask(self, mask: int) -> None:
        """Change the pool's version-rolling mask; rolling miners get mining.set_version_mask."""
        self._version_mask = mask
        for session in list(self.sessions):
            self._deliver(session, session.proto.set_pool_version_mask(mask))

    def reconnect_all(self, host: str | None = None, port: int | None = None, wait: int = 0) -> None:
        """client.reconnect to every miner (no host: reconnect to this server)."""
        data = ServerConnection.reconnect(host, port, wait)
        for session in list(self.sessions):
            session.queue(data)

    def show_message(self, text: str) -> None:
        """client.show_message to every working miner."""
        data = ServerConnection.show_message(text)
        for session in list(self.sessions):
            if session.proto.working:
                session.queue(data)

    def renew_extranonces(self) -> int:
        """New extranonce1s (mining.set_extranonce) for miners that accept them; returns how many."""
        now = _now()
        renewed = 0
        for session in list(self.sessions):
            events = session.proto.renew_extranonce(now)
            renewed += bool(events)
            self._deliver(session, events)
        return renewed

    def _deliver(self, session: ClientSession, events: list[Event]) -> None:
        """Queue the bytes among ``events`` (outside the reader: replies, ticks, broadcasts)."""
        for event in events:
            if isinstance(event, Send) and not session.queue(event.data):
                if not session.closing:
                    self._drop(session, "slow reader: outbound queue full")
                return

    def _drop(self, session: ClientSession, reason: str) -> None:
        log.info("dropping miner %s: %s", session.peer, reason)
        session.closing = True
        session.cancel_scope.cancel()

    # --- serving -----------------------------------------------------------------
    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("stratum listening on %s:%s", host, self.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ticker)
            task_status.started(self.port)
            await trio.serve_listeners(self.handle_stream, listeners)

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.settings.tick_interval)
            now = trio.current_time()
            self.registry.expire(now)
            for session in list(self.sessions):
                self._deliver(session, session.proto.tick(now))

    def _counts(self) -> None:
        working = sum(1 for s in self.sessions if s.proto.working)
        self.backend.connections_changed(len(self.sessions), working)

    def new_connection(self) -> ServerConnection:
        return ServerConnection(
            self.settings.protocol,
            self.jobs,
            self.registry,
            version_mask=self._version_mask,
            network_difficulty=self.network_difficulty,
        )

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """Serve one miner until it disconnects or is dropped."""
        proto = self.new_connection()
        session = ClientSession(stream, proto, self.settings)
        self.sessions.add(session)
        self._by_proto[proto] = session
        self._counts()
        try:
            # Share tasks run in the outer nursery: dropping the socket
            # (cancel_scope) does not abandon shares being judged.
            async with trio.open_nursery() as shares:
                try:
                    with session.cancel_scope:
                        async with trio.open_nursery() as io:
                            flushed = trio.Event()
                            io.start_soon(self._writer, session, flushed)
                            await self._reader(session, shares)
                            session.closing = True
                            session.send_channel.close()  # the writer drains what is queued, then ends
                            with trio.move_on_after(self.settings.flush_timeout):
                                await flushed.wait()
                            io.cancel_scope.cancel()
                finally:
                    await self._retire(session)
        except Exception:
            # One connection's failure must not take the listener (and every
            # other miner) down with it.
            log.exception("connection %s failed", session.peer)

    async def _retire(self, session: ClientSession) -> None:
        """The socket is done: park the session for resume, close, update counts."""
        session.closing = True
        self.sessions.discard(session)
        self._by_proto.pop(session.proto, None)
        session.proto.connection_closed(trio.current_time())
        self._counts()
        with trio.CancelScope(shield=True):
            await session.stream.aclose()

    async def _writer(self, session: ClientSession, flushed: trio.Event) -> None:
        try:
            async for data in session.receive_channel:
                await session.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session.cancel_scope.cancel()
        finally:
            flushed.set()

    async def _reader(self, session: ClientSession, shares: trio.Nursery) -> None:
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
                if not await self._dispatch(session, events, shares):
                    return

    async def _dispatch(self, session: ClientSession, events: list[Event], shares: trio.Nursery) -> bool:
        """Act on protocol events; False when the connection must close."""
        proto = session.proto
        pending = list(events)
        while pending:
            event = pending.pop(0)
            if isinstance(event, Send):
                if not session.queue(event.data):
                    self._drop(session, "slow reader: outbound queue full")
                    return False
            elif isinstance(event, AuthorizeRequested):
                ok, message = await self.backend.authorize(event.username, event.password)
                pending[:0] = proto.authorize_result(event.request_id, event.username, ok, message, trio.current_time())
                self._counts()
            elif isinstance(event, ShareSubmitted):
                await session.inflight.acquire()
                shares.start_soon(self._judge, session, event)
            elif isinstance(event, ShareRejected):
                self.backend.share_rejected(event.worker, event.error)
            elif isinstance(event, Superseded):
                old = self._by_proto.get(event.connection)
                if old is not None:
                    self._drop(old, "session resumed on a new connection")
            elif isinstance(event, Close):
                log.info("closing %s: %s", session.peer, event.reason)
                return False
        return True

    async def _judge(self, session: ClientSession, event: ShareSubmitted) -> None:
        try:
            error = await self.backend.submit_share(event.share)
        except Exception:
            log.exception("judging a share from %s failed", session.peer)
            error = errors.INTERNAL_ERROR
        finally:
            session.inflight.release()
        self._deliver(session, session.proto.share_result(event.request_id, event.share, error, trio.current_time()))
