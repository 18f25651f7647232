"""The Stratum V1 connection state machine, free of I/O.

Lines go in, events come out (h11 style): ``Send`` carries bytes for the
socket; ``AuthorizeRequested`` and ``ShareSubmitted`` ask the pool for a
decision, which comes back through ``authorize_result``/``share_result``.
Everything here is deterministic given the ``now`` passed in, so the whole
protocol is tested without a network or a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from . import errors
from .errors import StratumError
from .jobs import JobBook, StratumJob
from .messages import (
    MessageError,
    Request,
    Response,
    encode_error,
    encode_notification,
    encode_result,
    parse_line,
)
from .vardiff import Vardiff

_HEX8 = re.compile(r"^[0-9a-fA-F]{8}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")


# --- events -----------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class AuthorizeRequested:
    request_id: Any
    username: str
    password: str


@dataclass(frozen=True)
class Share:
    worker: str
    job: StratumJob
    extranonce1: bytes
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int
    version_mask: int
    difficulty: Fraction
    stale: bool


@dataclass(frozen=True)
class ShareSubmitted:
    request_id: Any
    share: Share


@dataclass(frozen=True)
class ShareRejected:
    """A submit refused by the protocol itself (never reached the pool)."""

    request_id: Any
    worker: str | None
    error: StratumError


@dataclass(frozen=True)
class Close:
    reason: str


Event = Send | AuthorizeRequested | ShareSubmitted | ShareRejected | Close


@dataclass(frozen=True)
class ProtocolSettings:
    extranonce2_size: int = 4
    version_mask: int = 0x1FFFE000
    start_difficulty: Fraction = Fraction(1)
    min_difficulty: Fraction = Fraction(1, 100000)
    max_difficulty: Fraction | None = None
    target_share_interval: float = 10.0


def difficulty_json(d: Fraction) -> int | float:
    return int(d) if d.denominator == 1 else float(d)


@dataclass
class ServerConnection:
    extranonce1: bytes
    settings: ProtocolSettings
    jobs: JobBook
    subscribed: bool = False
    user_agent: str = ""
    authorized: set[str] = field(default_factory=set)
    version_mask: int = 0  # 0 until mining.configure negotiates rolling
    extranonce_subscribed: bool = False
    difficulty: Fraction = Fraction(1)
    network_difficulty: Fraction | None = None
    _work_started: bool = False
    _job_difficulty: dict[str, Fraction] = field(default_factory=dict)
    _pending_auth: set[Any] = field(default_factory=set)
    vardiff: Vardiff = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.vardiff = Vardiff(s.target_share_interval, s.min_difficulty, s.max_difficulty)
        self.difficulty = self.vardiff.clamp(s.start_difficulty)

    # --- input ----------------------------------------------------------------
    def receive_line(self, line: bytes, now: float) -> list[Event]:
        try:
            msg = parse_line(line)
        except MessageError as exc:
            return [Send(encode_error(exc.request_id, exc.error))]
        if isinstance(msg, Response):
            return []
        handler = _HANDLERS.get(msg.method)
        if handler is None:
            return [Send(encode_error(msg.id, errors.unknown_method(msg.method)))]
        try:
            return handler(self, msg, now)
        except StratumError as err:
            return [Send(encode_error(msg.id, err))]

    # --- methods ----------------------------------------------------------------
    def _subscribe(self, req: Request, now: float) -> list[Event]:
        if req.params and isinstance(req.params[0], str):
            self.user_agent = req.params[0][:128]
        self.subscribed = True
        subid = self.extranonce1.hex()
        result = [
            [["mining.set_difficulty", subid], ["mining.notify", subid]],
            self.extranonce1.hex(),
            self.settings.extranonce2_size,
        ]
        return [Send(encode_result(req.id, result)), *self._maybe_start_work(now)]

    def _authorize(self, req: Request, now: float) -> list[Event]:
        if not req.params or not isinstance(req.params[0], str) or not req.params[0].strip():
            raise errors.malformed("mining.authorize needs a username")
        password = req.params[1] if len(req.params) > 1 and isinstance(req.params[1], str) else ""
        self._pending_auth.add(req.id)
        return [AuthorizeRequested(req.id, req.params[0].strip(), password)]

    def authorize_result(self, request_id: Any, username: str, ok: bool, message: str | None, now: float) -> list[Event]:
        self._pending_auth.discard(request_id)
        if not ok:
            err = StratumError(errors.ErrorCode.UNAUTHORIZED, message or "Unauthorized worker", "unauthorized")
            return [Send(encode_error(request_id, err))]
        self.authorized.add(username)
        return [Send(encode_result(request_id, True)), *self._maybe_start_work(now)]

    def _configure(self, req: Request, now: float) -> list[Event]:
        if len(req.params) < 1 or not isinstance(req.params[0], list):
            raise errors.malformed("mining.configure needs a list of extensions")
        options = req.params[1] if len(req.params) > 1 and isinstance(req.params[1], dict) else {}
        result: dict[str, Any] = {}
        for ext in req.params[0]:
            if ext == "version-rolling":
                requested = options.get("version-rolling.mask", "ffffffff")
                if not isinstance(requested, str) or not _HEX8.match(requested):
                    result["version-rolling"] = "invalid version-rolling.mask"
                    continue
                mask = self.settings.version_mask & int(requested, 16)
                min_bits = options.get("version-rolling.min-bit-count", 0)
                if not isinstance(min_bits, int) or isinstance(min_bits, bool):
                    min_bits = 0
                if bin(mask).count("1") < min_bits or mask == 0:
                    result["version-rolling"] = False
                    continue
                self.version_mask = mask
                result["version-rolling"] = True
                result["version-rolling.mask"] = f"{mask:08x}"
            elif ext == "minimum-difficulty":
                value = options.get("minimum-difficulty.value")
                try:
                    floor = Fraction(str(value))
                except (TypeError, ValueError):
                    result["minimum-difficulty"] = False
                    continue
                if floor > 0:
                    self.vardiff.min_difficulty = max(self.settings.min_difficulty, floor)
                    self.difficulty = self.vardiff.clamp(self.difficulty)
                result["minimum-difficulty"] = True
            elif ext == "subscribe-extranonce":
                self.extranonce_subscribed = True
                result["subscribe-extranonce"] = True
            elif isinstance(ext, str):
                result[ext] = False
        return [Send(encode_result(req.id, result))]

    def _suggest_difficulty(self, req: Request, now: float) -> list[Event]:
        if not req.params or isinstance(req.params[0], bool) or not isinstance(req.params[0], (int, float, str)):
            raise errors.malformed("mining.suggest_difficulty needs a number")
        try:
            suggested = Fraction(str(req.params[0]))
        except (ValueError, ZeroDivisionError) as exc:
            raise errors.malformed("difficulty is not a number") from exc
        if suggested <= 0:
            raise errors.malformed("difficulty must be positive")
        out: list[Event] = [Send(encode_result(req.id, True))]
        new = self.vardiff.clamp(suggested, self.network_difficulty)
        if new != self.difficulty:
            self.difficulty = new
            if self._work_started:
                out.append(Send(self._set_difficulty_line()))
                self.vardiff.start(now)
        return out

    def _extranonce_subscribe(self, req: Request, now: float) -> list[Event]:
        self.extranonce_subscribed = True
        return [Send(encode_result(req.id, True))]

    def _submit(self, req: Request, now: float) -> list[Event]:
        p = req.params
        worker = p[0] if p and isinstance(p[0], str) else None

        def reject(err: StratumError) -> list[Event]:
            return [ShareRejected(req.id, worker, err), Send(encode_error(req.id, err))]

        if worker is None or worker not in self.authorized:
            return reject(errors.UNAUTHORIZED)
        if not self.subscribed:
            return reject(errors.NOT_SUBSCRIBED)
        if len(p) not in (5, 6) or not all(isinstance(x, str) for x in p):
            return reject(errors.malformed("mining.submit takes 5 or 6 string params"))
        _, job_id, en2_hex, ntime_hex, nonce_hex, *rest = p
        if not _HEX.match(en2_hex) or len(en2_hex) != 2 * self.settings.extranonce2_size:
            return reject(errors.BAD_EXTRANONCE2)
        job = self.jobs.get(job_id)
        if job is None:
            return reject(errors.UNKNOWN_JOB)
        if not _HEX8.match(ntime_hex):
            return reject(errors.malformed("ntime must be 8 hex digits"))
        ntime = int(ntime_hex, 16)
        if not job.ntime_min <= ntime <= job.ntime_max:
            return reject(errors.BAD_NTIME)
        if not _HEX8.match(nonce_hex):
            return reject(errors.malformed("nonce must be 8 hex digits"))
        version_bits = 0
        if rest:
            if not _HEX8.match(rest[0]):
                return reject(errors.malformed("version bits must be 8 hex digits"))
            version_bits = int(rest[0], 16)
            if version_bits & ~self.version_mask & 0xFFFFFFFF:
                return reject(errors.BAD_VERSION_BITS)
        extranonce2 = bytes.fromhex(en2_hex)
        nonce = int(nonce_hex, 16)
        key = (self.extranonce1, extranonce2, ntime, nonce, version_bits)
        if not self.jobs.first_sighting(job_id, key):
            return reject(errors.DUPLICATE)
        sent_at = self._job_difficulty.get(job_id, self.difficulty)
        share = Share(
            worker=worker,
            job=job,
            extranonce1=self.extranonce1,
            extranonce2=extranonce2,
            ntime=ntime,
            nonce=nonce,
            version_bits=version_bits,
            version_mask=self.version_mask,
            difficulty=min(sent_at, self.difficulty),
            stale=self.jobs.is_stale(job),
        )
        return [ShareSubmitted(req.id, share)]

    def share_result(self, request_id: Any, share: Share, error: StratumError | None, now: float) -> list[Event]:
        """The pool's verdict on a submitted share, as bytes for the miner."""
        if error is not None:
            return [Send(encode_error(request_id, error))]
        out: list[Event] = [Send(encode_result(request_id, True))]
        new = self.vardiff.on_share(now, self.difficulty, self.network_difficulty)
        if new is not None:
            self.difficulty = new
            out.append(Send(self._set_difficulty_line()))
        return out

    # --- server-initiated ----------------------------------------------------
    def _set_difficulty_line(self) -> bytes:
        return encode_notification("mining.set_difficulty", [difficulty_json(self.difficulty)])

    def _maybe_start_work(self, now: float) -> list[Event]:
        if self._work_started or not self.subscribed or not self.authorized:
            return []
        self._work_started = True
        self.vardiff.start(now)
        out: list[Event] = [Send(self._set_difficulty_line())]
        if self.jobs.current is not None:
            out.append(Send(self._record_job(self.jobs.current)))
        return out

    def _record_job(self, job: StratumJob) -> bytes:
        self._job_difficulty[job.job_id] = self.difficulty
        if len(self._job_difficulty) > self.jobs.max_jobs:
            for stale_id in list(self._job_difficulty)[: -self.jobs.max_jobs]:
                del self._job_difficulty[stale_id]
        return job.notify_line

    @property
    def working(self) -> bool:
        return self._work_started

    def job_notification(self, job: StratumJob) -> bytes | None:
        """Bytes announcing ``job`` to this connection, or None before work started."""
        if not self._work_started:
            return None
        return self._record_job(job)

    def tick(self, now: float) -> list[Event]:
        """Periodic: lower the difficulty of a miner that has gone quiet."""
        if not self._work_started:
            return []
        new = self.vardiff.on_tick(now, self.difficulty, self.network_difficulty)
        if new is None:
            return []
        self.difficulty = new
        return [Send(self._set_difficulty_line())]

    def reconnect(self, host: str | None = None, port: int | None = None, wait: int = 0) -> bytes:
        params: list[Any] = [] if host is None else [host, port, wait]
        return encode_notification("client.reconnect", params)

    def show_message(self, text: str) -> bytes:
        return encode_notification("client.show_message", [text])


_HANDLERS = {
    "mining.subscribe": ServerConnection._subscribe,
    "mining.authorize": ServerConnection._authorize,
    "mining.configure": ServerConnection._configure,
    "mining.suggest_difficulty": ServerConnection._suggest_difficulty,
    "mining.extranonce.subscribe": ServerConnection._extranonce_subscribe,
    "mining.submit": ServerConnection._submit,
}
