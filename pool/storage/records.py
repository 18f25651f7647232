"""Plain records handed from the hot path to the writer (no ORM objects there)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

_UTC = dt.timezone.utc
_tuple_new = tuple.__new__


@dataclass(frozen=True)
class ShareRecord:
    share_hash: str
    address: str
    worker: str
    job_id: str
    height: int
    difficulty: Fraction
    network_difficulty: Fraction
    is_block: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class BlockRecord:
    height: int
    hash: str
    prevhash: str
    address: str
    worker: str
    reward: int
    status: str
    submit_result: str | None


class ShareRow(NamedTuple):
    """A share in the form it is spooled and inserted: the share hash as display
    hex (stored as 32 raw bytes since revision 0003), the exact fractions as
    "numerator/denominator" text (``ExactFraction``'s storage form) and the time
    as UTC text "YYYY-MM-DD HH:MM:SS.ffffff". Converted once, when spooled, so
    the database writer does no per-value work."""

    share_hash: str
    address: str
    worker: str
    job_id: str
    height: int
    difficulty: str
    network_difficulty: str
    is_block: bool
    created_at: str


class ShareRows:
    """``ShareRecord`` -> ``ShareRow``, doing each distinct conversion once.

    Shares recorded together carry the very same objects: one ``now`` per
    batch, the connection's current difficulty, the job's network difficulty
    (``job_network_difficulty`` is cached per target). So the text forms are
    cached by object identity (the cache holds the object, so its id cannot be
    reused while cached), and each second's date and time is formatted once.
    """

    _MAX_CACHED = 4096

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._time: dt.datetime | None = None
        self._time_text = ""
        self._fractions: dict[int, tuple[Fraction, str]] = {}

    def fraction(self, f: Fraction) -> str:
        hit = self._fractions.get(id(f))
        if hit is not None and hit[0] is f:
            return hit[1]
        text = f"{f.numerator}/{f.denominator}"
        if len(self._fractions) >= self._MAX_CACHED:
            self._fractions.clear()
        self._fractions[id(f)] = (f, text)
        return text

    def time(self, t: dt.datetime) -> str:
        if t is self._time:
            return self._time_text
        self._time = t
        if t.tzinfo is not _UTC:
            t = t.replace(tzinfo=_UTC) if t.tzinfo is None else t.astimezone(_UTC)
        second = int(t.timestamp() // 1)
        if second != self._second:
            self._second = second
            self._prefix = t.replace(microsecond=0, tzinfo=None).isoformat(" ")
        self._time_text = text = f"{self._prefix}.{t.microsecond:06d}"
        return text

    def __call__(self, r: ShareRecord) -> ShareRow:
        return self.row(
            r.share_hash, r.address, r.worker, r.job_id, r.height, r.difficulty, r.network_difficulty, r.is_block, r.created_at
        )

    def row(
        self, share_hash: str, address: str, worker: str, job_id: str, height: int,
        d: Fraction, n: Fraction, is_block: bool, t: dt.datetime,
    ) -> ShareRow:
        """A ShareRow from a share's fields, without a ``ShareRecord`` in between (the pool's hot path)."""
        # Inlined cache look-ups: this runs for every share on the event loop.
        cache = self._fractions
        hit = cache.get(id(d))
        d_text = hit[1] if hit is not None and hit[0] is d else self.fraction(d)
        hit = cache.get(id(n))
        n_text = hit[1] if hit is not None and hit[0] is n else self.fraction(n)
        return _tuple_new(ShareRow, (  # ShareRow(...) without its Python-level __new__
            share_hash, address, worker, job_id, height, d_text, n_text, bool(is_block),
            self._time_text if t is self._time else self.time(t),
        ))

    def many(self, records: Iterable[ShareRecord]) -> list[ShareRow]:
        return [self(r) for r in records]


def share_row(record: ShareRecord) -> ShareRow:
    return ShareRows()(record)
