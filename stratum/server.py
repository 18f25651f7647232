"""The trio TCP server: moves bytes between sockets and ``ServerConnection``.

All protocol decisions live in ``protocol.py``; the pool's decisions
(is this worker acceptable, is this share valid) come from a ``PoolBackend``.
Hostile input and abuse are bounded by ``limits.py`` and ``bans.py``.

**One task per connection, one reader for all.** Each connection has
exactly one task. Past its prelude (PROXY header, TLS handshake) a plain-TCP
connection's task *parks* on the shared reader (``poller.py``: one epoll,
level-triggered, read by one task): that reader receives each readable
socket's bytes and handles its lines inline (``_on_readable``), and wakes the
connection's task only for what must wait (an authorization, the message-rate
limit, the in-flight cap) or to close. So a share costs no task switch and no
epoll re-arm; a deadline or a drop cancels the parked task as it would cancel
a ``wait_readable``. TLS connections (and every connection with
``shared_reader=False``) read in their own task. Either way the same code
(``_handle_lines``, ``_resume_lines``) feeds complete lines to the state
machine and acts on the events.
Shares are judged in batches, not one task each: the reader queues every
share it reads, and one batch task, run in the scheduler's next pass, hands
all the shares every connection read in this pass to the backend at once
(``submit_shares``: one checker wait, one spool fsync wait for the lot) and
answers each connection in one send. Replies carry the request id, so
Stratum needs no ordering. Batch tasks outlive a dropped socket: a share the
miner sent is still judged and recorded, and a block found in it is still
submitted. The replies to one read's other lines are corked the same way:
one ``send`` per connection per read, not one per line.

**Writes are synchronous.** Nothing is ever queued for a writer task: bytes
go straight to the kernel with a non-blocking ``send`` on the socket. Only
when the kernel's send buffer is full does the remainder wait in a small
per-connection buffer, drained by a short-lived flush task that exists only
while that buffer is non-empty. A connection whose buffer would exceed
``Limits.max_send_buffer`` is dropped (a slow reader: a miner that does not
read its notifies), so memory stays bounded and a broadcast never waits on
any one socket. A new job is serialised once (``StratumJob.notify_line``) and
the same bytes object is handed to every socket in one loop: measured on
10 000 connections this costs about what a bare ``socket.send`` loop costs,
where a writer task per connection costs ten times more and uses twice the
memory per connection. TLS connections use the same path: records are
encrypted synchronously in memory (``tls.py``).

Sockets are plain non-blocking ``socket.socket`` objects driven through
``trio.lowlevel.wait_readable``/``wait_writable``; the server accepts them
itself, so it can refuse (close) a connection before spending a task on it.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import trio

from . import errors
from .bans import AbuseSettings, AbuseTracker, address_key, in_networks, parse_networks
from .errors import StratumError
from .extranonce import ExtranonceAllocator, SessionRegistry
from .jobs import JobBook, StratumJob
from .limits import Limits, TokenBucket
from .messages import LineBuffer, LineTooLong
from .poller import Poller
from .poller import available as poller_available
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
from .proxy import ProxyProtocolError
from .proxy import parse as parse_proxy_header
from .tls import TlsChannel, TlsError, TlsSettings

log = logging.getLogger(__name__)

_RECV_SIZE = 65536
#: Where ``_handle_lines`` stopped to wait: the line's index, the events still to
#: act on (None: the line waits for its message token), the index of the event
#: that waits, and the seconds the token needs.
_Stall = tuple[int, "list[Event] | None", int, float]
#: Junk weight of one over-long line (an undecodable line weighs 1).
LINE_TOO_LONG_WEIGHT = 8.0
#: accept() errors that mean "out of resources", not "this one connection failed".
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


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
        """Judge a share; None means accepted (and durably recorded).

        A backend may also define ``async submit_shares(shares) -> list[StratumError | None]``
        (verdicts in order); the server then hands it whole batches.
        """

    def share_rejected(self, worker: str | None, error: StratumError) -> None:
        """A share the protocol refused before it reached the pool."""

    def connections_changed(self, connected: int, working: int) -> None:
        """Connection counts, for metrics."""


@dataclass(frozen=True)
class ProxyProtocolSettings:
    """Connections from ``trusted`` networks must start with a PROXY v1/v2 header."""

    trusted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parse_networks(self.trusted)  # refuse a bad network at start-up


@dataclass(frozen=True)
class ServerSettings:
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    extranonce1_size: int = 4
    server_id: int = 0
    #: Seconds a disconnected session keeps its extranonce1 for resumption (0: off).
    resume_window: float = 300.0
    tick_interval: float = 5.0
    limits: Limits = field(default_factory=Limits)
    abuse: AbuseSettings = field(default_factory=AbuseSettings)
    proxy: ProxyProtocolSettings = field(default_factory=ProxyProtocolSettings)
    #: The optional stratum+ssl listener.
    tls: TlsSettings | None = None
    listen_backlog: int = 4096
    #: SO_REUSEPORT on the listeners, so several processes can share one port.
    reuse_port: bool = False
    #: TCP keepalive on accepted sockets: the kernel finds peers that vanished without a FIN.
    keepalive_idle: int = 60
    #: Plain-TCP connections wait for input parked on one shared epoll, read by one
    #: task (``poller.py``; Linux), rather than each task waiting on its own socket.
    shared_reader: bool = True


@dataclass(frozen=True)
class BroadcastResult:
    """What one ``broadcast`` did; ``seconds`` is the time to hand the notify to every socket."""

    #: Connections whose notify went whole into the kernel's send buffer.
    sent: int
    #: Connections whose kernel buffer was full: (part of) the notify waits in the user-space buffer.
    buffered: int
    #: Slow readers dropped because their buffer would have exceeded the cap.
    dropped: int
    seconds: float

    @property
    def delivered(self) -> int:
        return self.sent + self.buffered


class ClientSession:
    """One connected miner: its socket, protocol state and pending output."""

    __slots__ = (
        "bucket",
        "buffer",
        "closing",
        "cork",
        "connected_at",
        "counted_working",
        "expects_proxy",
        "failure",
        "flush_done",
        "flushing",
        "host",
        "inflight",
        "inflight_waiter",
        "ip_registered",
        "key",
        "last_line",
        "max_pending",
        "nursery",
        "pending",
        "port",
        "proto",
        "reading",
        "scope",
        "sock",
        "stop_requested",
        "tls",
    )

    def __init__(
        self, sock: socket.socket, peer: tuple[str, int], limits: Limits, now: float, *, tls: TlsChannel | None = None
    ) -> None:
        self.sock = sock
        self.host, self.port = peer
        self.key = address_key(self.host)
        self.tls = tls
        self.proto: ServerConnection | None = None
        self.expects_proxy = False
        self.ip_registered = False
        self.counted_working = False
        self.pending = bytearray()
        self.max_pending = limits.max_send_buffer
        self.flushing = False
        self.flush_done: trio.Event | None = None
        self.failure = ""
        self.closing = False
        # One cancel scope at a time per connection: while reading it carries the
        # handshake/idle deadline; cancelling it with ``closing`` set drops the
        # connection at once, with ``stop_requested`` set stops reading
        # gracefully (what is in flight is still answered, under a new scope).
        self.scope = trio.CancelScope()
        self.reading = True
        self.stop_requested = False
        #: Output held back while the reader handles one read's lines, or while
        #: a share batch answers: sent as one ``send`` (None: not corked).
        self.cork: list[bytes] | None = None
        #: The server-wide nursery (flush tasks run there, only while needed).
        self.nursery: trio.Nursery | None = None
        self.inflight = 0
        self.inflight_waiter: trio.Event | None = None
        self.connected_at = now
        self.last_line = now
        self.bucket = TokenBucket(limits.max_messages_per_second, limits.message_burst, now)
        #: Bytes of a line not complete yet (set once the prelude is done).
        self.buffer: LineBuffer | None = None

    @property
    def peer(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # --- output -----------------------------------------------------------------
    def write(self, data: bytes) -> bool:
        """Hand bytes to the kernel now (or to the cork); False if the connection cannot take them (drop it)."""
        if self.closing:
            return False
        if self.cork is not None:
            self.cork.append(data)
            return True
        if self.tls is not None:
            try:
                data = self.tls.encrypt(data)
            except TlsError as exc:
                self.failure = str(exc)
                return False
        return self.write_raw(data)

    def uncork(self) -> bool:
        """Send what the cork holds, in one write; False if the connection cannot take it."""
        held, self.cork = self.cork, None
        if not held:
            return True
        return self.write(held[0] if len(held) == 1 else b"".join(held))

    def write_raw(self, data: bytes) -> bool:
        """Bytes as they go on the wire (already encrypted for TLS)."""
        if self.pending:
            if len(self.pending) + len(data) > self.max_pending:
                self.failure = "slow reader: send buffer full"
                return False
            self.pending += data
            return True
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.failure = f"send failed: {exc}"
            return False
        if sent == len(data):
            return True
        return self.hold(data, sent)

    def hold(self, data: bytes, sent: int) -> bool:
        """The kernel took ``sent`` bytes of ``data``: keep the rest for the flush task
        (False, a slow reader, if that would pass the cap)."""
        if len(data) - sent > self.max_pending:
            self.failure = "slow reader: send buffer full"
            return False
        self.pending += memoryview(data)[sent:]
        self._start_flush()
        return True

    def _start_flush(self) -> None:
        if self.flushing or self.nursery is None:
            return
        self.flushing = True
        self.flush_done = trio.Event()
        self.nursery.start_soon(self._flush)

    async def _flush(self) -> None:
        """Drain the pending buffer as the kernel makes room (exists only while it is non-empty).

        Ends when the buffer is empty, or when the socket is closed under it
        (``notify_closing`` wakes it with ClosedResourceError).
        """
        try:
            while self.pending and not self.closing:
                await trio.lowlevel.wait_writable(self.sock)
                try:
                    sent = self.sock.send(self.pending)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.failure = f"send failed: {exc}"
                    self.closing = True
                    self.scope.cancel()
                    return
                del self.pending[:sent]
        except trio.ClosedResourceError:
            pass  # closed under us: the connection is gone
        except Exception:  # never let one socket take the server-wide nursery down
            log.exception("flushing to %s failed", self.peer)
            self.closing = True
            self.scope.cancel()
        finally:
            self.flushing = False
            if self.flush_done is not None:
                self.flush_done.set()

    async def flushed(self) -> None:
        while self.flushing and self.flush_done is not None:
            await self.flush_done.wait()

    # --- shares in flight ----------------------------------------------------------
    async def wait_inflight_below(self, limit: int) -> None:
        while self.inflight >= limit:
            if self.inflight_waiter is None:
                self.inflight_waiter = trio.Event()
            await self.inflight_waiter.wait()

    def share_done(self) -> None:
        self.inflight -= 1
        if self.inflight_waiter is not None:
            self.inflight_waiter.set()
            self.inflight_waiter = None


async def _recv(sock: socket.socket) -> bytes:
    """Bytes from a non-blocking socket; b"" at EOF or on a connection error.

    Waits outside the ``except`` block, so an idle connection does not keep a
    ``BlockingIOError`` and its traceback alive (~700 B each).
    """
    waited = False
    while True:
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            data = None
        except OSError:
            return b""
        if data is not None:
            if not waited:  # a client that always has data must not starve the others
                await trio.lowlevel.checkpoint()
            return data
        await trio.lowlevel.wait_readable(sock)
        waited = True


def open_listeners(host: str, port: int, *, backlog: int = 4096, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host:port`` (every address it resolves to)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _name, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sock = socket.socket(family, type_, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners


class StratumServer:
    """Serves Stratum on a plain port (and an optional stratum+ssl port) for one ``PoolBackend``.

    Public surface: ``serve`` / ``shutdown``; work and messages to miners
    (``broadcast``, ``set_version_mask``, ``renew_extranonces``,
    ``reconnect_all``, ``show_message``); ``work_outdated`` (set by the
    pool's node-fault policy); ``sessions``, ``stats`` and ``abuse`` for
    metrics.
    """

    def __init__(self, backend: PoolBackend, settings: ServerSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or ServerSettings()
        self.limits = self.settings.limits
        self.jobs = JobBook(max_jobs=self.settings.protocol.max_jobs)
        #: Connections past their PROXY/TLS prelude, each with a protocol state.
        self.sessions: set[ClientSession] = set()
        self.registry = SessionRegistry(
            ExtranonceAllocator(self.settings.extranonce1_size, self.settings.server_id),
            resume_window=self.settings.resume_window,
        )
        self.abuse = AbuseTracker(self.settings.abuse)
        self.port: int | None = None
        self.tls_port: int | None = None
        self.network_difficulty: Fraction | None = None
        #: Set by the pool when it cannot confirm the chain tip its work builds on
        #: (node unreachable for too long): shares are then judged as stale, so
        #: they are not credited, but a block among them is still submitted.
        self.work_outdated = False
        #: Called after every broadcast (e.g. a work-propagation histogram).
        self.on_broadcast: list[Callable[[StratumJob, BroadcastResult], None]] = []
        #: Called with (address key, reason) when this server bans an address
        #: (``--workers`` relays it to the other processes: ``apply_ban``).
        self.on_ban: list[Callable[[str, str], None]] = []
        #: Counters of what the hardening did (refusals, drops, bans...), for metrics.
        self.stats: Counter[str] = Counter()
        self._version_mask = self.settings.protocol.version_mask
        self._by_proto: dict[ServerConnection, ClientSession] = {}
        self._by_ip: dict[str, set[ClientSession]] = {}
        self._open: set[ClientSession] = set()
        self._working = 0
        self._tasks = 0
        self._changed = trio.Event()
        self._accepting = True
        self._service_scope: trio.CancelScope | None = None
        self._trusted = parse_networks(self.settings.proxy.trusted)
        # Shares read but not yet handed to the backend, and whether a batch task
        # is already scheduled to take them.
        self._share_queue: list[tuple[ClientSession, object, Share]] = []
        self._batch_scheduled = False
        #: The shared reader of parked connections (while ``serve`` runs).
        self._poller: Poller[ClientSession] | None = None

    # --- work -------------------------------------------------------------------
    def broadcast(self, job: StratumJob) -> BroadcastResult:
        """Announce a job to every working connection, writing to each socket now.

        The cyclic garbage collector is held off for the loop: a full collection
        over thousands of sessions costs hundreds of milliseconds, and it should
        land after every miner has its notify, not in the middle.
        """
        self.jobs.add(job)
        now = _now()
        started = time.perf_counter()
        sent = buffered = dropped = 0
        network = self.network_difficulty
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for session in self.sessions:
                if session.closing:
                    continue
                data = session.proto.job_notification(job, now, network)  # type: ignore[union-attr]
                if data is None:
                    continue
                if session.cork is None and session.tls is None and not session.pending:
                    # The common case, inlined: one non-blocking send of the shared bytes.
                    try:
                        n = session.sock.send(data)
                    except BlockingIOError:
                        n = 0
                    except OSError as exc:
                        self._drop(session, f"send failed: {exc}")
                        dropped += 1
                        continue
                    if n == len(data):
                        sent += 1
                    elif session.hold(data, n):
                        buffered += 1
                    else:
                        self._drop(session, session.failure)
                        dropped += 1
                    continue
                if self._send(session, data):
                    if session.pending:
                        buffered += 1
                    else:
                        sent += 1
                else:
                    dropped += 1
        finally:
            if gc_was_enabled:
                gc.enable()
        result = BroadcastResult(sent, buffered, dropped, time.perf_counter() - started)
        for listener in self.on_broadcast:
            listener(job, result)
        return result

    @property
    def version_mask(self) -> int:
        return self._version_mask

    def set_version_mask(self, mask: int) -> None:
        """Change the pool's version-rolling mask; rolling miners get mining.set_version_mask."""
        self._version_mask = mask
        for session in list(self.sessions):
            assert session.proto is not None
            self._deliver(session, session.proto.set_pool_version_mask(mask))

    def reconnect_all(self, host: str | None = None, port: int | None = None, wait: int = 0) -> int:
        """client.reconnect to every miner (no host: reconnect to this server); returns how many."""
        data = ServerConnection.reconnect(host, port, wait)
        return sum(self._send(session, data) for session in list(self.sessions))

    def show_message(self, text: str) -> int:
        """client.show_message to every working miner; returns how many."""
        data = ServerConnection.show_message(text)
        return sum(self._send(s, data) for s in list(self.sessions) if s.proto is not None and s.proto.working)

    def renew_extranonces(self) -> int:
        """New extranonce1s (mining.set_extranonce) for miners that accept them; returns how many."""
        now = _now()
        renewed = 0
        for session in list(self.sessions):
            assert session.proto is not None
            events = session.proto.renew_extranonce(now)
            renewed += bool(events)
            self._deliver(session, events)
        return renewed

    def _send(self, session: ClientSession, data: bytes) -> bool:
        if session.write(data):
            return True
        if not session.closing:
            self._drop(session, session.failure or "connection cannot take more output")
        return False

    def _uncork(self, session: ClientSession) -> bool:
        """Send what the session's cork holds (before any real wait, and when done)."""
        if session.uncork():
            return True
        if not session.closing:
            self._drop(session, session.failure or "connection cannot take more output")
        return False

    def _deliver(self, session: ClientSession, events: list[Event]) -> None:
        """Write the bytes among ``events`` (outside the reader: replies, ticks, broadcasts)."""
        for event in events:
            if isinstance(event, Send) and not self._send(session, event.data):
                return

    def _drop(self, session: ClientSession, reason: str) -> None:
        """Close a connection at once (nothing more is written to it)."""
        if reason.startswith("slow reader"):
            self.stats["dropped-slow-reader"] += 1
        log.info("dropping miner %s: %s", session.peer, reason)
        session.closing = True
        session.scope.cancel()

    def _ban(self, host: str, reason: str) -> None:
        """``host`` was just banned here: drop its connections and tell the ``on_ban`` listeners."""
        key = address_key(host)
        self.stats[f"banned-{reason}"] += 1
        log.warning("banned %s for %.0fs: %s", key, self.settings.abuse.ban_duration, reason)
        self._drop_address(key, reason)
        for listener in self.on_ban:
            listener(key, reason)

    def apply_ban(self, key: str, reason: str, duration: float | None = None) -> bool:
        """A ban decided elsewhere (another worker process): refuse and drop ``key`` here too,
        for ``duration`` seconds (default the whole ban; what is left of it for a process
        that started after it was decided).

        The listeners are not told (they told us). False when bans are off or it is exempt.
        """
        if duration is not None and duration <= 0:
            return False
        if not self.abuse.ban(key, _now(), duration):
            return False
        self.stats["banned-elsewhere"] += 1
        log.warning(
            "banned %s for %.0fs: %s (decided by another process)",
            key, self.settings.abuse.ban_duration if duration is None else duration, reason,
        )
        self._drop_address(key, reason)
        return True

    def _drop_address(self, key: str, reason: str) -> None:
        for session in list(self._by_ip.get(key, ())):
            if not session.closing:
                self._drop(session, f"address banned ({reason})")

    # --- serving -----------------------------------------------------------------
    async def serve(
        self,
        host: str,
        port: int,
        *,
        listeners: Sequence[socket.socket] | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled or ``shutdown``; ``listeners`` (bound, listening
        sockets) replace ``host:port``, e.g. one socket shared by several processes."""
        s = self.settings
        plain = list(listeners) if listeners is not None else open_listeners(
            host, port, backlog=s.listen_backlog, reuse_port=s.reuse_port
        )
        for sock in plain:
            sock.setblocking(False)
        secure: list[socket.socket] = []
        try:
            context = s.tls.context() if s.tls is not None else None
            if s.tls is not None:
                secure = open_listeners(
                    s.tls.host if s.tls.host is not None else host,
                    s.tls.port,
                    backlog=s.listen_backlog,
                    reuse_port=s.reuse_port,
                )
            if s.shared_reader and poller_available():
                self._poller = Poller(self._on_readable)
            self.port = plain[0].getsockname()[1]
            self.tls_port = secure[0].getsockname()[1] if secure else None
            log.info("stratum listening on %s:%s%s", host, self.port, f", stratum+ssl on {self.tls_port}" if secure else "")
            # Connections, share judgements and flush tasks all live in this one
            # nursery: nothing is nested per connection but two cancel scopes.
            async with trio.open_nursery() as connections:
                with trio.CancelScope() as self._service_scope:
                    async with trio.open_nursery() as service:
                        service.start_soon(self._ticker)
                        for sock in plain:
                            service.start_soon(self._accept_loop, sock, connections, None)
                        for sock in secure:
                            service.start_soon(self._accept_loop, sock, connections, context)
                        task_status.started(self.port)
        finally:
            for sock in plain + secure:
                trio.lowlevel.notify_closing(sock)
                sock.close()
            if self._poller is not None:
                self._poller.close()
                self._poller = None

    async def shutdown(self, *, grace: float = 5.0, timeout: float = 10.0, reconnect: bool = True) -> int:
        """Stop accepting, send client.reconnect, let miners leave, answer every share in flight.

        Miners get ``grace`` seconds to disconnect by themselves; then the
        server stops reading the remaining connections (a share already read
        is still judged and answered) and waits up to ``timeout`` more for
        every connection to finish. ``serve`` returns afterwards. Returns how
        many miners were sent client.reconnect.
        """
        self._accepting = False
        if self._service_scope is not None:
            self._service_scope.cancel()
        told = self.reconnect_all() if reconnect else 0
        log.info("shutting down: stopped accepting, client.reconnect sent to %d miners", told)
        with trio.move_on_after(grace):
            while self.sessions:
                await self._changed.wait()
        for session in list(self._open):
            session.stop_requested = True
            if session.reading:
                session.scope.cancel()
        with trio.move_on_after(timeout):
            while self._tasks:
                await self._changed.wait()
        if self._tasks:
            log.warning("shutdown: %d connections still busy after %.0fs", self._tasks, timeout)
        return told

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.settings.tick_interval)
            now = trio.current_time()
            self.registry.expire(now)
            self.abuse.expire(now)
            for session in list(self.sessions):
                assert session.proto is not None
                self._deliver(session, session.proto.tick(now))

    def _counts(self) -> None:
        self.backend.connections_changed(len(self.sessions), self._working)

    def _sync_working(self, session: ClientSession) -> None:
        working = session.proto is not None and session.proto.working and not session.closing
        if working != session.counted_working:
            session.counted_working = working
            self._working += 1 if working else -1
            self._counts()

    def _notify_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def new_connection(self) -> ServerConnection:
        return ServerConnection(
            self.settings.protocol,
            self.jobs,
            self.registry,
            version_mask=self._version_mask,
            network_difficulty=self.network_difficulty,
        )

    # --- admission ----------------------------------------------------------------
    def _refusal(self, host: str, now: float) -> str | None:
        """Why a connection from ``host`` is refused now (None: welcome)."""
        reason = self.abuse.refusal(host, now)
        if reason is not None:
            return reason
        cap = self.limits.max_connections_per_ip
        if cap and len(self._by_ip.get(address_key(host), ())) >= cap and not self.abuse.exempt(host):
            return "per-ip"
        return None

    def _register_ip(self, session: ClientSession) -> None:
        self._by_ip.setdefault(session.key, set()).add(session)
        session.ip_registered = True

    def _unregister_ip(self, session: ClientSession) -> None:
        if not session.ip_registered:
            return
        session.ip_registered = False
        group = self._by_ip.get(session.key)
        if group is not None:
            group.discard(session)
            if not group:
                del self._by_ip[session.key]

    def _configure_socket(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            # Small lines written separately (set_difficulty, notify) must not wait for ACKs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.settings.keepalive_idle > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, self.settings.keepalive_idle)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
            if self.limits.socket_send_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.socket_send_buffer)
        except OSError:
            pass  # an option the platform lacks is not a reason to refuse a miner

    async def _accept_loop(self, listener: socket.socket, nursery: trio.Nursery, context: ssl.SSLContext | None) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            for _ in range(64):  # then yield: a connect flood must not starve the miners
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                        self.stats["accept-error"] += 1
                        log.error("accept failed: %s (%d connections open)", exc, len(self._open))
                        await trio.sleep(0.1)
                        break
                    continue  # that one connection died before we got it
                self._admit(sock, (str(addr[0]), int(addr[1])), nursery, context)

    def _admit(self, sock: socket.socket, peer: tuple[str, int], nursery: trio.Nursery, context: ssl.SSLContext | None) -> None:
        """Refuse (close) a new connection at once, or start its task."""
        now = trio.current_time()
        host = peer[0]
        reason: str | None = None
        behind_proxy = in_networks(host, self._trusted)
        if not self._accepting:
            reason = "shutting down"
        elif self.limits.max_connections and len(self._open) >= self.limits.max_connections:
            reason = "full"
        elif not behind_proxy:
            reason = self._refusal(host, now)
        if reason is not None:
            self.stats[f"refused-{reason.replace(' ', '-')}"] += 1
            log.debug("refused connection from %s: %s", host, reason)
            sock.close()
            return
        self._configure_socket(sock)
        tls = TlsChannel(context) if context is not None else None
        session = ClientSession(sock, peer, self.limits, now, tls=tls)
        session.expects_proxy = behind_proxy
        session.nursery = nursery
        if not behind_proxy:
            self._register_ip(session)
        self._open.add(session)
        self._tasks += 1
        nursery.start_soon(self._serve_connection, session)

    # --- one connection ---------------------------------------------------------------
    async def _serve_connection(self, session: ClientSession) -> None:
        """Serve one miner until it disconnects or is dropped (its only task)."""
        try:
            # Reading, under the one cancel scope (frames are inlined rather than
            # nested: every coroutine frame an idle connection parks in costs memory).
            scope = session.scope
            with scope:
                scope.deadline = self._deadline(session)
                await self._read_lines(session)
            session.reading = False
            if scope.cancelled_caught and not session.stop_requested and not session.closing:
                self._timed_out(session, "idle" if session.proto is not None and session.proto.working else "handshake")
            if not session.closing:
                # Done reading (EOF, protocol close, timeout, shutdown): answer the
                # shares already read and flush what is queued, then close.
                session.scope = trio.CancelScope(deadline=trio.current_time() + self.limits.flush_timeout)
                with session.scope:
                    await session.wait_inflight_below(1)
                    await session.flushed()
        except Exception:
            # One connection's failure must not take the listener (and every
            # other miner) down with it.
            log.exception("connection %s failed", session.peer)
        finally:
            self._retire(session)
            self._tasks -= 1
            self._notify_changed()

    def _retire(self, session: ClientSession) -> None:
        """The socket is done: park the session for resume, close, update counts."""
        session.closing = True
        self._open.discard(session)
        self._unregister_ip(session)
        if session.proto is not None and session in self.sessions:
            self.sessions.discard(session)
            self._by_proto.pop(session.proto, None)
            session.proto.connection_closed(trio.current_time())
            self._sync_working(session)
            self._counts()
        trio.lowlevel.notify_closing(session.sock)
        session.sock.close()
        self._notify_changed()

    async def _prelude(self, session: ClientSession) -> bytes | None:
        """PROXY header and TLS handshake; the plaintext already received, or None to close."""
        data = b""
        if session.expects_proxy:
            while True:
                try:
                    parsed = parse_proxy_header(data)
                except ProxyProtocolError as exc:
                    self.stats["closed-proxy-header"] += 1
                    log.info("closing %s: %s", session.peer, exc)
                    return None
                if parsed is not None:
                    break
                chunk = await _recv(session.sock)
                if not chunk:
                    return None
                data += chunk
            header, used = parsed
            data = data[used:]
            if header.source is not None:
                session.host, session.port = header.source
                session.key = address_key(session.host)
            reason = self._refusal(session.host, trio.current_time())
            if reason is not None:
                self.stats[f"refused-{reason.replace(' ', '-')}"] += 1
                log.debug("refused proxied connection from %s: %s", session.host, reason)
                return None
            self._register_ip(session)
        if session.tls is not None:
            while True:
                try:
                    done, out = session.tls.handshake(data)
                except TlsError as exc:
                    self.stats["closed-tls-error"] += 1
                    log.info("closing %s: %s", session.peer, exc)
                    return None
                if out and not session.write_raw(out):
                    return None
                if done:
                    break
                data = await _recv(session.sock)
                if not data:
                    return None
            plain, out, closed = session.tls.receive(b"")
            if out and not session.write_raw(out):
                return None
            return None if closed and not plain else plain
        return data

    def _deadline(self, session: ClientSession) -> float:
        proto = session.proto
        if proto is None or not proto.working:
            return session.connected_at + self.limits.handshake_timeout
        return session.last_line + self.limits.idle_timeout

    async def _read_lines(self, session: ClientSession) -> None:
        """Prelude, then lines until EOF or a reason to close (under ``session.scope``'s deadline)."""
        data = await self._prelude(session)
        if data is None:
            return
        proto = self.new_connection()
        session.proto = proto
        self.sessions.add(session)
        self._by_proto[proto] = session
        self._counts()
        buffer = session.buffer = LineBuffer(self.limits.max_line)
        sock = session.sock
        poller = self._poller if session.tls is None else None
        closed = False
        drained = False
        while True:
            if data and not await self._lines(session, buffer, data):
                return
            if closed:
                return
            self._move_deadline(session)
            data = raw = b""  # hold no buffer while the connection idles
            if poller is not None:
                # Parked: the shared reader reads this socket and handles its lines
                # (``_on_readable``) and wakes us only for what must wait, or to close.
                assert session.nursery is not None
                handed = await poller.park(sock.fileno(), session, session.nursery)
                if handed is None or not await self._resume_lines(session, *handed):
                    return
                continue
            # _recv, inlined: one coroutine frame fewer per idle connection.
            waited = False
            if drained:
                # The last recv emptied the socket, so more bytes need a new packet: a
                # miner sends its next share after our answer. Wait for it rather than
                # try a recv that fails (a syscall and an exception, for every share).
                await trio.lowlevel.wait_readable(sock)
                waited = True
            while True:
                try:
                    raw = sock.recv(_RECV_SIZE)
                    break
                except BlockingIOError:
                    pass  # wait outside the except block: the exception must not live on
                except OSError:
                    break
                await trio.lowlevel.wait_readable(sock)
                waited = True
            if not raw:
                return
            drained = len(raw) < _RECV_SIZE and session.tls is None  # TLS may hold decrypted bytes back
            if not waited:  # a client that always has data must not starve the others
                await trio.lowlevel.checkpoint()
            if session.tls is None:
                data = raw
                continue
            try:
                data, out, closed = session.tls.receive(raw)
            except TlsError as exc:
                self.stats["closed-tls-error"] += 1
                log.info("closing %s: %s", session.peer, exc)
                return
            if out and not self._send_raw(session, out):
                return

    def _move_deadline(self, session: ClientSession) -> None:
        # Complete lines are activity; bytes without a newline are not (slowloris).
        # Moving a deadline re-sorts trio's deadline heap: skip moves of under a
        # second (the timeouts are minutes), but always honour a nearer one.
        deadline = self._deadline(session)
        current = session.scope.deadline
        if deadline < current or deadline - current > 1.0:
            session.scope.deadline = deadline

    def _on_readable(self, fd: int, session: ClientSession) -> None:
        """The shared reader found a parked connection readable: read and handle it here,
        waking its task only to wait (``_resume_lines``) or to close (None)."""
        poller = self._poller
        assert poller is not None
        try:
            raw = session.sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return  # spurious: stay parked
        except OSError:
            raw = b""
        if not raw:
            poller.wake(fd, None)
            return
        buffer = session.buffer
        assert buffer is not None
        lines = self._feed(session, buffer, raw)
        if lines is None:
            poller.wake(fd, None)
            return
        session.cork = []
        outcome = self._handle_lines(session, lines, 0, None, trio.current_time(), False)
        if not poller.parked(fd):  # dropped while its lines were handled (a ban, a failed send)
            return
        if outcome is True:
            if self._uncork(session):
                self._move_deadline(session)
                return
            outcome = False
        poller.wake(fd, None if outcome is False else (lines, outcome))

    def _feed(self, session: ClientSession, buffer: LineBuffer, data: bytes) -> list[bytes] | None:
        """The complete lines in ``data`` (None: an over-long line, close)."""
        try:
            return buffer.feed(data)
        except LineTooLong as exc:
            self.stats["closed-line-too-long"] += 1
            log.info("closing %s: %s", session.peer, exc)
            if self.abuse.junk(session.host, trio.current_time(), LINE_TOO_LONG_WEIGHT):
                self._ban(session.host, "junk")
            return None

    async def _lines(self, session: ClientSession, buffer: LineBuffer, data: bytes) -> bool:
        """The complete lines in ``data``, replies corked into one send; False to close."""
        lines = self._feed(session, buffer, data)
        if lines is None:
            return False
        session.cork = []
        outcome = self._handle_lines(session, lines, 0, None, trio.current_time(), False)
        if outcome is True:
            return self._uncork(session)
        if outcome is False:
            return False
        return await self._resume_lines(session, lines, outcome)

    def _handle_lines(
        self, session: ClientSession, lines: list[bytes], k: int, events: list[Event] | None, now: float, taken: bool
    ) -> _Stall | bool:
        """Handle ``lines[k:]`` in order, replies corked, as far as can be done without waiting.

        ``events``: line ``k``'s events still to act on (None: line ``k`` is yet
        to be read); ``taken``: line ``k``'s message token is already taken.
        True when every line is handled (the cork still holds the replies);
        False to close; else where to wait (``_resume_lines`` does the waiting).
        """
        proto = session.proto
        assert proto is not None
        count = len(lines)
        max_pending = self.limits.max_pending_requests
        while k < count:
            if events is None:
                if not taken:
                    wait = session.bucket.take(now)
                    if wait > 0:
                        # Over the message rate: stop reading this connection for a while
                        # (TCP back-pressure reaches the sender; nobody else waits).
                        self.stats["throttled"] += 1
                        return (k, None, 0, wait)
                taken = False
                session.last_line = now
                bad = proto.bad_lines
                events = proto.receive_line(lines[k], now)
                if proto.bad_lines > bad and self.abuse.junk(session.host, now):
                    self._ban(session.host, "junk")
                    self._uncork(session)
                    return False
                if len(events) == 1 and type(events[0]) is ShareSubmitted and session.inflight < max_pending:
                    # The usual line: one share to queue (``_act``'s case, without its
                    # dispatch; a share does not change whether the miner is working).
                    self._take_share(session, events[0])  # type: ignore[arg-type]
                    events = None
                    k += 1
                    continue
            i = self._act(session, events)
            if i != len(events):
                if i < 0:
                    self._uncork(session)  # e.g. the error reply before a close
                    self._sync_working(session)
                    return False
                return (k, events, i, 0.0)
            events = None
            self._sync_working(session)
            k += 1
        return True

    async def _resume_lines(self, session: ClientSession, lines: list[bytes], stall: _Stall) -> bool:
        """Wait where ``_handle_lines`` stopped, then handle the rest; False to close.

        Uncorks first, so nothing written sits in the cork while we wait.
        """
        proto = session.proto
        assert proto is not None
        while True:
            k, events, i, wait = stall
            if not self._uncork(session):
                return False
            if events is None:  # the message rate: line k waits for its token
                await trio.sleep(wait)
                session.cork = []
                outcome = self._handle_lines(session, lines, k, None, trio.current_time(), True)
            else:
                follow = await self._act_waiting(session, events[i])
                if follow is None:
                    self._uncork(session)
                    self._sync_working(session)
                    return False
                outcome = self._handle_lines(session, lines, k, follow + events[i + 1 :], trio.current_time(), False)
            if outcome is True:
                return self._uncork(session)
            if outcome is False:
                return False
            stall = outcome

    def _send_raw(self, session: ClientSession, data: bytes) -> bool:
        if session.write_raw(data):
            return True
        self._drop(session, session.failure or "connection cannot take more output")
        return False

    def _timed_out(self, session: ClientSession, which: str) -> None:
        self.stats[f"closed-{which}-timeout"] += 1
        log.info("closing %s: %s timeout", session.peer, which)
        if which == "handshake" and self.abuse.junk(session.host, trio.current_time()):
            self._ban(session.host, "junk")

    def _act(self, session: ClientSession, events: list[Event]) -> int:
        """Act on protocol events that need no waiting; returns the index of the first
        that does (``len(events)`` when none), or -1 when the connection must close."""
        for i, event in enumerate(events):
            if isinstance(event, Send):
                if not self._send(session, event.data):
                    return -1
            elif isinstance(event, ShareSubmitted):
                if session.inflight >= self.limits.max_pending_requests:
                    return i
                self._take_share(session, event)
            elif isinstance(event, AuthorizeRequested):
                return i
            elif isinstance(event, ShareRejected):
                self.backend.share_rejected(event.worker, event.error)
                if self.abuse.share(session.host, False, event.error.reason, trio.current_time()):
                    self._ban(session.host, "invalid-shares")
            elif isinstance(event, Superseded):
                old = self._by_proto.get(event.connection)
                if old is not None:
                    self._drop(old, "session resumed on a new connection")
            elif isinstance(event, Close):
                self.stats["closed-protocol"] += 1
                log.info("closing %s: %s", session.peer, event.reason)
                return -1
        return len(events)

    async def _act_waiting(self, session: ClientSession, event: Event) -> list[Event] | None:
        """An event that must wait; returns the events that follow from it (None: close)."""
        proto = session.proto
        assert proto is not None
        if not self._uncork(session):
            return None
        follow: list[Event] = []
        if isinstance(event, AuthorizeRequested):
            ok, message = await self.backend.authorize(event.username, event.password)
            if not ok:
                # Back-off: each recent refusal from this address doubles the wait.
                delay = self.abuse.auth_failed(session.host, trio.current_time())
                if delay > 0:
                    self.stats["auth-backoff"] += 1
                    await trio.sleep(delay)
            follow = proto.authorize_result(event.request_id, event.username, ok, message, trio.current_time())
        elif isinstance(event, ShareSubmitted):
            await session.wait_inflight_below(self.limits.max_pending_requests)
            self._take_share(session, event)
        session.cork = []
        return follow

    def _take_share(self, session: ClientSession, event: ShareSubmitted) -> None:
        """Queue a share for the next batch; the first share of a batch schedules its task.

        The task runs in the scheduler's next pass, so it takes every share
        that every connection read in this one: the backend sees them as one
        batch (one checker wait, one spool fsync wait) and each connection gets
        its answers in one send. Batches run concurrently, so a slow batch (a
        block being submitted) does not hold up the next.
        """
        share = event.share
        if self.work_outdated and not share.stale:
            share = share._replace(stale=True)
            self.stats["shares-on-outdated-work"] += 1
        session.inflight += 1
        self._share_queue.append((session, event.request_id, share))
        if not self._batch_scheduled:
            self._batch_scheduled = True
            # In the server-wide nursery: the verdict (and a block in the share)
            # outlives the connection if the miner hangs up.
            assert session.nursery is not None
            self._tasks += 1
            session.nursery.start_soon(self._judge_batch)

    async def _judge_batch(self) -> None:
        """Judge and answer every queued share (a task per batch, so it must never raise)."""
        self._batch_scheduled = False
        batch, self._share_queue = self._share_queue, []
        try:
            shares = [share for _session, _rid, share in batch]
            try:
                verdicts = await self._judge_shares(shares)
            except Exception:
                log.exception("judging a batch of %d share(s) failed", len(batch))
                verdicts = [errors.INTERNAL_ERROR] * len(batch)
            now = trio.current_time()
            corked: list[ClientSession] = []
            # Accepted shares are counted first (per address, once per batch), so an
            # address's invalid ones are weighed against the whole batch.
            accepted = Counter(session.host for (session, _rid, _share), error in zip(batch, verdicts) if error is None)
            for host, count in accepted.items():
                self.abuse.accepted(host, count, now)
            for (session, request_id, share), error in zip(batch, verdicts):
                session.share_done()
                if error is not None and self.abuse.share(session.host, False, error.reason, now):
                    self._ban(session.host, "invalid-shares")
                if session.closing or session.proto is None:
                    continue
                if session.cork is None:
                    session.cork = []
                    corked.append(session)
                for event in session.proto.share_result(request_id, share, error, now):
                    if isinstance(event, Send):
                        session.cork.append(event.data)
            for session in corked:
                self._uncork(session)
        except Exception:
            log.exception("answering a batch of %d share(s) failed", len(batch))
        finally:
            self._tasks -= 1
            self._notify_changed()

    async def _judge_shares(self, shares: list[Share]) -> list[StratumError | None]:
        """The backend's verdicts: ``submit_shares`` if it has it, else ``submit_share`` for each, at once."""
        submit_many = getattr(self.backend, "submit_shares", None)
        if submit_many is not None:
            verdicts = list(await submit_many(shares))
            if len(verdicts) != len(shares):
                raise RuntimeError(f"backend answered {len(verdicts)} of {len(shares)} shares")
            return verdicts
        verdicts: list[StratumError | None] = [errors.INTERNAL_ERROR] * len(shares)

        async def one(i: int, share: Share) -> None:
            try:
                verdicts[i] = await self.backend.submit_share(share)
            except Exception:
                log.exception("judging a share from %s failed", share.worker)

        async with trio.open_nursery() as nursery:
            for i, share in enumerate(shares):
                nursery.start_soon(one, i, share)
        return verdicts
