"""Multi-process serving: one job source, N Stratum worker processes on one port.

One Python process runs one event loop on one core (the GIL), and a pool
judges shares and holds sockets in that loop. ``stope run --workers N``
spreads that over N processes:

* **The parent** runs what there must be only one of: the embedded devnet
  (when no node is configured), the node health view and the job manager
  (one ``getblocktemplate`` per tip, one set of job ids), the work-freshness
  policy, and the metrics of those. It does not touch miners.
* **N worker processes** each bind the Stratum port with ``SO_REUSEPORT``,
  so the kernel spreads new connections across them. Worker ``i`` uses
  ``server_id = stratum.server_id + i`` as its extranonce1 prefix (the first
  byte of every extranonce1), so no two workers ever hand out the same
  extranonce1 and their shares never collide. Each has its own batched
  checker, its own write-ahead spool (``<spool>-w<i>``) and writer into the
  one shared database, and submits the blocks its miners find straight to
  the node(s).

The parent and each worker talk over a private socketpair with
length-prefixed pickles. A job is pickled once and the same bytes go to
every worker, stamped with the monotonic time the parent learned of its tip
(CLOCK_MONOTONIC is one clock for every process on the machine), so each
worker's ``stope_work_propagation_seconds`` still measures "tip learned to
notify written to every miner socket", and the parent's measures it to the
*last* worker. Workers report back: ready (port), broadcast done, "a block
of ours is being submitted" (the job manager holds work on the next tip
until it is recorded) and "wake" (look at the node now).

The parent supervises its workers in one nursery: a worker that dies is
started again (after a back-off) and gets the current job at once. SIGTERM
or SIGINT to the parent stops the workers gracefully (stop accepting,
client.reconnect, answer every share already read, commit every accepted
share); a second signal stops at once. A worker stops gracefully on its own
SIGTERM (and is not restarted) or when its parent vanishes; it ignores
SIGINT, which a terminal sends to the whole process group.

The same prefix mechanism lets several hosts share one database behind a
TCP load balancer: give each host its own ``stratum.server_id`` range (see
the README).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from stratum.server import open_listeners

from .attribution import load_pool_table
from .bitcoin.script import address_to_script
from .bitcoin.serialize import internal_to_display
from .bitcoin.target import target_to_difficulty
from .bitcoin.tx import TxOut
from .blocks import BlockSubmitter
from .config import NodeEndpoint, Settings
from .devnet.chain import DevnetChain
from .hardening import StratumCollector, WorkFreshness, graceful_stop
from .jobs import Job, JobManager
from .metrics import (
    InstrumentedNodeClient,
    PoolMetrics,
    SamplerSources,
    count_subscribed,
)
from .network_stats import NetworkTracker
from .node import NodePool
from .service import Pool, make_writer, start_node_source, tune_gc
from .storage.db import make_engine, try_upgrade, upgrade

log = logging.getLogger(__name__)

_LEN = struct.Struct("!I")
#: Seconds a worker has to start (load the checker kernel, bind, answer "ready").
START_TIMEOUT = 120.0
RESTART_BACKOFF_MAX = 30.0


class WorkersError(RuntimeError):
    """The worker processes could not be started."""


# --- the link: length-prefixed pickles over a socketpair ---------------------------


def frame(message: tuple[Any, ...]) -> bytes:
    """One message as it goes on the link (pickled once, sent to as many workers as needed)."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(payload)) + payload


