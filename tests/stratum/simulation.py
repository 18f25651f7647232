"""A simulated miner driving ``ServerConnection`` through its real message flow.

Time is simulated: shares arrive as a Poisson process at the rate the miner's
hashrate gives at the difficulty it is currently hashing at, jobs are
refreshed every ``job_interval`` seconds and the server ticks every
``tick_interval`` seconds, exactly as the trio server drives the state machine.
Two firmware behaviours are modelled: ``"next-notify"`` (cgminer/bmminer apply
``mining.set_difficulty`` at the next ``mining.notify``) and ``"immediate"``
(ESP-Miner applies it to the work it generates from then on).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from stratum.jobs import JobBook, StratumJob
from stratum.protocol import ProtocolSettings, Send, ServerConnection, ShareSubmitted

TWO32 = 2**32


def make_job(n: int, *, generation: int = 1, clean: bool = False) -> StratumJob:
    return StratumJob(
        job_id=f"{n:x}",
        prevhash="00" * 32,
        coinb1="01",
        coinb2="02",
        merkle_branch=(),
        version=0x20000000,
        nbits=0x1D00FFFF,
        ntime=1_700_000_000,
        clean_jobs=clean,
        generation=generation,
        ntime_min=1_700_000_000,
        ntime_max=1_700_007_200,
    )


@dataclass
class SimResult:
    hashrate: float
    target_interval: float
    #: (time, difficulty the server has set) after every change
    timeline: list[tuple[float, Fraction]] = field(default_factory=list)
    share_times: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    #: shares the server credited above the difficulty the miner hashed at (would be refused)
    over_credited: int = 0
    credited_work: float = 0.0
    hashed_work: float = 0.0

    def expected_rate_ratio(self, t: float) -> float:
        """Share rate the difficulty in force at ``t`` gives, relative to the target."""
        d = self.timeline[0][1]
        for when, diff in self.timeline:
            if when > t:
                break
            d = diff
        return self.hashrate * self.target_interval / (float(d) * TWO32)

    def worst_ratio_after(self, t0: float, end: float) -> tuple[float, float]:
        ratios = [self.expected_rate_ratio(t0)] + [self.expected_rate_ratio(t) for t, _ in self.timeline if t0 <= t <= end]
        return min(ratios), max(ratios)

    def observed_rate_ratio(self, t0: float, t1: float) -> float:
        n = sum(1 for t in self.share_times if t0 <= t < t1)
        return n * self.target_interval / (t1 - t0)


def simulate(
    hashrate: float,
    *,
    duration: float = 1800.0,
    settings: ProtocolSettings | None = None,
    firmware: Literal["next-notify", "immediate"] = "next-notify",
    seed: int = 1,
    job_interval: float = 30.0,
    tick_interval: float = 5.0,
    suggest: float | None = None,
) -> SimResult:
    rng = random.Random(seed)
    settings = settings or ProtocolSettings(start_difficulty=Fraction(1024))
    book = JobBook()
    job_counter = 1
    book.add(make_job(job_counter, clean=True))
    conn = ServerConnection(settings, book)
    result = SimResult(hashrate, settings.target_share_interval)

    miner_diff: Fraction | None = None
    pending_diff: Fraction | None = None
    miner_job: str | None = None
    nonce = 0
    now = 0.0

    def feed(events: list) -> None:
        nonlocal miner_diff, pending_diff, miner_job
        for ev in events:
            if isinstance(ev, ShareSubmitted):
                share = ev.share
                if share.difficulty > hashed_at[share.wire_job_id]:
                    result.over_credited += 1
                result.credited_work += float(share.difficulty)
                feed(conn.share_result(ev.request_id, share, None, now))
                continue
            if not isinstance(ev, Send):
                continue
            for raw in ev.data.splitlines():
                msg = json.loads(raw)
                if msg.get("method") == "mining.set_difficulty":
                    new = Fraction(str(msg["params"][0]))
                    if firmware == "immediate" or miner_diff is None:
                        miner_diff = new  # cgminer also applies the very first one at once
                    else:
                        pending_diff = new
                elif msg.get("method") == "mining.notify":
                    miner_job = msg["params"][0]
                    if pending_diff is not None:
                        miner_diff, pending_diff = pending_diff, None

    hashed_at: dict[str, Fraction] = {}
    feed(conn.receive_line(b'{"id":1,"method":"mining.subscribe","params":["sim/1.0"]}', now))
    if suggest is not None:
        feed(conn.receive_line(json.dumps({"id": 3, "method": "mining.suggest_difficulty", "params": [suggest]}).encode(), now))
    for ev in conn.receive_line(b'{"id":2,"method":"mining.authorize","params":["w","x"]}', now):
        feed(conn.authorize_result(ev.request_id, ev.username, True, None, now) if hasattr(ev, "username") else [ev])
    result.timeline.append((0.0, conn.difficulty))

    def next_share(t: float) -> float:
        assert miner_diff is not None
        return t + rng.expovariate(hashrate / (float(miner_diff) * TWO32))

    next_tick = tick_interval
    next_job = job_interval
    current_diff = miner_diff
    share_at = next_share(0.0)
    while True:
        now = min(share_at, next_tick, next_job)
        if now >= duration:
            break
        before = conn.difficulty
        if now == next_tick:
            feed(conn.tick(now))
            next_tick += tick_interval
        elif now == next_job:
            job_counter += 1
            job = make_job(job_counter)
            book.add(job)
            data = conn.job_notification(job, now)
            if data:
                feed([Send(data)])
            next_job += job_interval
        else:
            assert miner_job is not None and miner_diff is not None
            hashed_at.setdefault(miner_job, miner_diff)
            hashed_at[miner_job] = min(hashed_at[miner_job], miner_diff)
            result.share_times.append(now)
            result.hashed_work += float(miner_diff)
            nonce += 1
            line = json.dumps({"id": 10, "method": "mining.submit", "params": ["w", miner_job, "00000000", "6553f100", f"{nonce:08x}"]})
            feed(conn.receive_line(line.encode(), now))
        if conn.difficulty != before:
            result.timeline.append((now, conn.difficulty))
            result.reasons.append(conn.vardiff.last_reason)
        if miner_diff != current_diff:
            current_diff = miner_diff
            share_at = next_share(now)
        elif now == share_at:
            share_at = next_share(now)
    return result
