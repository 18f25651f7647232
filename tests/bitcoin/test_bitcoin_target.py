"""Compact nBits, pow limits and difficulty against Core's cases and python-bitcoinlib."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from bitcoin.core.serialize import compact_from_uint256, uint256_from_compact
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.bitcoin.target import (
    DIFF1_TARGET,
    MAX_TARGET,
    POW_LIMITS,
    CompactTargetError,
    bits_to_difficulty,
    bits_to_target,
    decode_compact,
    difficulty_to_target,
    hash_difficulty,
    target_to_bits,
    target_to_difficulty,
)


def test_core_setcompact_cases(vectors: dict) -> None:
    cases = vectors["compact_target"]["bitcoin_core_setcompact_tests"]["cases"]
    assert len(cases) >= 20
    for case in cases:
        nbits = int(case["nbits"], 16)
        target, negative, overflow = decode_compact(nbits)
        assert negative == case["negative"], case
        assert overflow == case["overflow"], case
        if case["target_hex"] is not None:
            assert target == int(case["target_hex"], 16), case


def test_core_setcompact_cases_refused_or_accepted(vectors: dict) -> None:
    """What DeriveTarget refuses: negative, overflow, zero; everything else decodes."""
    for case in vectors["compact_target"]["bitcoin_core_setcompact_tests"]["cases"]:
        nbits = int(case["nbits"], 16)
        refused = case["negative"] or case["overflow"] or int(case["target_hex"] or "0", 16) == 0
        if refused:
            with pytest.raises(CompactTargetError):
                bits_to_target(nbits)
        else:
            assert bits_to_target(nbits) == int(case["target_hex"], 16), case


@pytest.mark.parametrize(
    ("nbits", "word"),
    [(0x01FEDCBA, "negative"), (0x04923456, "negative"), (0xFF123456, "overflow"), (0x00000000, "zero"), (0x00923456, "zero")],
)
def test_refusal_says_why(nbits: int, word: str) -> None:
    with pytest.raises(CompactTargetError, match=word):
        bits_to_target(nbits)


def test_real_nbits_target_pairs(vectors: dict) -> None:
    for pair in vectors["compact_target"]["nbits_target_pairs"]:
        nbits = int(pair["nbits"], 16)
        target = int(pair["target_hex"], 16)
        assert bits_to_target(nbits) == target, pair
        assert target_to_bits(target) == nbits, pair
        assert uint256_from_compact(nbits) == target
        assert compact_from_uint256(target) == nbits


def test_pow_limits(vectors: dict) -> None:
    limits = vectors["compact_target"]["pow_limits"]
    assert POW_LIMITS["mainnet"] == int(limits["mainnet"], 16)
    assert POW_LIMITS["testnet"] == POW_LIMITS["testnet4"] == int(limits["testnet3_testnet4"], 16)
    assert POW_LIMITS["signet"] == int(limits["signet"], 16)
    assert POW_LIMITS["regtest"] == int(limits["regtest"], 16)
    # Regtest genesis bits are above mainnet's limit: the limit must be passed per network.
    with pytest.raises(CompactTargetError, match="proof-of-work limit"):
        bits_to_target(0x207FFFFF, POW_LIMITS["mainnet"])
    assert bits_to_target(0x207FFFFF, POW_LIMITS["regtest"]) == 0x7FFFFF << 232


def test_difficulty_examples(vectors: dict) -> None:
    for example in vectors["compact_target"]["difficulty_examples"]:
        nbits = int(example["nbits"], 16)
        # float() of an exact Fraction is correctly rounded, so equality is exact.
        assert float(bits_to_difficulty(nbits)) == example["bdiff"]
        if "pdiff" in example:
            pdiff = Fraction(POW_LIMITS["mainnet"], bits_to_target(nbits))
            assert float(pdiff) == example["pdiff"]


def test_diff1_is_the_documented_constant(vectors: dict) -> None:
    text = vectors["conventions"]["diff1_target"].split()[0]
    assert DIFF1_TARGET == int(text, 16)
    assert difficulty_to_target(1) == DIFF1_TARGET
    assert target_to_difficulty(DIFF1_TARGET) == 1


def test_difficulty_to_target_edges() -> None:
    # Tiny difficulties saturate at the largest 256-bit value, exactly.
    assert difficulty_to_target(Fraction(1, 2**40)) == MAX_TARGET
    assert difficulty_to_target(Fraction(1, 2**32)) == 0xFFFF << 240
    assert difficulty_to_target("1e-30") == MAX_TARGET
    # Huge difficulties: exact floor, down to 1 and then 0 (only a zero hash meets it).
    assert difficulty_to_target(2**64) == DIFF1_TARGET >> 64
    assert difficulty_to_target(DIFF1_TARGET) == 1
    assert difficulty_to_target(DIFF1_TARGET + 1) == 0
    assert difficulty_to_target(10**100) == 0
    # Floats and decimals are taken at their exact value, not re-rounded.
    assert difficulty_to_target(0.5) == DIFF1_TARGET * 2
    assert difficulty_to_target(Decimal("0.001")) == DIFF1_TARGET * 1000
    assert difficulty_to_target("0.001") == DIFF1_TARGET * 1000
    assert difficulty_to_target(3) == DIFF1_TARGET // 3


@pytest.mark.parametrize("bad", [0, -1, "0", Fraction(-1, 3), float("nan"), float("inf"), float("-inf"), None, True, "x"])
def test_difficulty_to_target_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        difficulty_to_target(bad)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    st.fractions(min_value=Fraction(1, 10**12), max_value=Fraction(10**80), max_denominator=10**15).filter(lambda f: f > 0)
)
def test_difficulty_to_target_is_the_floor(d: Fraction) -> None:
    """T = floor(DIFF1 / d) by definition: T*d <= DIFF1 < (T+1)*d, unless capped at 2**256-1."""
    t = difficulty_to_target(d)
    if t == MAX_TARGET:
        assert DIFF1_TARGET / d >= MAX_TARGET
    else:
        assert t * d <= DIFF1_TARGET < (t + 1) * d


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-12, max_value=1e30, allow_nan=False, allow_infinity=False))
def test_float_difficulty_is_exact(d: float) -> None:
    t = difficulty_to_target(d)
    exact = Fraction(d)  # the float's exact binary value
    if t == MAX_TARGET:
        assert DIFF1_TARGET / exact >= MAX_TARGET
    else:
        assert t * exact <= DIFF1_TARGET < (t + 1) * exact


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_TARGET))
def test_target_to_bits_matches_python_bitcoinlib(target: int) -> None:
    bits = target_to_bits(target)
    assert bits == compact_from_uint256(target)
    decoded = bits_to_target(bits)
    # The compact form keeps the top mantissa bits: it rounds down, never up.
    assert decoded <= target
    assert target_to_bits(decoded) == bits


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_decode_compact_matches_python_bitcoinlib(nbits: int) -> None:
    target, negative, overflow = decode_compact(nbits)
    if nbits & 0x00800000 == 0 and not overflow:
        # python-bitcoinlib has no sign/overflow handling; compare where none applies.
        assert not negative
        assert target == uint256_from_compact(nbits)
    if negative or overflow or target == 0:
        with pytest.raises(CompactTargetError):
            bits_to_target(nbits)


def test_target_to_bits_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        target_to_bits(0)
    with pytest.raises(ValueError):
        target_to_bits(MAX_TARGET + 1)


def test_hash_difficulty() -> None:
    assert hash_difficulty(DIFF1_TARGET) == 1
    assert hash_difficulty(0) == DIFF1_TARGET


def test_nbits_must_be_32_bit() -> None:
    with pytest.raises(CompactTargetError):
        decode_compact(1 << 32)
    with pytest.raises(CompactTargetError):
        bits_to_target(-1)
