"""Plain records the payout schemes read and return.

Schemes are pure functions over these records, so the database layer, the
CLI and the tests all hand the same values in and get the same values out.
Money is whole satoshis (``int``); difficulties and scores are exact
``Fraction`` values, because a binary float cannot represent most of them and
rounding errors in a payout create or destroy satoshis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

Number = int | Fraction | Decimal | str


def to_fraction(value: Number) -> Fraction:
    """Convert an exact input (int, Fraction, Decimal, str) to a Fraction.

    Floats are refused: by the time a value is a float it is already rounded,
    and accepting one here would let binary rounding into the money path.
    Strings may be decimals (``"1.5"``), ratios (``"3/2"``) or integers.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"refusing {type(value).__name__} {value!r}: pass an int, Fraction, Decimal or str")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if isinstance(value, int | Fraction | Decimal):
        return Fraction(value)
    if isinstance(value, str):
        return Fraction(value.strip())
    raise TypeError(f"cannot read {type(value).__name__} {value!r} as an exact number")


def check_sat(value: object, name: str) -> int:
    """An amount of satoshis: a non-negative int (never bool or float)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of satoshis, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


@dataclass(frozen=True)
class ShareRecord:
    """One accepted share.

    ``network_difficulty`` is the difficulty in force when the share was
    accepted: scoring by it (not by the difficulty at block time) is what
    keeps PPS and PPLNS fair across retargets.
    """

    miner: str
    difficulty: Fraction
    network_difficulty: Fraction
    time: int | None = None
    share_id: int | None = None

    def __post_init__(self) -> None:
        difficulty = to_fraction(self.difficulty)
        network_difficulty = to_fraction(self.network_difficulty)
        if difficulty <= 0:
            raise ValueError(f"share difficulty must be positive, got {difficulty}")
        if network_difficulty <= 0:
            raise ValueError(f"network difficulty must be positive, got {network_difficulty}")
        object.__setattr__(self, "difficulty", difficulty)
        object.__setattr__(self, "network_difficulty", network_difficulty)

    @property
    def score(self) -> Fraction:
        """``d / D``: the probability that this share is also a block."""
        return self.difficulty / self.network_difficulty


@dataclass(frozen=True)
class BlockRecord:
    """A block found by the pool.

    ``share_id`` (or ``time``) places the block in the share log: the share
    with that id is the one that solved it.
    """

    height: int
    subsidy: int
    fees: int
    finder: str
    time: int | None = None
    share_id: int | None = None

    def __post_init__(self) -> None:
        check_sat(self.subsidy, "subsidy")
        check_sat(self.fees, "fees")

    @property
    def value(self) -> int:
        """The coinbase value: subsidy plus transaction fees."""
        return self.subsidy + self.fees


@dataclass(frozen=True)
class Credit:
    """A PPS/FPPS credit for one share, with the inputs needed to audit it.

    ``block_value`` is the per-block value the credit was priced at: the
    subsidy for PPS, subsidy plus ``expected_fees`` for FPPS.
    """

    miner: str
    amount: Fraction
    share_id: int | None
    score: Fraction
    block_value: Fraction
    fee_bps: int
    expected_fees: Fraction | None = None


@dataclass(frozen=True)
class Settlement:
    """Whole satoshis to pay now and the exact remainder carried forward."""

    pay: dict[str, int]
    carry: dict[str, Fraction]


@dataclass(frozen=True)
class Allocation:
    """How one block's value was split, with what ``explain`` needs to show it.

    Invariant, checked on construction: ``sum(miners) + pool_fee +
    undistributed == block_value``, every amount non-negative.

    * ``pool_fee`` is everything the pool takes as revenue: the basis-point
      fee on ``fee_base`` plus ``kept_tx_fees`` (the transaction fees when they
      are not shared with miners).
    * ``pot`` = ``fee_base`` minus the basis-point fee: what miners' scores
      compete for.
    * ``undistributed`` is the part of the pot not paid to anyone (a PPLNS
      window the pool has not yet filled, kept by the pool wallet). It is
      stated so the pool's books can account for it.
    * ``scores`` are each miner's weight and ``score_total`` the denominator:
      miner m's exact entitlement is ``pot * scores[m] / score_total``.
    """

    scheme: str
    height: int | None
    block_value: int
    fee_base: int
    pool_fee: int
    kept_tx_fees: int
    pot: int
    miners: dict[str, int]
    undistributed: int
    scores: dict[str, Fraction]
    score_total: Fraction
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("block_value", "fee_base", "pool_fee", "kept_tx_fees", "pot", "undistributed"):
            check_sat(getattr(self, name), name)
        for miner, amount in self.miners.items():
            check_sat(amount, f"amount for {miner!r}")
        if self.total != self.block_value:
            raise ValueError(f"allocation sums to {self.total}, not the block value {self.block_value}")

    @property
    def total(self) -> int:
        """Everything accounted for; equals ``block_value``."""
        return sum(self.miners.values()) + self.pool_fee + self.undistributed

    def entitlement(self, miner: str) -> Fraction:
        """The exact (unrounded) amount ``miner`` was owed before rounding."""
        return self.pot * self.scores[miner] / self.score_total

    def to_json(self) -> dict[str, object]:
        """A JSON-serialisable view: satoshis as ints, fractions as strings."""
        return {
            "scheme": self.scheme,
            "height": self.height,
            "block_value": self.block_value,
            "fee_base": self.fee_base,
            "pool_fee": self.pool_fee,
            "kept_tx_fees": self.kept_tx_fees,
            "pot": self.pot,
            "miners": dict(sorted(self.miners.items())),
            "undistributed": self.undistributed,
            "scores": {miner: str(score) for miner, score in sorted(self.scores.items())},
            "score_total": str(self.score_total),
            "params": dict(self.params),
        }
