"""Per-connection and per-server limits, free of I/O.

A pool's port is open to the internet: every resource a client can make the
server spend (memory for a line, a reply, a pending write; a task; a file
descriptor; a place in the extranonce space) has a bound here, and each bound
has one reaction, chosen so that a hostile client hurts only itself:

* a line longer than ``max_line`` closes the connection (nothing legitimate
  comes close: the largest Stratum request is a few hundred bytes);
* more than ``max_messages_per_second`` (after a burst of ``message_burst``)
  makes the server stop *reading* that connection until the rate is back
  within bounds: TCP back-pressure pushes the cost back to the sender, and
  firmware that legitimately bursts (ESP-Miner writes four requests back to
  back) is never refused;
* more than ``max_pending_requests`` shares awaiting the pool's verdict also
  pauses reading;
* ``max_connections`` (server-wide) and ``max_connections_per_ip`` refuse
  new connections by closing them at once, before a byte is read;
* ``handshake_timeout``: subscribe and authorize (and PROXY/TLS before them)
  within this many seconds, or the connection closes (slowloris, half-open
  sockets, port scanners);
* ``idle_timeout``: a working miner that sends no complete line for this long
  is closed (bytes without a newline do not count: one byte a second is not
  activity);
* ``max_send_buffer``: bytes queued in user space because the kernel's send
  buffer is full; beyond it the client is dropped as a slow reader instead of
  growing the server's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import DEFAULT_MAX_LINE


@dataclass(frozen=True)
class Limits:
    max_line: int = DEFAULT_MAX_LINE
    max_messages_per_second: float = 50.0
    message_burst: int = 100
    #: Shares of one connection awaiting the pool's verdict; reading pauses beyond it.
    max_pending_requests: int = 64
    #: Open connections on this server (0: unlimited).
    max_connections: int = 10_000
    #: Open connections from one address (an IPv6 /64 counts as one address; 0: unlimited).
    max_connections_per_ip: int = 256
    handshake_timeout: float = 30.0
    idle_timeout: float = 900.0
    #: Bytes waiting in user space for a socket whose kernel buffer is full.
    max_send_buffer: int = 256 * 1024
    #: SO_SNDBUF for accepted sockets (None: the kernel's autotuning).
    socket_send_buffer: int | None = None
    #: How long replies already queued may take to reach a miner whose connection ends.
    flush_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.max_line < 256:
            raise ValueError("max_line must be at least 256 bytes")
        if self.max_messages_per_second <= 0 or self.message_burst < 1:
            raise ValueError("max_messages_per_second must be positive and message_burst at least 1")
        if self.max_pending_requests < 1:
            raise ValueError("max_pending_requests must be at least 1")
        if self.max_connections < 0 or self.max_connections_per_ip < 0:
            raise ValueError("connection limits must be >= 0 (0: unlimited)")
        if self.handshake_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_send_buffer < 1024:
            raise ValueError("max_send_buffer must be at least 1024 bytes")


class TokenBucket:
    """Messages-per-second limit with a burst allowance.

    ``take(now)`` debits one token and returns how long the caller must wait
    before acting on the message (0 when within the rate).  The debt is taken
    at once, so waiting exactly that long and then acting keeps the long-run
    rate at ``rate`` whatever the caller does.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> float:
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
