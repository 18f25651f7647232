"""Sliding-window hashrate, per-miner windows and round effort (pool/hashrate.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pool.hashrate import (
    DEFAULT_WINDOWS,
    HASHES_PER_DIFFICULTY,
    OTHER,
    HashrateTracker,
    MinerWindow,
    RoundEffort,
    Window,
    WindowedSum,
)
from pool.metrics import PoolMetrics

H = HASHES_PER_DIFFICULTY


def test_windowed_sum_expires_whole_buckets() -> None:
    w = WindowedSum(60, buckets=60)
    w.add(0.5, 1.0)
    w.add(30.2, 2.0)
    assert w.total(59.9) == 3.0
    assert w.total(60.0) == 2.0  # bucket [0, 1) left the window
    assert w.total(89.9) == 2.0  # bucket [30, 31) still overlaps (29.9, 89.9]
    assert w.total(90.0) == 0.0
    assert w.is_empty(90.0)


def test_windowed_sum_span_is_what_the_buckets_cover() -> None:
    w = WindowedSum(60, buckets=6)  # 10-second buckets
    # at t=125 the buckets 7..12 overlap the window: from t=70 to now, 55 s
    assert w.span(125.0) == pytest.approx(55.0)
    assert w.span(120.0) == pytest.approx(50.0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=500), st.floats(min_value=0, max_value=1e6)),
        max_size=60,
    ),
    st.floats(min_value=0, max_value=600),
)
def test_windowed_sum_matches_a_naive_bucket_sum(events: list[tuple[float, float]], probe: float) -> None:
    events = sorted(events)
    w = WindowedSum(100, buckets=10)
    for t, v in events:
        w.add(t, v)
    now = max([probe, *(t for t, _ in events)])
    oldest = math.floor(now / 10) - 9
    expected = math.fsum(v for t, v in events if math.floor(t / 10) >= oldest)
    assert w.total(now) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_invalid_windows() -> None:
    with pytest.raises(ValueError):
        WindowedSum(0)
    with pytest.raises(ValueError):
        WindowedSum(10, buckets=0)
    with pytest.raises(ValueError):
        Window("bad", -1)
    with pytest.raises(ValueError):
        HashrateTracker([Window("a", 1), Window("a", 2)])


def test_steady_worker_reads_its_true_rate_in_every_window() -> None:
    tracker = HashrateTracker()
    # one share of difficulty 2 every second for two hours: 2 * 2^32 H/s
    for t in range(7200):
        tracker.add("bc1qminer", "rig1", 2.0, float(t))
    snap = tracker.snapshot(7199.5, max_workers=10, max_miners=10)
    for window in DEFAULT_WINDOWS:
        rate = snap.workers[window.name][("bc1qminer", "rig1")]
        assert rate == pytest.approx(2 * H, rel=0.02), window
        assert snap.miners[window.name]["bc1qminer"] == rate
        assert snap.pool[window.name] == rate
        assert snap.active_workers[window.name] == 1
        assert snap.active_miners[window.name] == 1


def test_new_worker_is_measured_from_its_first_share() -> None:
    tracker = HashrateTracker()
    for t in range(3000, 3600):  # joined 10 minutes ago, 1 diff/s
        tracker.add("m", "w", 1.0, float(t))
    snap = tracker.snapshot(3600.0, max_workers=10, max_miners=10)
    # The 1-hour window must not read 1/6 of the rate because the rig is new.
    assert snap.workers["1h"][("m", "w")] == pytest.approx(H, rel=0.01)


def test_single_fresh_share_is_bounded_by_the_minimum_span() -> None:
    tracker = HashrateTracker(min_span_fraction=0.1)
    tracker.add("m", "w", 1.0, 100.0)
    snap = tracker.snapshot(100.0, max_workers=10, max_miners=10)
    assert snap.workers["1m"][("m", "w")] == pytest.approx(H / 6.0)
    assert snap.workers["1h"][("m", "w")] == pytest.approx(H / 360.0)


def test_stopped_worker_reads_zero_then_disappears() -> None:
    tracker = HashrateTracker()
    for t in range(600):
        tracker.add("m", "w", 1.0, float(t))
    later = tracker.snapshot(1000.0, max_workers=10, max_miners=10)
    assert later.workers["1m"][("m", "w")] == 0.0
    assert later.workers["5m"][("m", "w")] == 0.0
    assert later.workers["1h"][("m", "w")] > 0
    assert later.active_workers == {"1m": 0, "5m": 0, "1h": 1}
    gone = tracker.snapshot(600.0 + 3700.0, max_workers=10, max_miners=10)
    assert gone.workers["1h"] == {} and len(tracker) == 0


def test_worker_cap_rolls_up_per_miner_and_keeps_totals() -> None:
    tracker = HashrateTracker()
    for t in range(120):
        now = float(t)
        tracker.add("A", "big", 4.0, now)
        tracker.add("A", "small1", 1.0, now)
        tracker.add("A", "small2", 1.0, now)
        tracker.add("B", "mid", 2.0, now)
        tracker.add("B", "tiny", 0.5, now)
    full = tracker.snapshot(120.0, max_workers=100, max_miners=100)
    capped = tracker.snapshot(120.0, max_workers=2, max_miners=100)
    assert set(capped.workers["5m"]) == {("A", "big"), ("B", "mid"), ("A", OTHER), ("B", OTHER)}
    assert capped.workers["5m"][("A", OTHER)] == pytest.approx(
        full.workers["5m"][("A", "small1")] + full.workers["5m"][("A", "small2")]
    )
    assert capped.pool["5m"] == pytest.approx(full.pool["5m"])
    assert capped.miners["5m"] == pytest.approx(full.miners["5m"])
    assert capped.active_workers == full.active_workers


def test_miner_cap_rolls_miners_into_other() -> None:
    tracker = HashrateTracker()
    for t in range(60):
        for i, miner in enumerate("ABCD"):
            tracker.add(miner, "w", float(i + 1), float(t))
    snap = tracker.snapshot(60.0, max_workers=100, max_miners=2)
    assert set(snap.miners["1m"]) == {"D", "C", OTHER}
    assert set(snap.workers["1m"]) == {("D", "w"), ("C", "w"), (OTHER, OTHER)}
    assert snap.active_miners["1m"] == 4
    assert sum(snap.miners["1m"].values()) == pytest.approx(snap.pool["1m"])


def test_zero_caps_roll_everything_up() -> None:
    tracker = HashrateTracker()
    tracker.add("A", "w", 1.0, 0.0)
    snap = tracker.snapshot(1.0, max_workers=0, max_miners=0)
    assert set(snap.workers["1m"]) == {(OTHER, OTHER)}
    with pytest.raises(ValueError):
        tracker.snapshot(1.0, max_workers=-1, max_miners=0)


def test_negative_difficulty_is_refused() -> None:
    with pytest.raises(ValueError):
        HashrateTracker().add("m", "w", -1.0, 0.0)


def test_miner_window_weights() -> None:
    window = MinerWindow(3600)
    window.add("A", 3.0, 0.0)
    window.add("B", 1.0, 1800.0)
    assert window.weights(1800.0) == {"A": 3.0, "B": 1.0}
    assert window.weights(3700.0) == {"B": 1.0}


def test_round_effort() -> None:
    effort = RoundEffort()
    for _ in range(3):
        effort.add(1.0, 4.0, is_block=False)
    assert effort.current == 0.75 and effort.last is None
    effort.add(1.0, 4.0, is_block=True)
    assert effort.last == 1.0 and effort.current == 0.0 and effort.rounds == 1
    # a network difficulty change mid-round weighs each share by its own job
    effort.add(1.0, 2.0, is_block=False)
    effort.add(1.0, 4.0, is_block=False)
    assert effort.current == 0.75
    with pytest.raises(ValueError):
        effort.add(1.0, 0.0, is_block=False)


@given(
    shares=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["w1", "w2"]),
                  st.sampled_from([Fraction(1, 3), Fraction(8), Fraction(1024)]), st.sampled_from([Fraction(10**6, 7), Fraction(3 * 10**6)])),
        max_size=40,
    ),
    at=st.floats(1000, 5000),
)
def test_a_batch_of_accepted_shares_feeds_the_metrics_as_one_by_one_does(shares, at):
    """``shares_accepted_together`` (the pool's batch path) == ``share_accepted`` per share."""
    one, many = PoolMetrics(), PoolMetrics()
    for address, worker, d, n in shares:
        one.share_accepted(address, worker, d, n, is_block=False, now=at)
    many.shares_accepted_together([(a, w, float(d), float(n)) for a, w, d, n in shares], now=at)
    many.flush_hashrate()  # what every reading of the windows does first
    later = at + 30
    s1 = one.hashrate.snapshot(later, max_workers=100, max_miners=100)
    s2 = many.hashrate.snapshot(later, max_workers=100, max_miners=100)
    for window in s1.workers:
        assert s1.workers[window].keys() == s2.workers[window].keys()
        for key, rate in s1.workers[window].items():
            assert math.isclose(rate, s2.workers[window][key], rel_tol=1e-9)
    assert one.pool_window.weights(later).keys() == many.pool_window.weights(later).keys()
    for miner, weight in one.pool_window.weights(later).items():
        assert math.isclose(weight, many.pool_window.weights(later)[miner], rel_tol=1e-9)
    assert math.isclose(one.effort.current, many.effort.current, rel_tol=1e-9, abs_tol=1e-12)


def test_the_share_path_feeds_the_windows_at_least_once_a_feed_interval_and_before_every_reading():
    from pool.metrics import HASHRATE_FEED_INTERVAL

    metrics = PoolMetrics()
    t0 = 1000.0
    metrics.shares_accepted_together([("a", "w1", 2.0, 1e6)], now=t0)
    metrics.shares_accepted_together([("a", "w1", 3.0, 1e6), ("b", "w2", 4.0, 1e6)], now=t0 + HASHRATE_FEED_INTERVAL / 2)
    assert len(metrics.hashrate) == 0  # held back: one feed for the whole interval
    metrics.shares_accepted_together([("a", "w1", 1.0, 1e6)], now=t0 + HASHRATE_FEED_INTERVAL)  # interval over: fed
    assert metrics.pool_window.weights(t0 + 2) == {"a": 6.0, "b": 4.0}
    metrics.shares_accepted_together([("b", "w2", 5.0, 1e6)], now=t0 + 1.5 * HASHRATE_FEED_INTERVAL)
    metrics.update(t0 + 2 * HASHRATE_FEED_INTERVAL)  # a reading feeds whatever waits
    assert metrics.pool_window.weights(t0 + 3) == {"a": 6.0, "b": 9.0}
