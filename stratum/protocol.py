"""The Stratum V1 connection state machine, free of I/O.

Lines go in, events come out (h11 style): ``Send`` carries bytes for the
socket; ``AuthorizeRequested`` and ``ShareSubmitted`` ask the pool for a
decision, which comes back through ``authorize_result``/``share_result``.
Everything is deterministic given the ``now`` passed in, so the whole
protocol is tested without a network or a clock.

The rules it implements (docs/stratum.md has the full story):

* Messages are accepted in any order firmware sends them: ``mining.configure``
  before ``mining.subscribe``, ``mining.authorize`` before or after it,
  ``mining.suggest_difficulty`` before or after authorize.  Work (the first
  ``mining.set_difficulty`` + ``mining.notify``) starts once the connection
  is both subscribed and authorized.
* Every request gets an answer with its id echoed verbatim; unknown methods
  get error 20, never silence.
* Difficulty: a share is judged at the difficulty recorded for the job id it
  names, which is the difficulty in force when that job was sent, lowered to
  any lower difficulty set since.  A difficulty change is announced with
  ``mining.set_difficulty`` followed by the current work under a new job id
  (clean_jobs=false): firmware that applies the new difficulty at the next
  notify (cgminer, bmminer) switches at once, firmware that applies it
  immediately (ESP-Miner) is never refused for it, no job is ever sent twice
  under one id and no work is thrown away.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from . import errors
from .errors import StratumError
from .extranonce import ExtranonceExhausted, SessionRegistry
from .jobs import JobBook, StratumJob
from .messages import (
    NO_ID,
    MessageError,
    Request,
    Response,
    decode_json,
    encode_error,
    encode_notification,
    encode_result,
    encode_set_difficulty,
    parse_message,
)
from .vardiff import Vardiff, VardiffSettings

_MASK = re.compile(r"^(?:0[xX])?([0-9a-fA-F]{1,8})$")
_LEGACY_SUGGEST = re.compile(r"^mining\.suggest_difficulty\s*\(\s*([^)]*?)\s*\)$")
_DIFF1_TARGET = 0xFFFF << 208
_U32 = 0xFFFFFFFF

# --- events -----------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Bytes for this connection's socket."""

    data: bytes


@dataclass(frozen=True)
class AuthorizeRequested:
    """The pool must accept or refuse a worker name (answer with ``authorize_result``)."""

    request_id: Any
    username: str
    password: str


class Share(NamedTuple):
    """A submit that passed every protocol check; the pool hashes and judges it.

    ``job`` is the pool's job (``job.job_id`` is the pool's id even when the
    miner named a re-issued id, kept in ``wire_job_id``).  ``difficulty`` is
    the difficulty to judge at; ``stale`` means the job is from an older
    chain tip (refuse with ``errors.STALE_JOB`` unless the share solves a
    block).

    A NamedTuple, so the one made per share is built by ``tuple.__new__`` alone
    (in ``_submit_params``); ``_replace`` makes a changed copy.
    """

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
    wire_job_id: str = ""

    @property
    def version(self) -> int:
        """The header version: BIP310 ``(job_version & ~mask) | (bits & mask)``."""
        return (self.job.version & ~self.version_mask & _U32) | (self.version_bits & self.version_mask)

    @property
    def duplicate_key(self) -> bytes:
        """What identifies the header (see ``JobBook``): extranonce1, extranonce2, then
        ntime, nonce and the resulting version as 4 big-endian bytes each."""
        return duplicate_key(self.extranonce1, self.extranonce2, self.ntime, self.nonce, self.version)


def duplicate_key(extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int, version: int) -> bytes:
    # One bytes object (~60 B) rather than a tuple of five (~250 B with its members):
    # a pool keeps every share key of every live job of the current tip.
    return b"".join((extranonce1, extranonce2, ntime.to_bytes(4, "big"), nonce.to_bytes(4, "big"), version.to_bytes(4, "big")))


class ShareSubmitted(NamedTuple):
    """A share for the pool to judge (answer with ``share_result``); a NamedTuple,
    as ``Share``: one is made per submit."""

    request_id: Any
    share: Share


@dataclass(frozen=True)
class ShareRejected:
    """A submit refused by the protocol itself (it never reached the pool)."""

    request_id: Any
    worker: str | None
    error: StratumError


@dataclass(frozen=True)
class Superseded:
    """``connection`` lost its session to this one (a resume); close its socket."""

    connection: ServerConnection


@dataclass(frozen=True)
class Close:
    reason: str


Event = Send | AuthorizeRequested | ShareSubmitted | ShareRejected | Superseded | Close


