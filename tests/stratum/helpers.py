"""Driving ``ServerConnection`` in unit tests: JSON in, decoded messages out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from stratum.errors import StratumError
from stratum.extranonce import ExtranonceAllocator, SessionRegistry
from stratum.jobs import JobBook, StratumJob
from stratum.protocol import (
    AuthorizeRequested,
    Close,
    Event,
    ProtocolSettings,
    Send,
    ServerConnection,
    Share,
    ShareRejected,
    ShareSubmitted,
    Superseded,
)

NTIME = 0x6553F100


def make_job(n: int, *, generation: int = 1, clean: bool = False, version: int = 0x20000000) -> StratumJob:
    return StratumJob(
        job_id=f"{n:x}",
        prevhash=f"{generation:064x}",
        coinb1="01000000010000",
        coinb2="ffffffff0100",
        merkle_branch=("ab" * 32,),
        version=version,
        nbits=0x1D00FFFF,
        ntime=NTIME,
        clean_jobs=clean,
        generation=generation,
        ntime_min=NTIME - 600,
        ntime_max=NTIME + 7200,
    )


@dataclass
class Harness:
    """One connection plus what it produced, with a pool that says yes unless told otherwise."""

    conn: ServerConnection
    now: float = 0.0
    accept_workers: bool = True
    #: the pool's verdict on submitted shares (None = accept)
    verdict: StratumError | None = None
    out: list[dict[str, Any]] = field(default_factory=list)
    submitted: list[Share] = field(default_factory=list)
    rejected: list[ShareRejected] = field(default_factory=list)
    superseded: list[ServerConnection] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    def send(self, message: dict[str, Any] | str | bytes) -> list[dict[str, Any]]:
        """Feed one line; return the messages the server wrote in response."""
        if isinstance(message, dict):
            line = json.dumps(message).encode()
        elif isinstance(message, str):
            line = message.encode()
        else:
            line = message
        return self.process(self.conn.receive_line(line, self.now))

    def call(self, method: str, params: Any = None, id: Any = 1) -> list[dict[str, Any]]:
        return self.send({"id": id, "method": method, "params": [] if params is None else params})

    def process(self, events: list[Event]) -> list[dict[str, Any]]:
        produced: list[dict[str, Any]] = []
        pending = list(events)
        while pending:
            ev = pending.pop(0)
            if isinstance(ev, Send):
                self.raw.append(ev.data)
                for line in ev.data.splitlines():
                    produced.append(json.loads(line))
            elif isinstance(ev, AuthorizeRequested):
                ok = self.accept_workers
                pending[:0] = self.conn.authorize_result(ev.request_id, ev.username, ok, None if ok else "nope", self.now)
            elif isinstance(ev, ShareSubmitted):
                self.submitted.append(ev.share)
                pending[:0] = self.conn.share_result(ev.request_id, ev.share, self.verdict, self.now)
            elif isinstance(ev, ShareRejected):
                self.rejected.append(ev)
            elif isinstance(ev, Superseded):
                self.superseded.append(ev.connection)
            elif isinstance(ev, Close):
                self.closed.append(ev.reason)
        self.out += produced
        return produced

    # --- conveniences ---------------------------------------------------------
    def subscribe(self, *params: Any) -> list[dict[str, Any]]:
        return self.call("mining.subscribe", list(params) or ["test/1.0"])

    def authorize(self, user: str = "w", password: str = "x") -> list[dict[str, Any]]:
        return self.call("mining.authorize", [user, password], id=2)

    def start(self) -> list[dict[str, Any]]:
        return self.subscribe() + self.authorize()

    def submit(self, job_id: str, en2: str = "00000000", ntime: int = NTIME, nonce: int = 1, *extra: Any, worker: str = "w", id: Any = 10) -> dict[str, Any]:
        replies = self.call("mining.submit", [worker, job_id, en2, f"{ntime:08x}", f"{nonce:08x}", *extra], id=id)
        answers = [m for m in replies if "result" in m]
        assert len(answers) == 1, replies
        return answers[0]

    def notify(self, job: StratumJob, network_difficulty: Fraction | None = None) -> list[dict[str, Any]]:
        data = self.conn.job_notification(job, self.now, network_difficulty)
        if data is None:
            return []
        return self.process([Send(data)])

    def tick(self) -> list[dict[str, Any]]:
        return self.process(self.conn.tick(self.now))


def methods(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("method") or "reply" for m in messages]


def notifies(messages: list[dict[str, Any]]) -> list[list[Any]]:
    return [m["params"] for m in messages if m.get("method") == "mining.notify"]


def difficulties(messages: list[dict[str, Any]]) -> list[Fraction]:
    return [Fraction(str(m["params"][0])) for m in messages if m.get("method") == "mining.set_difficulty"]


def new_harness(
    settings: ProtocolSettings | None = None,
    *,
    book: JobBook | None = None,
    registry: SessionRegistry | None = None,
    with_job: bool = True,
    **kwargs: Any,
) -> Harness:
    book = book if book is not None else JobBook()
    if with_job and book.current is None:
        book.add(make_job(1, clean=True))
    registry = registry if registry is not None else SessionRegistry(ExtranonceAllocator(4, server_id=7))
    return Harness(ServerConnection(settings or ProtocolSettings(), book, registry, **kwargs))
