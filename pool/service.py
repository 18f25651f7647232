"""Wiring: node (or embedded devnet), jobs, Stratum server, storage, metrics.

Everything runs in one trio nursery, so a failure anywhere stops the pool
cleanly instead of leaving half of it running.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from fractions import Fraction

import trio
from sqlalchemy import Engine

from payouts.ledger import payout_figures_provider, policy_from_settings
from stratum import errors
from stratum.errors import StratumError
from stratum.protocol import ProtocolSettings, Share
from stratum.server import ServerSettings, StratumServer

from .bitcoin.script import AddressError, address_to_script
from .bitcoin.target import difficulty_to_target, hash_difficulty, target_to_difficulty
from .bitcoin.tx import TxOut
from .config import NodeEndpoint, Settings
from .devnet.chain import DevnetChain
from .devnet.node import DevnetNode
from .blocks import BlockSubmitter
from .jobs import Job, JobManager
from .shares import Verdict, judge_share
from .validator import BatchValidator, Check, ValidationFailed, make_checker
from .hardening import StratumCollector, WorkFreshness, graceful_stop
from .attribution import load_pool_table
from .metrics import InstrumentedNodeClient, PoolMetrics, SamplerSources, count_subscribed
from .network_stats import NetworkTracker
from .node import NodePool
from .storage.db import make_engine, try_upgrade, upgrade
from .storage.records import ShareRow, ShareRows
from .storage.writer import ShareWriter, SpoolError, SpoolFull

log = logging.getLogger(__name__)
# Builds a NamedTuple (a stored share row) without its Python-level __new__.
_tuple_new = tuple.__new__

# A share the pool cannot make durable is refused, never acknowledged: explicit back-pressure.
STORAGE_FULL = StratumError(errors.ErrorCode.OTHER, "Pool storage full: share not recorded, database behind", "storage-full")
STORAGE_FAILED = StratumError(errors.ErrorCode.OTHER, "Pool storage failed: share not recorded", "storage-error")


@functools.lru_cache(maxsize=256)
def job_network_difficulty(network_target: int) -> Fraction:
    """A job's network difficulty: an exact division of 256-bit numbers, done once per
    job (cached by target) rather than for every share recorded against it."""
    return target_to_difficulty(network_target)


#: The cyclic GC's first threshold once the pool runs (Python's default is 700).
#: Every share allocates a handful of tracked objects (a dict, tuples, lists),
#: so at the default a young collection ran every ~70 shares and, with the
#: older generations it triggers, took 6-7 % of the process's CPU under load
#: (measured with gc.callbacks in the throughput bench); at 20 000 it is about
#: 1.5 %. A young collection walks only what survived since the last one, so
#: each pause stays short (~3 ms under a flood of shares, none while idle).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> int:
    """Freeze the start-up heap out of the cyclic GC and collect young objects less often;
    returns how many objects were frozen.

    Modules, the Numba kernel, SQLAlchemy and pydantic leave ~200 000 tracked
    objects that live as long as the process. A full collection walks them
    all (~120 ms on a 2-core box), and one landing during a broadcast or a
    share burst is a latency spike every miner sees. Frozen objects are still
    freed by reference counting; what is made later (sessions, jobs) is
    collected as usual.
    """
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


_difficulties: dict[int, tuple[Fraction, int, float]] = {}


def _difficulty(difficulty: Fraction) -> tuple[int, float]:
    """A share difficulty's target and float (for metrics): a connection keeps one
    difficulty for many shares, and every share of it carries the very same
    object, so the exact division is done once per difficulty object, looked up
    by identity (the entry holds the object: its id cannot be reused; hashing a
    Fraction would cost a modular inverse)."""
    hit = _difficulties.get(id(difficulty))
    if hit is not None and hit[0] is difficulty:
        return hit[1], hit[2]
    if len(_difficulties) >= 4096:
        _difficulties.clear()
    target, value = difficulty_to_target(difficulty), float(difficulty)
    _difficulties[id(difficulty)] = (difficulty, target, value)
    return target, value


def difficulty_float(difficulty: Fraction) -> float:
    return _difficulty(difficulty)[1]


@functools.lru_cache(maxsize=256)
def job_network_float(network_target: int) -> float:
    return float(job_network_difficulty(network_target))


@functools.lru_cache(maxsize=65536)
def split_username(username: str) -> tuple[str, str]:
    """'ADDRESS.worker' -> (ADDRESS, worker); no worker name means 'default'."""
    address, _, worker = username.partition(".")
    return address, (worker or "default")


class Pool:
    """The pool's decisions, as the Stratum server's ``PoolBackend``."""

    def __init__(self, settings: Settings, nodes: NodePool, metrics: PoolMetrics, writer: ShareWriter) -> None:
        self.settings = settings
        self.nodes = nodes
        # RPC for the node-status poll and the concentration tracker: the
        # preferred node, with fail-over.
        self.node = nodes
        self.metrics = metrics
        self.writer = writer
        self.payout_script = address_to_script(settings.pool.address, settings.pool.network)
        s = settings.stratum
        self.stratum = StratumServer(
            self,
            ServerSettings(
                protocol=ProtocolSettings(
                    extranonce2_size=s.extranonce2_size,
                    version_mask=int(s.version_mask, 16),
                    start_difficulty=settings.effective_start_difficulty(),
                    min_difficulty=s.min_difficulty,
                    max_difficulty=s.max_difficulty,
                    target_share_interval=s.target_share_interval,
                    max_share_rate=s.max_share_rate,
                ),
                extranonce1_size=s.extranonce1_size,
                server_id=s.server_id,
                resume_window=s.resume_window,
                **s.hardening(),
            ),
        )
        self.jobs = JobManager(
            nodes,
            payout_outputs=self.payout_outputs,
            tag=settings.pool.tag.encode(),
            extranonce_size=s.extranonce1_size + s.extranonce2_size,
            on_job=self._on_job,
            refresh_interval=settings.node.refresh_interval,
            longpoll=settings.node.longpoll,
            longpoll_timeout=settings.node.longpoll_timeout,
            version_mask=int(s.version_mask, 16),
        )
        self.best_share = Fraction(0)
        # Lowest share hash so far: compared as an integer per share, turned into a
        # difficulty (an exact Fraction) only when it improves.
        self._best_hash = 1 << 256
        c = settings.checker
        self.validator = BatchValidator(
            make_checker(c.backend, c.threads), max_batch=c.batch_size, deadline=c.batch_deadline_ms / 1000
        )
        self.submitter = BlockSubmitter(nodes, metrics, writer, in_flight=self.jobs.own_block_in_flight)
        self._rows = ShareRows()  # share -> stored form, with its text caches
        #: (id(difficulty), id(job)) -> ``_share_constants`` (entries hold both objects,
        #: so an id is not reused while its entry lives).
        self._share_consts: dict[tuple[int, int], tuple[Any, ...]] = {}

    def payout_outputs(self, value: int) -> list[TxOut]:
        return [TxOut(value, self.payout_script)]

    def _on_job(self, job: Job) -> None:
        network = job_network_difficulty(job.network_target)
        self.stratum.network_difficulty = network
        self.metrics.network_difficulty.set(float(network))
        self.metrics.block_height.set(job.height)
        self.validator.add_job(job)
        self.stratum.broadcast(job.stratum_job())
        self.metrics.job_broadcast(job)

    # --- PoolBackend -------------------------------------------------------
    async def authorize(self, username: str, password: str) -> tuple[bool, str | None]:
        address, _worker = split_username(username)
        try:
            address_to_script(address, self.settings.pool.network)
        except AddressError as exc:
            log.info("authorize refused for %r: %s", username, exc)
            return False, f"Unauthorized worker: username must be a {self.settings.pool.network} payout address ({exc})"
        return True, None

    def share_rejected(self, worker: str | None, error: StratumError) -> None:
        self.metrics.shares_rejected.labels(error.reason).inc()
        log.debug("share rejected worker=%s reason=%s", worker, error.reason)

    def connections_changed(self, connected: int, working: int) -> None:
        self.metrics.connections.set(connected)
        self.metrics.workers_authorized.set(working)

    async def _record_share(self, share: Share, job: Job, verdict: Verdict, *, is_block: bool) -> StratumError | None:
        """Spool one share; `true` may be sent only after this returns None."""
        return await self._record_many([self._share_record(share, job, verdict.block_hash, is_block, _utcnow())])

    def _share_record(self, share: Share, job: Job, block_hash: bytes, is_block: bool, now: dt.datetime) -> ShareRow:
        """The share in its stored form, made here once (no intermediate record object)."""
        address, worker = split_username(share.worker)
        return self._rows.row(
            block_hash[::-1].hex(), address, worker, job.job_id, job.height,
            share.difficulty, job_network_difficulty(job.network_target), is_block, now,
        )

    async def _record_many(self, records: list[ShareRow]) -> StratumError | None:
        """Spool shares with one fsync wait; all or none are durable (then `true` may go out)."""
        try:
            await self.writer.record_many(records)
        except SpoolFull:
            self.metrics.shares_rejected.labels(STORAGE_FULL.reason).inc(len(records))
            return STORAGE_FULL
        except SpoolError as exc:
            log.error("%d share(s) not recorded: %s", len(records), exc)
            self.metrics.shares_rejected.labels(STORAGE_FAILED.reason).inc(len(records))
            return STORAGE_FAILED
        return None

    async def submit_share(self, share: Share) -> StratumError | None:
        (error,) = await self.submit_shares([share])
        return error

    async def submit_shares(self, shares: Sequence[Share]) -> list[StratumError | None]:
        """Judge shares that arrived together: one checker wait and one spool wait for all.

        The verdict per share is as for a share alone; only the waiting is shared.
        A share that solves a block takes its own path (scalar re-check, block
        submission alongside its spooling).
        """
        results: list[StratumError | None] = [None] * len(shares)
        jobs: list[Job | None] = []
        submits = []
        checked: list[int] = []
        live_jobs = self.jobs.jobs
        # What a share's check, row and metrics take from its difficulty and job, looked
        # up once per share: the same few pairs recur (a connection's difficulty, the
        # current job). One entry per checked share, in ``checked`` order.
        consts = self._share_consts
        if len(consts) >= 4096:
            consts.clear()
        hits: list[tuple[Any, ...]] = []
        for i, share in enumerate(shares):
            job = live_jobs.get(share.job.job_id)
            jobs.append(job)
            if job is None:
                results[i] = self._refuse(share, errors.UNKNOWN_JOB)
                continue
            d = share.difficulty
            hit = consts.get((id(d), id(job)))
            if hit is None or hit[0] is not d or hit[1] is not job:
                hit = consts[(id(d), id(job))] = self._share_constants(d, job)
            hits.append(hit)
            submits.append((
                job.job_id, share.extranonce1, share.extranonce2, share.ntime, share.nonce,
                share.version_bits, share.version_mask, hit[8],
            ))
            checked.append(i)
        if not submits:
            return results
        started = time.perf_counter()
        try:
            checks = await self.validator.check_many(submits)
        except ValidationFailed as exc:
            log.error("%d share(s) not judged: %s", len(submits), exc)
            for i in checked:
                results[i] = self._refuse(shares[i], errors.NODE_UNAVAILABLE)
            return results
        self.metrics.share_validation_seconds.observe(time.perf_counter() - started)
        now_text = self._rows.time(_utcnow())
        records: list[ShareRow] = []
        recorded: list[int] = []
        fed: list[tuple[str, str, float, float]] = []
        best: str | None = None  # the lowest hash, as display hex (compares as the numbers do)
        blocks: list[tuple[int, Check]] = []
        refused: StratumError | None = None
        # The checker's answers as columns (Checks): indexed here, no object per share.
        meets_share, meets_network, known = checks.meets_share, checks.meets_network, checks.known
        hexes = checks.display_hex()  # every hash as display hex, in one string
        for k, i in enumerate(checked):
            share = shares[i]
            if known is not None and not known[k]:  # the job left the validator's window meanwhile
                results[i] = self._refuse(share, errors.UNKNOWN_JOB)
            elif meets_network[k]:
                blocks.append((i, checks[k]))  # type: ignore[arg-type]
            elif share.stale:
                results[i] = self._refuse(share, errors.STALE_JOB)
            elif not meets_share[k]:
                results[i] = self._refuse(share, errors.LOW_DIFFICULTY)
            else:
                # The stored row (``_share_record``, inlined: this loop runs for every
                # share) and the metrics' figures, in one pass.
                hit = hits[k]
                address, worker = split_username(share.worker)
                display = hexes[64 * k : 64 * k + 64]
                records.append(_tuple_new(ShareRow, (display, address, worker, hit[2], hit[3], hit[4], hit[5], False, now_text)))
                recorded.append(i)
                fed.append((address, worker, hit[6], hit[7]))
                if best is None or display < best:
                    best = display
        if blocks:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._block_shares, blocks, shares, jobs, results)
                if records:
                    refused = await self._record_many(records)
        elif records:
            refused = await self._record_many(records)
        if records:
            if refused is not None:
                for i in recorded:
                    results[i] = refused
            else:
                assert best is not None
                self._accepted_together(fed, int(best, 16))
        return results

    def _share_constants(self, difficulty: Fraction, job: Job) -> tuple[Any, ...]:
        """(difficulty, job, job id, height, difficulty text, network difficulty
        text, difficulty float, network difficulty float, share target): what a
        share's check, stored row and metrics take from its difficulty and job."""
        network = job_network_difficulty(job.network_target)
        text = self._rows.fraction
        target, value = _difficulty(difficulty)
        return (
            difficulty, job, job.job_id, job.height, text(difficulty), text(network),
            value, job_network_float(job.network_target), target,
        )

    def _refuse(self, share: Share, error: StratumError) -> StratumError:
        self.share_rejected(share.worker, error)
        return error

    def _accepted_together(self, fed: list[tuple[str, str, float, float]], best: int) -> None:
        """Metrics for accepted shares of one batch, none a block: ``(address, worker,
        difficulty, network difficulty)`` each, and the lowest hash among them."""
        metrics = self.metrics
        metrics.shares_accepted.inc(len(fed))
        metrics.shares_accepted_together(fed, now=time.monotonic())
        metrics.accepted_difficulty.inc(sum(d for _a, _w, d, _n in fed))
        # (stope_db_queue_depth is sampled by run_sampler, not set per share.)
        self._best(best)

    def _best(self, hash_value: int) -> None:
        if hash_value < self._best_hash:
            self._best_hash = hash_value
            self.best_share = hash_difficulty(hash_value)
            self.metrics.best_share_difficulty.set(float(self.best_share))

    async def _block_shares(
        self, blocks: list[tuple[int, Check]], shares: Sequence[Share], jobs: list[Job | None], results: list[StratumError | None]
    ) -> None:
        """Blocks of one batch, one after another in arrival order: the first found goes
        out first (two at one height compete, and the earlier one should win)."""
        for i, check in blocks:
            await self._block_share(shares[i], jobs[i], check, results, i)

    async def _block_share(self, share: Share, job: Job | None, check: Check, results: list[StratumError | None], i: int) -> None:
        """A share that solves a block: submitted to the nodes while it is spooled."""
        assert job is not None
        # Rare: rebuild through the scalar reference, which also gives the header.
        verdict = judge_share(job, share)
        if verdict.block_hash != check.block_hash:
            log.error("checker and scalar reference disagree on job %s; trusting the reference", job.job_id)
        address, worker = split_username(share.worker)
        # The winning share goes into the spool while the block goes out, so it is
        # durable no later than the block is known (the block is not delayed by it).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                self.submitter.submit, job, verdict, share.extranonce1 + share.extranonce2, share.ntime, share.nonce, address, worker
            )
            refused = await self._record_share(share, job, verdict, is_block=True)
        self.jobs.wake()
        if refused is not None:
            results[i] = refused
            return
        if not check.meets_share:  # a block, but below this worker's own difficulty
            results[i] = self._refuse(share, errors.LOW_DIFFICULTY)
            return
        # Closes the round in the effort gauge: one block at a time, not batched.
        self.metrics.shares_accepted.inc()
        self.metrics.share_accepted(
            address, worker, share.difficulty, job_network_difficulty(job.network_target), is_block=True, now=time.monotonic()
        )
        self.metrics.accepted_difficulty.inc(difficulty_float(share.difficulty))
        self._best(verdict.hash_value)