class Link:
    """One end of a parent/worker socketpair.

    Outgoing messages go through an unbounded channel to one sender task, so
    synchronous code (the job manager's ``on_job``, a context manager around
    a block submission) can send without waiting. Only the parent and its own
    workers are on the other end; pickle is safe there.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._out, self._queue = trio.open_memory_channel[bytes](math.inf)
        self._buf = bytearray()

    def send(self, message: tuple[Any, ...]) -> None:
        self.send_framed(frame(message))

    def send_framed(self, data: bytes) -> None:
        try:
            self._out.send_nowait(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the other side is gone; the supervisor notices through the process

    async def pump(self) -> None:
        """Write queued messages until the channel or the socket closes."""
        try:
            async for data in self._queue:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def receive(self) -> tuple[Any, ...] | None:
        """The next message; None once the other side has closed."""
        while True:
            if len(self._buf) >= _LEN.size:
                (size,) = _LEN.unpack_from(self._buf)
                if len(self._buf) >= _LEN.size + size:
                    payload = bytes(self._buf[_LEN.size : _LEN.size + size])
                    del self._buf[: _LEN.size + size]
                    message = pickle.loads(payload)
                    assert isinstance(message, tuple)
                    return message
            try:
                chunk = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not chunk:
                return None
            self._buf += chunk

    def close(self) -> None:
        self._out.close()


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to start: the first message on its link."""

    index: int
    settings: Settings  # already adjusted: its server_id, spool directory, metrics port
    endpoints: tuple[NodeEndpoint, ...]
    port: int
    log_level: int


def worker_spool(base: Path, index: int) -> Path:
    """Worker ``index``'s spool directory, beside the single-process one (``spool`` -> ``spool-w0``)."""
    return base.with_name(f"{base.name}-w{index}")


def leftover_spools(base: Path, workers: int) -> list[Path]:
    """Spool directories no worker of this run will open but that hold segments:
    the single-process spool, and those of workers beyond ``workers`` (a run
    with more workers before). The parent replays them so no share is lost."""
    found = []
    candidates = [base] + sorted(base.parent.glob(f"{base.name}-w*")) if base.parent.exists() else []
    for path in candidates:
        if path != base:
            suffix = path.name[len(base.name) + 2 :]
            if not suffix.isdigit() or int(suffix) < workers:
                continue
        if path.is_dir() and any(path.glob("seg-*.spool")):
            found.append(path)
    return found


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index``: its extranonce1 prefix, spool and metrics port."""
    db = settings.database
    m = settings.metrics
    return settings.model_copy(update={
        "stratum": settings.stratum.model_copy(update={"server_id": settings.stratum.server_id + index}),
        "database": db.model_copy(update={"spool_dir": worker_spool(db.spool_path(settings.pool.data_dir), index)}),
        "metrics": m.model_copy(update={"port": m.port + 1 + index if m.port else 0}),
    })


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) ``host:port`` with SO_REUSEPORT: learns the port when 0 is asked
    for, fails early if another program holds it, and keeps it for the workers' listeners
    (a socket that does not listen receives no connections)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


# --- the worker process --------------------------------------------------------


class JobRelay:
    """The worker's stand-in for ``JobManager``: jobs arrive from the parent.

    ``Pool`` asks its job source for three things: a job by id, ``wake``
    (after finding a block) and ``own_block_in_flight`` (around a block
    submission); the last two are forwarded to the parent's job manager.
    """

    def __init__(self, link: Link, keep_jobs: int = 64) -> None:
        self.link = link
        self.keep_jobs = keep_jobs
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.current: Job | None = None

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def install(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        while len(self.jobs) > self.keep_jobs:
            self.jobs.popitem(last=False)
        self.current = job

    def wake(self) -> None:
        self.link.send(("wake",))

    @contextmanager
    def own_block_in_flight(self) -> Iterator[None]:
        self.link.send(("block", 1))
        try:
            yield
        finally:
            self.link.send(("block", -1))


async def run_worker(spec: WorkerSpec, link: Link, stop: trio.Event) -> None:
    """One Stratum worker: the pool of ``service.run_pool`` without the job source."""
    settings = spec.settings
    engine = make_engine(settings.database_url)
    metrics = PoolMetrics(settings=settings.metrics, concentration=settings.concentration)
    # The parent migrated the schema (or its writer will once the database answers):
    # a worker never runs migrations, so N workers never race at one.
    writer = make_writer(settings, engine)
    relay = JobRelay(link)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.pump)
            await nursery.start(writer.run)
            nodes = NodePool.from_settings(
                settings.node, list(spec.endpoints), client=functools.partial(InstrumentedNodeClient, metrics=metrics)
            )
            pool = Pool(settings, nodes, metrics, writer)
            # Jobs come from the parent: swap the (never started) job manager for the relay.
            pool.jobs = relay  # type: ignore[assignment]
            pool.submitter = BlockSubmitter(nodes, metrics, writer, in_flight=relay.own_block_in_flight)
            nursery.start_soon(
                metrics.run_sampler,
                SamplerSources(
                    subscriptions=lambda: count_subscribed(pool.stratum.sessions),
                    db_queue_depth=lambda: writer.pending,
                    spool_bytes=lambda: writer.stats().spool_bytes,
                    writer=writer.stats,
                ),
            )
            warm = await trio.to_thread.run_sync(pool.validator.checker.warm_up)
            log.info("share checker ready (%s backend, %.1fs)", settings.checker.backend, warm)
            nursery.start_soon(pool.validator.run)
            metrics.registry.register(StratumCollector(pool.stratum))
            s = settings.stratum
            listeners = open_listeners(s.host, spec.port, backlog=pool.stratum.settings.listen_backlog, reuse_port=True)
            port = await nursery.start(functools.partial(pool.stratum.serve, s.host, spec.port, listeners=listeners))
            if settings.metrics.enabled:
                metrics.serve(settings.metrics.host, settings.metrics.port)
            tune_gc()
            # A ban here is a ban in every worker (the parent relays it).
            pool.stratum.on_ban.append(lambda key, reason: link.send(("ban", key, reason)))
            link.send(("ready", port, s.server_id, os.getpid()))
            nursery.start_soon(_from_parent, link, pool, relay, metrics, stop)
            await stop.wait()
            await graceful_stop(pool, settings)
            nursery.cancel_scope.cancel()
    finally:
        metrics.close()
        engine.dispose()


async def _from_parent(link: Link, pool: Pool, relay: JobRelay, metrics: PoolMetrics, stop: trio.Event) -> None:
    """Apply the parent's messages; a closed link (the parent is gone) stops the worker."""
    while True:
        message = await link.receive()
        if message is None:
            log.warning("parent process gone: stopping")
            stop.set()
            return
        kind = message[0]
        if kind == "job":
            _, job, learned = message
            relay.install(job)
            if learned is not None:
                metrics.propagation.tip_seen(internal_to_display(job.prevhash), learned)
            pool._on_job(job)  # validator tables, broadcast, propagation metric: as in one process
            link.send(("broadcast", job.job_id, time.monotonic()))
        elif kind == "outdated":
            pool.stratum.work_outdated = bool(message[1])
        elif kind == "message":
            pool.stratum.show_message(str(message[1]))
        elif kind == "ban":
            # ("ban", key, reason[, seconds left]): the seconds only when replayed to a restarted worker.
            pool.stratum.apply_ban(str(message[1]), str(message[2]), float(message[3]) if len(message) > 3 else None)
        elif kind == "stop":
            stop.set()


