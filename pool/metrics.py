"""Prometheus metrics for pool admins (prometheus-client, own registry per pool).

One ``PoolMetrics`` per ``Pool``: tests run several pools in one process, and
the default global registry would mix them.  Three kinds of figures live here:

* **Events counted where they happen** (shares, rejects, blocks, latencies):
  plain counters and histograms, touched on the hot path only with O(1) work.
* **Sliding-window figures** (per-worker/per-miner hashrate, in-pool
  concentration, round effort): the share path only feeds the pure
  accumulators of ``pool.hashrate``; ``run_sampler`` turns them into gauges
  every ``[metrics] update_interval`` seconds, never per share.  Series whose
  label sets come and go (workers, pools) are exported by snapshot collectors,
  so a worker that left has no stale series.
* **Polled figures** (node height/headers, DB queue, spool, payouts): read by
  the sampler from small provider callables (``SamplerSources``), so this
  module does not depend on storage or a payout ledger.

What ``stope_work_propagation_seconds`` measures, exactly: from the moment the
pool learned of a new tip to the moment ``StratumServer.broadcast`` returned
for the first job on it, i.e. the ``mining.notify`` bytes were queued on every
working connection.  "Learned" is the first ``NodePool.note_tip`` naming the
hash (a node health check, one triggered by ZMQ ``hashblock``, or a long-poll
template built on it; the pool wires ``tip_seen`` as a tip listener), or, for a
tip first seen in a fetched template (the very first job), the start of that
``getblocktemplate`` call.  It includes the template fetch and job build; it
excludes the per-connection socket writes that follow (asynchronous per miner).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIServer

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stratum import errors as stratum_errors
from stratum.server import ClientSession

from .bitcoin.serialize import internal_to_display
from .concentration import ConcentrationReport, concentration_report
from .config import ConcentrationSection, MetricsSection
from .hashrate import (
    DEFAULT_WINDOWS,
    OTHER,
    HashrateSnapshot,
    HashrateTracker,
    MinerWindow,
    RoundEffort,
)
from .node import NodeClient, NodeError, NodeUnavailable

if TYPE_CHECKING:
    from .jobs import Job
    from .storage.writer import WriterStats

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; node RPCs and work propagation span milliseconds (local node) to seconds (slow node)."""

SHARE_VALIDATION_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0)

VIEWS = ("pool", "network")
"""The two concentration views: miners inside the pool, pools across the network."""

TOP_K = (1, 2, 4, 5)


def known_reject_reasons() -> list[str]:
    """Every reject reason Stratum defines as a constant, to pre-create their series.

    Prometheus' advice: initialise the label values you know, so a counter
    that has not fired yet reads 0 instead of "no data" (and rate() works
    the first time it does fire).
    """
    return sorted(
        {value.reason for value in vars(stratum_errors).values() if isinstance(value, stratum_errors.StratumError)}
    )


@dataclass(frozen=True)
class PayoutFigures:
    """What a payout ledger reports to the metrics (satoshis)."""

    pps_liability_sats: int
    """Credited to miners by PPS/FPPS and not yet covered by found blocks."""
    unpaid_balances_sats: int
    """Sum of every miner's balance not yet paid out."""
    immature_balances_sats: int | None = None
    """Part of the unpaid balances from blocks still awaiting maturity."""
    pps_reserve_required_sats: int | None = None
    """Reserve a PPS/FPPS operator needs for the configured ruin probability."""


@dataclass(frozen=True)
class SamplerSources:
    """Providers the sampler polls each tick; None means "not wired" (gauge stays 0).

    Kept as callables so metrics need not import storage or payouts, and so
    whoever owns a figure decides how it is computed.
    """

    subscriptions: Callable[[], int] | None = None
    db_queue_depth: Callable[[], int] | None = None
    spool_bytes: Callable[[], int] | None = None
    payouts: Callable[[], Awaitable[PayoutFigures]] | None = None
    writer: Callable[[], WriterStats] | None = None
    """The share writer's health (``ShareWriter.stats``): the stope_db_* and
    stope_spool_* figures below. Duck-typed: anything with WriterStats' fields."""


