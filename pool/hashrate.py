"""Sliding-window hashrate and pool-side share accounting, as pure objects.

Nothing here reads a clock or touches Prometheus: every method takes ``now``
(seconds on any monotonic clock), so the estimators are testable exactly and
the pool decides how often to turn them into gauges.

Estimator (reference §6): over a fixed-*time* window of ``T`` seconds,
``H = Σ d_i · 2**32 / T`` for the accepted share difficulties ``d_i``.  Fixed
time, not fixed share count, because timing the last k shares overestimates by
``k/(k-1)``.  Two details keep it unbiased in practice:

* **Buckets.**  Each window is ``buckets`` equal time buckets, so memory per
  worker is bounded whatever the share rate.  The sum covers the buckets that
  overlap the window, and the denominator is the exact span those buckets
  cover (``(buckets - 1)`` whole buckets plus the elapsed part of the current
  one), not the nominal window, so bucketing adds no bias.
* **Edges** (reference §6 bias 3, miningcore's rule).  A worker first seen
  less than a window ago is measured from its first share, not over the whole
  window, or a rig that joined 10 s ago would read at 1/6 of its speed on the
  1-minute gauge.  The span is never shorter than ``min_span_fraction`` of the
  window, so one lucky first share cannot read as an enormous rate.

Difficulties are accumulated as ``float``: these are estimates with a
relative error of ``1/sqrt(k_eff)`` (several percent at best), so exact
``Fraction`` sums would buy nothing but CPU on the share path.  The exact
figures (payouts) come from the database, never from here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

HASHES_PER_DIFFICULTY = 2**32
"""Expected hashes per difficulty-1 share (all pool software uses 2**32)."""

OTHER = "_other"
"""Label value that workers (or miners) beyond the series cap are rolled up into."""


@dataclass(frozen=True)
class Window:
    """A named hashrate window, e.g. ``Window("5m", 300)``."""

    name: str
    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0 or math.isinf(self.seconds):
            raise ValueError(f"window {self.name!r}: seconds must be positive and finite")


DEFAULT_WINDOWS: tuple[Window, ...] = (Window("1m", 60.0), Window("5m", 300.0), Window("1h", 3600.0))
"""The windows the issue asks for; the Grafana dashboard uses these labels."""


class WindowedSum:
    """Sum of values added in the last ``window`` seconds, kept in time buckets.

    The total is kept running (added on ``add``, subtracted as buckets expire,
    reset to exactly 0 when none is left), so reading it costs only the
    expired buckets: the pool reads thousands of these every few seconds on
    the event loop.  Times must not go backwards by more than a bucket (values
    added "in the past" land in the newest bucket); the pool feeds it from a
    monotonic clock.
    """

    __slots__ = ("_data", "_total", "buckets", "width", "window")

    def __init__(self, window: float, buckets: int = 60) -> None:
        if not window > 0 or math.isinf(window):
            raise ValueError(f"window must be positive and finite, got {window!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"buckets must be a positive int, got {buckets!r}")
        self.window = float(window)
        self.buckets = buckets
        self.width = self.window / buckets
        self._data: deque[list[float]] = deque()  # [bucket index, sum], ascending index
        self._total = 0.0

    def _index(self, now: float) -> int:
        return math.floor(now / self.width)

    def _expire(self, now_index: int) -> None:
        oldest = now_index - self.buckets + 1
        while self._data and self._data[0][0] < oldest:
            self._total -= self._data.popleft()[1]
        if not self._data:
            self._total = 0.0

    def add(self, now: float, value: float) -> None:
        """Count ``value`` at time ``now``."""
        index = math.floor(now / self.width)
        data = self._data
        self._total += value
        if data:
            last = data[-1]
            if last[0] >= index:
                # Same bucket as the last add: nothing can have expired since the
                # bucket was opened (expiry depends only on the newest index).
                last[1] += value
                return
        data.append([index, value])
        self._expire(index)

    def total(self, now: float) -> float:
        """Sum over the buckets that overlap ``(now - span(now), now]``."""
        self._expire(self._index(now))
        return max(self._total, 0.0)

    def span(self, now: float) -> float:
        """Seconds that ``total(now)`` covers: whole older buckets plus the current one so far."""
        index = self._index(now)
        return now - (index - self.buckets + 1) * self.width

    def read(self, now: float) -> tuple[float, float]:
        """``(total(now), span(now))`` with one bucket-index computation (the hot read)."""
        index = math.floor(now / self.width)
        self._expire(index)
        return max(self._total, 0.0), now - (index - self.buckets + 1) * self.width

    def is_empty(self, now: float) -> bool:
        self._expire(self._index(now))
        return not self._data


@dataclass
class _WorkerState:
    first_seen: float
    sums: list[WindowedSum]


@dataclass(frozen=True)
class HashrateSnapshot:
    """Hashrates (H/s) per window name, with label cardinality already capped.

    ``workers[window][(miner, worker)]`` and ``miners[window][miner]`` use
    ``OTHER`` for rolled-up entries; ``active_workers`` / ``active_miners``
    count every worker/miner with a share in that window, capped or not.
    """

    workers: dict[str, dict[tuple[str, str], float]]
    miners: dict[str, dict[str, float]]
    pool: dict[str, float]
    active_workers: dict[str, int]
    active_miners: dict[str, int]


class HashrateTracker:
    """Per-worker accepted difficulty over several sliding windows.

    Miner and pool hashrates are sums of the per-worker estimates, so the
    dashboard's numbers add up.  A worker is forgotten once the longest window
    holds none of its shares.
    """

    def __init__(
        self,
        windows: Iterable[Window] = DEFAULT_WINDOWS,
        *,
        buckets: int = 60,
        min_span_fraction: float = 0.1,
    ) -> None:
        self.windows = tuple(windows)
        if not self.windows:
            raise ValueError("at least one window is needed")
        if len({w.name for w in self.windows}) != len(self.windows):
            raise ValueError("window names must be distinct")
        if not 0 < min_span_fraction <= 1:
            raise ValueError("min_span_fraction must be in (0, 1]")
        self.buckets = buckets
        self.min_span_fraction = min_span_fraction
        self._longest = max(range(len(self.windows)), key=lambda i: self.windows[i].seconds)
        self._workers: dict[tuple[str, str], _WorkerState] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def add(self, miner: str, worker: str, difficulty: float, now: float) -> None:
        """Count one accepted share of ``difficulty`` from ``miner.worker`` at ``now``."""
        if not difficulty >= 0 or math.isinf(difficulty):
            raise ValueError(f"difficulty must be non-negative and finite, got {difficulty!r}")
        key = (miner, worker)
        state = self._workers.get(key)
        if state is None:
            state = _WorkerState(now, [WindowedSum(w.seconds, self.buckets) for w in self.windows])
            self._workers[key] = state
        for windowed in state.sums:
            windowed.add(now, difficulty)

    def rates(self, state: _WorkerState, now: float) -> list[float]:
        """One worker's hashrate in each window (see the module docstring for the span)."""
        out = []
        since_first = now - state.first_seen
        for windowed in state.sums:
            total, covered = windowed.read(now)
            if total <= 0:
                out.append(0.0)
                continue
            span = min(covered, max(since_first, self.min_span_fraction * windowed.window))
            out.append(total * HASHES_PER_DIFFICULTY / span)
        return out

    def expire(self, now: float) -> None:
        """Forget workers with no share in the longest window (frees their series)."""
        gone = [k for k, s in self._workers.items() if s.sums[self._longest].is_empty(now)]
        for key in gone:
            del self._workers[key]

    def snapshot(self, now: float, *, max_workers: int, max_miners: int) -> HashrateSnapshot:
        """Every hashrate at ``now``, with at most ``max_workers`` named worker series.

        Workers are ranked by difficulty in the longest window (ties by name,
        so the choice is deterministic); the first ``max_workers`` keep their
        own series, the rest of each miner's workers become that miner's
        ``worker="_other"``.  Likewise miners beyond ``max_miners`` become
        ``miner="_other"`` (and so do their workers).  Totals are unchanged.
        """
        if max_workers < 0 or max_miners < 0:
            raise ValueError("series caps must be non-negative")
        self.expire(now)
        longest = self._longest
        weight = {key: s.sums[longest].total(now) for key, s in self._workers.items()}
        miner_weight: dict[str, float] = {}
        for (miner, _worker), value in weight.items():
            miner_weight[miner] = miner_weight.get(miner, 0.0) + value
        named_miners = {m for m, _ in sorted(miner_weight.items(), key=lambda kv: (-kv[1], kv[0]))[:max_miners]}
        ranked = sorted(weight, key=lambda key: (-weight[key], key))
        label: dict[tuple[str, str], tuple[str, str]] = {}
        named = 0
        for miner, worker in ranked:
            if miner not in named_miners:
                label[(miner, worker)] = (OTHER, OTHER)
            elif named < max_workers:
                label[(miner, worker)] = (miner, worker)
                named += 1
            else:
                label[(miner, worker)] = (miner, OTHER)

        names = [w.name for w in self.windows]
        per_worker: list[dict[tuple[str, str], float]] = [{} for _ in names]
        per_miner: list[dict[str, float]] = [{} for _ in names]
        active: list[set[str]] = [set() for _ in names]
        counts = [0] * len(names)
        for key, state in self._workers.items():
            out = label[key]
            for index, value in enumerate(self.rates(state, now)):
                workers_i, miners_i = per_worker[index], per_miner[index]
                workers_i[out] = workers_i.get(out, 0.0) + value
                miners_i[out[0]] = miners_i.get(out[0], 0.0) + value
                if value > 0:
                    counts[index] += 1
                    active[index].add(key[0])
        return HashrateSnapshot(
            workers=dict(zip(names, per_worker, strict=True)),
            miners=dict(zip(names, per_miner, strict=True)),
            pool={name: math.fsum(per_worker[i].values()) for i, name in enumerate(names)},
            active_workers=dict(zip(names, counts, strict=True)),
            active_miners={name: len(active[i]) for i, name in enumerate(names)},
        )


