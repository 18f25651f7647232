"""The hand-written SHA-256 pieces used for per-job midstates agree with hashlib."""

from __future__ import annotations

import hashlib
import struct

from hypothesis import given
from hypothesis import strategies as st

from pool.checker.sha256 import BLOCK, IV, compress, expand_schedule, midstate, padding


def _digest(state: tuple[int, ...]) -> bytes:
    return struct.pack(">8I", *state)


@given(st.binary(max_size=300))
def test_compress_over_padded_message_is_sha256(data: bytes) -> None:
    padded = data + padding(len(data))
    assert len(padded) % BLOCK == 0
    state = IV
    for off in range(0, len(padded), BLOCK):
        state = compress(state, padded[off : off + BLOCK])
    assert _digest(state) == hashlib.sha256(data).digest()


@given(st.binary(max_size=300), st.binary(max_size=100))
def test_midstate_then_rest_is_sha256(prefix: bytes, rest: bytes) -> None:
    state, covered = midstate(prefix)
    assert covered % BLOCK == 0 and 0 <= len(prefix) - covered < BLOCK
    tail = prefix[covered:] + rest
    msg_len = len(prefix) + len(rest)
    tail += padding(msg_len)
    for off in range(0, len(tail), BLOCK):
        state = compress(state, tail[off : off + BLOCK])
    assert _digest(state) == hashlib.sha256(prefix + rest).digest()


def test_kernel_padding_schedule_is_the_merkle_step_second_block() -> None:
    """The constant schedule the kernel uses instead of expanding a 64-byte message's padding block."""
    from pool.checker import kernel

    pad = padding(64)
    assert len(pad) == BLOCK
    want = expand_schedule(struct.unpack(">16I", pad))
    assert kernel._PAD64_W.shape == (64, kernel.L)
    for lane in range(kernel.L):
        assert [int(x) for x in kernel._PAD64_W[:, lane]] == want
