"""Property tests: exact sums, no negative amounts, order independence,
PPLNS pay independent of position, PPS carry conserving every satoshi."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from payouts.balances import accumulate, settle
from payouts.pplns import pplns, pplns_window
from payouts.pps import pps_credits
from payouts.prop import prop
from payouts.records import Allocation, BlockRecord, ShareRecord
from payouts.rounding import largest_remainder
from payouts.solo import solo, solo_coinbase_outputs

MINERS = ["alice", "bob", "carol", "dave", "erin"]
FAST = settings(max_examples=150, deadline=None)

weights_st = st.dictionaries(
    st.text(alphabet="abcdefgh", min_size=1, max_size=3),
    st.fractions(min_value=0, max_value=1000, max_denominator=1000),
    min_size=1,
    max_size=8,
).filter(lambda weights: sum(weights.values()) > 0)

share_st = st.builds(
    ShareRecord,
    miner=st.sampled_from(MINERS),
    difficulty=st.integers(1, 5000).map(Fraction),
    network_difficulty=st.sampled_from([1000, 1500, 4000]).map(Fraction),
)
shares_st = st.lists(share_st, min_size=1, max_size=30)
fee_bps_st = st.one_of(st.just(0), st.integers(0, 10_000))
block_st = st.builds(
    BlockRecord,
    height=st.just(1),
    subsidy=st.integers(0, 10**10),
    fees=st.integers(0, 10**9),
    finder=st.sampled_from(MINERS),
)
window_st = st.fractions(min_value=Fraction(1, 10), max_value=10, max_denominator=20)


def _check(allocation: Allocation, block: BlockRecord) -> None:
    assert allocation.total == block.value
    assert all(amount >= 0 for amount in allocation.miners.values())
    assert allocation.pool_fee >= 0 and allocation.undistributed >= 0
    for miner in allocation.miners:
        assert abs(allocation.miners[miner] - allocation.entitlement(miner)) < 1


@FAST
@given(total=st.integers(0, 10**12), weights=weights_st, data=st.data())
def test_largest_remainder_exact_and_order_independent(total: int, weights: dict, data: st.DataObject) -> None:
    amounts = largest_remainder(total, weights)
    weight_sum = sum(weights.values())
    assert sum(amounts.values()) == total
    for key, weight in weights.items():
        assert amounts[key] >= 0
        assert abs(amounts[key] - total * weight / weight_sum) < 1
        if weight == 0:
            assert amounts[key] == 0
    shuffled = dict(data.draw(st.permutations(list(weights.items()))))
    assert largest_remainder(total, shuffled) == amounts


@FAST
@given(
    shares=shares_st,
    block=block_st,
    fee_bps=fee_bps_st,
    window=window_st,
    unfilled=st.sampled_from(["keep", "normalize"]),
    share_tx_fees=st.booleans(),
)
def test_pplns_sums_exactly(
    shares: list[ShareRecord], block: BlockRecord, fee_bps: int, window: Fraction, unfilled: str, share_tx_fees: bool
) -> None:
    allocation = pplns(shares, block, fee_bps, window, unfilled, share_tx_fees)  # type: ignore[arg-type]
    _check(allocation, block)
    if unfilled == "normalize":
        assert allocation.undistributed == 0


@FAST
@given(shares=shares_st, block=block_st, fee_bps=fee_bps_st, share_tx_fees=st.booleans(), data=st.data())
def test_prop_sums_exactly_in_any_order(
    shares: list[ShareRecord], block: BlockRecord, fee_bps: int, share_tx_fees: bool, data: st.DataObject
) -> None:
    allocation = prop(shares, block, fee_bps, share_tx_fees)
    _check(allocation, block)
    reordered = data.draw(st.permutations(shares))
    assert prop(reordered, block, fee_bps, share_tx_fees) == allocation


@FAST
@given(block=block_st, fee_bps=fee_bps_st, share_tx_fees=st.booleans())
def test_solo_sums_exactly(block: BlockRecord, fee_bps: int, share_tx_fees: bool) -> None:
    _check(solo(block, fee_bps, share_tx_fees), block)
    outputs = solo_coinbase_outputs(block.value, b"m", b"p", fee_bps)
    assert sum(value for value, _ in outputs) == block.value
    assert all(value > 0 for value, _ in outputs[1:])


@FAST
@given(shares=shares_st, window=window_st, block=block_st, fee_bps=fee_bps_st, data=st.data())
def test_pplns_pay_depends_on_score_not_position(
    shares: list[ShareRecord], window: Fraction, block: BlockRecord, fee_bps: int, data: st.DataObject
) -> None:
    counted = pplns_window(shares, window)
    crossing = counted[0][1] < counted[0][0].score
    inside = counted[1:] if crossing else counted
    # Every share wholly inside the window counts its full score d / D ...
    assert all(score == share.score for share, score in inside)
    # ... so shuffling them (keeping the boundary share and older shares in place)
    # changes no miner's exact entitlement nor, with the tie-break, any amount.
    start = len(shares) - len(inside)
    reordered = shares[:start] + data.draw(st.permutations(shares[start:]))
    before = pplns(shares, block, fee_bps, window)
    after = pplns(reordered, block, fee_bps, window)
    assert after.miners == before.miners
    assert after.scores == before.scores
    # And a miner's exact entitlement is pot * (its full scores + boundary part) / X.
    for miner in before.miners:
        expected = sum((score for share, score in counted if share.miner == miner), Fraction(0))
        assert before.entitlement(miner) == before.pot * expected / window


@FAST
@given(
    batches=st.lists(st.lists(share_st, max_size=10), min_size=1, max_size=15),
    subsidy=st.integers(0, 10**9),
    fee_bps=fee_bps_st,
    minimum=st.integers(0, 10_000),
)
def test_pps_carry_never_loses_or_invents_a_satoshi(
    batches: list[list[ShareRecord]], subsidy: int, fee_bps: int, minimum: int
) -> None:
    carry: dict[str, Fraction] = {}
    paid: dict[str, int] = {}
    credited: dict[str, Fraction] = {}
    for batch in batches:
        credits = pps_credits(batch, subsidy, fee_bps)
        credited = accumulate(credits, credited)
        settlement = settle(accumulate(credits, carry), minimum)
        for miner, amount in settlement.pay.items():
            assert amount >= 0
            paid[miner] = paid.get(miner, 0) + amount
        carry = settlement.carry
        assert all(0 <= left < max(1, minimum) for left in carry.values())
    for miner, total in credited.items():
        assert paid.get(miner, 0) + carry[miner] == total
        if minimum <= 1:
            # Paying everything whole each time pays exactly floor(total) in the end.
            assert paid.get(miner, 0) == total.numerator // total.denominator
