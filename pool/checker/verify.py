"""Check one share from its wire messages: what ``stope share verify`` prints.

When a miner disputes a reject (or a block went missing) the question is
always "what exactly did this submit hash to?". This answers it from the two
JSON lines as they were logged -- the job's ``mining.notify`` and the
``mining.submit`` -- plus the connection's extranonce1, negotiated
version-rolling mask and difficulty, through the same job preparation and
checker the server runs, so the answer cannot drift from what the server
decided.
"""

from __future__ import annotations

import json
from fractions import Fraction
from numbers import Rational
from typing import Any

from pool.bitcoin.serialize import sha256d
from pool.bitcoin.target import difficulty_to_target, hash_difficulty, target_to_difficulty

from .batch import Backend, Checker
from .job import CheckerJob, parse_hex_u32
from .scalar import share_header, share_merkle_root

# Stratum error codes for the two ways a well-formed submit can fail here
# (stratum-reference §2.3).
ERROR_OTHER = 20
ERROR_LOW_DIFFICULTY = 23


def parse_submit(submit_line: str | bytes) -> dict[str, Any]:
    """Fields of a ``mining.submit`` JSON line, decoded (version bits 0 when absent)."""
    msg = json.loads(submit_line)
    if msg.get("method") != "mining.submit":
        raise ValueError(f"not a mining.submit line: method {msg.get('method')!r}")
    params = msg.get("params")
    if not isinstance(params, list) or not 5 <= len(params) <= 6:
        raise ValueError("mining.submit takes 5 or 6 params")
    worker, job_id, en2_hex, ntime_hex, nonce_hex = params[:5]
    vbits_hex = params[5] if len(params) == 6 else None
    if not isinstance(en2_hex, str):
        raise ValueError("extranonce2 must be a hex string")
    return {
        "id": msg.get("id"),
        "worker": worker,
        "job_id": str(job_id),
        "extranonce2": bytes.fromhex(en2_hex),
        "ntime": parse_hex_u32(ntime_hex, "ntime"),
        "nonce": parse_hex_u32(nonce_hex, "nonce"),
        "version_bits": 0 if vbits_hex is None else parse_hex_u32(vbits_hex, "version_bits"),
        "version_bits_sent": vbits_hex is not None,
    }


def verify_from_wire(
    notify_line: str | bytes,
    extranonce1_hex: str,
    submit_line: str | bytes,
    mask: int | None,
    difficulty: Rational | float | int | str,
    *,
    backend: Backend = "scalar",
) -> dict[str, Any]:
    """Recompute a share from its wire messages and say what the server would decide.

    ``mask`` is the negotiated version-rolling mask, or None when the
    connection never negotiated rolling (then any non-zero version bits are
    refused, as BIP310 requires). ``difficulty`` is the connection's share
    difficulty for this job (Fraction, int, float or decimal string).
    ``backend`` picks the checker backend; both give identical answers, the
    scalar one needs no compilation, which suits a one-shot command.

    Returns a JSON-serialisable dict. Hashes are in display (RPC/explorer)
    byte order except ``header_hex`` and ``coinbase_hex``, which are raw
    bytes. ``verdict`` is one of ``"block"``, ``"accepted"``,
    ``"low-difficulty"``, ``"invalid-version-bits"``; ``error`` is the
    Stratum ``[code, message]`` a reject gets, else None.
    """
    job = CheckerJob.from_notify_line(notify_line)
    submit = parse_submit(submit_line)
    if submit["job_id"] != job.job_id:
        raise ValueError(f"submit is for job {submit['job_id']!r}, the notify is job {job.job_id!r}")
    extranonce1 = bytes.fromhex(extranonce1_hex)
    extranonce2 = submit["extranonce2"]
    version_bits = submit["version_bits"]
    effective_mask = 0 if mask is None else mask & 0xFFFFFFFF
    version_bits_ok = (version_bits & ~effective_mask) == 0

    share_target = difficulty_to_target(difficulty)
    checker = Checker(backend, min_vector_batch=0)
    result = checker.check_one(
        job, extranonce1, extranonce2, submit["ntime"], submit["nonce"], version_bits, effective_mask, share_target
    )
    block_hash = result.block_hash[0].tobytes()
    hash_value = result.hash_int(0)
    header = share_header(job, extranonce1, extranonce2, submit["ntime"], submit["nonce"], version_bits, effective_mask)
    if sha256d(header) != block_hash:  # the backends are tested identical; this guards the report itself
        raise RuntimeError("checker hash disagrees with the header it reports")
    coinbase = job.coinbase(extranonce1, extranonce2)
    meets_share = bool(result.meets_share[0])
    meets_network = bool(result.meets_network[0])

    if not version_bits_ok:
        verdict, error = "invalid-version-bits", [ERROR_OTHER, "Invalid version bits (outside the negotiated mask)"]
    elif meets_network:
        verdict, error = "block", None
    elif meets_share:
        verdict, error = "accepted", None
    else:
        verdict, error = "low-difficulty", [ERROR_LOW_DIFFICULTY, "Low difficulty share"]

    achieved = hash_difficulty(hash_value)
    return {
        "job_id": job.job_id,
        "worker": submit["worker"],
        "extranonce1": extranonce1.hex(),
        "extranonce2": extranonce2.hex(),
        "coinbase_hex": coinbase.hex(),
        "coinbase_txid": sha256d(coinbase)[::-1].hex(),
        "merkle_root": share_merkle_root(job, extranonce1, extranonce2)[::-1].hex(),
        "version": f"{job.rolled_version(version_bits, effective_mask):08x}",
        "version_bits": f"{version_bits:08x}",
        "mask": None if mask is None else f"{effective_mask:08x}",
        "version_bits_ok": version_bits_ok,
        "header_hex": header.hex(),
        "block_hash": block_hash[::-1].hex(),
        "share_difficulty": float(achieved),
        "share_difficulty_exact": _fraction_str(achieved),
        "target_difficulty": _fraction_str(Fraction(difficulty)),
        "share_target": f"{share_target:064x}",
        "network_target": f"{job.network_target:064x}",
        "network_difficulty": float(target_to_difficulty(job.network_target)),
        "meets_share": meets_share,
        "meets_network": meets_network,
        "verdict": verdict,
        "error": error,
        "backend": backend,
    }


def _fraction_str(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
