"""Variable difficulty: aim each connection at a target share interval.

Retargets quickly while a miner is new (its first shares say a lot about a
difficulty that is far off) and slowly afterwards, so noise in share arrival
does not make the difficulty wander.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction


def nice_difficulty(value: Fraction) -> Fraction:
    """Round to a value with a short decimal form (what set_difficulty sends)."""
    if value >= 1:
        # Powers of two and their halves read well and hash evenly.
        n = int(value)
        top = 1 << (n.bit_length() - 1)
        return Fraction(top if n < top + top // 2 else top + top // 2) if n >= 4 else Fraction(n)
    # Below 1: keep three significant decimal digits.
    digits = 0
    v = value
    while v < 100:
        v *= 10
        digits += 1
    return Fraction(int(v), 10**digits)


@dataclass
class Vardiff:
    target_interval: float = 10.0
    min_difficulty: Fraction = Fraction(1, 100000)
    max_difficulty: Fraction | None = None
    # Retarget once this many shares or this many seconds have passed.
    retarget_shares: int = 6
    retarget_time: float = 90.0
    _window_start: float | None = None
    _shares: int = 0
    _retargets: int = 0
    _pending_weight: Fraction = field(default=Fraction(0))

    def clamp(self, difficulty: Fraction, network_difficulty: Fraction | None = None) -> Fraction:
        d = max(difficulty, self.min_difficulty)
        if self.max_difficulty is not None:
            d = min(d, self.max_difficulty)
        if network_difficulty is not None:
            d = min(d, network_difficulty)
        return d

    def start(self, now: float) -> None:
        self._window_start = now
        self._shares = 0

    def on_share(self, now: float, current: Fraction, network_difficulty: Fraction | None = None) -> Fraction | None:
        """Record an accepted share; return a new difficulty when one is due."""
        if self._window_start is None:
            self.start(now)
            return None
        self._shares += 1
        return self._maybe_retarget(now, current, network_difficulty)

    def on_tick(self, now: float, current: Fraction, network_difficulty: Fraction | None = None) -> Fraction | None:
        """Called periodically: lowers the difficulty of a miner that went quiet."""
        if self._window_start is None:
            return None
        return self._maybe_retarget(now, current, network_difficulty)

    def _maybe_retarget(self, now: float, current: Fraction, network_difficulty: Fraction | None) -> Fraction | None:
        elapsed = now - self._window_start  # type: ignore[operator]
        young = self._retargets < 3
        need_shares = 3 if young else self.retarget_shares
        need_time = self.retarget_time / (3 if young else 1)
        if self._shares < need_shares and elapsed < need_time:
            return None
        if elapsed <= 0:
            return None
        observed = self._shares / elapsed if self._shares else 0.0
        wanted_rate = 1.0 / self.target_interval
        if self._shares == 0:
            ratio = Fraction(1, 4)  # nothing in a whole window: step down hard
        else:
            ratio = Fraction(observed / wanted_rate).limit_denominator(1 << 20)
            # Damp: big moves only while young; afterwards at most x4 / /4 per step.
            lo, hi = (Fraction(1, 64), Fraction(64)) if young else (Fraction(1, 4), Fraction(4))
            ratio = min(max(ratio, lo), hi)
        self.start(now)
        self._retargets += 1
        if not young and Fraction(2, 3) <= ratio <= Fraction(3, 2):
            return None  # within noise: hold
        new = self.clamp(nice_difficulty(current * ratio), network_difficulty)
        return None if new == current else new
