"""``stope payouts simulate`` prints what the scheme functions compute."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pool.cli import main


def _run(tmp_path, *args, shares):
    path = tmp_path / "shares.json"
    path.write_text(json.dumps(shares))
    return CliRunner().invoke(main, ["payouts", "simulate", *args[:1], "--shares", str(path), *args[1:]])


def test_pplns_window_filled_exactly(tmp_path):
    # X*D = 2 * 2500 = 5000 difficulty: the three shares fill it exactly.
    # Fee 2% of 312,500,000 = 6,250,000; pot 306,250,000 split 2000:3000.
    shares = [{"miner": "alice", "difficulty": 1000}, {"miner": "bob", "difficulty": 3000}, {"miner": "alice", "difficulty": 1000}]
    result = _run(tmp_path, "pplns", "--block-value", "312500000", "--fee-bps", "200", "--network-difficulty", "2500", shares=shares)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["miners"] == {"alice": 122_500_000, "bob": 183_750_000}
    assert out["pool_fee"] == 6_250_000
    assert out["undistributed"] == 0


def test_solo_pays_the_finder(tmp_path):
    shares = [{"miner": "alice", "difficulty": 5}, {"miner": "bob", "difficulty": 1}]
    result = _run(tmp_path, "solo", "--block-value", "1000", "--fee-bps", "100", "--network-difficulty", "10", shares=shares)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["miners"] == {"bob": 990}
    assert out["pool_fee"] == 10


def test_bad_input_is_a_clear_error(tmp_path):
    result = _run(tmp_path, "prop", "--block-value", "1000", "--fee-bps", "100", "--network-difficulty", "10", shares=[])
    assert result.exit_code != 0
    assert "non-empty JSON list" in result.output
    result = _run(tmp_path, "prop", "--block-value", "1000", "--fee-bps", "100", "--network-difficulty", "10",
                  shares=[{"miner": "a", "difficulty": -1}])
    assert result.exit_code != 0
    assert "cannot simulate" in result.output
