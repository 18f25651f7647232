"""The pool's side of hardening: node-fault policy, graceful stop on SIGTERM, metrics.

* ``WorkFreshness`` bounds how long miners work on a chain tip that no node
  confirms any more (node down, wedged, or answering errors). Until then
  nothing changes for miners: they keep the last valid work, which is what
  keeps a pool alive through a node restart. After ``max_work_age`` seconds
  (or as soon as a healthy node reports a block past our work's tip for a
  few seconds), ``StratumServer.work_outdated`` is set: shares are then
  judged as stale, so they are not credited as if fresh, while a block found
  among them is still submitted (the node decides). Miners are told with
  ``client.show_message``; ``stope_work_age_seconds`` and
  ``stope_work_outdated`` show it to the operator.
* ``graceful_stop`` is what SIGTERM does: stop accepting, ``client.reconnect``
  to every miner, answer every share already read, commit every accepted
  share to the database, then return (``run_pool`` exits). The write-ahead
  spool is the safety net: anything not committed in time is replayed at the
  next start.
* ``run_until_signalled`` runs the pool (or ``--workers``) under SIGTERM/SIGINT
  handling for the ``stope run`` command.
* ``StratumCollector`` exports the Stratum server's hardening counters.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stratum.server import StratumServer

from .bitcoin.serialize import internal_to_display

if TYPE_CHECKING:
    from .config import Settings
    from .jobs import JobManager
    from .node import NodePool
    from .service import Pool

log = logging.getLogger(__name__)

#: How long a healthy node may report a block past our work's tip before the work is outdated.
CONTRADICTION_GRACE = 5.0

OUTDATED_MESSAGE = "Pool cannot confirm the current block with its Bitcoin node: shares are not credited until it can"
RESTORED_MESSAGE = "Pool node connection restored: shares are credited again"


class WorkFreshness:
    """Watches whether the current work's chain tip is still confirmed by a node."""

    def __init__(
        self,
        jobs: JobManager,
        nodes: NodePool,
        server: StratumServer,
        *,
        max_age: float,
        notify_miners: bool = True,
        registry: CollectorRegistry | None = None,
        interval: float = 0.5,
    ) -> None:
        self.jobs = jobs
        self.nodes = nodes
        self.server = server
        self.max_age = max_age
        self.notify_miners = notify_miners
        self.interval = interval
        self.outdated = False
        self.age = 0.0
        self._job: object | None = None
        self._confirmed = 0.0
        self._contradicted_since: float | None = None
        r = registry or CollectorRegistry()
        self.age_gauge = Gauge(
            "stope_work_age_seconds", "Seconds since a node last confirmed the chain tip miners work on", registry=r
        )
        self.outdated_gauge = Gauge(
            "stope_work_outdated", "1 while no node confirms the tip of the current work (shares not credited)", registry=r
        )
        self.outdated_periods = Counter(
            "stope_work_outdated_periods", "Times the current work became outdated (node unreachable or behind)", registry=r
        )

    def update(self, now: float) -> bool:
        """Re-evaluate at trio time ``now``; returns whether the work is outdated."""
        job = self.jobs.current
        if job is None:
            return self.outdated
        if job is not self._job:  # a template was just fetched: its tip is confirmed
            self._job = job
            self._confirmed = now
            self._contradicted_since = None
        tip = internal_to_display(job.prevhash)
        contradicted = False
        for node in self.nodes.nodes:
            state = node.state
            if not state.healthy:
                continue
            if state.best_hash == tip:
                self._confirmed = max(self._confirmed, state.checked_at)
            elif state.height >= job.height:
                contradicted = True  # the node has a block on top of (or instead of) our tip
        if contradicted:
            if self._contradicted_since is None:
                self._contradicted_since = now
        else:
            self._contradicted_since = None
        self.age = max(0.0, now - self._confirmed)
        outdated = self.max_age > 0 and (
            self.age > self.max_age
            or (
                self._contradicted_since is not None
                and now - self._contradicted_since > min(CONTRADICTION_GRACE, self.max_age)
            )
        )
        self.age_gauge.set(self.age)
        self.outdated_gauge.set(1 if outdated else 0)
        if outdated != self.outdated:
            self._transition(outdated)
        return outdated

    def _transition(self, outdated: bool) -> None:
        self.outdated = outdated
        self.server.work_outdated = outdated
        if outdated:
            self.outdated_periods.inc()
            log.error(
                "work outdated: no node has confirmed tip of job %s for %.1fs; shares are judged as stale",
                getattr(self._job, "job_id", "?"),
                self.age,
            )
        else:
            log.warning("work confirmed again by a node; shares are credited again")
        if self.notify_miners:
            self.server.show_message(OUTDATED_MESSAGE if outdated else RESTORED_MESSAGE)

    async def run(self) -> None:
        while True:
            self.update(trio.current_time())
            await trio.sleep(self.interval)


class StratumCollector(Collector):
    """``stope_stratum_events_total{event}`` and ``stope_stratum_bans_active`` from the server."""

    def __init__(self, server: StratumServer) -> None:
        self.server = server

    def collect(self) -> Iterable[Metric]:
        events = CounterMetricFamily(
            "stope_stratum_events",
            "Hardening events: refused connections, timeouts, drops, throttling, bans",
            labels=["event"],
        )
        for name, count in sorted(self.server.stats.items()):
            events.add_metric([name], count)
        yield events
        yield GaugeMetricFamily("stope_stratum_bans_active", "Addresses banned right now", value=len(self.server.abuse.bans))

    def describe(self) -> Iterable[Metric]:
        return []


async def graceful_stop(pool: Pool, settings: Settings) -> None:
    """SIGTERM: stop accepting, client.reconnect, answer shares in flight, commit accepted shares."""
    shutdown = settings.stratum.shutdown
    await pool.stratum.shutdown(grace=shutdown.grace, timeout=shutdown.timeout)
    with trio.move_on_after(shutdown.timeout) as waited:
        await pool.writer.drained()
    if waited.cancelled_caught:
        log.warning("database flush not finished in %.0fs: the spool keeps those shares for the next start", shutdown.timeout)
    else:
        log.info("every accepted share is committed; stopping")


async def run_until_signalled(run: Callable[..., Awaitable[None]], *args: object) -> None:
    """``run(*args, stop=..., task_status=...)`` (``run_pool``, ``run_workers``) under
    SIGTERM/SIGINT: the first signal stops it gracefully, a second one at once."""
    stop = trio.Event()
    started = False
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if stop.is_set() or not started:
                        log.warning("%s: stopping now", name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s: stopping gracefully (again to stop at once)", name)
                    stop.set()

            async def run_then_stop(task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
                await run(*args, stop=stop, task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await nursery.start(run_then_stop)
            started = True
