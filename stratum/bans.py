"""Who may connect, and who has earned a ban: per-address abuse accounting, free of I/O.

Everything is keyed by *address key*: the IPv4 address, or the /64 network
of an IPv6 address (one host commonly holds a whole /64, so counting single
IPv6 addresses would make every limit here free to evade).

Policy (docs/operations.md has the operator's view):

* ``deny`` networks are refused outright; if ``allow`` is non-empty, only
  its networks may connect at all. ``exempt`` networks (a farm behind one
  NAT, a trusted proxy) are never banned and have no per-address connection
  cap.
* **Invalid shares**: shares refused for a reason that is the miner's fault
  (low difficulty, duplicate, unknown job, malformed...) are counted against
  accepted ones. Once an address has at least ``ban_min_invalid`` recent
  invalid shares making up at least ``ban_invalid_ratio`` of its recent
  shares, it is banned. A ratio, not a count: one broken rig in a farm of a
  hundred behind one address does not get the farm banned. Stale shares and
  refusals that are the pool's fault (busy, storage) never count.
* **Junk**: undecodable lines, over-long lines and the like; ``ban_junk``
  recent junk events ban the address.
* **Failed authorization**: refusals are answered after a delay that doubles
  with each recent failure from the address (``auth_backoff_base`` ..
  ``auth_backoff_max``), which makes guessing cheap to absorb and slow to do.
  No ban: a misconfigured rig behind a shared address must not lock its
  neighbours out.
* "Recent" is an exponential decay with half-life ``half_life`` seconds:
  counts fade smoothly, there is no window edge to time an attack against.
* A ban lasts ``ban_duration`` seconds; ``ban_duration = 0`` turns bans off.

The tracker's memory is bounded (``max_tracked`` addresses, least recently
seen forgotten first), so a spoofing flood cannot grow it without limit.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Share refusals that are the miner's fault (errors.StratumError.reason).
INVALID_SHARE_REASONS = frozenset(
    {
        "malformed",
        "bad-extranonce2",
        "bad-ntime",
        "bad-version-bits",
        "version-rolling-off",
        "unknown-job",
        "duplicate",
        "low-difficulty",
        "unauthorized",
        "not-subscribed",
    }
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=65536)
def address_key(host: str) -> str:
    """The unit limits and bans apply to: the IPv4 address, or the IPv6 /64.

    Cached: it is asked for every share verdict, and parsing an address is
    slower than the rest of the bookkeeping together.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (or bare addresses) to networks; raises ValueError naming a bad one."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network: {exc}") from exc
    return tuple(out)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True)
class AbuseSettings:
    ban_duration: float = 600.0
    ban_invalid_ratio: float = 0.9
    ban_min_invalid: int = 50
    ban_junk: int = 64
    half_life: float = 600.0
    auth_backoff_base: float = 0.5
    auth_backoff_max: float = 16.0
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    max_tracked: int = 100_000
    _allow: tuple[Network, ...] = field(init=False, repr=False, compare=False)
    _deny: tuple[Network, ...] = field(init=False, repr=False, compare=False)
    _exempt: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ban_duration < 0 or self.half_life <= 0:
            raise ValueError("ban_duration must be >= 0 and half_life positive")
        if not 0 < self.ban_invalid_ratio <= 1:
            raise ValueError("ban_invalid_ratio must be in (0, 1]")
        if self.ban_min_invalid < 1 or self.ban_junk < 1:
            raise ValueError("ban thresholds must be at least 1")
        if self.auth_backoff_base < 0 or self.auth_backoff_max < self.auth_backoff_base:
            raise ValueError("auth back-off must satisfy 0 <= base <= max")
        object.__setattr__(self, "_allow", parse_networks(self.allow))
        object.__setattr__(self, "_deny", parse_networks(self.deny))
        object.__setattr__(self, "_exempt", parse_networks(self.exempt))


@dataclass
class _Record:
    last: float
    accepted: float = 0.0
    invalid: float = 0.0
    junk: float = 0.0
    auth_failures: float = 0.0


