"""Primitive wire encodings: integers, varints, hashes."""

from __future__ import annotations

import hashlib
import struct


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Bitcoin's double SHA-256, in internal byte order."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def ser_u32(n: int) -> bytes:
    return struct.pack("<I", n)


def ser_i32(n: int) -> bytes:
    return struct.pack("<i", n)


def ser_u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def ser_compact_size(n: int) -> bytes:
    """CompactSize ("varint") as used for counts and script lengths."""
    if n < 0:
        raise ValueError("compact size cannot be negative")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


# Smallest value each CompactSize prefix may carry; anything below is non-canonical.
_COMPACT_MINIMUM = {0xFD: (0xFD, "<H", 3), 0xFE: (0x10000, "<I", 5), 0xFF: (0x100000000, "<Q", 9)}


def deser_compact_size(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a CompactSize at ``pos``; return (value, new position).

    Refuses truncated and non-canonical encodings with ``ValueError``, as
    Bitcoin Core's ``ReadCompactSize`` does ("non-canonical ReadCompactSize()"):
    a block we parse must re-serialise to exactly the bytes we were given.
    """
    if pos >= len(buf):
        raise ValueError("compact size runs past the end of the buffer")
    first = buf[pos]
    if first < 0xFD:
        return first, pos + 1
    minimum, fmt, width = _COMPACT_MINIMUM[first]
    if pos + width > len(buf):
        raise ValueError("compact size runs past the end of the buffer")
    (value,) = struct.unpack_from(fmt, buf, pos + 1)
    if value < minimum:
        raise ValueError(f"non-canonical compact size {value} with prefix {first:#04x}")
    return value, pos + width


def ser_string(data: bytes) -> bytes:
    return ser_compact_size(len(data)) + data


def display_to_internal(hex_hash: str) -> bytes:
    """RPC/explorer hex (byte-reversed) to the bytes used inside headers."""
    raw = bytes.fromhex(hex_hash)
    if len(raw) != 32:
        raise ValueError(f"hash must be 32 bytes, got {len(raw)}")
    return raw[::-1]


def internal_to_display(raw: bytes) -> str:
    return raw[::-1].hex()


def hash_to_int(raw: bytes) -> int:
    """The numeric value a hash is compared with targets by."""
    return int.from_bytes(raw, "little")


def _swap_words(raw: bytes) -> bytes:
    """Reverse the bytes inside each 4-byte word, keeping the word order."""
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def notify_prevhash(display_hex: str) -> str:
    """Stratum ``mining.notify`` prevhash for an RPC/GBT ``previousblockhash``.

    Early miners byte-swapped every 32-bit word of the header before hashing,
    so Stratum V1 sends the prevhash as the internal bytes with each 4-byte
    word reversed (equivalently: the display hex with its eight 8-char groups
    in reverse order). Only the prevhash is sent this way.
    """
    return internal_to_notify_prevhash(display_to_internal(display_hex))


def internal_to_notify_prevhash(raw: bytes) -> str:
    """``mining.notify`` prevhash from header-order (internal) prevhash bytes."""
    if len(raw) != 32:
        raise ValueError(f"prevhash must be 32 bytes, got {len(raw)}")
    return _swap_words(raw).hex()


def notify_prevhash_to_internal(notify_hex: str) -> bytes:
    """Header (internal order) prevhash bytes from a ``mining.notify`` prevhash."""
    raw = bytes.fromhex(notify_hex)
    if len(raw) != 32:
        raise ValueError(f"notify prevhash must be 32 bytes, got {len(raw)}")
    return _swap_words(raw)


def notify_prevhash_to_display(notify_hex: str) -> str:
    """Inverse of :func:`notify_prevhash`: back to RPC/explorer display hex."""
    return internal_to_display(notify_prevhash_to_internal(notify_hex))