@dataclass(frozen=True)
class ProtocolSettings:
    extranonce2_size: int = 4
    version_mask: int = 0x1FFFE000
    start_difficulty: Fraction = Fraction(1)
    min_difficulty: Fraction = Fraction(1, 100000)
    max_difficulty: Fraction | None = None
    target_share_interval: float = 10.0
    #: Flood floor: the difficulty is raised at once when shares come faster than this.
    max_share_rate: float = 1.0
    #: Job ids (including re-issued ones) each connection remembers.
    max_jobs: int = 64
    #: Undecodable lines tolerated before the connection is closed.
    max_bad_lines: int = 16

    def __post_init__(self) -> None:
        if not 4 <= self.extranonce2_size <= 8:
            raise ValueError("extranonce2_size must be 4..8 bytes (above 8 breaks cgminer-based firmware)")
        if not 0 <= self.version_mask <= _U32:
            raise ValueError("version_mask must be a 32-bit value")
        if self.start_difficulty <= 0:
            raise ValueError("start_difficulty must be positive")
        # Validates the difficulty bounds and rates; one instance shared by every connection.
        object.__setattr__(
            self,
            "_vardiff",
            VardiffSettings(
                target_interval=self.target_share_interval,
                min_difficulty=self.min_difficulty,
                max_difficulty=self.max_difficulty,
                max_share_rate=self.max_share_rate,
            ),
        )

    def vardiff(self) -> VardiffSettings:
        return self._vardiff  # type: ignore[attr-defined,no-any-return]


@dataclass(slots=True)
class SentJob:
    """A job id as this connection knows it (``ServerConnection.sent_job``)."""

    job: StratumJob
    difficulty: Fraction  # what a share on it is judged at
    extranonce1: bytes  # in force when it was sent (mining.set_extranonce applies to later jobs)


class _Sent:
    """A stretch of a connection's job book: job ids sent one after another, judged alike.

    Either a *run* of broadcast jobs (``JobBook`` sequence numbers
    ``first..last``, sent consecutively while the difficulty and extranonce1
    stayed the same: a broadcast extends the run by assigning ``last``) or a
    single *explicit* id (``wire_id``: a re-issued ``job_id.n``, or a job
    that is not the book's) with its ``job``.  ``difficulty`` is what a share
    on them is judged at: the difficulty in force when they were sent,
    lowered by every lower difficulty set since.
    """

    __slots__ = ("difficulty", "extranonce1", "first", "job", "last", "wire_id")

    def __init__(
        self, first: int, last: int, wire_id: str | None, job: StratumJob | None, difficulty: Fraction, extranonce1: bytes
    ) -> None:
        self.first = first
        self.last = last
        self.wire_id = wire_id
        self.job = job
        self.difficulty = difficulty
        self.extranonce1 = extranonce1


#: ``first``/``last`` of an explicit entry (no sequence number is ever this).
_NO_SEQ = -2


@dataclass
class _Carry:
    """What a session hands to its resumption."""

    difficulty: Fraction
    vardiff: Vardiff
    sent: list[_Sent]
    latest: StratumJob | None
    last_suggestion: Fraction | None
    #: Re-issue ids used so far: the resumed session continues the count (an id is never sent twice).
    reissues: int = 0
    #: The job book's counters (see ServerConnection): entries, highest sequence number, explicit entries.
    counts: tuple[int, int, int] = (0, 0, 0)


_new = object.__new__
_set = object.__setattr__
_tuple_new = tuple.__new__
_fromhex = bytes.fromhex
_from_bytes = int.from_bytes


def _send(data: bytes) -> Send:
    """``Send(data)`` without the frozen dataclass's ``object.__setattr__`` (one per share answered)."""
    event = _new(Send)
    _set(event, "__dict__", {"data": data})
    return event


