"""Every getblocktemplate field the pool must respect, checked on real devnet templates."""

from __future__ import annotations

import json

import pytest

from pool.bitcoin.block import deser_block
from pool.bitcoin.tx import TxOut
from pool.jobs import (
    COINBASE_MAX_SIGOP_COST,
    DEFAULT_BLOCK_RESERVED_WEIGHT,
    MAX_FUTURE_NTIME,
    TemplateError,
    job_version,
)
from stratum.jobs import JobBook
from stratum.protocol import (
    ProtocolSettings,
    ServerConnection,
    ShareRejected,
    ShareSubmitted,
)
from tests.node.helpers import POOL_SCRIPT, easy_chain, job_from, mine_job


@pytest.fixture
def template() -> dict:
    return easy_chain().block_template()


def test_outputs_sum_to_coinbasevalue_and_commitment_is_last(template: dict) -> None:
    job = job_from(template)
    block = deser_block(mine_job(job))
    coinbase = block.txs[0]
    assert sum(o.value for o in coinbase.outputs) == template["coinbasevalue"]
    assert coinbase.outputs[-1] == TxOut(0, bytes.fromhex(template["default_witness_commitment"]))
    # The witness reserved value travels with the block when there is a commitment.
    assert coinbase.inputs[0].witness == (b"\x00" * 32,)
    assert [tx.txid.hex() for tx in block.txs[1:]] == [bytes.fromhex(t["txid"])[::-1].hex() for t in template["transactions"]]


def test_payout_that_does_not_sum_is_refused(template: dict) -> None:
    with pytest.raises(TemplateError, match="sum to coinbasevalue"):
        job_from(template, payout_outputs=lambda v: [TxOut(v - 1, POOL_SCRIPT)])


def test_unknown_required_rule_is_refused_but_unknown_optional_rule_is_not(template: dict) -> None:
    with pytest.raises(TemplateError, match="'futurefork'"):
        job_from({**template, "rules": [*template["rules"], "!futurefork"]})
    job_from({**template, "rules": [*template["rules"], "futurefork"]})


def test_vbrequired_bits_are_set_and_rolling_them_is_refused(template: dict) -> None:
    job = job_from({**template, "vbrequired": 1 << 1})
    assert job.version == 0x20000002
    assert job_version({"version": 0x20000000, "vbrequired": 0}) == 0x20000000
    with pytest.raises(TemplateError, match="version-rolling mask"):
        job_from({**template, "vbrequired": 1 << 20})


def test_coinbaseaux_goes_after_the_height(template: dict) -> None:
    job = job_from({**template, "coinbaseaux": {"flags": "062f503253482f"}})
    script_sig = deser_block(mine_job(job)).txs[0].inputs[0].script_sig
    assert script_sig.startswith(bytes([0x51]) + bytes.fromhex("062f503253482f") + b"/stope/")


def test_coinbaseaux_that_overflows_the_script_sig_is_refused(template: dict) -> None:
    with pytest.raises(TemplateError, match="scriptSig"):
        job_from({**template, "coinbaseaux": {"flags": "00" * 90}})


def test_longpollid_and_times_are_kept(template: dict) -> None:
    job = job_from(template)
    assert job.longpollid == template["longpollid"]
    stratum = job.stratum_job()
    assert (stratum.ntime_min, stratum.ntime, stratum.ntime_max) == (
        template["mintime"], template["curtime"], template["curtime"] + MAX_FUTURE_NTIME
    )


def test_a_node_clock_behind_mintime_still_gives_a_valid_ntime(template: dict) -> None:
    job = job_from({**template, "curtime": template["mintime"] - 100})
    assert job.curtime == template["mintime"]


def _submit_line(job_id: str, ntime: int) -> bytes:
    return json.dumps({"id": 9, "method": "mining.submit", "params": ["w", job_id, "00000000", f"{ntime:08x}", "00000000"]}).encode()


