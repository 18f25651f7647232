"""Stratum error codes and the messages that go with them.

Every rejection has its own message so that a miner's log tells a stale share
from an unknown job, a bad ntime from bad version bits, while the numeric code
stays the de-facto slush number (20..25) that firmware understands.  On the
wire an error is always ``[code, "message", null]`` (docs/stratum.md lists
every message).  ``reason`` is a short stable label for metrics and storage;
messages may gain detail, reasons never change.
"""

from __future__ import annotations

import json
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
    """A refusal as the miner sees it.

    ``retryable`` marks errors where the pool never judged the share (it
    could not, right now): the duplicate check forgets the share so the
    miner's resubmission is judged instead of refused as a duplicate.
    """

    code: ErrorCode
    message: str
    reason: str
    retryable: bool = False

    def wire(self) -> list[int | str | None]:
        return [int(self.code), self.message, None]

    def wire_json(self) -> bytes:
        """``wire()`` as compact JSON, encoded once per error object."""
        cached = self.__dict__.get("_wire_json")
        if cached is None:
            cached = json.dumps(self.wire(), separators=(",", ":")).encode()
            object.__setattr__(self, "_wire_json", cached)
        return cached

    def with_detail(self, detail: str) -> StratumError:
        """Same code and reason, message extended with specifics."""
        return StratumError(self.code, f"{self.message}: {detail}", self.reason, self.retryable)


# --- code 20: malformed or unacceptable requests ------------------------------
MALFORMED = StratumError(ErrorCode.OTHER, "Malformed request", "malformed")
UNKNOWN_METHOD = StratumError(ErrorCode.OTHER, "Unknown method", "unknown-method")
BAD_EXTRANONCE2 = StratumError(ErrorCode.OTHER, "Incorrect size of extranonce2", "bad-extranonce2")
BAD_NTIME = StratumError(ErrorCode.OTHER, "ntime out of range", "bad-ntime")
BAD_VERSION_BITS = StratumError(ErrorCode.OTHER, "Version bits outside the negotiated mask", "bad-version-bits")
VERSION_ROLLING_OFF = StratumError(
    ErrorCode.OTHER, "Version rolling not negotiated (send mining.configure first)", "version-rolling-off"
)
NODE_UNAVAILABLE = StratumError(ErrorCode.OTHER, "Pool cannot validate shares right now", "pool-busy", retryable=True)
INTERNAL_ERROR = StratumError(ErrorCode.OTHER, "Internal pool error", "internal-error", retryable=True)
SERVER_FULL = StratumError(ErrorCode.OTHER, "No extranonce1 left on this server, try another", "server-full")

# --- code 21: job -----------------------------------------------------------
UNKNOWN_JOB = StratumError(ErrorCode.JOB_NOT_FOUND, "Job not found (unknown or expired job id)", "unknown-job")
STALE_JOB = StratumError(ErrorCode.JOB_NOT_FOUND, "Stale share: job is from a previous block", "stale")

# --- codes 22..25 -------------------------------------------------------------
DUPLICATE = StratumError(ErrorCode.DUPLICATE, "Duplicate share", "duplicate")
LOW_DIFFICULTY = StratumError(ErrorCode.LOW_DIFFICULTY, "Low difficulty share", "low-difficulty")
UNAUTHORIZED = StratumError(ErrorCode.UNAUTHORIZED, "Unauthorized worker", "unauthorized")
NOT_SUBSCRIBED = StratumError(ErrorCode.NOT_SUBSCRIBED, "Not subscribed", "not-subscribed")

#: Every error the server can send, for documentation and tests.
ALL_ERRORS: tuple[StratumError, ...] = (
    MALFORMED,
    UNKNOWN_METHOD,
    BAD_EXTRANONCE2,
    BAD_NTIME,
    BAD_VERSION_BITS,
    VERSION_ROLLING_OFF,
    NODE_UNAVAILABLE,
    INTERNAL_ERROR,
    SERVER_FULL,
    UNKNOWN_JOB,
    STALE_JOB,
    DUPLICATE,
    LOW_DIFFICULTY,
    UNAUTHORIZED,
    NOT_SUBSCRIBED,
)


def malformed(detail: str) -> StratumError:
    """Code 20 for a request whose shape is wrong; ``detail`` says which part."""
    return MALFORMED.with_detail(detail)


def unknown_method(method: str) -> StratumError:
    return UNKNOWN_METHOD.with_detail(method[:64])
