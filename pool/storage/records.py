"""Plain records handed from the hot path to the writer (no ORM objects there)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

_UTC = dt.timezone.utc


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
    """A share in the form it is spooled and inserted: the exact fractions as
    "numerator/denominator" text (``ExactFraction``'s storage form) and the time
    as UTC text "YYYY-MM-DD HH:MM:SS.ffffff". Converted once, when spooled, so the
    database writer does no per-value work."""

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
    """``ShareRecord`` -> ``ShareRow``, formatting each second's date and time once."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, r: ShareRecord) -> ShareRow:
        d, n, t = r.difficulty, r.network_difficulty, r.created_at
        if t.tzinfo is not _UTC:
            t = t.replace(tzinfo=_UTC) if t.tzinfo is None else t.astimezone(_UTC)
        second = int(t.timestamp() // 1)
        if second != self._second:
            self._second = second
            self._prefix = t.replace(microsecond=0, tzinfo=None).isoformat(" ")
        return ShareRow(
            r.share_hash, r.address, r.worker, r.job_id, r.height,
            f"{d.numerator}/{d.denominator}", f"{n.numerator}/{n.denominator}", bool(r.is_block),
            f"{self._prefix}.{t.microsecond:06d}",
        )


def share_row(record: ShareRecord) -> ShareRow:
    return ShareRows()(record)
