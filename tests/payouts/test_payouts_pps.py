"""PPS, FPPS and fractional balances, worked by hand.

S = 312,500,000 sat, fee 200 bp: a share worth one whole network difficulty
earns 0.98 * 312,500,000 = 306,250,000 sat.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from payouts.balances import accumulate, settle
from payouts.fpps import average_block_fees, fpps_credit, fpps_credits
from payouts.pps import pps_credit, pps_credits
from payouts.records import ShareRecord

S = 312_500_000


def test_pps_credit_at_low_difficulty() -> None:
    # D = 1,000,000, d = 1: 306,250,000 / 1,000,000 = 306.25 sat.
    credit = pps_credit(ShareRecord("alice", Fraction(1), Fraction(1_000_000), share_id=9), S, 200)
    assert credit.amount == Fraction(1225, 4)
    assert (credit.miner, credit.share_id, credit.block_value, credit.fee_bps) == ("alice", 9, S, 200)
    assert credit.expected_fees is None


def test_pps_credit_at_mainnet_difficulty_is_a_tiny_exact_fraction() -> None:
    # D = 10^14, d = 1: 306,250,000 / 10^14 = 0.0000030625 = 49 / 16,000,000 sat.
    credit = pps_credit(ShareRecord("alice", Fraction(1), Fraction(10**14)), S, 200)
    assert credit.amount == Fraction(49, 16_000_000)


def test_pps_toy_round_operator_loss() -> None:
    # Reference §4: a round needing 3 D of work costs 918,750,000 sat of credits.
    # alice 1.5 D -> 459,375,000; bob 1 D -> 306,250,000; carol 0.5 D -> 153,125,000.
    d = Fraction(10**14)
    shares = [ShareRecord("alice", d * 3 / 2, d), ShareRecord("bob", d, d), ShareRecord("carol", d / 2, d)]
    balances = accumulate(pps_credits(shares, S, 200))
    assert balances == {"alice": 459_375_000, "bob": 306_250_000, "carol": 153_125_000}
    assert sum(balances.values()) == 918_750_000


def test_pps_carry_across_payments() -> None:
    share = ShareRecord("alice", Fraction(1), Fraction(1_000_000))
    # Three shares: 3 * 306.25 = 918.75 -> pay 918, carry 3/4.
    first = settle(accumulate(pps_credits([share] * 3, S, 200)))
    assert first.pay == {"alice": 918}
    assert first.carry == {"alice": Fraction(3, 4)}
    # One more: 0.75 + 306.25 = 307 -> pay 307, carry 0.
    second = settle(accumulate(pps_credits([share], S, 200), first.carry))
    assert second.pay == {"alice": 307}
    assert second.carry == {"alice": 0}


def test_settle_minimum_payout_carries_everything_below_it() -> None:
    settlement = settle({"alice": Fraction(3675, 4), "bob": Fraction(5001, 2)}, minimum=1000)
    # alice 918.75 < 1000: nothing paid, all carried; bob 2500.5: pays 2500, carries 1/2.
    assert settlement.pay == {"alice": 0, "bob": 2500}
    assert settlement.carry == {"alice": Fraction(3675, 4), "bob": Fraction(1, 2)}
    with pytest.raises(ValueError):
        settle({"alice": Fraction(-1)})


def test_average_block_fees() -> None:
    fees = [10_000_000, 12_000_000, 14_000_000, 100_000_000]
    # Mean 136,000,000 / 4 = 34,000,000; trimming one each end leaves 12M, 14M -> 13,000,000.
    assert average_block_fees(fees) == 34_000_000
    assert average_block_fees(fees, trim=1) == 13_000_000
    assert average_block_fees([1, 2]) == Fraction(3, 2)
    with pytest.raises(ValueError):
        average_block_fees([5], trim=1)
    with pytest.raises(ValueError):
        average_block_fees([])


def test_fpps_credit_records_its_fee_estimate() -> None:
    # (1 - 2 %) * (312,500,000 + 13,000,000) / 1,000,000 = 318,990,000 / 1,000,000 = 318.99 sat.
    share = ShareRecord("alice", Fraction(1), Fraction(1_000_000))
    credit = fpps_credit(share, S, Fraction(13_000_000), 200)
    assert credit.amount == Fraction(31_899, 100)
    assert credit.expected_fees == 13_000_000
    assert credit.block_value == 325_500_000
    assert fpps_credits([share, share], S, "13000000", 200)[1].amount == Fraction(31_899, 100)


def test_fpps_without_fee_estimate_is_pps() -> None:
    share = ShareRecord("alice", Fraction(3), Fraction(7))
    assert fpps_credit(share, S, 0, 150).amount == pps_credit(share, S, 150).amount
    with pytest.raises(ValueError):
        fpps_credit(share, S, -1, 150)