async def _worker_main(fd: int) -> None:
    link = Link(socket.socket(fileno=fd))
    first = await link.receive()
    if first is None or first[0] != "spec":
        raise WorkersError("worker started without a spec from its parent")
    spec: WorkerSpec = first[1]
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s w{spec.index} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _signum in signals:
                    if stop.is_set():
                        nursery.cancel_scope.cancel()
                        return
                    stop.set()

            nursery.start_soon(watch)
            await run_worker(spec, link, stop)
            nursery.cancel_scope.cancel()


def worker_main() -> None:
    """Entry point of a worker process (``python -c 'from pool.workers import worker_main; worker_main()' FD``).

    Ctrl-C in a terminal signals the whole process group: the parent alone
    acts on SIGINT (it stops every worker in order), so a worker ignores it;
    SIGTERM sent to a worker itself stops that worker gracefully.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trio.run(_worker_main, int(sys.argv[1]))


# --- the parent ----------------------------------------------------------------


@dataclass
class WorkerHandle:
    """The parent's view of one worker process."""

    index: int
    link: Link | None = None
    process: trio.Process | None = None
    port: int | None = None
    pid: int | None = None
    #: Set once the worker first answered "ready" (start-up waits on it).
    ready: trio.Event = field(default_factory=trio.Event)
    #: Serving now (ready, and not exited since).
    live: bool = False
    blocks: list[AbstractContextManager[None]] = field(default_factory=list)
    starts: int = 0


