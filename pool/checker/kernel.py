"""The compiled share pipeline: L shares hashed in lockstep, one call per batch.

Why this shape: the per-share work of a pool is a few dozen SHA-256
compressions (coinbase, every merkle step, header, each done twice). In
Python each one costs a function call that dwarfs the hashing; compiled, one
share at a time, SHA-256 is a long dependency chain that leaves most of a core
idle. Running ``L = 32`` independent shares side by side -- state as
``uint32[8, L]``, schedule as ``uint32[64, L]``, and the *lane* loop innermost
-- lets LLVM turn every round into 8-wide AVX2 (or 4-wide SSE/NEON) integer
ops, so one core hashes several messages per round.

Data layout. Everything arrives as flat NumPy tables (built by
:mod:`pool.checker.batch`):

* per template (one job at one total extranonce length): the midstate after
  coinb1's whole 64-byte blocks, the rest of the coinbase already padded as
  big-endian message words with the extranonce bytes zeroed, its block count
  and the byte offset of the extranonce;
* per job: version, prevhash words, nBits, the merkle branch as words
  (padded to the batch's longest branch) and the network target;
* per share: template index, extranonce1/2 bytes and lengths, ntime, nonce,
  version bits, mask and share target (8 words, most significant first).

Lanes of one group may belong to different templates (different coinbase
lengths or branch lengths). Each lane then commits a compression only while
it still has blocks or branch steps left; the caller sorts shares by
template so that this masking is rarely needed.

Integer typing note: Numba widens ``uint32`` arithmetic to 64 bits, so every
rotate and sum is cast back with ``np.uint32``. Without the casts the high
garbage bits corrupt later rotates (wrong hashes) and LLVM vectorises on
64-bit lanes (half the speed).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .sha256 import IV, K, expand_schedule

L = 32  # lanes per group = 4 AVX2 vectors (16 and 64 measured within a few % on Zen 3)

_K = np.array(K, dtype=np.uint32)
_IV = np.array(IV, dtype=np.uint32)
_PAD64_W = np.repeat(
    np.array(expand_schedule([0x80000000] + [0] * 14 + [512]), dtype=np.uint32)[:, None], L, axis=1
)  # full schedule of the pure-padding second block of a 64-byte message (merkle steps)

_PAD_1 = np.uint32(0x80000000)
_LEN_32 = np.uint32(256)  # bit length of a 32-byte message (the outer hash of sha256d)
_LEN_80 = np.uint32(640)  # bit length of an 80-byte header


@njit(inline="always")
def _rotr(x: np.uint32, n: int) -> np.uint32:
    return np.uint32((x >> np.uint32(n)) | (x << np.uint32(32 - n)))


@njit(inline="always")
def _bswap(x: np.uint32) -> np.uint32:
    """Byte swap: header integers are little-endian, SHA-256 reads big-endian words."""
    return np.uint32(
        ((x & np.uint32(0xFF)) << np.uint32(24))
        | ((x & np.uint32(0xFF00)) << np.uint32(8))
        | ((x >> np.uint32(8)) & np.uint32(0xFF00))
        | (x >> np.uint32(24))
    )


@njit(inline="always")
def _round(
    a: np.uint32, b: np.uint32, c: np.uint32, d: np.uint32,
    e: np.uint32, f: np.uint32, g: np.uint32, h: np.uint32, kw: np.uint32,
) -> tuple[np.uint32, np.uint32]:  # fmt: skip
    """One SHA-256 round; returns (new e, new a), written over the d and h slots."""
    t1 = np.uint32(h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + (g ^ (e & (f ^ g))) + kw)
    t2 = np.uint32((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) | (c & (a | b))))
    return np.uint32(d + t1), np.uint32(t1 + t2)


@njit(cache=True)
def _schedule(w: np.ndarray) -> None:
    """Expand rows 0..15 of ``w`` (uint32[64, L]) into the full message schedule."""
    for t in range(16, 64):
        for lane in range(L):
            x = w[t - 15, lane]
            y = w[t - 2, lane]
            s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ np.uint32(x >> np.uint32(3))
            s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ np.uint32(y >> np.uint32(10))
            w[t, lane] = np.uint32(np.uint32(w[t - 16, lane] + s0) + np.uint32(w[t - 7, lane] + s1))


@njit(cache=True)
def _rounds(state: np.ndarray, w: np.ndarray, work: np.ndarray, active: np.ndarray) -> None:
    """64 rounds over an expanded schedule; lanes with ``active`` false keep their state.

    Rounds go in groups of eight with the working variables in locals inside
    the lane loop: the body is straight-line code, which is what LLVM's loop
    vectoriser needs, and the state only touches memory every 8 rounds.
    (A 16-round body stops vectorising; a per-round ring buffer is ~2x slower.)
    """
    for k in range(8):
        for lane in range(L):
            work[k, lane] = state[k, lane]
    for grp in range(8):
        t = grp * 8
        k0 = _K[t]
        k1 = _K[t + 1]
        k2 = _K[t + 2]
        k3 = _K[t + 3]
        k4 = _K[t + 4]
        k5 = _K[t + 5]
        k6 = _K[t + 6]
        k7 = _K[t + 7]
        for lane in range(L):
            a = work[0, lane]
            b = work[1, lane]
            c = work[2, lane]
            d = work[3, lane]
            e = work[4, lane]
            f = work[5, lane]
            g = work[6, lane]
            h = work[7, lane]
            d, h = _round(a, b, c, d, e, f, g, h, np.uint32(k0 + w[t, lane]))
            c, g = _round(h, a, b, c, d, e, f, g, np.uint32(k1 + w[t + 1, lane]))
            b, f = _round(g, h, a, b, c, d, e, f, np.uint32(k2 + w[t + 2, lane]))
            a, e = _round(f, g, h, a, b, c, d, e, np.uint32(k3 + w[t + 3, lane]))
            h, d = _round(e, f, g, h, a, b, c, d, np.uint32(k4 + w[t + 4, lane]))
            g, c = _round(d, e, f, g, h, a, b, c, np.uint32(k5 + w[t + 5, lane]))
            f, b = _round(c, d, e, f, g, h, a, b, np.uint32(k6 + w[t + 6, lane]))
            e, a = _round(b, c, d, e, f, g, h, a, np.uint32(k7 + w[t + 7, lane]))
            work[0, lane] = a
            work[1, lane] = b
            work[2, lane] = c
            work[3, lane] = d
            work[4, lane] = e
            work[5, lane] = f
            work[6, lane] = g
            work[7, lane] = h
    for k in range(8):
        for lane in range(L):
            if active[lane]:
                state[k, lane] = np.uint32(state[k, lane] + work[k, lane])


@njit(inline="always")
def _set_iv(state: np.ndarray) -> None:
    for k in range(8):
        for lane in range(L):
            state[k, lane] = _IV[k]


@njit(inline="always")
def _outer_hash(inner: np.ndarray, out: np.ndarray, w: np.ndarray, work: np.ndarray, ones: np.ndarray) -> None:
    """``out = SHA-256(digest of inner)``: the second half of sha256d, a 32-byte message.

    A digest's bytes are its state words big-endian, which is how SHA-256
    reads message words, so the words carry over unchanged.
    """
    for k in range(8):
        for lane in range(L):
            w[k, lane] = inner[k, lane]
    for lane in range(L):
        w[8, lane] = _PAD_1
        w[15, lane] = _LEN_32
    for k in range(9, 15):
        for lane in range(L):
            w[k, lane] = 0
    _set_iv(out)
    _schedule(w)
    _rounds(out, w, work, ones)


@njit(inline="always")
def _poke(buf: np.ndarray, lane: int, pos: int, byte: np.uint8) -> None:
    """Write one message byte into big-endian word storage (extranonce into the coinbase)."""
    wi = pos >> 2
    sh = np.uint32(24 - 8 * (pos & 3))
    keep = np.uint32(~np.uint32(np.uint32(0xFF) << sh))
    buf[wi, lane] = np.uint32((buf[wi, lane] & keep) | np.uint32(np.uint32(byte) << sh))


@njit(inline="always")
def _le_words(hash_state: np.ndarray, lane: int, target: np.ndarray, row: int) -> bool:
    """hash (as a little-endian 256-bit integer) <= target row (8 words, most significant first).

    The integer's most significant 32 bits are the last digest word byte-swapped.
    """
    for m in range(8):
        hv = _bswap(hash_state[7 - m, lane])
        tv = target[row, m]
        if hv < tv:
            return True
        if hv > tv:
            return False
    return True


@njit(cache=True)
def _check_group(
    g0: int,
    order: np.ndarray,
    share_tpl: np.ndarray,
    en1: np.ndarray,
    en1_len: np.ndarray,
    en2: np.ndarray,
    en2_len: np.ndarray,
    ntime: np.ndarray,
    nonce: np.ndarray,
    vbits: np.ndarray,
    mask: np.ndarray,
    share_target: np.ndarray,
    tpl_job: np.ndarray,
    tpl_mid: np.ndarray,
    tpl_words: np.ndarray,
    tpl_nblocks: np.ndarray,
    tpl_en_off: np.ndarray,
    job_version: np.ndarray,
    job_prev: np.ndarray,
    job_nbits: np.ndarray,
    job_branch: np.ndarray,
    job_nbranch: np.ndarray,
    job_net: np.ndarray,
    out_hash: np.ndarray,
    out_share: np.ndarray,
    out_net: np.ndarray,
    buf: np.ndarray,
    w: np.ndarray,
    work: np.ndarray,
    state: np.ndarray,
    root: np.ndarray,
    tmp: np.ndarray,
    pad64_w: np.ndarray,
    lane_share: np.ndarray,
    lane_job: np.ndarray,
    lane_nb: np.ndarray,
    active: np.ndarray,
    ones: np.ndarray,
) -> None:
    """Check shares ``order[g0 : g0 + L]`` (a short last group repeats its last share)."""
    n = order.shape[0]
    maxnb = 0
    maxbr = 0
    # ---- lane set-up: midstate, coinbase tail words, extranonce bytes poked in
    for lane in range(L):
        p = g0 + lane
        if p >= n:
            p = n - 1
        i = order[p]
        lane_share[lane] = i
        tp = share_tpl[i]
        j = tpl_job[tp]
        lane_job[lane] = j
        nb = tpl_nblocks[tp]
        lane_nb[lane] = nb
        if nb > maxnb:
            maxnb = nb
        if job_nbranch[j] > maxbr:
            maxbr = job_nbranch[j]
        for k in range(8):
            state[k, lane] = tpl_mid[tp, k]
        for k in range(nb * 16):
            buf[k, lane] = tpl_words[tp, k]
        pos = tpl_en_off[tp]
        for b in range(en1_len[i]):
            _poke(buf, lane, pos, en1[i, b])
            pos += 1
        for b in range(en2_len[i]):
            _poke(buf, lane, pos, en2[i, b])
            pos += 1
    # ---- coinbase inner hash, block by block from the midstate
    for blk in range(maxnb):
        base = blk * 16
        for k in range(16):
            for lane in range(L):
                w[k, lane] = buf[base + k, lane]
        for lane in range(L):
            active[lane] = blk < lane_nb[lane]
        _schedule(w)
        _rounds(state, w, work, active)
    # ---- coinbase txid = merkle leaf 0
    _outer_hash(state, root, w, work, ones)
    # ---- merkle branch: root = sha256d(root || step); the coinbase is always the left operand
    for s in range(maxbr):
        for k in range(8):
            for lane in range(L):
                w[k, lane] = root[k, lane]
        for k in range(8):
            for lane in range(L):
                w[8 + k, lane] = job_branch[lane_job[lane], s, k]
        _set_iv(state)
        _schedule(w)
        _rounds(state, w, work, ones)
        _rounds(state, pad64_w, work, ones)
        _outer_hash(state, tmp, w, work, ones)
        for lane in range(L):
            active[lane] = s < job_nbranch[lane_job[lane]]
        for k in range(8):
            for lane in range(L):
                if active[lane]:
                    root[k, lane] = tmp[k, lane]
    # ---- header block 1: version | prevhash | merkle root[0:28]
    for lane in range(L):
        i = lane_share[lane]
        j = lane_job[lane]
        m = mask[i]
        version = np.uint32((job_version[j] & ~m) | (vbits[i] & m))
        w[0, lane] = _bswap(version)
        for k in range(8):
            w[1 + k, lane] = job_prev[j, k]
    for k in range(7):
        for lane in range(L):
            w[9 + k, lane] = root[k, lane]
    _set_iv(state)
    _schedule(w)
    _rounds(state, w, work, ones)
    # ---- header block 2: merkle root[28:32] | ntime | nbits | nonce | padding
    for lane in range(L):
        i = lane_share[lane]
        w[0, lane] = root[7, lane]
        w[1, lane] = _bswap(ntime[i])
        w[2, lane] = _bswap(job_nbits[lane_job[lane]])
        w[3, lane] = _bswap(nonce[i])
        w[4, lane] = _PAD_1
        w[15, lane] = _LEN_80
    for k in range(5, 15):
        for lane in range(L):
            w[k, lane] = 0
    _schedule(w)
    _rounds(state, w, work, ones)
    _outer_hash(state, tmp, w, work, ones)
    # ---- results: digest bytes, share and network verdicts
    for lane in range(L):
        if g0 + lane >= n:
            break
        i = lane_share[lane]
        for k in range(8):
            x = tmp[k, lane]
            out_hash[i, 4 * k] = np.uint8(x >> np.uint32(24))
            out_hash[i, 4 * k + 1] = np.uint8((x >> np.uint32(16)) & np.uint32(0xFF))
            out_hash[i, 4 * k + 2] = np.uint8((x >> np.uint32(8)) & np.uint32(0xFF))
            out_hash[i, 4 * k + 3] = np.uint8(x & np.uint32(0xFF))
        out_share[i] = _le_words(tmp, lane, share_target, i)
        out_net[i] = _le_words(tmp, lane, job_net, lane_job[lane])


@njit(cache=True, nogil=True)
def check_shares(
    order: np.ndarray,
    share_tpl: np.ndarray,
    en1: np.ndarray,
    en1_len: np.ndarray,
    en2: np.ndarray,
    en2_len: np.ndarray,
    ntime: np.ndarray,
    nonce: np.ndarray,
    vbits: np.ndarray,
    mask: np.ndarray,
    share_target: np.ndarray,
    tpl_job: np.ndarray,
    tpl_mid: np.ndarray,
    tpl_words: np.ndarray,
    tpl_nblocks: np.ndarray,
    tpl_en_off: np.ndarray,
    job_version: np.ndarray,
    job_prev: np.ndarray,
    job_nbits: np.ndarray,
    job_branch: np.ndarray,
    job_nbranch: np.ndarray,
    job_net: np.ndarray,
    out_hash: np.ndarray,
    out_share: np.ndarray,
    out_net: np.ndarray,
) -> None:
    """Single-threaded: every share of the batch, L at a time, in one compiled call.

    Releases the GIL (``nogil``): a server can run it in a worker thread
    (``trio.to_thread.run_sync``) while its event loop keeps serving miners.
    """
    buf = np.zeros((tpl_words.shape[1], L), dtype=np.uint32)
    w = np.zeros((64, L), dtype=np.uint32)
    work = np.zeros((8, L), dtype=np.uint32)
    state = np.zeros((8, L), dtype=np.uint32)
    root = np.zeros((8, L), dtype=np.uint32)
    tmp = np.zeros((8, L), dtype=np.uint32)
    pad64_w = _PAD64_W.copy()  # writable copy: same array type as ``w``, so _rounds compiles once
    lane_share = np.zeros(L, dtype=np.int64)
    lane_job = np.zeros(L, dtype=np.int64)
    lane_nb = np.zeros(L, dtype=np.int64)
    active = np.zeros(L, dtype=np.bool_)
    ones = np.ones(L, dtype=np.bool_)
    for g0 in range(0, order.shape[0], L):
        _check_group(
            g0, order, share_tpl, en1, en1_len, en2, en2_len, ntime, nonce, vbits, mask, share_target,
            tpl_job, tpl_mid, tpl_words, tpl_nblocks, tpl_en_off,
            job_version, job_prev, job_nbits, job_branch, job_nbranch, job_net,
            out_hash, out_share, out_net,
            buf, w, work, state, root, tmp, pad64_w, lane_share, lane_job, lane_nb, active, ones,
        )  # fmt: skip


@njit(cache=True, nogil=True, parallel=True)
def check_shares_parallel(
    order: np.ndarray,
    share_tpl: np.ndarray,
    en1: np.ndarray,
    en1_len: np.ndarray,
    en2: np.ndarray,
    en2_len: np.ndarray,
    ntime: np.ndarray,
    nonce: np.ndarray,
    vbits: np.ndarray,
    mask: np.ndarray,
    share_target: np.ndarray,
    tpl_job: np.ndarray,
    tpl_mid: np.ndarray,
    tpl_words: np.ndarray,
    tpl_nblocks: np.ndarray,
    tpl_en_off: np.ndarray,
    job_version: np.ndarray,
    job_prev: np.ndarray,
    job_nbits: np.ndarray,
    job_branch: np.ndarray,
    job_nbranch: np.ndarray,
    job_net: np.ndarray,
    out_hash: np.ndarray,
    out_share: np.ndarray,
    out_net: np.ndarray,
) -> None:
    """Same as :func:`check_shares`, groups spread over Numba's threads (opt-in).

    Groups write disjoint output rows, and scratch is per group, so the
    threads share nothing mutable.
    """
    ngroups = (order.shape[0] + L - 1) // L
    nwords = tpl_words.shape[1]
    for gi in prange(ngroups):
        buf = np.zeros((nwords, L), dtype=np.uint32)
        w = np.zeros((64, L), dtype=np.uint32)
        work = np.zeros((8, L), dtype=np.uint32)
        state = np.zeros((8, L), dtype=np.uint32)
        root = np.zeros((8, L), dtype=np.uint32)
        tmp = np.zeros((8, L), dtype=np.uint32)
        pad64_w = _PAD64_W.copy()
        lane_share = np.zeros(L, dtype=np.int64)
        lane_job = np.zeros(L, dtype=np.int64)
        lane_nb = np.zeros(L, dtype=np.int64)
        active = np.zeros(L, dtype=np.bool_)
        ones = np.ones(L, dtype=np.bool_)
        _check_group(
            gi * L, order, share_tpl, en1, en1_len, en2, en2_len, ntime, nonce, vbits, mask, share_target,
            tpl_job, tpl_mid, tpl_words, tpl_nblocks, tpl_en_off,
            job_version, job_prev, job_nbits, job_branch, job_nbranch, job_net,
            out_hash, out_share, out_net,
            buf, w, work, state, root, tmp, pad64_w, lane_share, lane_job, lane_nb, active, ones,
        )  # fmt: skip
