"""Compact nBits, targets and difficulty, in exact integer arithmetic.

Difficulty is carried as a ``Fraction`` so that share targets for
difficulties far below 1 (NerdMiners, devnet tests) and far above 2**64 are
exact; floats lose bits at both ends.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

DIFF1_TARGET = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1

# consensus.powLimit per network (Bitcoin Core src/kernel/chainparams.cpp): the
# easiest target a block header may claim; pass it to ``bits_to_target``.
POW_LIMITS: dict[str, int] = {
    "mainnet": (1 << 224) - 1,
    "testnet": (1 << 224) - 1,
    "testnet4": (1 << 224) - 1,
    "signet": 0x00000377AE << 216,
    "regtest": (1 << 255) - 1,
}


# What a difficulty may be given as; all are converted exactly (numbers.Rational is
# not usable in static annotations, so the concrete types are listed).
DifficultyLike = Fraction | Decimal | float | int | str


class CompactTargetError(ValueError):
    """nBits that Bitcoin Core would refuse (negative, zero or overflow)."""


def decode_compact(nbits: int) -> tuple[int, bool, bool]:
    """Bitcoin Core's ``arith_uint256::SetCompact``: (target, negative, overflow)."""
    if not 0 <= nbits <= 0xFFFFFFFF:
        raise CompactTargetError(f"nBits {nbits:#x} is not a 32-bit value")
    size = nbits >> 24
    word = nbits & 0x007FFFFF
    if size <= 3:
        word >>= 8 * (3 - size)
        target = word
    else:
        target = word << (8 * (size - 3))
    negative = word != 0 and (nbits & 0x00800000) != 0
    overflow = word != 0 and (
        size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32)
    )
    return target, negative, overflow


def bits_to_target(nbits: int, pow_limit: int = MAX_TARGET) -> int:
    """Target for nBits, refusing what ``DeriveTarget`` refuses."""
    target, negative, overflow = decode_compact(nbits)
    if negative:
        raise CompactTargetError(f"nBits {nbits:08x} is negative")
    if overflow:
        raise CompactTargetError(f"nBits {nbits:08x} overflows 256 bits")
    if target == 0:
        raise CompactTargetError(f"nBits {nbits:08x} is zero")
    if target > pow_limit:
        raise CompactTargetError(f"nBits {nbits:08x} is above the proof-of-work limit")
    return target


def target_to_bits(target: int) -> int:
    """Bitcoin Core's ``GetCompact`` (never sets the sign bit).

    The encoding keeps only the top 23 bits of mantissa, so the result decodes
    to ``target`` rounded down; a target is refused above 256 bits because
    ``arith_uint256`` cannot hold it.
    """
    if target <= 0:
        raise ValueError("target must be positive")
    if target > MAX_TARGET:
        raise ValueError("target does not fit in 256 bits")
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = target << (8 * (3 - size))
    else:
        compact = target >> (8 * (size - 3))
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return compact | (size << 24)


def _as_fraction(difficulty: DifficultyLike) -> Fraction:
    """Exact value of ``difficulty``; floats convert exactly (no decimal rounding)."""
    if isinstance(difficulty, bool):
        raise ValueError("difficulty must be a number, not a bool")
    try:
        value = Fraction(difficulty)
    except (OverflowError, ZeroDivisionError, TypeError) as exc:
        raise ValueError(f"difficulty {difficulty!r} is not a finite number") from exc
    if value <= 0:
        raise ValueError(f"difficulty must be positive, got {difficulty}")
    return value


def difficulty_to_target(difficulty: DifficultyLike) -> int:
    """floor(DIFF1 / difficulty), capped at the largest 256-bit value.

    Exact for any positive rational: difficulties below ~2**-32 (devnets,
    lottery miners) saturate at ``MAX_TARGET`` instead of overflowing, and
    difficulties above DIFF1 floor to 0 (only an all-zero hash would meet it)
    rather than being rounded up to an easier target.
    """
    d = _as_fraction(difficulty)
    target = (DIFF1_TARGET * d.denominator) // d.numerator
    return min(target, MAX_TARGET)


def target_to_difficulty(target: int) -> Fraction:
    """DIFF1 / target as an exact fraction (pool "bdiff")."""
    if target <= 0:
        raise ValueError("target must be positive")
    return Fraction(DIFF1_TARGET, target)


def hash_difficulty(hash_value: int) -> Fraction:
    """Difficulty a hash achieved (DIFF1 / H); a zero hash counts as H = 1."""
    return Fraction(DIFF1_TARGET, max(hash_value, 1))


def bits_to_difficulty(nbits: int) -> Fraction:
    """Network difficulty for nBits, refusing nBits consensus refuses."""
    return target_to_difficulty(bits_to_target(nbits))