def parse_difficulty(raw: Any, *, allow_zero: bool = False) -> Fraction | None:
    """A difficulty from JSON (int, float or numeric string); None if it is not one."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        # A float goes through its shortest decimal form: 0.00015 means 15/100000.
        value = Fraction(raw.strip() if isinstance(raw, str) else str(raw) if isinstance(raw, float) else raw)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    if value < 0 or (value == 0 and not allow_zero):
        return None
    return value


def _parse_mask(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw <= _U32 else None
    if isinstance(raw, str):
        m = _MASK.match(raw.strip())
        return int(m.group(1), 16) if m else None
    return None


def _parse_count(raw: Any) -> int:
    """min-bit-count as firmware sends it (int, float, numeric string); 0 if unusable."""
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, (int, float)) and math.isfinite(raw):
        return max(0, min(32, int(raw)))
    if isinstance(raw, str) and raw.strip().isdigit():
        return min(32, int(raw.strip()))
    return 0


class ServerConnection:
    """One miner's Stratum session (see module docstring for the rules).

    Slotted and lean: tens of thousands are held per process, and their
    objects are what the cyclic GC walks (per connection: itself, its vardiff,
    its job book list and a stretch or two in it; a broadcast adds none).
    """

    __slots__ = (
        "_bad_lines",
        "_count",
        "_explicit",
        "_extranonce1s",
        "_info",
        "_last_suggestion",
        "_latest",
        "_max_seq",
        "_net_checked",
        "_reissues",
        "_sent",
        "_tail",
        "_worker",
        "_workers",
        "closed",
        "difficulty",
        "extranonce1",
        "extranonce_subscribed",
        "jobs",
        "min_bit_count",
        "network_difficulty",
        "pool_version_mask",
        "requested_mask",
        "resumed",
        "session_id",
        "sessions",
        "settings",
        "subscribed",
        "superseded",
        "user_agent",
        "vardiff",
        "working",
    )

    def __init__(
        self,
        settings: ProtocolSettings | None = None,
        jobs: JobBook | None = None,
        sessions: SessionRegistry | None = None,
        *,
        version_mask: int | None = None,
        network_difficulty: Fraction | None = None,
    ) -> None:
        self.settings = settings or ProtocolSettings()
        self.jobs = jobs if jobs is not None else JobBook()
        self.sessions = sessions if sessions is not None else SessionRegistry()
        self.pool_version_mask = self.settings.version_mask if version_mask is None else version_mask
        self.network_difficulty = network_difficulty
        self.requested_mask: int | None = None  # None until mining.configure negotiates rolling
        self.min_bit_count = 0
        self.session_id: str | None = None
        self.extranonce1: bytes | None = None
        #: Every extranonce1 of the session, when there is more than ``extranonce1`` (mining.set_extranonce).
        self._extranonce1s: tuple[bytes, ...] | None = None
        self.subscribed = False
        self.resumed = False
        self.user_agent = ""
        self._info: dict[str, str] | None = None
        #: Authorized worker names: the first, and a set of any others.
        self._worker: str | None = None
        self._workers: set[str] | None = None
        self.extranonce_subscribed = False
        self.working = False
        self.superseded = False
        self.closed = False
        self.vardiff = Vardiff(self.settings.vardiff())
        self.difficulty = self.vardiff.clamp(self.settings.start_difficulty, network_difficulty)
        # The job book: every job id sent (at most max_jobs, oldest forgotten first), as
        # stretches in the order sent; the last one is ``_tail``.  ``_count`` ids in all,
        # ``_explicit`` of them explicit; ``_max_seq``: the highest sequence number in a run.
        self._sent: list[_Sent] = []
        self._tail: _Sent | None = None
        self._count = 0
        self._explicit = 0
        self._max_seq = 0
        self._latest: StratumJob | None = None
        self._reissues = 0
        self._last_suggestion: Fraction | None = None
        self._bad_lines = 0
        #: The network difficulty this connection's difficulty was last checked against.
        self._net_checked: Fraction | None = None

    # --- properties ---------------------------------------------------------------
    @property
    def version_mask(self) -> int:
        """The effective mask: the pool's intersected with the miner's (0 without rolling)."""
        if self.requested_mask is None:
            return 0
        return self.pool_version_mask & self.requested_mask

    @property
    def version_rolling_degraded(self) -> bool:
        """Fewer rollable bits than the miner's min-bit-count (BIP310: it runs degraded)."""
        return self.requested_mask is not None and self.version_mask.bit_count() < self.min_bit_count

    @property
    def bad_lines(self) -> int:
        """Undecodable lines received so far (the server counts them against the sender's address)."""
        return self._bad_lines

    @property
    def authorized(self) -> frozenset[str]:
        """The worker names authorized on this connection."""
        if self._worker is None:
            return frozenset()
        return frozenset((self._worker, *(self._workers or ())))

    @property
    def info(self) -> dict[str, str]:
        """The ``info.*`` values of mining.configure (empty if none were sent)."""
        return self._info if self._info is not None else {}

    def _authorize_worker(self, worker: str) -> None:
        if self._worker is None:
            self._worker = worker
        elif worker != self._worker:
            if self._workers is None:
                self._workers = set()
            self._workers.add(worker)

    def _all_extranonce1s(self) -> tuple[bytes, ...]:
        if self._extranonce1s is not None:
            return self._extranonce1s
        return () if self.extranonce1 is None else (self.extranonce1,)

    def sent_job(self, wire_id: str) -> SentJob | None:
        """What a share on ``wire_id`` would be judged with (a snapshot).

        None if this connection was not sent that id, has forgotten it, or
        the pool's ``JobBook`` no longer holds its job (a share on it is an
        unknown job either way).
        """
        entry = self._find(wire_id)
        if entry is None:
            return None
        job = entry.job if entry.job is not None else self.jobs.get(wire_id)
        if job is None or self.jobs.get(job.job_id) is None:
            return None
        return SentJob(job, entry.difficulty, entry.extranonce1)

    # --- input ----------------------------------------------------------------
    def receive_line(self, line: bytes, now: float) -> list[Event]:
        if self.superseded:
            return [Close("session resumed on another connection")]
        try:
            obj = decode_json(line)
        except (ValueError, UnicodeDecodeError):
            return self._bad_line(errors.malformed("not JSON"), None)
        if type(obj) is dict and obj.get("method") == "mining.submit":
            # The one message that comes all the time goes straight to its handler
            # (parse_message would build a Request; the checks are the same).
            params = obj.get("params", [])
            if type(params) is list:
                req_id = obj.get("id", NO_ID)
                return self._submit_params(None if req_id is NO_ID else req_id, params)
        try:
            msg = parse_message(obj)
        except MessageError as exc:
            return self._bad_line(exc.error, exc.request_id)
        if isinstance(msg, Response):
            return []  # e.g. an answer to client.get_version: nothing to do
        return self.receive(msg, now)

    def _bad_line(self, error: StratumError, request_id: Any) -> list[Event]:
        self._bad_lines += 1
        out: list[Event] = [Send(encode_error(request_id, error))]
        if self._bad_lines >= self.settings.max_bad_lines:
            out.append(Close("too many malformed messages"))
        return out

    def receive(self, req: Request, now: float) -> list[Event]:
        """A parsed request."""
        handler = _HANDLERS.get(req.method)
        try:
            if handler is not None:
                return handler(self, req, now)
            legacy = _LEGACY_SUGGEST.match(req.method)
            if legacy is not None:  # ckpool's "mining.suggest_difficulty(512)" form
                return self._suggest_value(req, legacy.group(1), now)
        except StratumError as err:
            return [Send(encode_error(req.reply_id, err))]
        return [Send(encode_error(req.reply_id, errors.unknown_method(req.method)))]

    # --- methods ----------------------------------------------------------------
    def _subscribe_result(self) -> list[Any]:
        assert self.session_id is not None and self.extranonce1 is not None
        return [
            [["mining.set_difficulty", self.session_id], ["mining.notify", self.session_id]],
            self.extranonce1.hex(),
            self.settings.extranonce2_size,
        ]

    def _subscribe(self, req: Request, now: float) -> list[Event]:
        params = req.params
        if params and isinstance(params[0], str):
            # Interned: thousands of miners run the same firmware, one string serves them all.
            agent = params[0][:128]
            self.user_agent = sys.intern(agent) if type(agent) is str else agent
        if self.subscribed:  # a repeated subscribe changes nothing
            return [Send(encode_result(req.reply_id, self._subscribe_result()))]
        events: list[Event] = []
        offered = params[1] if len(params) > 1 and isinstance(params[1], str) and params[1] else None
        if offered is not None:
            events += self._resume(offered[:64], now)
        if self.session_id is None:
            try:
                self.session_id, extranonce1 = self.sessions.open(self)
            except ExtranonceExhausted:
                return [Send(encode_error(req.reply_id, errors.SERVER_FULL)), Close("extranonce1 space exhausted")]
            self._extranonce1s = None
            self.extranonce1 = extranonce1
        self.subscribed = True
        return [Send(encode_result(req.reply_id, self._subscribe_result())), *events, *self._maybe_start_work(now)]

    def _resume(self, session_id: str, now: float) -> list[Event]:
        parked, previous = self.sessions.resume(session_id, self, now)
        events: list[Event] = []
        if parked is not None:
            carry, extranonce1s = parked.state, parked.extranonce1s
        elif isinstance(previous, ServerConnection):
            carry, extranonce1s = previous._surrender()
            events.append(Superseded(previous))
        else:
            return []
        self.session_id = session_id
        self._extranonce1s = tuple(extranonce1s) if len(extranonce1s) > 1 else None
        self.extranonce1 = extranonce1s[-1]
        self.resumed = True
        if isinstance(carry, _Carry):
            self.difficulty = carry.difficulty
            self._net_checked = None
            self.vardiff = carry.vardiff
            self._sent = carry.sent
            self._tail = carry.sent[-1] if carry.sent else None
            self._count, self._max_seq, self._explicit = carry.counts
            self._latest = carry.latest
            self._last_suggestion = carry.last_suggestion
            self._reissues = carry.reissues
        return events

    def _carry(self) -> _Carry:
        counts = (self._count, self._max_seq, self._explicit)
        return _Carry(self.difficulty, self.vardiff, self._sent, self._latest, self._last_suggestion, self._reissues, counts)

    def _surrender(self) -> tuple[_Carry, tuple[bytes, ...]]:
        """Hand session state to a resuming connection; this one is finished."""
        self.superseded = True
        self.working = False
        return self._carry(), self._all_extranonce1s()

    def connection_closed(self, now: float) -> None:
        """The socket is gone: park the session for resumption (or release it)."""
        if self.closed:
            return
        self.closed = True
        self.working = False
        if self.session_id is not None and not self.superseded:
            self.sessions.close(self.session_id, self, self._all_extranonce1s(), self._carry(), now)

    def _authorize(self, req: Request, now: float) -> list[Event]:
        params = req.params
        if not params or not isinstance(params[0], str) or not params[0].strip():
            raise errors.malformed("mining.authorize needs a worker name")
        password = params[1] if len(params) > 1 and isinstance(params[1], str) else ""
        return [AuthorizeRequested(req.reply_id, params[0].strip(), password)]

    def authorize_result(self, request_id: Any, username: str, ok: bool, message: str | None, now: float) -> list[Event]:
        """The pool's answer to ``AuthorizeRequested``."""
        if not ok:
            err = errors.UNAUTHORIZED if not message else StratumError(errors.ErrorCode.UNAUTHORIZED, message, "unauthorized")
            return [Send(encode_error(request_id, err, result=False))]
        self._authorize_worker(username)
        return [Send(encode_result(request_id, True)), *self._maybe_start_work(now)]

    def _configure(self, req: Request, now: float) -> list[Event]:
        params = req.params
        if not params or not isinstance(params[0], list):
            raise errors.malformed("mining.configure needs a list of extensions")
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        result: dict[str, Any] = {}
        later: list[Event] = []
        for ext in params[0]:
            if not isinstance(ext, str):
                continue
            if ext == "version-rolling":
                result.update(self._configure_version_rolling(options))
            elif ext == "minimum-difficulty":
                accepted, events = self._configure_minimum_difficulty(options, now)
                result["minimum-difficulty"] = accepted
                later += events
            elif ext == "subscribe-extranonce":
                self.extranonce_subscribed = True
                result[ext] = True
            elif ext == "info":
                self._info = {
                    k: str(v)[:128] for k, v in options.items() if k.startswith("info.") and isinstance(v, (str, int, float))
                }
                result[ext] = True
            else:
                result[ext] = False
        return [Send(encode_result(req.reply_id, result)), *later]

    def _configure_version_rolling(self, options: dict[str, Any]) -> dict[str, Any]:
        mask = _parse_mask(options.get("version-rolling.mask", "ffffffff"))
        if mask is None:
            return {"version-rolling": "version-rolling.mask must be up to 8 hex digits"}
        effective = self.pool_version_mask & mask
        if effective == 0:
            self.requested_mask = None
            return {"version-rolling": False}
        # The usual masks as the shared int objects, not one 32-byte int per connection.
        self.requested_mask = self.pool_version_mask if mask == self.pool_version_mask else _U32 if mask == _U32 else mask
        self.min_bit_count = _parse_count(options.get("version-rolling.min-bit-count", 0))
        return {"version-rolling": True, "version-rolling.mask": f"{effective:08x}"}

    def _configure_minimum_difficulty(self, options: dict[str, Any], now: float) -> tuple[bool, list[Event]]:
        value = parse_difficulty(options.get("minimum-difficulty.value"), allow_zero=True)
        if value is None:
            return False, []
        if value == 0:  # BIP310: 0 switches the feature off
            self.vardiff.requested_floor = None
            return True, []
        limit = self.settings.max_difficulty
        if limit is not None and value > limit:
            return False, []
        self.vardiff.requested_floor = value
        if self.difficulty >= value:
            return True, []
        new = self.vardiff.clamp(value, self.network_difficulty, floor=self.vardiff.floor())
        return True, self._change_difficulty(new, now)

    def _suggest_difficulty(self, req: Request, now: float) -> list[Event]:
        return self._suggest_value(req, req.params[0] if req.params else None, now)

    def _suggest_value(self, req: Request, raw: Any, now: float) -> list[Event]:
        value = parse_difficulty(raw)
        if value is None:
            raise errors.malformed("mining.suggest_difficulty needs a positive number")
        return self._suggest(req, value, now)

    def _suggest_target(self, req: Request, now: float) -> list[Event]:
        raw = req.params[0] if req.params else None
        if not isinstance(raw, str) or not re.fullmatch(r"[0-9a-fA-F]{1,64}", raw) or int(raw, 16) == 0:
            raise errors.malformed("mining.suggest_target needs a 256-bit hex target")
        return self._suggest(req, Fraction(_DIFF1_TARGET, int(raw, 16)), now)

    def _suggest(self, req: Request, value: Fraction, now: float) -> list[Event]:
        """A starting hint, not a floor: it sets the difficulty, vardiff moves on from it.

        Repeating the same suggestion changes nothing (NerdMiner sends its
        suggestion again as a keepalive), so vardiff's work is not undone.
        """
        out: list[Event] = [] if req.is_notification else [Send(encode_result(req.reply_id, True))]
        if value == self._last_suggestion:
            return out
        self._last_suggestion = value
        new = self.vardiff.clamp(value, self.network_difficulty, floor=self.vardiff.floor())
        if self.working:
            self.vardiff.restart_probe(now)
        return out + self._change_difficulty(new, now)

    def _extranonce_subscribe(self, req: Request, now: float) -> list[Event]:
        self.extranonce_subscribed = True
        return [Send(encode_result(req.reply_id, True))]

    def _get_transactions(self, req: Request, now: float) -> list[Event]:
        return [Send(encode_result(req.reply_id, []))]

    def _submit(self, req: Request, now: float) -> list[Event]:
        return self._submit_params(req.reply_id, req.params)

    def _submit_params(self, reply_id: Any, params: list[Any]) -> list[Event]:
        """mining.submit: every check in a fixed order, the first failure is the answer."""
        worker = params[0].strip() if params and isinstance(params[0], str) else None
        if worker is None or not (worker == self._worker or (self._workers is not None and worker in self._workers)):
            return self._reject(reply_id, worker, errors.UNAUTHORIZED)
        en1 = self.extranonce1
        if not self.subscribed or en1 is None:
            return self._reject(reply_id, worker, errors.NOT_SUBSCRIBED)
        count = len(params)
        if count != 5 and count != 6:
            return self._reject(reply_id, worker, errors.malformed(f"mining.submit takes 5 or 6 params, got {count}"))
        job_id, en2_hex, ntime_hex, nonce_hex = params[1:5]
        # (type() rather than isinstance(): JSON gives exact strs, and it is cheaper)
        if not (type(job_id) is str and type(en2_hex) is str and type(ntime_hex) is str and type(nonce_hex) is str):
            return self._reject(reply_id, worker, errors.malformed("job id, extranonce2, ntime and nonce must be strings"))
        size = self.settings.extranonce2_size
        # bytes.fromhex skips whitespace between bytes, so at the expected length the
        # result is short unless every character is a hex digit (as the regex asks).
        try:
            extranonce2: bytes | None = _fromhex(en2_hex) if len(en2_hex) == 2 * size else None
        except ValueError:
            extranonce2 = None
        if extranonce2 is None or len(extranonce2) != size:
            return self._reject(reply_id, worker, errors.BAD_EXTRANONCE2.with_detail(f"expected {size} bytes ({2 * size} hex digits)"))
        book = self.jobs
        # _find, inlined: the miner's share is almost always on a job of the last run.
        seq = book._seqs.get(job_id)
        tail = self._tail
        if seq is not None and tail is not None and tail.first <= seq <= tail.last:
            entry: _Sent | None = tail
        else:
            entry = self._find(job_id)
            if entry is None:
                return self._reject(reply_id, worker, errors.UNKNOWN_JOB)
        job = entry.job  # type: ignore[union-attr]
        if job is None:  # in a run: the book's job of that id
            job = book.get(job_id)
            if job is None:
                return self._reject(reply_id, worker, errors.UNKNOWN_JOB)
        elif book.get(job.job_id) is None:
            return self._reject(reply_id, worker, errors.UNKNOWN_JOB)
        # 8 hex digits, as for extranonce2: 4 bytes from fromhex at that length means
        # every character is a hex digit (int(x, 16) would take "0x", signs, "_").
        try:
            ntime_raw = _fromhex(ntime_hex) if len(ntime_hex) == 8 else b""
        except ValueError:
            ntime_raw = b""
        if len(ntime_raw) != 4:
            return self._reject(reply_id, worker, errors.malformed("ntime must be 8 hex digits"))
        ntime = _from_bytes(ntime_raw, "big")
        if not job.ntime_min <= ntime <= job.ntime_max:
            return self._reject(reply_id, worker, errors.BAD_NTIME)
        try:
            nonce_raw = _fromhex(nonce_hex) if len(nonce_hex) == 8 else b""
        except ValueError:
            nonce_raw = b""
        if len(nonce_raw) != 4:
            return self._reject(reply_id, worker, errors.malformed("nonce must be 8 hex digits"))
        nonce = _from_bytes(nonce_raw, "big")
        requested = self.requested_mask
        mask = 0 if requested is None else self.pool_version_mask & requested
        version_bits = 0
        if count == 6:
            bits_hex = params[5]
            if bits_hex is not None:
                try:
                    raw = _fromhex(bits_hex) if type(bits_hex) is str and len(bits_hex) == 8 else b""
                except ValueError:
                    raw = b""
                if len(raw) != 4:
                    return self._reject(reply_id, worker, errors.malformed("version bits must be 8 hex digits"))
                version_bits = _from_bytes(raw, "big")
                if version_bits & ~mask & _U32:
                    if requested is None:
                        return self._reject(reply_id, worker, errors.VERSION_ROLLING_OFF)
                    return self._reject(reply_id, worker, errors.BAD_VERSION_BITS.with_detail(f"mask is {mask:08x}"))
        extranonce1 = entry.extranonce1  # type: ignore[union-attr]
        # Share.duplicate_key, from the bytes at hand rather than through two properties.
        version = (job.version & ~mask & _U32) | (version_bits & mask)
        key = b"".join((extranonce1, extranonce2, ntime_raw, nonce_raw, version.to_bytes(4, "big")))
        if not book.first_sighting(job.job_id, key):
            return self._reject(reply_id, worker, errors.DUPLICATE)
        # Share(...) without the NamedTuple's Python-level __new__ (fields in its order).
        share = _tuple_new(Share, (
            worker, job, extranonce1, extranonce2, ntime, nonce, version_bits, mask,
            entry.difficulty,  # type: ignore[union-attr]
            job.generation < book.generation,  # JobBook.is_stale
            job_id,
        ))
        return [_tuple_new(ShareSubmitted, (reply_id, share))]

    @staticmethod
    def _reject(reply_id: Any, worker: str | None, err: StratumError) -> list[Event]:
        return [ShareRejected(reply_id, worker, err), Send(encode_error(reply_id, err))]

    def share_result(self, request_id: Any, share: Share, error: StratumError | None, now: float) -> list[Event]:
        """The pool's verdict on a submitted share, as bytes for the miner."""
        if error is not None:
            if error.retryable:
                self.jobs.forget(share.job.job_id, share.duplicate_key)
            return [Send(encode_error(request_id, error))]
        if type(request_id) is int:
            reply = b'{"id":%d,"result":true,"error":null}\n' % request_id
        else:
            reply = encode_result(request_id, True)
        if not self.working:
            return [_send(reply)]
        new = self.vardiff.on_share(now, share.difficulty, self.difficulty, self.network_difficulty)
        if new is None:
            return [_send(reply)]
        return [_send(reply), *self._change_difficulty(new, now)]

    # --- difficulty and jobs ---------------------------------------------------
    def _change_difficulty(self, new: Fraction, now: float, *, reissue: bool = True) -> list[Event]:
        """Set a new difficulty; announce it (and re-issue the work) if working.

        A decrease also lowers the difficulty of every job already sent, so a
        miner that applies set_difficulty immediately is not refused for it.
        """
        if new == self.difficulty:
            return []
        if new < self.difficulty:
            for entry in self._sent:  # a handful of stretches
                if new < entry.difficulty:
                    entry.difficulty = new
        self.difficulty = new
        self._net_checked = None
        if not self.working:
            return []
        out: list[Event] = [Send(encode_set_difficulty(new))]
        if reissue:
            out += self._reissue_current()
        return out

    def _reissue_current(self) -> list[Event]:
        job = self._latest
        if job is None or self.jobs.is_stale(job) or self.jobs.get(job.job_id) is None:
            return []
        self._reissues += 1
        wire_id = f"{job.job_id}.{self._reissues:x}"
        self._record(wire_id, job, reissue=True)
        return [Send(job.reissue_line(wire_id))]

    def _find(self, wire_id: str) -> _Sent | None:
        """The stretch of the job book holding ``wire_id`` (None: not sent, or forgotten)."""
        seq = self.jobs.seq_of(wire_id)
        for entry in reversed(self._sent):
            if entry.wire_id is None:
                if seq is not None and entry.first <= seq <= entry.last:
                    return entry
            elif entry.wire_id == wire_id:
                return entry
        return None

    def _take(self, wire_id: str) -> _Sent | None:
        """Remove ``wire_id`` from the job book; what it was recorded with (a detached copy), or None."""
        sent = self._sent
        seq = self.jobs.seq_of(wire_id)
        for i in range(len(sent) - 1, -1, -1):
            entry = sent[i]
            if entry.wire_id is None:
                if seq is None or not entry.first <= seq <= entry.last:
                    continue
                known = _Sent(seq, seq, None, None, entry.difficulty, entry.extranonce1)
                if entry.first == entry.last:
                    del sent[i]
                elif seq == entry.first:
                    entry.first = seq + 1
                elif seq == entry.last:
                    entry.last = seq - 1
                else:  # from the middle of a run: split it
                    sent.insert(i + 1, _Sent(seq + 1, entry.last, None, None, entry.difficulty, entry.extranonce1))
                    entry.last = seq - 1
            elif entry.wire_id == wire_id:
                known = entry
                del sent[i]
                self._explicit -= 1
            else:
                continue
            self._count -= 1
            self._tail = sent[-1] if sent else None
            return known
        return None

    def _record(self, wire_id: str, job: StratumJob, *, reissue: bool = False) -> None:
        """Remember ``wire_id`` as sent now (the newest id; the oldest beyond max_jobs is forgotten).

        An id sent again moves to the end, keeping the lower difficulty it had
        if it is the same job under the same extranonce1.
        """
        extranonce1 = self.extranonce1
        assert extranonce1 is not None
        difficulty = self.difficulty
        known = self._take(wire_id)
        if known is not None and known.extranonce1 == extranonce1:
            same_job = known.job is job if known.job is not None else wire_id == job.job_id
            if same_job and known.difficulty < difficulty:
                difficulty = known.difficulty
        seq = None if reissue else self.jobs.seq(job)
        tail = self._tail
        if (
            seq is not None
            and tail is not None
            and tail.last == seq - 1
            and tail.difficulty is difficulty
            and tail.extranonce1 is extranonce1
        ):
            tail.last = seq
        else:
            if seq is None:
                entry = _Sent(_NO_SEQ, _NO_SEQ, wire_id, job, difficulty, extranonce1)
                self._explicit += 1
            else:
                entry = _Sent(seq, seq, None, None, difficulty, extranonce1)
            self._sent.append(entry)
            self._tail = entry
        if seq is not None and seq > self._max_seq:
            self._max_seq = seq
        self._latest = job
        self._count += 1
        self._forget_oldest()

    def _find_explicit(self, wire_id: str) -> bool:
        return any(entry.wire_id == wire_id for entry in self._sent)

    def _forget_oldest(self) -> None:
        """Forget the oldest ids beyond max_jobs."""
        limit = self.settings.max_jobs
        sent = self._sent
        while self._count > limit:
            oldest = sent[0]
            if oldest.wire_id is None and oldest.first < oldest.last:
                oldest.first += 1
            else:
                del sent[0]
                if oldest.wire_id is not None:
                    self._explicit -= 1
                if not sent:
                    self._tail = None
            self._count -= 1

    def _cap_to_network(self, now: float) -> list[Event]:
        net = self.network_difficulty
        if net is None or self.difficulty <= net:
            return []
        return self._change_difficulty(self.vardiff.clamp(self.difficulty, net), now, reissue=False)

    def _maybe_start_work(self, now: float) -> list[Event]:
        if self.working or self.superseded or not self.subscribed or self._worker is None:
            return []
        self._cap_to_network(now)  # not yet working: silently lowers
        self.working = True
        self.vardiff.begin(now)
        out: list[Event] = [Send(encode_set_difficulty(self.difficulty))]
        job = self.jobs.current
        if job is not None:
            self._record(job.job_id, job)
            out.append(Send(job.notify_line))
        return out

    def job_notification(self, job: StratumJob, now: float = 0.0, network_difficulty: Fraction | None = None) -> bytes | None:
        """Bytes announcing ``job`` to this connection; None before work started.

        Runs once per connection per broadcast, so the common case allocates
        nothing and returns ``job.notify_line`` itself (serialised once for
        every connection): the job extends the connection's last run of
        broadcast jobs (one integer assigned), and the difficulty is compared
        with the network difficulty only when either changed (the server
        passes the same ``Fraction`` to every connection).  A difficulty above
        a lowered network difficulty is corrected first, with a
        set_difficulty in front.
        """
        if network_difficulty is not None:
            self.network_difficulty = network_difficulty
        if not self.working:
            return None
        prefix = b""
        net = self.network_difficulty
        if net is not None and net is not self._net_checked:
            if self.difficulty > net:
                prefix = b"".join(e.data for e in self._cap_to_network(now) if isinstance(e, Send))
            self._net_checked = net
        # _record's common case, inlined: the job is the book's newest and extends the last
        # run (same difficulty and extranonce1, nothing recorded since but runs).
        book = self.jobs
        tail = self._tail
        if (
            job is book.current
            and tail is not None
            and tail.last == self._max_seq
            and book.current_seq == tail.last + 1
            and tail.difficulty is self.difficulty
            and tail.extranonce1 is self.extranonce1
            and not (self._explicit and self._find_explicit(job.job_id))
        ):
            tail.last = self._max_seq = book.current_seq
            self._latest = job
            count = self._count + 1
            self._count = count
            if count > self.settings.max_jobs:
                self._forget_oldest()
        else:
            self._record(job.job_id, job)
        return prefix + job.notify_line if prefix else job.notify_line

    def tick(self, now: float) -> list[Event]:
        """Periodic: vardiff's silence and slow-window checks."""
        if not self.working:
            return []
        new = self.vardiff.on_tick(now, self.difficulty, self.network_difficulty)
        return [] if new is None else self._change_difficulty(new, now)

    # --- server-initiated -----------------------------------------------------
    def set_pool_version_mask(self, mask: int) -> list[Event]:
        """The pool's mask changed: tell a rolling miner its new effective mask (BIP310)."""
        before = self.version_mask
        self.pool_version_mask = mask & _U32
        after = self.version_mask
        if self.requested_mask is None or after == before or not self.subscribed:
            return []
        return [Send(encode_notification("mining.set_version_mask", [f"{after:08x}"]))]

    def renew_extranonce(self, now: float) -> list[Event]:
        """Give a new extranonce1 to a miner that asked for mining.set_extranonce.

        Jobs already sent keep the extranonce1 they were sent with; the new
        one applies from the re-issued current job on.  Nothing happens for a
        miner that did not subscribe to extranonce changes.
        """
        if not (self.extranonce_subscribed and self.subscribed):
            return []
        try:
            new = self.sessions.extra_extranonce()
        except ExtranonceExhausted:
            return []
        self._extranonce1s = (*self._all_extranonce1s(), new)
        self.extranonce1 = new
        notice = encode_notification("mining.set_extranonce", [new.hex(), self.settings.extranonce2_size])
        return [Send(notice), *self._reissue_current()]

    @staticmethod
    def reconnect(host: str | None = None, port: int | None = None, wait: int = 0) -> bytes:
        """client.reconnect; the port goes as a string, which cgminer requires and others accept."""
        params: list[Any] = [] if host is None else [host, str(port) if port is not None else "", wait]
        return encode_notification("client.reconnect", params)

    @staticmethod
    def show_message(text: str) -> bytes:
        return encode_notification("client.show_message", [text])


_Handler = Callable[[ServerConnection, Request, float], list[Event]]

_HANDLERS: dict[str, _Handler] = {
    "mining.subscribe": ServerConnection._subscribe,
    "mining.authorize": ServerConnection._authorize,
    "mining.configure": ServerConnection._configure,
    "mining.suggest_difficulty": ServerConnection._suggest_difficulty,
    "mining.suggest_target": ServerConnection._suggest_target,
    "mining.extranonce.subscribe": ServerConnection._extranonce_subscribe,
    "mining.get_transactions": ServerConnection._get_transactions,
    "mining.submit": ServerConnection._submit,
}

#: The client methods answered (anything else gets error 20 "Unknown method").
METHODS: tuple[str, ...] = tuple(_HANDLERS)

__all__ = [
    "METHODS",
    "AuthorizeRequested",
    "Close",
    "Event",
    "ProtocolSettings",
    "Send",
    "SentJob",
    "ServerConnection",
    "Share",
    "ShareRejected",
    "ShareSubmitted",
    "Superseded",
    "parse_difficulty",
]