class AbuseTracker:
    """Per-address counters, bans and admission decisions (``now`` is passed in)."""

    def __init__(self, settings: AbuseSettings | None = None) -> None:
        self.settings = settings or AbuseSettings()
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self.bans: dict[str, float] = {}
        self.bans_issued = 0

    # --- admission ---------------------------------------------------------------
    def exempt(self, host: str) -> bool:
        return in_networks(host, self.settings._exempt)

    def refusal(self, host: str, now: float) -> str | None:
        """Why ``host`` may not connect now (None: it may)."""
        s = self.settings
        if in_networks(host, s._deny):
            return "denied"
        if s._allow and not in_networks(host, s._allow):
            return "not allowed"
        if self.banned(host, now):
            return "banned"
        return None

    def banned(self, host: str, now: float) -> bool:
        key = address_key(host)
        until = self.bans.get(key)
        if until is None:
            return False
        if until <= now:
            del self.bans[key]
            return False
        return True

    def ban(self, host: str, now: float, duration: float | None = None) -> bool:
        """Ban ``host`` for ``duration`` (default ``ban_duration``; less for what is left
        of a ban served elsewhere); False when bans are off or it is exempt."""
        if self.settings.ban_duration <= 0 or self.exempt(host):
            return False
        key = address_key(host)
        self.bans[key] = now + (self.settings.ban_duration if duration is None else min(duration, self.settings.ban_duration))
        self.bans_issued += 1
        record = self._records.get(key)
        if record is not None:  # a fresh start once the ban is served
            record.invalid = record.junk = record.accepted = 0.0
        return True

    def unban(self, host: str) -> None:
        self.bans.pop(address_key(host), None)

    # --- accounting ---------------------------------------------------------------
    def _record(self, host: str, now: float) -> _Record:
        key = address_key(host)
        record = self._records.get(key)
        if record is None:
            record = _Record(now)
            self._records[key] = record
            while len(self._records) > self.settings.max_tracked:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(key)
            elapsed = now - record.last
            if elapsed > 0:
                factor = math.pow(0.5, elapsed / self.settings.half_life)
                record.accepted *= factor
                record.invalid *= factor
                record.junk *= factor
                record.auth_failures *= factor
                record.last = now
        return record

    def accepted(self, host: str, count: int, now: float) -> None:
        """Count ``count`` accepted shares at once (a batch's worth from one address)."""
        self._record(host, now).accepted += count

    def share(self, host: str, accepted: bool, reason: str | None, now: float) -> bool:
        """Count a share verdict; True when it just got ``host`` banned."""
        if not accepted and reason not in INVALID_SHARE_REASONS:
            return False  # stale, or the pool's own trouble: not the miner's fault
        record = self._record(host, now)
        if accepted:
            record.accepted += 1
            return False
        record.invalid += 1
        s = self.settings
        total = record.accepted + record.invalid
        if record.invalid >= s.ban_min_invalid and record.invalid >= s.ban_invalid_ratio * total:
            return self.ban(host, now)
        return False

    def junk(self, host: str, now: float, weight: float = 1.0) -> bool:
        """Count junk (an undecodable or over-long line...); True when it just got ``host`` banned."""
        record = self._record(host, now)
        record.junk += weight
        if record.junk >= self.settings.ban_junk:
            return self.ban(host, now)
        return False

    def auth_failed(self, host: str, now: float) -> float:
        """Count a refused authorization; returns the delay before answering it."""
        record = self._record(host, now)
        record.auth_failures += 1
        s = self.settings
        if s.auth_backoff_base <= 0:
            return 0.0
        exponent = min(max(record.auth_failures - 1.0, 0.0), 32.0)
        return min(s.auth_backoff_max, s.auth_backoff_base * 2.0**exponent)

    def expire(self, now: float) -> None:
        """Forget served bans (called periodically; ``banned`` also expires lazily)."""
        for key in [k for k, until in self.bans.items() if until <= now]:
            del self.bans[key]