class _WorkersFanout:
    """What ``WorkFreshness`` drives on a Stratum server, forwarded to every worker."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._outdated = False

    @property
    def work_outdated(self) -> bool:
        return self._outdated

    @work_outdated.setter
    def work_outdated(self, value: bool) -> None:
        self._outdated = value
        self._supervisor.to_all(("outdated", value))

    def show_message(self, text: str) -> int:
        return self._supervisor.to_all(("message", text))


class Supervisor:
    """Starts, feeds and restarts the worker processes."""

    def __init__(self, settings: Settings, workers: int, endpoints: list[NodeEndpoint], port: int,
                 metrics: PoolMetrics, jobs: JobManager) -> None:
        self.settings = settings
        self.workers = [WorkerHandle(i) for i in range(workers)]
        self.endpoints = tuple(endpoints)
        self.port = port
        self.metrics = metrics
        self.jobs = jobs
        self.fanout = _WorkersFanout(self)
        self.stopping = False
        self.started = False
        self.new_tip_listeners: list[Any] = []
        self._current: bytes | None = None  # the framed message of the current job
        # Bans decided by a worker: address key -> (reason, when it ends, monotonic).
        self._bans: dict[str, tuple[str, float]] = {}
        # job id -> (tip learned at, workers still to report, last report)
        self._propagating: OrderedDict[str, tuple[float, set[int], float]] = OrderedDict()

    def to_all(self, message: tuple[Any, ...]) -> int:
        data = frame(message)
        sent = 0
        for w in self.workers:
            if w.link is not None:
                w.link.send_framed(data)
                sent += 1
        return sent

    # --- jobs ------------------------------------------------------------------
    def on_job(self, job: Job) -> None:
        """The job manager's callback: one pickle, the same bytes to every worker."""
        now = time.monotonic()
        self.metrics.network_difficulty.set(float(target_to_difficulty(job.network_target)))
        self.metrics.block_height.set(job.height)
        delay = self.metrics.propagation.broadcast(internal_to_display(job.prevhash), now)
        learned = None if delay is None else now - delay
        data = frame(("job", job, learned))
        self._current = frame(("job", job, None))
        live = {w.index for w in self.workers if w.live}
        if learned is not None and live:
            self._propagating[job.job_id] = (learned, live, 0.0)
            while len(self._propagating) > 16:
                self._propagating.popitem(last=False)
        for w in self.workers:
            if w.link is not None:
                w.link.send_framed(data)
        if job.clean_jobs:
            for listener in self.new_tip_listeners:
                listener()

    def _broadcast_done(self, index: int, job_id: str, done_at: float) -> None:
        entry = self._propagating.get(job_id)
        if entry is None:
            return
        learned, waiting, last = entry
        waiting.discard(index)
        last = max(last, done_at)
        if waiting:
            self._propagating[job_id] = (learned, waiting, last)
            return
        del self._propagating[job_id]
        # New tip learned -> notify written to every miner socket of the last worker.
        self.metrics.work_propagation_seconds.observe(max(0.0, last - learned))

    # --- processes ----------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[list[WorkerHandle]] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every worker until stopped; started once all are ready (fails if one cannot start)."""
        async with trio.open_nursery() as nursery:
            for w in self.workers:
                nursery.start_soon(self._supervise, w)
            with trio.fail_after(START_TIMEOUT):
                for w in self.workers:
                    await w.ready.wait()
            self.started = True
            task_status.started(self.workers)

    async def stop(self, timeout: float) -> None:
        """Graceful stop of every worker; waits up to ``timeout`` for them to exit."""
        self.stopping = True
        self.to_all(("stop",))
        with trio.move_on_after(timeout):
            for w in self.workers:
                if w.process is not None:
                    await w.process.wait()

    async def _supervise(self, w: WorkerHandle) -> None:
        backoff = 1.0
        while not self.stopping:
            started = time.monotonic()
            code = await self._run_once(w)
            if self.stopping:
                return
            if not self.started:
                raise WorkersError(f"worker {w.index} exited with status {code} while starting (see its log above)")
            if code == 0:
                # A graceful exit is deliberate (SIGTERM to the worker, e.g. systemd
                # signalling the whole control group): not a crash to restart from.
                log.info("worker %d stopped", w.index)
                return
            log.error("worker %d exited with status %s; restarting in %.0fs", w.index, code, backoff)
            await trio.sleep(backoff)
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, RESTART_BACKOFF_MAX)

    async def _run_once(self, w: WorkerHandle) -> int | None:
        parent_end, child_end = socket.socketpair()
        try:
            cmd = [sys.executable, "-c", "from pool.workers import worker_main; worker_main()", str(child_end.fileno())]
            process = await trio.lowlevel.open_process(cmd, pass_fds=(child_end.fileno(),))
        finally:
            child_end.close()
        link = Link(parent_end)
        w.process, w.starts = process, w.starts + 1
        spec = WorkerSpec(
            index=w.index,
            settings=worker_settings(self.settings, w.index),
            endpoints=self.endpoints,
            port=self.port,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        link.send(("spec", spec))
        if self._current is not None:
            link.send_framed(self._current)
        if self.fanout.work_outdated:
            link.send(("outdated", True))
        now = time.monotonic()
        for key, (reason, until) in list(self._bans.items()):
            if until > now:  # a restarted worker serves what is left of every ban
                link.send(("ban", key, reason, until - now))
            else:
                del self._bans[key]
        w.link = link  # every later job goes to it too, even before it is ready
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.pump)
                nursery.start_soon(self._from_worker, w, link)
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            w.link = None
            w.live = False
            link.close()
            for cm in reversed(w.blocks):
                cm.__exit__(None, None, None)
            w.blocks.clear()
            if process.returncode is None:
                with trio.CancelScope(shield=True):
                    process.terminate()
                    with trio.move_on_after(5):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
        return process.returncode

    async def _from_worker(self, w: WorkerHandle, link: Link) -> None:
        while True:
            message = await link.receive()
            if message is None:
                return
            kind = message[0]
            if kind == "ready":
                _, w.port, server_id, w.pid = message
                w.live = True
                log.info("worker %d ready (pid %d, extranonce1 prefix %02x)", w.index, w.pid, server_id)
                w.ready.set()
            elif kind == "broadcast":
                self._broadcast_done(w.index, message[1], message[2])
            elif kind == "wake":
                self.jobs.wake()
            elif kind == "ban":
                # One worker banned an address: every other worker refuses it too, and
                # so does a worker started later (a restart), for what is left of it.
                _, key, reason = message[:3]
                self._bans[key] = (reason, time.monotonic() + self.settings.stratum.abuse.ban_duration)
                for other in self.workers:
                    if other is not w and other.live and other.link is not None:
                        other.link.send(message)
            elif kind == "block":
                if message[1] > 0:
                    cm = self.jobs.own_block_in_flight()
                    cm.__enter__()
                    w.blocks.append(cm)
                elif w.blocks:
                    w.blocks.pop().__exit__(None, None, None)