def test_stratum_accepts_ntime_only_within_mintime_and_curtime_plus_7200(template: dict) -> None:
    job = job_from(template, extranonce_size=8)
    conn = ServerConnection(ProtocolSettings(extranonce2_size=4), JobBook())
    conn.receive_line(b'{"id":1,"method":"mining.subscribe","params":[]}', 0.0)
    conn.receive_line(b'{"id":2,"method":"mining.authorize","params":["w","x"]}', 0.0)
    conn.authorize_result(2, "w", True, None, 0.0)
    stratum = job.stratum_job()
    conn.jobs.add(stratum)
    notify = conn.job_notification(stratum)
    assert notify is not None
    wire_id = json.loads(notify.splitlines()[-1])["params"][0]

    def verdict(ntime: int) -> str:
        events = conn.receive_line(_submit_line(wire_id, ntime), 1.0)
        for event in events:
            if isinstance(event, ShareRejected):
                return event.error.reason
            if isinstance(event, ShareSubmitted):
                return "submitted"
        raise AssertionError(events)

    assert verdict(template["mintime"] - 1) == "bad-ntime"
    assert verdict(template["curtime"] + MAX_FUTURE_NTIME + 1) == "bad-ntime"
    assert verdict(template["mintime"]) == "submitted"
    assert verdict(template["curtime"] + MAX_FUTURE_NTIME) == "submitted"


def test_coinbase_heavier_than_the_weight_reserve_is_refused(template: dict) -> None:
    # 250 P2WPKH payouts: ~31 bytes each, ~31,000 WU, far past the 8000 WU bitcoind leaves.
    def many(value: int) -> list[TxOut]:
        share = value // 250
        outs = [TxOut(share, POOL_SCRIPT) for _ in range(249)]
        return outs + [TxOut(value - 249 * share, POOL_SCRIPT)]

    with pytest.raises(TemplateError, match=f"{DEFAULT_BLOCK_RESERVED_WEIGHT} WU"):
        job_from(template, payout_outputs=many)


def test_a_coinbase_that_fits_the_reserve_is_accepted(template: dict) -> None:
    # 50 outputs (~1,600 bytes, ~6,600 WU with the header) still fit.
    def fifty(value: int) -> list[TxOut]:
        share = value // 50
        return [TxOut(share, POOL_SCRIPT) for _ in range(49)] + [TxOut(value - 49 * share, POOL_SCRIPT)]

    job_from(template, payout_outputs=fifty)


def test_coinbase_sigops_beyond_the_reserve_are_refused(template: dict) -> None:
    bare_multisig = bytes([0x51, 0x21]) + b"\x02" * 33 + bytes([0x51, 0xAE])  # 1-of-1 CHECKMULTISIG: 20 sigops
    p2pkh = b"\x76\xa9\x14" + b"\x11" * 20 + b"\x88\xac"  # 1 sigop

    def multisig(value: int) -> list[TxOut]:
        return [TxOut(0, bare_multisig) for _ in range(6)] + [TxOut(value, POOL_SCRIPT)]

    with pytest.raises(TemplateError, match=f"sigop cost 480 exceeds the {COINBASE_MAX_SIGOP_COST}"):
        job_from(template, payout_outputs=multisig)
    job_from(template, payout_outputs=lambda v: [TxOut(v, p2pkh)])


def test_block_limits_from_the_template_are_respected(template: dict) -> None:
    used = sum(t["weight"] for t in template["transactions"])
    with pytest.raises(TemplateError, match="weightlimit"):
        job_from({**template, "weightlimit": used + 500})
    with pytest.raises(TemplateError, match="sigoplimit"):
        job_from({**template, "sigoplimit": 0}, payout_outputs=lambda v: [TxOut(v, bytes([0xAC]))])
    with pytest.raises(TemplateError, match="sizelimit"):
        job_from({**template, "sizelimit": 100})


def test_malformed_templates_are_refused_with_a_reason(template: dict) -> None:
    with pytest.raises(TemplateError, match="coinbasevalue"):
        job_from({k: v for k, v in template.items() if k != "coinbasevalue"})
    with pytest.raises(TemplateError, match="target"):
        job_from({**template, "target": "00" * 32})
    with pytest.raises(TemplateError, match="bits"):
        job_from({**template, "bits": "00000000", "target": "00" * 32})
