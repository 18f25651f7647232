"""Stratum error codes and the messages that go with them.

Each rejection has its own message so that a miner's log tells stale from
unknown job from bad ntime; the code stays the de-facto slush number that
firmware understands.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ErrorCode(IntEnum):
    OTHER = 20
    JOB_NOT_FOUND = 21
    DUPLICATE = 22
    LOW_DIFFICULTY = 23
    UNAUTHORIZED = 24
    NOT_SUBSCRIBED = 25


@dataclass(frozen=True)
class StratumError(Exception):
    code: ErrorCode
    message: str
    reason: str  # short stable label for metrics and the database

    def wire(self) -> list:
        return [int(self.code), self.message, None]


def malformed(detail: str) -> StratumError:
    return StratumError(ErrorCode.OTHER, f"Malformed params: {detail}", "malformed")


UNKNOWN_JOB = StratumError(ErrorCode.JOB_NOT_FOUND, "Job not found", "unknown-job")
STALE_JOB = StratumError(ErrorCode.JOB_NOT_FOUND, "Stale share: job is from a previous block", "stale")
DUPLICATE = StratumError(ErrorCode.DUPLICATE, "Duplicate share", "duplicate")
LOW_DIFFICULTY = StratumError(ErrorCode.LOW_DIFFICULTY, "Low difficulty share", "low-difficulty")
UNAUTHORIZED = StratumError(ErrorCode.UNAUTHORIZED, "Unauthorized worker", "unauthorized")
NOT_SUBSCRIBED = StratumError(ErrorCode.NOT_SUBSCRIBED, "Not subscribed", "not-subscribed")
BAD_NTIME = StratumError(ErrorCode.OTHER, "ntime out of range", "bad-ntime")
BAD_VERSION_BITS = StratumError(ErrorCode.OTHER, "Version bits outside the negotiated mask", "bad-version-bits")
BAD_EXTRANONCE2 = StratumError(ErrorCode.OTHER, "Incorrect size of extranonce2", "bad-extranonce2")
NODE_UNAVAILABLE = StratumError(ErrorCode.OTHER, "Pool cannot validate shares right now", "pool-busy")


def unknown_method(method: str) -> StratumError:
    return StratumError(ErrorCode.OTHER, f"Unknown method {method!r}", "unknown-method")
