"""``simulate``: the shares-file view of each scheme, checked against hand-worked numbers."""

from __future__ import annotations

import json

import pytest

from payouts.simulate import simulate

# Same five shares as test_payouts_pplns: D = 1000; last share (bob) finds the block.
SHARES = [
    {"miner": "alice", "difficulty": 800},
    {"miner": "bob", "difficulty": 600},
    {"miner": "alice", "difficulty": 500},
    {"miner": "carol", "difficulty": 400},
    {"miner": "bob", "difficulty": 300, "time": 1_700_000_000},
]


def test_pplns() -> None:
    result = simulate("pplns", SHARES, 1_000_000, 200, 1000)
    assert result["miners"] == {"alice": 343_000, "bob": 441_000, "carol": 196_000}
    assert result["pool_fee"] == 20_000
    assert result["undistributed"] == 0
    json.dumps(result)


def test_pplns_window_factor_and_policy() -> None:
    keep = simulate("pplns", SHARES, 1_000_000, 200, "1000", window_factor=4)
    assert keep["miners"] == {"alice": 318_500, "bob": 220_500, "carol": 98_000}
    assert keep["undistributed"] == 343_000
    spread = simulate("pplns", SHARES, 1_000_000, 200, 1000, window_factor="4", unfilled="normalize")
    assert spread["miners"] == {"alice": 490_000, "bob": 339_231, "carol": 150_769}


def test_prop_and_solo() -> None:
    # PROP by difficulty over all 2600: same as normalized PPLNS above.
    assert simulate("prop", SHARES, 1_000_000, 200, 1000)["miners"] == {
        "alice": 490_000,
        "bob": 339_231,
        "carol": 150_769,
    }
    solo = simulate("solo", SHARES, 1_000_000, 200, 1000)
    assert solo["miners"] == {"bob": 980_000}
    assert solo["pool_fee"] == 20_000


def test_solo_with_tx_fees_kept() -> None:
    solo = simulate("solo", SHARES, 1_050_000, 200, 1000, subsidy=1_000_000, share_tx_fees=False)
    assert solo["miners"] == {"bob": 980_000}
    assert solo["pool_fee"] == 70_000
    assert solo["kept_tx_fees"] == 50_000


def test_pps_toy_round() -> None:
    # Reference §4 toy round: 3 D of work at S = 312,500,000, fee 2 % -> 918,750,000 sat of
    # credits for a 324,845,678-sat block: the operator is 593,904,322 sat down.
    d = 10**14
    shares = [
        {"miner": "alice", "difficulty": d + d // 2},
        {"miner": "bob", "difficulty": d},
        {"miner": "carol", "difficulty": d // 2},
    ]
    result = simulate("pps", shares, 324_845_678, 200, d, subsidy=312_500_000)
    assert result["miners"] == {"alice": 459_375_000, "bob": 306_250_000, "carol": 153_125_000}
    assert result["operator_result"] == "-593904322"
    # Fee withheld: 2 % of 312,500,000 * 3 = 18,750,000.
    assert result["pool_fee"] == 18_750_000
    json.dumps(result)


def test_pps_carries_fractions() -> None:
    # D = 1,000,000, 3 diff-1 shares: 918.75 -> pays 918, carries 3/4; fee 3 * 6.25 = 18.75.
    shares = [{"miner": "alice", "difficulty": 1}] * 3
    result = simulate("pps", shares, 312_500_000, 200, 1_000_000)
    assert result["miners"] == {"alice": 918}
    assert result["carry"] == {"alice": "3/4"}
    assert result["pool_fee"] == 18
    assert result["pool_fee_exact"] == "75/4"


def test_fpps_uses_recent_fees() -> None:
    # F = mean(10M, 12M, 14M, 100M) = 34M; 0.98 * 346,500,000 / 1,000,000 = 339.57 per share;
    # two shares 679.14 -> pays 679, carries 0.14 = 7/50.
    shares = [{"miner": "alice", "difficulty": 1}] * 2
    fees = [10_000_000, 12_000_000, 14_000_000, 100_000_000]
    result = simulate("fpps", shares, 324_845_678, 200, 1_000_000, subsidy=312_500_000, recent_fees=fees)
    assert result["expected_fees"] == "34000000"
    assert result["miners"] == {"alice": 679}
    assert result["carry"] == {"alice": "7/50"}


def test_per_share_network_difficulty_and_json_floats() -> None:
    # JSON floats are read as the decimal they print: 0.5 is exactly 1/2.
    # Scores: alice 1000/1000 = 1, bob 1000/2000 = 0.5, carol 500/2000 = 0.25 (solver);
    # X = 1 -> alice 0.25, bob 0.5, carol 0.25 of 400,000.
    shares = [
        {"miner": "alice", "difficulty": 1000.0, "network_difficulty": 1000},
        {"miner": "bob", "difficulty": 1000, "network_difficulty": "2000"},
        {"miner": "carol", "difficulty": 500, "network_difficulty": 2000.0},
    ]
    result = simulate("pplns", shares, 400_000, 0, None, window_factor=1)
    assert result["miners"] == {"alice": 100_000, "bob": 200_000, "carol": 100_000}
    assert simulate("prop", [{"miner": "a", "difficulty": 0.5}], 10, 0, 1)["miners"] == {"a": 10}


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("pplnz", SHARES, 1000, 0, 1000), {}),
        (("pplns", [], 1000, 0, 1000), {}),
        (("pplns", SHARES, 1000, 0, None), {}),
        (("pplns", SHARES, 1000, 0, 1000), {"subsidy": 2000}),
        (("pplns", SHARES, 1000, 20_000, 1000), {}),
    ],
)
def test_refuses_bad_input(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        simulate(*args, **kwargs)