def _start_metrics_tasks(nursery: trio.Nursery, settings: Settings, pool: Pool, metrics: PoolMetrics) -> None:
    """Gauge sampler, node status poll and (with a pools file) the network concentration tracker."""
    sources = SamplerSources(
        subscriptions=lambda: count_subscribed(pool.stratum.sessions),
        db_queue_depth=lambda: pool.writer.pending,
        spool_bytes=lambda: pool.writer.stats().spool_bytes,
        writer=pool.writer.stats,
        payouts=payout_figures_provider(pool.writer.engine, policy_from_settings(settings)),
    )
    nursery.start_soon(metrics.run_sampler, sources)
    nursery.start_soon(metrics.run_node_status, pool.node)
    c = settings.concentration
    if c.pools_file is not None:
        tracker = NetworkTracker(
            pool.node,
            load_pool_table(c.pools_file),
            size=c.network_window,
            unknown_policy=c.unknown_policy,
            network=settings.pool.network,
            guideline=c.guideline,
            metrics=metrics,
        )
        metrics.on_new_tip(tracker.wake)
        nursery.start_soon(tracker.run)


@dataclass
class RunningPool:
    """Handles a caller (a test, the CLI) gets once the pool is up."""

    pool: Pool
    stratum_port: int
    metrics_port: int | None
    node_url: str
    devnet: DevnetChain | None
    devnet_node: DevnetNode | None = None


