"""What ``stope payouts simulate`` computes: one block under one scheme.

Input is a list of shares as read from JSON (``miner``, ``difficulty``,
optionally ``network_difficulty`` and ``time``), oldest first, the last one
finding the block. The result is a JSON-serialisable dict computed with the
same scheme functions the pool uses, so a simulation and a real payout can
never disagree. Satoshis are ints; exact fractions are strings (``"3/2"``).

For the block schemes (``prop``, ``pplns``, ``solo``) the result is the
block's ``Allocation``. For ``pps`` and ``fpps`` the block goes to the
operator and the shares are credited instead: ``miners`` is what the
credits pay now in whole satoshis, ``carry`` the exact remainder owed later,
``pool_fee`` the fee withheld from the credits (floored; ``pool_fee_exact``
gives it exactly) and ``operator_result`` the block value minus all credits
(negative when the round was unlucky for the operator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from .balances import accumulate, settle
from .fees import fee_fraction
from .fpps import average_block_fees, fpps_credits
from .pplns import DEFAULT_WINDOW_FACTOR, Unfilled, pplns
from .pps import pps_credits
from .prop import prop
from .records import BlockRecord, Credit, Number, ShareRecord, check_sat, to_fraction
from .solo import solo

SCHEMES = ("pps", "fpps", "pplns", "prop", "solo")


def _exact(value: Any) -> Fraction:
    """A number from JSON: floats are read as the decimal they print as."""
    if isinstance(value, float):
        return to_fraction(repr(value))
    return to_fraction(value)


def shares_from_json(shares: Sequence[Mapping[str, Any]], network_difficulty: Any = None) -> list[ShareRecord]:
    """Share records from JSON objects; ``share_id`` is the position in the list."""
    default = None if network_difficulty is None else _exact(network_difficulty)
    records = []
    for index, share in enumerate(shares):
        share_difficulty = share.get("network_difficulty", default)
        if share_difficulty is None:
            raise ValueError(f"share {index} has no network_difficulty and no default was given")
        records.append(
            ShareRecord(
                miner=str(share["miner"]),
                difficulty=_exact(share["difficulty"]),
                network_difficulty=_exact(share_difficulty),
                time=share.get("time"),
                share_id=index,
            )
        )
    return records


def _fraction_map(values: Mapping[str, Fraction]) -> dict[str, str]:
    return {key: str(value) for key, value in sorted(values.items())}


def _credit_summary(
    scheme: str,
    credits: Sequence[Credit],
    shares: Sequence[ShareRecord],
    block_value: int,
    priced_at: Fraction,
    fee_bps: int,
) -> dict[str, Any]:
    balances = accumulate(credits)
    settlement = settle(balances)
    scores: dict[str, Fraction] = {}
    for share in shares:
        scores[share.miner] = scores.get(share.miner, Fraction(0)) + share.score
    fee_exact = fee_fraction(fee_bps) * priced_at * sum(scores.values(), Fraction(0))
    credited = sum(balances.values(), Fraction(0))
    return {
        "scheme": scheme,
        "block_value": block_value,
        "priced_at": str(priced_at),
        "fee_bps": fee_bps,
        "miners": dict(sorted(settlement.pay.items())),
        "carry": _fraction_map(settlement.carry),
        "credited": _fraction_map(balances),
        "pool_fee": fee_exact.numerator // fee_exact.denominator,
        "pool_fee_exact": str(fee_exact),
        "operator_result": str(block_value - credited),
        "scores": _fraction_map(scores),
    }


def simulate(
    scheme: str,
    shares: Sequence[Mapping[str, Any]],
    block_value: int,
    fee_bps: int,
    network_difficulty: Number | None,
    window_factor: Number = DEFAULT_WINDOW_FACTOR,
    *,
    subsidy: int | None = None,
    share_tx_fees: bool = True,
    unfilled: Unfilled = "keep",
    recent_fees: Sequence[int] | None = None,
    height: int = 0,
) -> dict[str, Any]:
    """Pay one block found by the last of ``shares`` under ``scheme``.

    ``subsidy`` defaults to the whole ``block_value`` (no transaction fees);
    the rest of ``block_value`` is the block's transaction fees. FPPS prices
    shares on ``subsidy`` plus the mean of ``recent_fees``, or of this block's
    fees when none are given.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    check_sat(block_value, "block_value")
    base = block_value if subsidy is None else check_sat(subsidy, "subsidy")
    if base > block_value:
        raise ValueError(f"subsidy {base} exceeds the block value {block_value}")
    records = shares_from_json(shares, network_difficulty)
    if not records:
        raise ValueError("no shares: the last share is the one that finds the block")
    block = BlockRecord(
        height=height,
        subsidy=base,
        fees=block_value - base,
        finder=records[-1].miner,
        time=records[-1].time,
        share_id=records[-1].share_id,
    )

    if scheme == "pps":
        credits = pps_credits(records, base, fee_bps)
        return _credit_summary(scheme, credits, records, block_value, Fraction(base), fee_bps)
    if scheme == "fpps":
        estimate = average_block_fees(recent_fees) if recent_fees is not None else Fraction(block.fees)
        credits = fpps_credits(records, base, estimate, fee_bps)
        result = _credit_summary(scheme, credits, records, block_value, base + estimate, fee_bps)
        result["expected_fees"] = str(estimate)
        return result
    if scheme == "pplns":
        allocation = pplns(records, block, fee_bps, window_factor, unfilled, share_tx_fees)
    elif scheme == "prop":
        allocation = prop(records, block, fee_bps, share_tx_fees)
    else:
        allocation = solo(block, fee_bps, share_tx_fees)
    return allocation.to_json()
