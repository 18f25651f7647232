"""Plain records handed from the hot path to the writer (no ORM objects there)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction


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
