"""SHA-256 pieces hashlib does not expose: the bare compression function and padding.

hashlib gives whole digests only. The vectorised checker needs two things it
cannot get there: the *midstate* after the fixed leading 64-byte blocks of a
job's coinb1 (computed once per job, so every share skips those blocks), and
the exact padding layout, so the per-job coinbase tail can be laid out as
ready-made message words. Both are per-job work, so plain Python is fast
enough here; the per-share hashing lives in :mod:`pool.checker.kernel`.
"""

from __future__ import annotations

import struct

K: tuple[int, ...] = (
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
)  # fmt: skip

IV: tuple[int, ...] = (
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
)  # fmt: skip

BLOCK = 64
_M32 = 0xFFFFFFFF


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _M32


def expand_schedule(block_words: tuple[int, ...] | list[int]) -> list[int]:
    """The 64-word message schedule of one 16-word block."""
    if len(block_words) != 16:
        raise ValueError("a SHA-256 block is 16 words")
    w = list(block_words)
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> 3)
        s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> 10)
        w.append((w[t - 16] + s0 + w[t - 7] + s1) & _M32)
    return w


def compress(state: tuple[int, ...] | list[int], block: bytes) -> tuple[int, ...]:
    """One SHA-256 compression of a 64-byte block into an 8-word state."""
    if len(block) != BLOCK:
        raise ValueError("a SHA-256 block is 64 bytes")
    w = expand_schedule(struct.unpack(">16I", block))
    a, b, c, d, e, f, g, h = state
    for t in range(64):
        t1 = (h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + (g ^ (e & (f ^ g))) + K[t] + w[t]) & _M32
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) | (c & (a | b)))) & _M32
        a, b, c, d, e, f, g, h = (t1 + t2) & _M32, a, b, c, (d + t1) & _M32, e, f, g
    return tuple((s + v) & _M32 for s, v in zip(state, (a, b, c, d, e, f, g, h), strict=True))


def midstate(prefix: bytes) -> tuple[tuple[int, ...], int]:
    """State after every whole 64-byte block of ``prefix``, and how many bytes that covers."""
    state = IV
    covered = len(prefix) - len(prefix) % BLOCK
    for off in range(0, covered, BLOCK):
        state = compress(state, prefix[off : off + BLOCK])
    return state, covered


def padding(message_len: int) -> bytes:
    """The bytes SHA-256 appends to a message of ``message_len`` bytes."""
    zeros = (55 - message_len) % BLOCK
    return b"\x80" + b"\x00" * zeros + struct.pack(">Q", message_len * 8)
