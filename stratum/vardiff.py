"""Variable difficulty: aim each connection at a target share interval.

The hashrate is estimated from *credited work*: the sum of the difficulties
the accepted shares were judged at, per second.  Because a share is credited
at the difficulty the miner was hashing at, this stays an unbiased estimate
across difficulty changes, so a measurement window may span them.

Phases
------
``probe``
    Right after work starts (or after a silence) the difficulty may be off
    by any factor.  After ``probe_shares`` shares it jumps to the estimate.
    With no share for ``probe_silence`` target intervals it steps down,
    harder each time (x1/8, x1/32, x1/128, ...), so a 10 MH/s device
    starting at difficulty 1024 is at its level in about a minute;
    overshooting downwards is cheap, because shares then come fast and the
    next probe ends within seconds.
``young``
    Refines from every share since the probe (the window keeps growing, so
    each estimate is better than the last): every ``2*probe_shares`` shares,
    and at once when the share count is significantly (``young_alpha``) more
    than ``young_band`` away from the target.  Settles after
    ``settle_shares`` shares or ``retarget_time`` seconds.
``settled``
    Windows of ``retarget_shares`` shares or ``retarget_time`` seconds.  A
    rate within the dead band (x1/1.25..x1.25) changes nothing; outside it
    the difficulty moves half-way (geometrically) towards the estimate, so
    Poisson noise does not make it wander.  A share count that is
    implausible (``settled_alpha``) for an error below ``band`` means the
    hashrate really changed: back to ``young`` from a fresh estimate.

The flood floor applies in every phase: more than ``max_share_rate`` shares
per second over at least ``probe_shares`` shares retargets at once, and no
later change (a new suggestion included) may go below the difficulty at
which the measured hashrate would exceed that rate.  A device misconfigured
to a tiny difficulty cannot flood the pool.

Difficulties are quantised (integers from 1 up, three significant digits
below 1: see ``quantize_difficulty``) and clamped to the pool's bounds and to
the network difficulty.  This module is pure: the caller passes ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Rounding = Literal["nearest", "down", "up"]


def quantize_difficulty(value: Fraction, rounding: Rounding = "nearest") -> Fraction:
    """The difficulty as it will be written on the wire and judged.

    From 1 up: an integer, because some firmware (ESP-Miner) keeps the
    difficulty in an integer.  Below 1: three significant decimal digits,
    which a JSON parser reads back exactly as the decimal the pool uses.
    Integer arithmetic throughout; a value already quantised comes back as
    the same object (connections at one difficulty share one ``Fraction``).
    """
    if type(value) is not Fraction:
        value = Fraction(value)
    p, q = value.numerator, value.denominator
    if p <= 0:
        raise ValueError("difficulty must be positive")
    if p >= q:  # value >= 1
        if q == 1:
            return value
        if rounding == "down":
            n = p // q
        elif rounding == "up":
            n = -(-p // q)
        else:
            n = (2 * p + q) // (2 * q)
        return Fraction(max(n, 1))
    # Below 1: the smallest exponent e with value * 10**e >= 100, i.e. 10**e >= ceil(100q/p).
    exponent = len(str(-(-100 * q // p) - 1))
    scale = 10**exponent
    scaled = p * scale
    if rounding == "down":
        n = scaled // q
    elif rounding == "up":
        n = -(-scaled // q)
    else:
        n = (2 * scaled + q) // (2 * q)
    if n * q == scaled:  # exact: already quantised
        return value
    return Fraction(n, scale)


@dataclass(frozen=True)
class VardiffSettings:
    target_interval: float = 10.0
    min_difficulty: Fraction = Fraction(1, 100000)
    max_difficulty: Fraction | None = None
    #: Flood floor: more shares per second than this retargets at once.
    max_share_rate: float = 1.0
    probe_shares: int = 4
    probe_silence: float = 2.0  # target intervals without a share while probing
    settle_shares: int = 32
    retarget_shares: int = 30
    retarget_time: float = 300.0
    deadband: float = 1.25
    #: Significance at which a share count too far from the target restarts refinement.
    young_alpha: float = 0.01
    settled_alpha: float = 0.001
    #: Factor of error those tests look for (young: refine; settled: start over).
    young_band: float = 1.5
    band: float = 2.0

    def __post_init__(self) -> None:
        if self.target_interval <= 0:
            raise ValueError("target_interval must be positive")
        if self.min_difficulty <= 0:
            raise ValueError("min_difficulty must be positive")
        if self.max_difficulty is not None and self.max_difficulty < self.min_difficulty:
            raise ValueError("max_difficulty is below min_difficulty")
        if self.max_share_rate * self.target_interval < 2:
            raise ValueError("max_share_rate must allow at least twice the target share rate")
        if self.probe_shares < 2 or self.settle_shares < self.probe_shares or self.deadband < 1:
            raise ValueError("inconsistent vardiff phase settings")


def poisson_cdf(k: int, mean: float) -> float:
    """P(N <= k) for N ~ Poisson(mean)."""
    if k < 0:
        return 0.0
    term = math.exp(-mean)
    total = term
    for i in range(1, k + 1):
        term *= mean / i
        total += term
    return min(total, 1.0)


def _upper_tail_below(k: int, mean: float, alpha: float) -> bool:
    """``1 - poisson_cdf(k - 1, mean) < alpha``: P(N >= k) < alpha, skipping the sum where it cannot hold.

    Poisson's median is at least ``mean - ln 2`` (Choi 1994), so for
    ``k <= mean - 1`` P(N >= k) >= 1/2: far above any significance level
    used here, and far beyond float rounding, so the answer is the sum's.
    (Below ``mean`` 700 only: above it ``exp(-mean)`` underflows and the sum
    says 0, which is then the answer to reproduce.)
    """
    if k <= mean - 1.0 and mean < 700.0 and alpha <= 0.25:
        return False
    return 1.0 - poisson_cdf(k - 1, mean) < alpha


def _lower_tail_below(k: int, mean: float, alpha: float) -> bool:
    """``poisson_cdf(k, mean) < alpha``; the median is below ``mean + 1/3``, so for ``k >= mean + 1`` it is >= 1/2."""
    if k >= mean + 1.0 and mean < 700.0 and alpha <= 0.25:
        return False
    return poisson_cdf(k, mean) < alpha


class Vardiff:
    """One connection's difficulty controller (see module docstring)."""

    __slots__ = (
        "_float_key",
        "_float_value",
        "_last",
        "_shares",
        "_silent_steps",
        "_start",
        "_work",
        "_young_next",
        "last_reason",
        "phase",
        "rate",
        "requested_floor",
        "settings",
    )

    def __init__(self, settings: VardiffSettings) -> None:
        self.settings = settings
        self.phase: Literal["probe", "young", "settled"] = "probe"
        #: Last estimate of the miner's work rate, in difficulty-1 units per second.
        self.rate: float | None = None
        #: BIP310 minimum-difficulty asked for by the miner (a floor it needs).
        self.requested_floor: Fraction | None = None
        self._start: float | None = None
        self._last: float = 0.0
        self._work = 0.0
        self._shares = 0
        self._young_next = 2 * settings.probe_shares
        self._silent_steps = 0
        #: Why the last retarget happened (probe, young, settled, fast, slow, flood), for logs.
        self.last_reason = ""
        # float() of the last difficulty converted (shares mostly come at one difficulty).
        self._float_key: Fraction | None = None
        self._float_value = 0.0

    def _float(self, difficulty: Fraction) -> float:
        if difficulty is self._float_key:
            return self._float_value
        # float(Fraction) is numerator / denominator, without its overhead.
        value = difficulty.numerator / difficulty.denominator if type(difficulty) is Fraction else float(difficulty)
        self._float_key = difficulty
        self._float_value = value
        return value

    # --- bounds ---------------------------------------------------------------
    def floor(self) -> Fraction:
        """The lowest difficulty this connection may be given.

        The pool minimum, the miner's own minimum-difficulty request, and the
        flood floor: a difficulty at which the last measured hashrate would
        exceed ``max_share_rate``.
        """
        lo = self.settings.min_difficulty
        if self.requested_floor is not None:
            lo = max(lo, self.requested_floor)
        if self.rate is not None and self.rate > 0:
            lo = max(lo, Fraction(self.rate / self.settings.max_share_rate))
        return lo

    def clamp(self, difficulty: Fraction, network_difficulty: Fraction | None = None, *, floor: Fraction | None = None) -> Fraction:
        """Quantise and bound: the pool max and the network difficulty win over any floor."""
        lo = self.settings.min_difficulty if floor is None else floor
        hi = self.settings.max_difficulty
        if network_difficulty is not None:
            hi = network_difficulty if hi is None else min(hi, network_difficulty)
        d = quantize_difficulty(difficulty)
        if d < lo:
            d = quantize_difficulty(lo, "up")
        if hi is not None and d > hi:
            d = quantize_difficulty(hi, "down")
        return d

    # --- lifecycle --------------------------------------------------------------
    def begin(self, now: float) -> None:
        """Work starts (or resumes on a new connection): measure afresh."""
        self._window(now)

    def restart_probe(self, now: float) -> None:
        """The difficulty was set from outside (a new suggestion): probe from it."""
        self.phase = "probe"
        self._window(now)

    def _window(self, now: float) -> None:
        self._start = now
        self._last = now
        self._work = 0.0
        self._shares = 0

    # --- events -----------------------------------------------------------------
    def on_share(self, now: float, credited: Fraction, current: Fraction, network_difficulty: Fraction | None = None) -> Fraction | None:
        """An accepted share judged at ``credited``; a new difficulty when one is due."""
        if self._start is None:
            self.begin(now)
        self._shares += 1
        self._work += self._float(credited)
        self._last = now
        self._silent_steps = 0
        return self._check(now, current, network_difficulty)

    def on_tick(self, now: float, current: Fraction, network_difficulty: Fraction | None = None) -> Fraction | None:
        """Periodic: catches a miner that went quiet or slowed down."""
        if self._start is None:
            return None
        return self._check(now, current, network_difficulty)

    def _check(self, now: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        s = self.settings
        assert self._start is not None
        elapsed = now - self._start
        if elapsed <= 0:
            return None
        n = self._shares
        if n >= s.probe_shares and n / elapsed > s.max_share_rate:
            self.last_reason = "flood"
            return self._jump(now, elapsed, current, network_difficulty)  # flood floor
        if self.phase == "probe":
            self.last_reason = "probe"
            if n >= s.probe_shares:
                # Keep the window: the probe's shares count towards the refinement.
                self.rate = self._work * (n - 1) / n / elapsed
                self.phase = "young"
                self._young_next = 2 * s.probe_shares
                return self._propose(self.rate * s.target_interval, current, network_difficulty)
            if now - self._last >= s.probe_silence * s.target_interval:
                return self._silence(now, now - self._last, current, network_difficulty)
            return None
        # Is the share count so far off what the current difficulty should
        # give that it cannot be noise?  Then start over from a new estimate.
        # Work is counted in shares of the current difficulty (the window may
        # span a change).
        expected = elapsed / s.target_interval
        counted = round(self._work / self._float(current))
        if self.phase == "young":
            self.last_reason = "young"
            off = (counted >= s.probe_shares and _upper_tail_below(counted, expected * s.young_band, s.young_alpha)) or (
                _lower_tail_below(counted, expected / s.young_band, s.young_alpha)
            )
            if n and (off or n >= self._young_next or elapsed >= s.retarget_time):
                return self._young(now, elapsed, current, network_difficulty)
            if not n and poisson_cdf(0, expected / s.band) < s.young_alpha:
                self.last_reason = "slow"
                return self._slow(now, elapsed, current, network_difficulty)
            return None
        if counted >= s.probe_shares and _upper_tail_below(counted, expected * s.band, s.settled_alpha):
            self.last_reason = "fast"
            return self._jump(now, elapsed, current, network_difficulty)
        if _lower_tail_below(counted, expected / s.band, s.settled_alpha):
            self.last_reason = "slow"
            return self._slow(now, elapsed, current, network_difficulty)
        self.last_reason = self.phase
        if n >= s.retarget_shares or (n and elapsed >= s.retarget_time):
            return self._settled(now, elapsed, current, network_difficulty)
        return None

    # --- retargets ----------------------------------------------------------------
    def _propose(self, ideal: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        new = self.clamp(Fraction(ideal), network_difficulty, floor=self.floor())
        return None if new == current else new

    def _jump(self, now: float, elapsed: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        """Far too many shares: go straight to a (conservative) estimate and refine."""
        n = self._shares
        # (n-1)/t, not n/t: the window ended on a share, which biases n/t upwards.
        self.rate = self._work * (n - 1) / n / elapsed
        self.phase = "young"
        self._young_next = 2 * self.settings.probe_shares
        self._window(now)
        return self._propose(self.rate * self.settings.target_interval, current, network_difficulty)

    def _slow(self, now: float, elapsed: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        """Far too few shares: estimate as if one more share had just come in."""
        self.rate = (self._work + self._float(current)) / elapsed
        self.phase = "young"
        self._young_next = 2 * self.settings.probe_shares
        self._window(now)
        return self._propose(self.rate * self.settings.target_interval, current, network_difficulty)

    def _young(self, now: float, elapsed: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        """Refine from every share since the last jump; the window keeps growing."""
        self.rate = self._work / elapsed
        if self._shares >= self.settings.settle_shares or elapsed >= self.settings.retarget_time:
            self.phase = "settled"
            self._window(now)
        else:
            self._young_next = min(self._young_next + 2 * self.settings.probe_shares, self.settings.settle_shares)
        return self._propose(self.rate * self.settings.target_interval, current, network_difficulty)

    def _settled(self, now: float, elapsed: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        self.rate = self._work / elapsed
        self._window(now)
        ratio = self.rate * self.settings.target_interval / self._float(current)
        if 1 / self.settings.deadband <= ratio <= self.settings.deadband:
            return None
        return self._propose(self._float(current) * math.sqrt(ratio), current, network_difficulty)

    def _silence(self, now: float, quiet: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        """Probing and no share for a while: step down, harder each time."""
        self._silent_steps += 1
        ideal = self._float(current) / quiet * self.settings.target_interval / 4**self._silent_steps
        self.rate = None  # no estimate any more: lift the flood floor
        self._window(now)
        return self._propose(ideal, current, network_difficulty)
