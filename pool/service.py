"""Wiring: node (or embedded devnet), jobs, Stratum server, storage, metrics.

Everything runs in one trio nursery, so a failure anywhere stops the pool
cleanly instead of leaving half of it running.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from fractions import Fraction

import trio

from stratum import errors
from stratum.errors import StratumError
from stratum.protocol import ProtocolSettings, Share
from stratum.server import ServerSettings, StratumServer

from .bitcoin.script import AddressError, address_to_script
from .bitcoin.serialize import internal_to_display
from .bitcoin.target import difficulty_to_target, hash_difficulty, target_to_difficulty
from .bitcoin.tx import TxOut
from .config import Settings
from .devnet.chain import DevnetChain
from .devnet.rpc import DevnetRPC
from .devnet.server import DevnetHTTPServer
from .blocks import BlockSubmitter
from .jobs import Job, JobManager
from .shares import judge_share
from .metrics import PoolMetrics
from .node import NodeClient
from .storage.db import create_schema, make_engine
from .storage.records import ShareRecord
from .storage.writer import ShareWriter

log = logging.getLogger(__name__)


def split_username(username: str) -> tuple[str, str]:
    """'ADDRESS.worker' -> (ADDRESS, worker); no worker name means 'default'."""
    address, _, worker = username.partition(".")
    return address, (worker or "default")


class Pool:
    """The pool's decisions, as the Stratum server's ``PoolBackend``."""

    def __init__(self, settings: Settings, node: NodeClient, metrics: PoolMetrics, writer: ShareWriter) -> None:
        self.settings = settings
        self.node = node
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
                ),
                extranonce1_size=s.extranonce1_size,
                server_id=s.server_id,
            ),
        )
        self.jobs = JobManager(
            node,
            payout_outputs=self.payout_outputs,
            tag=settings.pool.tag.encode(),
            extranonce_size=s.extranonce1_size + s.extranonce2_size,
            on_job=self._on_job,
            poll_interval=settings.node.poll_interval,
            refresh_interval=settings.node.refresh_interval,
        )
        self.best_share = Fraction(0)
        self.submitter = BlockSubmitter(node, metrics, writer)

    def payout_outputs(self, value: int) -> list[TxOut]:
        return [TxOut(value, self.payout_script)]

    def _on_job(self, job: Job) -> None:
        network = target_to_difficulty(job.network_target)
        self.stratum.network_difficulty = network
        self.metrics.network_difficulty.set(float(network))
        self.metrics.block_height.set(job.height)
        self.stratum.broadcast(job.stratum_job())

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

    async def submit_share(self, share: Share) -> StratumError | None:
        job = self.jobs.get(share.job.job_id)
        if job is None:
            self.share_rejected(share.worker, errors.UNKNOWN_JOB)
            return errors.UNKNOWN_JOB
        started = time.perf_counter()
        verdict = judge_share(job, share)
        self.metrics.share_validation_seconds.observe(time.perf_counter() - started)
        is_block = verdict.hash_value <= job.network_target
        if is_block:
            address, worker = split_username(share.worker)
            await self.submitter.submit(job, verdict, share.extranonce1 + share.extranonce2, share.ntime, share.nonce, address, worker)
            self.jobs.wake()
        if share.stale and not is_block:
            self.share_rejected(share.worker, errors.STALE_JOB)
            return errors.STALE_JOB
        if verdict.hash_value > difficulty_to_target(share.difficulty):
            self.share_rejected(share.worker, errors.LOW_DIFFICULTY)
            return errors.LOW_DIFFICULTY
        address, worker = split_username(share.worker)
        self.writer.put(
            ShareRecord(
                share_hash=internal_to_display(verdict.block_hash),
                address=address,
                worker=worker,
                job_id=job.job_id,
                height=job.height,
                difficulty=share.difficulty,
                network_difficulty=target_to_difficulty(job.network_target),
                is_block=is_block,
                created_at=dt.datetime.now(dt.timezone.utc),
            )
        )
        self.metrics.shares_accepted.inc()
        self.metrics.accepted_difficulty.inc(float(share.difficulty))
        self.metrics.db_queue_depth.set(self.writer.pending)
        achieved = hash_difficulty(verdict.hash_value)
        if achieved > self.best_share:
            self.best_share = achieved
            self.metrics.best_share_difficulty.set(float(achieved))
        return None

@dataclass
class RunningPool:
    """Handles a caller (a test, the CLI) gets once the pool is up."""

    pool: Pool
    stratum_port: int
    metrics_port: int | None
    node_url: str
    devnet: DevnetChain | None


async def run_pool(settings: Settings, *, task_status: trio.TaskStatus[RunningPool] = trio.TASK_STATUS_IGNORED) -> None:
    engine = make_engine(settings.database_url)
    await trio.to_thread.run_sync(create_schema, engine)
    metrics = PoolMetrics()
    writer = ShareWriter(engine, batch_size=settings.database.batch_size, flush_interval=settings.database.flush_interval)
    metrics_port = None
    try:
        async with trio.open_nursery() as nursery:
            devnet = None
            if settings.uses_devnet:
                devnet = DevnetChain(difficulty=settings.devnet.difficulty, synthetic_txs=settings.devnet.synthetic_txs)
                http = DevnetHTTPServer(DevnetRPC(devnet), user=settings.devnet.rpc_user, password=settings.devnet.rpc_password)
                port = await nursery.start(http.serve, settings.devnet.host, settings.devnet.port)
                creds = f"{settings.devnet.rpc_user}:{settings.devnet.rpc_password}@" if settings.devnet.rpc_user else ""
                node_url = f"http://{creds}{settings.devnet.host}:{port}/"
            else:
                node_url = settings.node.endpoints()[0]
            node = NodeClient(node_url, timeout=settings.node.timeout, cookie_file=settings.node.cookie_file)
            pool = Pool(settings, node, metrics, writer)
            nursery.start_soon(writer.run)
            await nursery.start(pool.jobs.run)
            stratum_port = await nursery.start(pool.stratum.serve, settings.stratum.host, settings.stratum.port)
            if settings.metrics.enabled:
                metrics_port = metrics.serve(settings.metrics.host, settings.metrics.port)
            log.info("pool running: stratum+tcp://%s:%d, node %s", settings.stratum.host, stratum_port, node.name)
            task_status.started(RunningPool(pool, stratum_port, metrics_port, node_url, devnet))
    finally:
        metrics.close()
        engine.dispose()
