"""Vardiff: unit behaviour, and a simulation of three very different miners."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from stratum.protocol import ProtocolSettings
from stratum.vardiff import Vardiff, VardiffSettings, _lower_tail_below, _upper_tail_below, poisson_cdf, quantize_difficulty
from tests.stratum.helpers import difficulties, new_harness
from tests.stratum.simulation import TWO32, simulate

HOUR = 3600.0


def test_quantize():
    assert quantize_difficulty(Fraction(465661, 1)) == 465661
    assert quantize_difficulty(Fraction(3, 2)) == 2
    assert quantize_difficulty(Fraction(3, 2), "down") == 1
    assert quantize_difficulty(Fraction(1, 3)) == Fraction(333, 1000)
    assert quantize_difficulty(Fraction(1, 3), "up") == Fraction(334, 1000)
    assert quantize_difficulty(Fraction(2328306, 10**8)) == Fraction(233, 10000)
    with pytest.raises(ValueError):
        quantize_difficulty(Fraction(0))


def test_clamp_bounds_and_network():
    v = Vardiff(VardiffSettings(min_difficulty=Fraction(1, 1000), max_difficulty=Fraction(5000)))
    assert v.clamp(Fraction(1, 10**6)) == Fraction(1, 1000)
    assert v.clamp(Fraction(10**9)) == 5000
    assert v.clamp(Fraction(10**9), Fraction(1234567, 1000)) == 1234  # never above the network
    assert v.clamp(Fraction(1, 10**6), Fraction(1, 10**5)) == Fraction(1, 10**5)  # network wins over min


def test_poisson_cdf():
    assert poisson_cdf(0, 2.0) == pytest.approx(0.1353, abs=1e-4)
    assert poisson_cdf(3, 3.0) == pytest.approx(0.6472, abs=1e-4)
    assert poisson_cdf(-1, 1.0) == 0.0


def test_settings_validation():
    with pytest.raises(ValueError):
        VardiffSettings(target_interval=10, max_share_rate=0.1)
    with pytest.raises(ValueError):
        VardiffSettings(min_difficulty=Fraction(2), max_difficulty=Fraction(1))


def test_probe_jumps_after_a_few_shares():
    v = Vardiff(VardiffSettings())
    v.begin(0.0)
    d = Fraction(1)
    new = None
    for i in range(1, 5):  # four shares in 4 s at difficulty 1: ~10x too many
        new = v.on_share(float(i), d, d)
    assert new is not None and 5 <= new <= 10
    assert v.phase == "young"


def test_silence_steps_down_harder_each_time():
    v = Vardiff(VardiffSettings())
    v.begin(0.0)
    d = Fraction(1024)
    steps = []
    t = 0.0
    while len(steps) < 3:
        t += 5
        new = v.on_tick(t, d)
        if new is not None:
            steps.append(float(d / new))
            d = new
    assert steps[0] == pytest.approx(8, rel=0.01) and steps[1] > steps[0] and steps[2] > steps[1]


def test_flood_floor_retargets_at_once_and_bounds_later_suggestions():
    """A 200 TH/s device told difficulty 1 (misconfigured) is fixed within four shares."""
    v = Vardiff(VardiffSettings())
    v.begin(0.0)
    d = Fraction(1)
    per_share = TWO32 / 200e12
    new = None
    for i in range(1, 5):
        new = v.on_share(i * per_share, d, d)
    assert new is not None and new > 10_000
    assert v.floor() > 10_000  # a later suggestion of difficulty 1 cannot undo it
    assert v.clamp(Fraction(1), floor=v.floor()) > 10_000


def test_never_above_network_difficulty():
    h = new_harness(ProtocolSettings(start_difficulty=Fraction(1024)), network_difficulty=Fraction(5000))
    h.start()
    for i in range(1, 50):  # a flood of shares: vardiff wants far more than 5000
        h.now = i * 0.01
        h.submit("1", nonce=i)
    assert h.conn.difficulty == 5000
    assert max(difficulties(h.out)) == 5000


# --- the simulation -----------------------------------------------------------------
def first_in_band(result) -> float | None:
    for t, _ in result.timeline:
        if 0.5 <= result.expected_rate_ratio(t) <= 1.5:
            return t
    return None


def time_in_band(result, start: float, end: float) -> float:
    edges = [start] + [t for t, _ in result.timeline if start < t < end] + [end]
    inside = sum(b - a for a, b in itertools.pairwise(edges) if 0.5 <= result.expected_rate_ratio(a) <= 1.5)
    return inside / (end - start)


@pytest.mark.parametrize("firmware", ["next-notify", "immediate"])
@pytest.mark.parametrize("hashrate", [10e6, 1e12, 200e12], ids=["10MH", "1TH", "200TH"])
@pytest.mark.parametrize("seed", [1, 2])
def test_miners_reach_and_hold_the_target_share_rate(hashrate, firmware, seed):
    """From the default starting difficulty (1024), one simulated hour each.

    Reach: the difficulty gives a share rate within +-50% of one per 10 s
    within five minutes.  Hold: from then on the rate the difficulty gives
    is within +-50% at least 90% of the time, the shares actually counted
    in every ten-minute window are within +-50% of the target, and no share
    is ever judged above the difficulty the miner was hashing at.
    """
    settings = ProtocolSettings(start_difficulty=Fraction(1024), min_difficulty=Fraction(1, 10**5))
    result = simulate(hashrate, duration=HOUR, settings=settings, firmware=firmware, seed=seed)
    reached = first_in_band(result)
    assert reached is not None and reached <= 300, result.timeline[:12]
    hold = 300.0
    assert time_in_band(result, hold, HOUR) >= 0.9
    for start in range(int(hold), int(HOUR) - 599, 600):
        assert 0.5 <= result.observed_rate_ratio(start, start + 600) <= 1.5, start
    assert 0.8 <= result.observed_rate_ratio(hold, HOUR) <= 1.2
    assert result.over_credited == 0
    # The credited work is the hashed work (the miner is paid for what it did).
    assert result.credited_work == pytest.approx(result.hashed_work, rel=0.05)


# --- the arithmetic shortcuts give the plain formulas' answers ------------------------------


@pytest.mark.parametrize("alpha", [0.01, 0.001, 0.25, 0.5])
def test_poisson_tail_shortcuts_agree_with_the_sums(alpha):
    means = [0.0, 1e-9, 0.05, 0.3, 0.69, 1.0, 1.5, 2.0, 2.7, 3.0, 9.99, 10.0, 10.01, 33.3, 99.5, 250.0, 699.9, 700.0, 745.5, 900.0]
    for mean in means:
        for k in range(0, 320):
            assert _upper_tail_below(k, mean, alpha) == (1.0 - poisson_cdf(k - 1, mean) < alpha), (k, mean, alpha)
            assert _lower_tail_below(k, mean, alpha) == (poisson_cdf(k, mean) < alpha), (k, mean, alpha)


def test_vardiff_is_slotted_and_converts_each_difficulty_once():
    v = Vardiff(VardiffSettings())
    assert not hasattr(v, "__dict__")
    d = Fraction(1, 3)
    assert v._float(d) == float(d) and v._float(d) is v._float(d)
    assert v._float(Fraction(10**400, 3 * 10**399)) == float(Fraction(10, 3))