# The share writer's state, exported as gauges from each sample:
# (metric name, WriterStats field, help text); booleans as 0/1.
WRITER_GAUGES = (
    ("stope_db_up", "db_up",
     "1 while the share writer's database commits succeed; 0 from a failed commit until one succeeds "
     "(accepted shares keep going into the spool meanwhile)"),
    ("stope_spool_full", "spool_full", "1 while the share spool is at spool_max_bytes and new shares are refused"),
    ("stope_spool_segments", "spool_segments",
     "Spool segment files on disk (each is deleted once all its records are committed)"),
)
# The share writer's running totals, exported as counters from each sample:
# (metric name without _total, WriterStats field, help text).
WRITER_TOTALS = (
    ("stope_db_rows_written", "rows_written", "Share rows the writer inserted (a share already stored is not counted)"),
    ("stope_db_rows_duplicate", "rows_duplicate",
     "Share rows skipped as already stored: spool replays after a crash or an outage, retried batches"),
    ("stope_db_outages", "outages", "Times the database became unavailable to the share writer"),
    ("stope_db_quarantined_records", "quarantined",
     "Records the database refused (kept in the spool's quarantine.spool for `stope db replay`)"),
    ("stope_spool_fsyncs", "fsyncs", "Group fsyncs of the share spool (many shares each)"),
    ("stope_spool_refused_shares", "spool_refused", "Shares refused because the spool was full (spool_max_bytes)"),
)


class RPC(Protocol):
    """The one method of ``NodeClient`` / ``NodePool`` that the pollers need."""

    async def call(self, method: str, *params: Any) -> Any: ...


class _SnapshotCollector(Collector):
    """Exports a list of metric families replaced wholesale on each update.

    The HTTP server scrapes from its own thread; swapping one list reference
    is atomic, so a scrape sees either the old or the new snapshot, never half.
    """

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> list[Metric]:  # type: ignore[override]
        return list(self.families)


class PropagationClock:
    """When the pool learned of each tip, until work on it was broadcast."""

    def __init__(self, max_pending: int = 16) -> None:
        self._learned: OrderedDict[str, float] = OrderedDict()
        self._current: str | None = None
        self._max_pending = max_pending

    def _learn(self, block_hash: str, at: float) -> None:
        if block_hash == self._current or block_hash in self._learned:
            return
        self._learned[block_hash] = at
        while len(self._learned) > self._max_pending:
            self._learned.popitem(last=False)

    def tip_seen(self, block_hash: str, now: float) -> None:
        """``getbestblockhash`` answered ``block_hash`` at ``now``."""
        self._learn(block_hash, now)

    def template_fetched(self, prevhash: str, started: float) -> None:
        """A template on ``prevhash`` arrived for a request started at ``started``."""
        self._learn(prevhash, started)

    def broadcast(self, prevhash: str, now: float) -> float | None:
        """Work on ``prevhash`` was broadcast at ``now``; the delay if this is a new tip."""
        if prevhash == self._current:
            return None
        self._current = prevhash
        learned = self._learned.pop(prevhash, None)
        return None if learned is None else max(0.0, now - learned)


#: At most this long (seconds) between feeds of the hashrate windows from the
#: share path (``PoolMetrics.shares_accepted_together``).
HASHRATE_FEED_INTERVAL = 1.0