@dataclass
class RunningWorkers:
    """Handles a caller gets once every worker serves."""

    supervisor: Supervisor
    stratum_port: int
    metrics_port: int | None
    node_url: str
    devnet: DevnetChain | None


async def run_workers(
    settings: Settings,
    workers: int,
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[RunningWorkers] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The parent: job source for ``workers`` Stratum worker processes (see the module docstring)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if settings.stratum.server_id + workers - 1 > 255:
        raise WorkersError(
            f"stratum.server_id {settings.stratum.server_id} + {workers} workers exceeds 255: "
            "each worker needs its own one-byte extranonce1 prefix"
        )
    engine = make_engine(settings.database_url)
    migrated = await trio.to_thread.run_sync(try_upgrade, engine)
    metrics = PoolMetrics(settings=settings.metrics, concentration=settings.concentration)
    db = settings.database
    base_spool = db.spool_path(settings.pool.data_dir)
    # Replays what a single-process run (or one with more workers) left; when the database
    # was down at start, the first of these writers (or a spare one) runs the migrations.
    leftovers = leftover_spools(base_spool, workers)
    if not migrated and base_spool not in leftovers:
        leftovers.append(base_spool)
    writers = [
        make_writer(settings, engine, path, prepare=None if migrated or i else (lambda: upgrade(engine)))
        for i, path in enumerate(leftovers)
    ]
    metrics_port = None
    reserved: socket.socket | None = None
    try:
        async with trio.open_nursery() as nursery:
            for writer in writers:
                await nursery.start(writer.run)
            devnet, devnet_node, endpoints = await start_node_source(nursery, settings)
            nodes = NodePool.from_settings(
                settings.node, endpoints, client=functools.partial(InstrumentedNodeClient, metrics=metrics)
            )
            nodes.tip_listeners.append(lambda tip: metrics.propagation.tip_seen(tip, time.monotonic()))
            s = settings.stratum
            payout = address_to_script(settings.pool.address, settings.pool.network)
            supervisor: Supervisor | None = None

            def on_job(job: Job) -> None:
                assert supervisor is not None
                supervisor.on_job(job)

            jobs = JobManager(
                nodes,
                payout_outputs=lambda value: [TxOut(value, payout)],
                tag=settings.pool.tag.encode(),
                extranonce_size=s.extranonce1_size + s.extranonce2_size,
                on_job=on_job,
                refresh_interval=settings.node.refresh_interval,
                longpoll=settings.node.longpoll,
                longpoll_timeout=settings.node.longpoll_timeout,
                version_mask=int(s.version_mask, 16),
            )
            reserved = reserve_port(s.host, s.port)
            port = reserved.getsockname()[1]
            # Workers talk to the node(s) themselves for blocks: the devnet by its URL
            # (without ZMQ: they do not follow the tip, the parent does).
            worker_endpoints = [NodeEndpoint(url=e.url, cookie_file=e.cookie_file) for e in endpoints]
            supervisor = Supervisor(settings, workers, worker_endpoints, port, metrics, jobs)
            nursery.start_soon(metrics.run_sampler, SamplerSources())
            nursery.start_soon(metrics.run_node_status, nodes)
            c = settings.concentration
            if c.pools_file is not None:
                tracker = NetworkTracker(
                    nodes, load_pool_table(c.pools_file), size=c.network_window, unknown_policy=c.unknown_policy,
                    network=settings.pool.network, guideline=c.guideline, metrics=metrics,
                )
                supervisor.new_tip_listeners.append(tracker.wake)
                nursery.start_soon(tracker.run)
            await nursery.start(jobs.run)
            f = s.faults
            freshness = WorkFreshness(
                jobs, nodes, supervisor.fanout,  # type: ignore[arg-type]  # duck-typed: work_outdated, show_message
                max_age=f.max_work_age, notify_miners=f.notify_miners, registry=metrics.registry,
            )
            nursery.start_soon(freshness.run)
            handles = await nursery.start(supervisor.run)
            if settings.metrics.enabled:
                metrics_port = metrics.serve(settings.metrics.host, settings.metrics.port)
            tune_gc()
            log.info(
                "pool running: stratum+tcp://%s:%d on %d worker processes (pids %s, extranonce1 prefixes %02x..%02x), node %s",
                s.host, port, workers, ", ".join(str(h.pid) for h in handles), s.server_id, s.server_id + workers - 1,
                nodes.name,
            )
            task_status.started(RunningWorkers(supervisor, port, metrics_port, endpoints[0].url, devnet))
            if stop is not None:
                await stop.wait()
                sd = s.shutdown
                await supervisor.stop(sd.grace + sd.timeout + 10)
                for writer in writers:
                    with trio.move_on_after(sd.timeout):
                        await writer.drained()
                nursery.cancel_scope.cancel()
    finally:
        if reserved is not None:
            reserved.close()
        metrics.close()
        engine.dispose()


__all__ = [
    "JobRelay",
    "Link",
    "RunningWorkers",
    "Supervisor",
    "WorkerSpec",
    "WorkersError",
    "leftover_spools",
    "run_workers",
    "worker_settings",
    "worker_spool",
]