def make_writer(
    settings: Settings, engine: Engine, spool: Path | None = None, *, prepare: Callable[[], None] | None = None
) -> ShareWriter:
    """The share writer as ``[database]`` configures it (``spool``: another spool directory)."""
    db = settings.database
    return ShareWriter(
        engine,
        spool if spool is not None else db.spool_path(settings.pool.data_dir),
        batch_size=db.batch_size,
        flush_interval=db.flush_interval,
        queue_size=db.queue_size,
        fsync_interval=db.fsync_interval,
        spool_max_bytes=db.spool_max_bytes,
        segment_bytes=db.segment_bytes,
        segment_age=db.segment_age,
        prepare=prepare,
    )


async def start_node_source(
    nursery: trio.Nursery, settings: Settings
) -> tuple[DevnetChain | None, DevnetNode | None, list[NodeEndpoint]]:
    """The configured nodes, or the embedded devnet started in ``nursery``."""
    if not settings.uses_devnet:
        return None, None, settings.node.node_endpoints()
    d = settings.devnet
    devnet = DevnetChain(difficulty=d.difficulty, synthetic_txs=d.synthetic_txs)
    devnet_node = DevnetNode(
        devnet, host=d.host, port=d.port, rpc_user=d.rpc_user, rpc_password=d.rpc_password,
        zmq_hashblock=d.zmq_hashblock or None, longpoll_timeout=d.longpoll_timeout,
    )
    await nursery.start(devnet_node.run)
    return devnet, devnet_node, [NodeEndpoint(url=devnet_node.url, zmq_hashblock=devnet_node.zmq_endpoint or "")]


