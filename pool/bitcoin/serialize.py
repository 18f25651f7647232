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


def deser_compact_size(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a CompactSize at ``pos``; return (value, new position)."""
    first = buf[pos]
    if first < 0xFD:
        return first, pos + 1
    if first == 0xFD:
        return struct.unpack_from("<H", buf, pos + 1)[0], pos + 3
    if first == 0xFE:
        return struct.unpack_from("<I", buf, pos + 1)[0], pos + 5
    return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9


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
