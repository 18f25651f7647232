"""Configuration: defaults, the documented example, and refusals with field and reason."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from pool.cli import main
from pool.config import ConfigError, Settings, load_settings, settings_from_mapping

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "pool.example.toml"


def test_example_documents_every_option():
    example = tomllib.loads(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    for section_name, section_field in Settings.model_fields.items():
        model = section_field.annotation
        for option in model.model_fields:  # type: ignore[union-attr]
            # Present as a key, or at least as a commented-out documented key.
            assert option in example.get(section_name, {}) or f"# {option} =" in text, f"{section_name}.{option} undocumented"


def test_example_is_the_embedded_default():
    assert load_settings(EXAMPLE) == load_settings(None)


def test_defaults_are_the_devnet():
    s = load_settings(None)
    assert s.uses_devnet
    assert s.pool.network == "regtest"
    assert s.stratum.port == 3333
    assert s.effective_start_difficulty() == Fraction(1, 10000)
    assert s.database_url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"stratum": {"extranonce2_size": 9}}, "stratum.extranonce2_size", "less than or equal to 8"),
        ({"stratum": {"extranonce2_size": 3}}, "stratum.extranonce2_size", "greater than or equal to 4"),
        ({"stratum": {"min_difficulty": -1}}, "stratum.min_difficulty", "positive"),
        ({"stratum": {"port": 70000}}, "stratum.port", "less than or equal"),
        ({"stratum": {"bogus": 1}}, "stratum.bogus", "Extra inputs"),
        ({"pool": {"address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}}, "pool.address", "regtest"),
        ({"pool": {"address": "not-an-address"}}, "pool.address", "not a valid"),
        ({"pool": {"tag": "x" * 95}}, "pool.tag", "limit is 100"),
        ({"pool": {"network": "mainnet", "address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}}, "pool.network", "devnet"),
    ],
)
def test_bad_config_refused_with_field_and_reason(data, field, reason):
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert field in str(info.value)
    assert reason in str(info.value)


def test_cli_refuses_bad_config_at_start(tmp_path):
    bad = tmp_path / "pool.toml"
    bad.write_text('[stratum]\nextranonce2_size = 12\n')
    result = CliRunner().invoke(main, ["run", "--config", str(bad)])
    assert result.exit_code != 0
    assert "stratum.extranonce2_size" in result.output


def test_cli_refuses_missing_and_malformed_files(tmp_path):
    result = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "absent.toml")])
    assert result.exit_code != 0
    broken = tmp_path / "broken.toml"
    broken.write_text("[stratum\n")
    result = CliRunner().invoke(main, ["run", "--config", str(broken)])
    assert result.exit_code != 0 and "not valid TOML" in result.output