async def run_pool(
    settings: Settings,
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[RunningPool] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the pool until cancelled, or until ``stop`` is set: then stop gracefully (``graceful_stop``)."""
    engine = make_engine(settings.database_url)
    # Migrate to head now; if the database is down, the writer does it once it answers.
    migrated = await trio.to_thread.run_sync(try_upgrade, engine)
    metrics = PoolMetrics(settings=settings.metrics, concentration=settings.concentration)
    writer = make_writer(settings, engine, prepare=None if migrated else (lambda: upgrade(engine)))
    metrics_port = None
    try:
        async with trio.open_nursery() as nursery:
            # The spool is open (and a crashed run's segments queued for replay) before any share arrives.
            await nursery.start(writer.run)
            devnet, devnet_node, endpoints = await start_node_source(nursery, settings)
            node_url = endpoints[0].url
            nodes = NodePool.from_settings(
                settings.node, endpoints, client=functools.partial(InstrumentedNodeClient, metrics=metrics)
            )
            nodes.tip_listeners.append(lambda tip: metrics.propagation.tip_seen(tip, time.monotonic()))
            node = nodes
            pool = Pool(settings, nodes, metrics, writer)
            _start_metrics_tasks(nursery, settings, pool, metrics)
            # Compile (or load from cache) the checker's kernel before any share arrives.
            warm = await trio.to_thread.run_sync(pool.validator.checker.warm_up)
            log.info("share checker ready (%s backend, %.1fs)", settings.checker.backend, warm)
            nursery.start_soon(pool.validator.run)
            await nursery.start(pool.jobs.run)
            f = settings.stratum.faults
            freshness = WorkFreshness(
                pool.jobs, nodes, pool.stratum, max_age=f.max_work_age, notify_miners=f.notify_miners, registry=metrics.registry
            )
            nursery.start_soon(freshness.run)
            metrics.registry.register(StratumCollector(pool.stratum))
            stratum_port = await nursery.start(pool.stratum.serve, settings.stratum.host, settings.stratum.port)
            if settings.metrics.enabled:
                metrics_port = metrics.serve(settings.metrics.host, settings.metrics.port)
            frozen = tune_gc()
            log.info("pool running: stratum+tcp://%s:%d, node %s (%d start-up objects frozen out of the GC)",
                     settings.stratum.host, stratum_port, node.name, frozen)
            task_status.started(RunningPool(pool, stratum_port, metrics_port, node_url, devnet, devnet_node))
            if stop is not None:
                await stop.wait()
                await graceful_stop(pool, settings)
                nursery.cancel_scope.cancel()
    finally:
        metrics.close()
        engine.dispose()