class MinerWindow:
    """Accepted difficulty per miner over one long window (the in-pool concentration view)."""

    def __init__(self, window: float, *, buckets: int = 144) -> None:
        self.window = float(window)
        self.buckets = buckets
        self._miners: dict[str, WindowedSum] = {}

    def add(self, miner: str, difficulty: float, now: float) -> None:
        windowed = self._miners.get(miner)
        if windowed is None:
            windowed = self._miners[miner] = WindowedSum(self.window, self.buckets)
        windowed.add(now, difficulty)

    def weights(self, now: float) -> dict[str, float]:
        """``miner -> accepted difficulty`` in the window; miners with none are dropped."""
        out: dict[str, float] = {}
        for miner in list(self._miners):
            total = self._miners[miner].total(now)
            if total > 0:
                out[miner] = total
            else:
                del self._miners[miner]
        return out


class RoundEffort:
    """Pool luck as *effort*: ``Σ d_i / D_i`` over accepted shares since the last block.

    ``d_i`` is the share difficulty and ``D_i`` the network difficulty of its
    job, so a difficulty change mid-round is handled (miningcore's
    ``Effort``).  1.0 is an average round; above 1 the pool is unlucky.  The
    effort of a round is ~Exp(1), and luck is conventionally ``1 / effort``.
    """

    def __init__(self) -> None:
        self.current = 0.0
        self.last: float | None = None
        self.rounds = 0

    def add(self, difficulty: float, network_difficulty: float, *, is_block: bool) -> None:
        """Count one accepted share; a block share closes the round it belongs to."""
        if network_difficulty <= 0:
            raise ValueError("network difficulty must be positive")
        self.current += difficulty / network_difficulty
        if is_block:
            self.last = self.current
            self.current = 0.0
            self.rounds += 1