class PoolMetrics:
    """Every metric of one pool, with the accumulators behind the sliding-window gauges."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        settings: MetricsSection | None = None,
        concentration: ConcentrationSection | None = None,
    ) -> None:
        self.settings = settings or MetricsSection()
        self.concentration_settings = concentration or ConcentrationSection()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # --- connections and shares -------------------------------------------------
        self.connections = Gauge("stope_connections", "Open Stratum connections", registry=r)
        self.subscriptions = Gauge("stope_subscriptions", "Connections that sent mining.subscribe", registry=r)
        self.workers_authorized = Gauge(
            "stope_workers_authorized", "Connections that are subscribed, authorized and receiving work", registry=r
        )
        self.shares_accepted = Counter("stope_shares_accepted", "Accepted shares", registry=r)
        self.shares_rejected = Counter("stope_shares_rejected", "Rejected shares by reason", ["reason"], registry=r)
        for reason in known_reject_reasons():
            self.shares_rejected.labels(reason)
        self.accepted_difficulty = Counter(
            "stope_accepted_difficulty", "Sum of accepted share difficulty (rate() * 2^32 = hashrate)", registry=r
        )
        self.best_share_difficulty = Gauge(
            "stope_best_share_difficulty", "Highest share difficulty achieved since start", registry=r
        )
        # --- blocks and the network ---------------------------------------------------
        self.blocks_found = Counter("stope_blocks_found", "Shares that met the network target", registry=r)
        self.blocks_submitted = Counter(
            "stope_blocks_submitted", "Blocks submitted to a node by result", ["result"], registry=r
        )
        self.block_submit_retries = Counter(
            "stope_block_submit_retries", "Found blocks sent again because no node answered", registry=r
        )
        self.blocks_submitted.labels("accepted")
        self.blocks_confirmed = Counter(
            "stope_blocks_confirmed", "Found blocks that reached maturity on the best chain", registry=r
        )
        self.blocks_orphaned = Counter("stope_blocks_orphaned", "Found blocks that left the best chain", registry=r)
        self.network_difficulty = Gauge("stope_network_difficulty", "Current network difficulty", registry=r)
        self.block_height = Gauge("stope_block_height", "Height of the block being mined", registry=r)
        self.node_up = Gauge("stope_node_up", "1 if the last getblockchaininfo answered", registry=r)
        self.node_blocks = Gauge("stope_node_blocks", "Node's validated chain height (getblockchaininfo blocks)", registry=r)
        self.node_headers = Gauge("stope_node_headers", "Node's best known header height", registry=r)
        self.node_initial_block_download = Gauge(
            "stope_node_initial_block_download", "1 while the node is in initial block download", registry=r
        )
        # --- latencies ------------------------------------------------------------------
        self.share_validation_seconds = Histogram(
            "stope_share_validation_seconds", "Time to judge a batch of shares (every share in it waited this long)", buckets=SHARE_VALIDATION_BUCKETS, registry=r
        )
        self.template_fetch_seconds = Histogram(
            "stope_template_fetch_seconds", "getblocktemplate latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.work_propagation_seconds = Histogram(
            "stope_work_propagation_seconds",
            "New tip learned to mining.notify queued for every working connection",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.block_submit_seconds = Histogram(
            "stope_block_submit_seconds", "submitblock latency", buckets=LATENCY_BUCKETS, registry=r
        )
        # --- storage ----------------------------------------------------------------------
        self.db_queue_depth = Gauge("stope_db_queue_depth", "Share records waiting for the database", registry=r)
        self.spool_bytes = Gauge(
            "stope_spool_bytes", "Bytes of share records spooled to disk while the database is unavailable", registry=r
        )
        # The share writer's health (WRITER_GAUGES, WRITER_TOTALS) from
        # SamplerSources.writer: absent until a writer is wired and sampled, so a
        # process without one never reads as "database down".
        self._writer_export = _SnapshotCollector()
        r.register(self._writer_export)
        # --- payouts and luck ------------------------------------------------------------
        self.pps_liability = Gauge(
            "stope_pps_liability_sats", "PPS credits not yet covered by found blocks (0 until a ledger is wired)", registry=r
        )
        self.unpaid_balances = Gauge(
            "stope_unpaid_balances_sats", "Miners' balances not yet paid (0 until a ledger is wired)", registry=r
        )
        self.payout_ledger_up = Gauge(
            "stope_payout_ledger_up", "1 if a payout ledger reported on the last update", registry=r
        )
        self.immature_balances = Gauge(
            "stope_immature_balances_sats", "Miners' balances from blocks awaiting maturity (part of the unpaid balances)",
            registry=r,
        )
        self.pps_reserve_required = Gauge(
            "stope_pps_reserve_required_sats",
            "Reserve a PPS/FPPS operator needs for the configured ruin probability (0 under other schemes)",
            registry=r,
        )
        self.round_effort = Gauge(
            "stope_round_effort",
            "Pool luck as effort: accepted difficulty since the last found block over network difficulty (1 = average)",
            registry=r,
        )
        self.last_round_effort = Gauge(
            "stope_last_round_effort", "Effort of the last completed round (its luck is 1/effort)", registry=r
        )
        # --- concentration alarms ----------------------------------------------------------
        self.concentration_warnings = Counter(
            "stope_concentration_warnings",
            "Times the largest entity's share crossed above the configured threshold",
            ["view"],
            registry=r,
        )
        for view in VIEWS:
            self.concentration_warnings.labels(view)
        # --- sliding-window and snapshot figures ---------------------------------------------
        self.hashrate = HashrateTracker(DEFAULT_WINDOWS)
        self.pool_window = MinerWindow(self.concentration_settings.pool_window)
        # Difficulty per (address, worker) not yet fed to the windows, and since when.
        self._pending_hashrate: dict[tuple[str, str], float] = {}
        self._pending_since: float | None = None
        self.effort = RoundEffort()
        self.propagation = PropagationClock()
        self._hashrate_export = _SnapshotCollector()
        self._concentration_export = _SnapshotCollector()
        self._network_export = _SnapshotCollector()
        for collector in (self._hashrate_export, self._concentration_export, self._network_export):
            r.register(collector)
        self._reports: dict[str, ConcentrationReport] = {}
        self._above: dict[str, bool] = {view: False for view in VIEWS}
        self._tip_listeners: list[Callable[[], None]] = []
        self._server: WSGIServer | None = None
        self.update(time.monotonic())

    # --- events from the pool --------------------------------------------------------
    def share_accepted(
        self,
        address: str,
        worker: str,
        difficulty: Fraction,
        network_difficulty: Fraction,
        *,
        is_block: bool,
        now: float | None = None,
    ) -> None:
        """Feed one accepted share to the sliding windows and the round effort (O(1))."""
        at = time.monotonic() if now is None else now
        d = float(difficulty)
        self.hashrate.add(address, worker, d, at)
        self.pool_window.add(address, d, at)
        self.effort.add(d, float(network_difficulty), is_block=is_block)

    def shares_accepted_together(self, shares: Iterable[tuple[str, str, float, float]], now: float | None = None) -> None:
        """Accepted shares judged together (one batch, no block among them):
        ``(address, worker, difficulty, network_difficulty)`` each.

        The same as ``share_accepted`` for each, with the windows fed once per
        worker per ``HASHRATE_FEED_INTERVAL`` rather than per share: the sums
        wait in a dict (``flush_hashrate``, which every reading of the windows
        calls first) and go in at the time of the first of them. A share is
        counted at most that much early, in windows whose buckets are a second
        or more wide; feeding them per batch was about 9 % of the event loop's work
        at one share in flight per miner (every batch holds a share of most workers).
        """
        at = time.monotonic() if now is None else now
        pending = self._pending_hashrate
        effort = 0.0
        for address, worker, d, n in shares:
            key = (address, worker)
            pending[key] = pending.get(key, 0.0) + d
            effort += d / n
        if self._pending_since is None:
            self._pending_since = at
        elif at - self._pending_since >= HASHRATE_FEED_INTERVAL:
            self.flush_hashrate()
        self.effort.add(effort, 1.0, is_block=False)

    def flush_hashrate(self) -> None:
        """Feed the sliding windows what ``shares_accepted_together`` has held back."""
        at = self._pending_since
        if at is None:
            return
        hashrate, pool_window = self.hashrate, self.pool_window
        for (address, worker), d in self._pending_hashrate.items():
            hashrate.add(address, worker, d, at)
            pool_window.add(address, d, at)
        self._pending_hashrate.clear()
        self._pending_since = None

    def job_broadcast(self, job: Job, now: float | None = None) -> None:
        """A job was broadcast: observe propagation for a new tip and tell the tip listeners."""
        at = time.monotonic() if now is None else now
        delay = self.propagation.broadcast(internal_to_display(job.prevhash), at)
        if delay is None:
            return
        self.work_propagation_seconds.observe(delay)
        for listener in self._tip_listeners:
            listener()

    def on_new_tip(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (synchronously, keep it cheap) whenever work on a new tip goes out."""
        self._tip_listeners.append(listener)

    def block_confirmed(self) -> None:
        """Hook for the block tracker: a found block matured on the best chain."""
        self.blocks_confirmed.inc()

    def block_orphaned(self) -> None:
        """Hook for the block tracker: a found block left the best chain."""
        self.blocks_orphaned.inc()

    # --- periodic update -------------------------------------------------------------
    def update(self, now: float) -> None:
        """Recompute the sliding-window gauges (hashrate, pool concentration, effort)."""
        self.flush_hashrate()
        snapshot = self.hashrate.snapshot(
            now, max_workers=self.settings.max_worker_series, max_miners=self.settings.max_miner_series
        )
        self._hashrate_export.families = _hashrate_families(snapshot)
        self.round_effort.set(self.effort.current)
        if self.effort.last is not None:
            self.last_round_effort.set(self.effort.last)
        report = concentration_report(
            self.pool_window.weights(now), guideline=self.concentration_settings.guideline
        )
        self.publish_concentration("pool", report)

    def publish_concentration(self, view: str, report: ConcentrationReport) -> None:
        """Export one view's figures and warn when its largest entity crosses the threshold."""
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
        self._reports[view] = report
        threshold = self.threshold(view)
        above = not report.is_empty and float(report.top1) > threshold
        if above and not self._above[view]:
            leader, weight = report.ranking[0]
            self.concentration_warnings.labels(view).inc()
            log.warning(
                "%s concentration: %s has %.1f%% of the %s (threshold %.1f%%; HHI %.0f, Nakamoto %d)",
                view,
                leader,
                100 * float(weight / report.total),
                "pool's accepted difficulty in the window" if view == "pool" else "network window's blocks",
                100 * threshold,
                float(report.hhi),
                report.nakamoto,
            )
        elif not above and self._above[view]:
            log.info("%s concentration back below %.1f%%", view, 100 * threshold)
        self._above[view] = above
        self._concentration_export.families = self._concentration_families()

    def threshold(self, view: str) -> float:
        c = self.concentration_settings
        return c.pool_max_share if view == "pool" else c.network_max_share

    def report(self, view: str) -> ConcentrationReport | None:
        """The last published report of a view (None before the first)."""
        return self._reports.get(view)

    def publish_network(self, blocks_by_pool: dict[str, int], *, window_blocks: int, tip_height: int | None) -> None:
        """Export blocks per pool in the network window (unknown blocks summed as pool="unknown")."""
        blocks = GaugeMetricFamily("stope_network_pool_blocks", "Blocks per pool in the network window", labels=["pool"])
        share = GaugeMetricFamily(
            "stope_network_pool_share", "Pool's share of the blocks in the network window (0-1)", labels=["pool"]
        )
        for name, count in sorted(blocks_by_pool.items()):
            blocks.add_metric([name], count)
            share.add_metric([name], count / window_blocks if window_blocks else 0.0)
        families: list[Metric] = [
            blocks,
            share,
            GaugeMetricFamily("stope_network_window_blocks", "Blocks held in the network window", value=window_blocks),
        ]
        if tip_height is not None:
            families.append(
                GaugeMetricFamily("stope_network_window_tip_height", "Highest block in the network window", value=tip_height)
            )
        self._network_export.families = families

    def _concentration_families(self) -> list[Metric]:
        def family(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["view", *extra])

        hhi = family("stope_concentration_hhi", "Herfindahl-Hirschman index, 0-10000")
        nakamoto = family("stope_concentration_nakamoto", "Fewest entities with strictly more than 50 %")
        gini = family("stope_concentration_gini", "Gini coefficient of the entities' weights")
        entropy = family("stope_concentration_entropy_bits", "Shannon entropy of the shares, bits")
        effective = family(
            "stope_concentration_effective_entities", "Hill numbers: 2^H (method=entropy), 10000/HHI (method=hhi)", ["method"]
        )
        top = family("stope_concentration_top_share", "Combined share of the k largest entities (0-1)", ["k"])
        entities = family("stope_concentration_entities", "Entities with a positive weight in the window")
        total = family(
            "stope_concentration_window_total", "Weight in the window: accepted difficulty (pool) or blocks (network)"
        )
        threshold = family("stope_concentration_threshold", "Configured maximum share of the largest entity (0-1)")
        above = family("stope_concentration_above_threshold", "1 while the largest entity exceeds the threshold")
        for view, report in sorted(self._reports.items()):
            hhi.add_metric([view], float(report.hhi))
            nakamoto.add_metric([view], report.nakamoto)
            gini.add_metric([view], float(report.gini))
            entropy.add_metric([view], report.entropy_bits)
            effective.add_metric([view, "entropy"], report.effective_entities_entropy)
            effective.add_metric([view, "hhi"], float(report.effective_entities_hhi))
            for k in TOP_K:
                top.add_metric([view, str(k)], float(getattr(report, f"top{k}")))
            entities.add_metric([view], report.active_entities)
            total.add_metric([view], float(report.total))
            threshold.add_metric([view], self.threshold(view))
            above.add_metric([view], 1.0 if self._above[view] else 0.0)
        return [hhi, nakamoto, gini, entropy, effective, top, entities, total, threshold, above]

    async def sample(self, sources: SamplerSources) -> None:
        """One sampler tick: poll the providers, then recompute the window gauges."""
        if sources.subscriptions is not None:
            self.subscriptions.set(sources.subscriptions())
        if sources.db_queue_depth is not None:
            self.db_queue_depth.set(sources.db_queue_depth())
        if sources.spool_bytes is not None:
            self.spool_bytes.set(sources.spool_bytes())
        if sources.writer is not None:
            stats = sources.writer()
            self.sample_writer(stats)
            if sources.db_queue_depth is None:
                self.db_queue_depth.set(stats.pending)
            if sources.spool_bytes is None:
                self.spool_bytes.set(stats.spool_bytes)
        if sources.payouts is not None:
            try:
                figures = await sources.payouts()
            except Exception as exc:  # noqa: BLE001 - a ledger failure must not stop the metrics
                log.warning("payout figures unavailable: %s", exc)
                self.payout_ledger_up.set(0)
            else:
                self.pps_liability.set(figures.pps_liability_sats)
                self.unpaid_balances.set(figures.unpaid_balances_sats)
                if figures.immature_balances_sats is not None:
                    self.immature_balances.set(figures.immature_balances_sats)
                if figures.pps_reserve_required_sats is not None:
                    self.pps_reserve_required.set(figures.pps_reserve_required_sats)
                self.payout_ledger_up.set(1)
        self.update(time.monotonic())

    def sample_writer(self, stats: WriterStats) -> None:
        """Set the stope_db_* / stope_spool_* figures from one writer snapshot."""
        families: list[Metric] = []
        for name, field, documentation in WRITER_GAUGES:
            families.append(GaugeMetricFamily(name, documentation, value=float(getattr(stats, field))))
        for name, field, documentation in WRITER_TOTALS:
            families.append(CounterMetricFamily(name, documentation, value=float(getattr(stats, field))))
        self._writer_export.families = families

    async def run_sampler(
        self, sources: SamplerSources, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Update the polled and sliding-window gauges every ``update_interval`` seconds."""
        await self.sample(sources)
        task_status.started()
        while True:
            await trio.sleep(self.settings.update_interval)
            await self.sample(sources)

    async def run_node_status(self, node: RPC) -> None:
        """Poll ``getblockchaininfo`` for the node-behind figures (NodeBehind alert)."""
        while True:
            try:
                info: dict[str, Any] = await node.call("getblockchaininfo")
            except (NodeError, NodeUnavailable) as exc:
                log.debug("getblockchaininfo failed: %s", exc)
                self.node_up.set(0)
            else:
                self.node_up.set(1)
                self.node_blocks.set(int(info.get("blocks", 0)))
                self.node_headers.set(int(info.get("headers", info.get("blocks", 0))))
                self.node_initial_block_download.set(1 if info.get("initialblockdownload") else 0)
            await trio.sleep(self.settings.node_status_interval)

    # --- HTTP endpoint -----------------------------------------------------------------
    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        actual = server.server_port
        log.info("metrics on http://%s:%d/metrics", host, actual)
        return actual

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _hashrate_families(snapshot: HashrateSnapshot) -> list[Metric]:
    worker = GaugeMetricFamily(
        "stope_worker_hashrate",
        f"Worker hashrate from accepted difficulty, H/s (beyond the series cap: worker={OTHER!r})",
        labels=["miner", "worker", "window"],
    )
    miner = GaugeMetricFamily(
        "stope_miner_hashrate", "Miner (payout address) hashrate from accepted difficulty, H/s", labels=["miner", "window"]
    )
    pool = GaugeMetricFamily("stope_pool_hashrate", "Pool hashrate from accepted difficulty, H/s", labels=["window"])
    workers = GaugeMetricFamily("stope_active_workers", "Workers with an accepted share in the window", labels=["window"])
    miners = GaugeMetricFamily("stope_active_miners", "Miners with an accepted share in the window", labels=["window"])
    rolled = GaugeMetricFamily(
        "stope_workers_rolled_up", "Workers without their own hashrate series (label cardinality cap)"
    )
    named = set()
    everyone = 0
    for window, rates in snapshot.workers.items():
        for (miner_label, worker_label), value in sorted(rates.items()):
            worker.add_metric([miner_label, worker_label, window], value)
            if OTHER not in (miner_label, worker_label):
                named.add((miner_label, worker_label))
        for miner_label, value in sorted(snapshot.miners[window].items()):
            miner.add_metric([miner_label, window], value)
        pool.add_metric([window], snapshot.pool[window])
        workers.add_metric([window], snapshot.active_workers[window])
        miners.add_metric([window], snapshot.active_miners[window])
        everyone = max(everyone, snapshot.active_workers[window])
    rolled.add_metric([], max(0, everyone - len(named)))
    return [worker, miner, pool, workers, miners, rolled]


class InstrumentedNodeClient(NodeClient):
    """A ``NodeClient`` that times the RPCs the dashboards show.

    Subclassing (rather than timing inside the job manager and the block
    submitter) keeps every measurement in this module; the pool builds its
    node clients with this class (``NodePool.from_settings(client=...)``).
    Long-poll template requests are deliberately not timed: they wait for
    the node by design, so their duration is not a fetch latency.
    """

    def __init__(
        self, url: str, *, metrics: PoolMetrics, timeout: float = 10.0, cookie_file: Path | None = None
    ) -> None:
        super().__init__(url, timeout=timeout, cookie_file=cookie_file)
        self.metrics = metrics

    async def getblocktemplate(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            template = await super().getblocktemplate()
        finally:
            self.metrics.template_fetch_seconds.observe(time.monotonic() - started)
        prevhash = template.get("previousblockhash") if isinstance(template, dict) else None
        if isinstance(prevhash, str):
            self.metrics.propagation.template_fetched(prevhash, started)
        return template

    async def submitblock(self, block_hex: str) -> str | None:
        started = time.monotonic()
        try:
            return await super().submitblock(block_hex)
        finally:
            self.metrics.block_submit_seconds.observe(time.monotonic() - started)


def count_subscribed(sessions: Iterable[ClientSession]) -> int:
    """Connections that have sent ``mining.subscribe`` (from the Stratum server's sessions)."""
    return sum(1 for session in list(sessions) if session.proto.subscribed)
