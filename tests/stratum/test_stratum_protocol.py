"""The sans-IO state machine: every method, every error, field message orders."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratum import errors
from stratum.extranonce import ExtranonceAllocator, SessionRegistry
from stratum.jobs import JobBook
from stratum.messages import Request, encode_error, parse_line
from stratum.protocol import METHODS, ProtocolSettings, Send, ServerConnection, Share, ShareRejected, ShareSubmitted
from tests.stratum.helpers import (
    NTIME,
    difficulties,
    make_job,
    methods,
    new_harness,
    notifies,
)

SETTINGS = ProtocolSettings(start_difficulty=Fraction(16), min_difficulty=Fraction(1, 1000), max_difficulty=Fraction(4096))


def error_of(reply: dict) -> list:
    assert reply["result"] in (None, False), reply
    return reply["error"]


# --- mining.subscribe ---------------------------------------------------------
def test_subscribe_result_shape_and_extranonce():
    h = new_harness(SETTINGS)
    (reply,) = h.subscribe("cgminer/4.12.1")
    assert reply["id"] == 1 and reply["error"] is None
    pairs, en1, en2_size = reply["result"]
    sid = h.conn.session_id
    assert pairs == [["mining.set_difficulty", sid], ["mining.notify", sid]]
    assert len(bytes.fromhex(en1)) == 4 and en1.startswith("07")  # server id prefix
    assert en2_size == 4
    assert h.conn.user_agent == "cgminer/4.12.1"


@pytest.mark.parametrize("params", [[], None, ["bitaxe/BM1370/v2.4.0"], ["Braiins OS 2019-06-05", None, "stratum.slushpool.com:3333", None]])
def test_subscribe_param_shapes(params):
    h = new_harness(SETTINGS)
    (reply,) = h.send({"id": "s", "method": "mining.subscribe", "params": params})
    assert reply["id"] == "s" and len(reply["result"]) == 3


def test_repeated_subscribe_changes_nothing():
    h = new_harness(SETTINGS)
    (first,) = h.subscribe()
    (second,) = h.subscribe()
    assert first["result"] == second["result"]


def test_extranonce2_size_is_configurable_and_bounded():
    h = new_harness(ProtocolSettings(extranonce2_size=8))
    assert h.subscribe()[0]["result"][2] == 8
    for bad in (3, 9):
        with pytest.raises(ValueError):
            ProtocolSettings(extranonce2_size=bad)


def test_extranonce1_unique_per_connection():
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=1))
    book = JobBook()
    seen = set()
    for _ in range(200):
        h = new_harness(SETTINGS, book=book, registry=registry)
        seen.add(h.subscribe()[0]["result"][1])
    assert len(seen) == 200


# --- session resume -------------------------------------------------------------
def test_resume_parked_session_keeps_extranonce1_difficulty_and_jobs():
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=2), resume_window=60)
    book = JobBook()
    book.add(make_job(1))
    a = new_harness(SETTINGS, book=book, registry=registry)
    a.start()
    a.call("mining.suggest_difficulty", [64], id=3)
    en1, sid = a.conn.extranonce1, a.conn.session_id
    assert a.submit("1", nonce=5)["result"] is True
    a.conn.connection_closed(10.0)

    b = new_harness(SETTINGS, book=book, registry=registry)
    b.now = 20.0
    (reply,) = b.subscribe("cgminer/4.12.1", sid)
    assert reply["result"][1] == en1.hex() and reply["result"][0][1][1] == sid
    assert b.conn.resumed and b.conn.difficulty == 64
    out = b.authorize()
    assert difficulties(out) == [64]
    # A share the miner found on a job of the old connection is still good...
    assert b.submit("1", nonce=6)["result"] is True
    # ...and one it already submitted there is a duplicate across the reconnect.
    assert error_of(b.submit("1", nonce=5))[0] == 22


def test_resume_expired_or_unknown_session_gets_a_fresh_one():
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=2), resume_window=60)
    a = new_harness(SETTINGS, registry=registry)
    a.subscribe()
    sid, en1 = a.conn.session_id, a.conn.extranonce1
    a.conn.connection_closed(0.0)
    b = new_harness(SETTINGS, registry=registry)
    b.now = 61.0
    (reply,) = b.subscribe("cgminer", sid)
    assert reply["result"][1] != en1.hex() and not b.conn.resumed
    c = new_harness(SETTINGS, registry=registry)
    (reply,) = c.subscribe("cgminer", "not-a-session")
    assert not c.conn.resumed and c.conn.session_id != "not-a-session"


def test_parked_extranonce1_is_not_reissued_until_it_expires():
    registry = SessionRegistry(ExtranonceAllocator(2, server_id=0), resume_window=60)
    a = new_harness(SETTINGS, registry=registry)
    a.subscribe()
    en1 = a.conn.extranonce1
    a.conn.connection_closed(0.0)
    for _ in range(255):  # every other value of the 1-byte counter
        h = new_harness(SETTINGS, registry=registry)
        h.subscribe()
        assert h.conn.extranonce1 != en1
    assert registry.allocator.in_use == 256
    registry.expire(60.0)
    assert registry.allocator.in_use == 255


def test_resume_of_a_live_session_takes_it_over():
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=2))
    book = JobBook()
    book.add(make_job(1))
    old = new_harness(SETTINGS, book=book, registry=registry)
    old.start()
    new = new_harness(SETTINGS, book=book, registry=registry)
    new.subscribe("cgminer/4.12.1", old.conn.session_id)
    assert new.superseded == [old.conn]
    assert new.conn.extranonce1 == old.conn.extranonce1
    # The old connection is finished; closing it releases nothing.
    assert old.send({"id": 9, "method": "mining.subscribe", "params": []}) == []
    assert old.closed
    old.conn.connection_closed(1.0)
    assert registry.allocator.is_allocated(new.conn.extranonce1)


# --- mining.authorize -------------------------------------------------------------
def test_authorize_after_subscribe_starts_work_difficulty_first():
    h = new_harness(SETTINGS)
    h.subscribe()
    out = h.authorize()
    assert methods(out) == ["reply", "mining.set_difficulty", "mining.notify"]
    assert out[0] == {"id": 2, "result": True, "error": None}
    assert difficulties(out) == [16]


def test_authorize_before_subscribe():
    h = new_harness(SETTINGS)
    assert methods(h.authorize()) == ["reply"]
    out = h.subscribe()
    assert methods(out) == ["reply", "mining.set_difficulty", "mining.notify"]


def test_authorize_refused_is_error_24_with_result_false():
    h = new_harness(SETTINGS)
    h.accept_workers = False
    h.subscribe()
    (reply,) = h.authorize()
    assert reply["result"] is False and reply["error"] == [24, "nope", None]
    assert not h.conn.working


def test_authorize_without_a_name_is_malformed():
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.authorize", ["  "])
    assert error_of(reply)[0] == 20 and "Malformed request" in reply["error"][1]


def test_several_workers_on_one_connection():
    h = new_harness(SETTINGS)
    h.start()
    h.call("mining.authorize", ["w2", ""], id=3)
    assert h.submit("1", worker="w2")["result"] is True
    assert h.submit("1", worker="w", nonce=2)["result"] is True
    assert h.submitted[0].worker == "w2"


def test_no_work_before_a_job_exists():
    h = new_harness(SETTINGS, with_job=False)
    out = h.start()
    assert methods(out) == ["reply", "reply", "mining.set_difficulty"]
    assert notifies(h.notify(make_job(1)))[0][0] == "1"


# --- mining.configure ------------------------------------------------------------
def test_configure_before_subscribe_version_rolling_full_mask_requested():
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
    assert reply["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
    h.start()
    assert h.conn.version_mask == 0x1FFFE000


@pytest.mark.parametrize(
    "options,mask",
    [
        ({"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}, "1fffe000"),
        ({"version-rolling.mask": "00FFE000"}, "00ffe000"),
        ({"version-rolling.mask": "0x18000000"}, "18000000"),
        ({}, "1fffe000"),  # BIP310 default "ffffffff"
        ({"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": "16"}, "1fffe000"),
    ],
)
def test_configure_mask_is_pool_intersect_miner(options, mask):
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.configure", [["version-rolling"], options])
    assert reply["result"] == {"version-rolling": True, "version-rolling.mask": mask}


def test_configure_min_bit_count_above_the_mask_runs_degraded():
    """BIP310: never refuse or disconnect for min-bit-count; grant the largest mask."""
    h = new_harness(ProtocolSettings(version_mask=0x00006000))
    (reply,) = h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 16}])
    assert reply["result"] == {"version-rolling": True, "version-rolling.mask": "00006000"}
    assert h.conn.version_rolling_degraded and h.conn.min_bit_count == 16


def test_configure_disjoint_or_invalid_mask():
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "e0000000"}])
    assert reply["result"] == {"version-rolling": False}
    (reply,) = h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "xyz"}])
    assert isinstance(reply["result"]["version-rolling"], str)
    assert h.conn.version_mask == 0


def test_configure_every_extension_gets_a_key():
    h = new_harness(SETTINGS)
    (reply,) = h.call(
        "mining.configure",
        [
            ["version-rolling", "minimum-difficulty", "subscribe-extranonce", "info", "made-up"],
            {"version-rolling.mask": "1fffe000", "minimum-difficulty.value": 32, "info.hw-version": "S19"},
        ],
    )
    assert reply["result"] == {
        "version-rolling": True,
        "version-rolling.mask": "1fffe000",
        "minimum-difficulty": True,
        "subscribe-extranonce": True,
        "info": True,
        "made-up": False,
    }
    assert h.conn.extranonce_subscribed and h.conn.info == {"info.hw-version": "S19"}


def test_configure_minimum_difficulty_is_a_floor():
    h = new_harness(SETTINGS)
    h.call("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": 2048}])
    out = h.start()
    assert difficulties(out) == [2048]
    # A suggestion below the miner's own floor does not go under it.
    h.call("mining.suggest_difficulty", [1], id=4)
    assert h.conn.difficulty == 2048
    # Above the pool maximum it cannot be honoured; 0 turns it off.
    (reply,) = h.call("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": 10**6}])
    assert reply["result"] == {"minimum-difficulty": False}
    (reply,) = h.call("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": 0}])
    assert reply["result"] == {"minimum-difficulty": True} and h.conn.vardiff.requested_floor is None
    (reply,) = h.call("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": "lots"}])
    assert reply["result"] == {"minimum-difficulty": False}


def test_configure_after_work_raises_difficulty_to_the_minimum():
    h = new_harness(SETTINGS)
    h.start()
    out = h.call("mining.configure", [["minimum-difficulty"], {"minimum-difficulty.value": 100}], id=5)
    assert methods(out) == ["reply", "mining.set_difficulty", "mining.notify"]
    assert difficulties(out) == [100]


def test_configure_malformed():
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.configure", ["version-rolling"])
    assert error_of(reply)[0] == 20


# --- mining.suggest_difficulty ----------------------------------------------------
def test_suggest_before_authorize_sets_the_starting_difficulty():
    """ESP-Miner (older builds): subscribe, configure, suggest_difficulty, authorize."""
    h = new_harness(SETTINGS)
    h.subscribe("bitaxe")
    h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}], id=2)
    (reply,) = h.call("mining.suggest_difficulty", [256], id=3)
    assert reply == {"id": 3, "result": True, "error": None}
    out = h.call("mining.authorize", ["w", "x"], id=4)
    assert difficulties(out) == [256]


@pytest.mark.parametrize("raw,expected", [(512, 512), (0.5, Fraction(1, 2)), ("64", 64), (1e-05, Fraction(1, 1000)), (10**9, 4096)])
def test_suggest_values_are_clamped_hints(raw, expected):
    h = new_harness(SETTINGS)
    h.call("mining.suggest_difficulty", [raw])
    out = h.start()
    assert difficulties(out) == [Fraction(expected)]


def test_suggest_after_work_started_reissues_work_under_a_new_id():
    h = new_harness(SETTINGS)
    h.start()
    out = h.call("mining.suggest_difficulty", [1000], id=4)
    assert methods(out) == ["reply", "mining.set_difficulty", "mining.notify"]
    (reissued,) = notifies(out)
    assert reissued[0] != "1" and reissued[8] is False
    assert reissued[1:8] == notifies(h.out)[0][1:8]


def test_suggest_is_not_a_floor():
    h = new_harness(SETTINGS)
    h.call("mining.suggest_difficulty", [4096])
    h.start()
    # The miner is far slower than suggested: silence makes vardiff step down.
    for _ in range(12):
        h.now += 5
        h.tick()
    assert h.conn.difficulty < 4096


def test_repeated_suggestion_is_a_keepalive_not_a_reset():
    """NerdMiner resends its suggestion periodically; vardiff's work must survive it."""
    h = new_harness(SETTINGS)
    h.call("mining.suggest_difficulty", [0.5])
    h.start()
    h.conn._change_difficulty(Fraction(8), h.now)
    out = h.call("mining.suggest_difficulty", [0.5], id=7)
    assert methods(out) == ["reply"] and h.conn.difficulty == 8


def test_suggest_legacy_method_name_form_and_notification_ids():
    h = new_harness(SETTINGS)
    assert h.send({"id": None, "method": "mining.suggest_difficulty(128)", "params": []}) == []
    assert h.conn.difficulty == 128
    assert h.send({"method": "mining.suggest_difficulty", "params": [64]}) == []
    assert h.conn.difficulty == 64


def test_suggest_target():
    h = new_harness(SETTINGS)
    target = (0xFFFF << 208) // 32
    (reply,) = h.call("mining.suggest_target", [f"{target:064x}"])
    assert reply["result"] is True and h.conn.difficulty == 32


@pytest.mark.parametrize("params", [[], ["abc"], [0], [-3], [True], [None], [[1]]])
def test_suggest_malformed(params):
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.suggest_difficulty", params)
    assert error_of(reply)[0] == 20


def test_suggest_never_exceeds_network_difficulty():
    h = new_harness(SETTINGS, network_difficulty=Fraction(3, 10000))
    h.call("mining.suggest_difficulty", [2000])
    out = h.start()
    assert difficulties(out) == [Fraction(3, 10000)]


# --- mining.extranonce.subscribe / set_extranonce -----------------------------------
def test_extranonce_subscribe_is_honoured_with_set_extranonce():
    h = new_harness(SETTINGS)
    h.start()
    (reply,) = h.call("mining.extranonce.subscribe", [], id=3)
    assert reply == {"id": 3, "result": True, "error": None}
    old = h.conn.extranonce1
    out = h.process(h.conn.renew_extranonce(h.now))
    assert methods(out) == ["mining.set_extranonce", "mining.notify"]
    new_en1, size = out[0]["params"]
    assert size == 4 and bytes.fromhex(new_en1) != old
    reissued = notifies(out)[0][0]
    # Jobs keep the extranonce1 they were sent with.
    assert h.submit("1", nonce=1)["result"] is True
    assert h.submit(reissued, nonce=2)["result"] is True
    assert h.submitted[0].extranonce1 == old and h.submitted[1].extranonce1.hex() == new_en1


def test_no_set_extranonce_without_subscription():
    h = new_harness(SETTINGS)
    h.start()
    assert h.conn.renew_extranonce(h.now) == []


# --- mining.submit ----------------------------------------------------------------
def rolling_harness(**kw):
    h = new_harness(SETTINGS, **kw)
    h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}], id=0)
    h.start()
    return h


def test_submit_five_params_accepted_and_share_fields():
    h = new_harness(SETTINGS)
    h.start()
    reply = h.submit("1", "0000002a", NTIME + 5, 0xDEADBEEF, id="sub-1")
    assert reply == {"id": "sub-1", "result": True, "error": None}
    (share,) = h.submitted
    assert share.extranonce1 == h.conn.extranonce1 and share.extranonce2 == bytes.fromhex("0000002a")
    assert (share.ntime, share.nonce, share.version_bits, share.version_mask) == (NTIME + 5, 0xDEADBEEF, 0, 0)
    assert share.difficulty == 16 and not share.stale and share.job.job_id == "1"


def test_submit_six_params_with_version_rolling():
    h = rolling_harness()
    assert h.submit("1", "00000000", NTIME, 1, "1fffe000")["result"] is True
    share = h.submitted[0]
    assert share.version_bits == 0x1FFFE000 and share.version == 0x3FFFE000


def test_submit_zero_version_bits_without_negotiation_is_fine():
    h = new_harness(SETTINGS)
    h.start()
    assert h.submit("1", "00000000", NTIME, 1, "00000000")["result"] is True
    assert h.submit("1", "00000000", NTIME, 2, None)["result"] is True


ERROR_CASES = [
    # (description, submit params after the worker, expected code, expected message start)
    ("extranonce2 too short", ["1", "0000", "6553f100", "00000001"], 20, "Incorrect size of extranonce2"),
    ("extranonce2 not hex", ["1", "0000zz00", "6553f100", "00000001"], 20, "Incorrect size of extranonce2"),
    ("extranonce2 with spaces", ["1", "00 11 22", "6553f100", "00000001"], 20, "Incorrect size of extranonce2"),
    ("extranonce2 with a tab", ["1", "\t0011223", "6553f100", "00000001"], 20, "Incorrect size of extranonce2"),
    ("extranonce2 in other digits", ["1", "\u0660" * 8, "6553f100", "00000001"], 20, "Incorrect size of extranonce2"),
    ("unknown job", ["ffff", "00000000", "6553f100", "00000001"], 21, "Job not found"),
    ("ntime not hex", ["1", "00000000", "6553f1", "00000001"], 20, "Malformed request: ntime"),
    ("ntime out of range", ["1", "00000000", f"{NTIME + 8000:08x}", "00000001"], 20, "ntime out of range"),
    ("nonce not hex", ["1", "00000000", "6553f100", "0000001"], 20, "Malformed request: nonce"),
    ("ntime with 0x", ["1", "00000000", "0x53f100", "00000001"], 20, "Malformed request: ntime"),
    ("ntime with spaces", ["1", "00000000", "65 53 f1", "00000001"], 20, "Malformed request: ntime"),
    ("nonce with a sign", ["1", "00000000", "6553f100", "+0000001"], 20, "Malformed request: nonce"),
    ("nonce with an underscore", ["1", "00000000", "6553f100", "0000_001"], 20, "Malformed request: nonce"),
    ("nonce in other digits", ["1", "00000000", "6553f100", "\u0661" * 8], 20, "Malformed request: nonce"),
    ("version bits not hex", ["1", "00000000", "6553f100", "00000001", "xyz"], 20, "Malformed request: version bits"),
    ("version bits with 0x", ["1", "00000000", "6553f100", "00000001", "0x001000"], 20, "Malformed request: version bits"),
    ("version bits not a string", ["1", "00000000", "6553f100", "00000001", 4096], 20, "Malformed request: version bits"),
    ("version bits outside mask", ["1", "00000000", "6553f100", "00000001", "00001000"], 20, "Version bits outside the negotiated mask"),
    ("too few params", ["1", "00000000", "6553f100"], 20, "Malformed request: mining.submit takes 5 or 6"),
    ("too many params", ["1", "00000000", "6553f100", "00000001", "00000000", "x"], 20, "Malformed request: mining.submit takes 5 or 6"),
    ("non-string params", ["1", 0, "6553f100", "00000001"], 20, "Malformed request: job id"),
]


@pytest.mark.parametrize("desc,params,code,message", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_submit_errors(desc, params, code, message):
    h = rolling_harness()
    (reply,) = h.call("mining.submit", ["w", *params], id=77)
    assert reply["id"] == 77 and reply["result"] is None
    assert reply["error"][0] == code and reply["error"][1].startswith(message) and reply["error"][2] is None
    assert h.rejected and h.rejected[0].error.code == code and not h.submitted


def test_submit_version_bits_without_negotiation():
    h = new_harness(SETTINGS)
    h.start()
    reply = h.submit("1", "00000000", NTIME, 1, "00002000")
    assert reply["error"] == [20, errors.VERSION_ROLLING_OFF.message, None]


def test_submit_unauthorized_and_not_subscribed():
    h = new_harness(SETTINGS)
    assert error_of(h.submit("1"))[:2] == [24, "Unauthorized worker"]
    h.authorize()
    assert error_of(h.submit("1"))[:2] == [25, "Not subscribed"]
    h.subscribe()
    assert error_of(h.submit("1", worker="someone-else"))[0] == 24
    assert h.submit("1")["result"] is True


def test_submit_for_a_job_never_sent_to_this_connection():
    h = new_harness(SETTINGS)
    h.start()
    h.conn.jobs.add(make_job(2))  # known to the pool, not announced here
    assert error_of(h.submit("2"))[0] == 21


def test_duplicate_detection_includes_version_bits():
    h = rolling_harness()
    assert h.submit("1", "00000000", NTIME, 1, "00002000")["result"] is True
    assert error_of(h.submit("1", "00000000", NTIME, 1, "00002000"))[:2] == [22, "Duplicate share"]
    assert h.submit("1", "00000000", NTIME, 1, "00004000")["result"] is True
    assert h.submit("1", "00000001", NTIME, 1, "00002000")["result"] is True
    # Hex case does not make a new share.
    assert h.submit("1", "0000000a", NTIME, 9)["result"] is True
    assert error_of(h.call("mining.submit", ["w", "1", "0000000A", f"{NTIME:08X}", "00000009"])[0])[0] == 22


def test_duplicates_are_per_job_across_connections():
    book = JobBook()
    book.add(make_job(1))
    registry = SessionRegistry()
    a = new_harness(SETTINGS, book=book, registry=registry)
    a.start()
    assert a.submit("1", nonce=1)["result"] is True
    # The same extranonce1 can only come back by resuming; simulate a second
    # connection handed the same one.
    b = new_harness(SETTINGS, book=book, registry=registry)
    b.start()
    b.conn._find("1").extranonce1 = a.conn.extranonce1
    assert error_of(b.submit("1", nonce=1))[0] == 22


def test_a_new_tip_drops_the_older_tips_share_keys():
    """Keys are kept for the current tip's jobs only: a repeat on a job of an older
    tip is stale (uncredited) rather than a duplicate, and its keys take no memory;
    duplicates on the current tip are still caught, across a refresh of the same tip."""
    h = new_harness(SETTINGS)
    h.start()
    book = h.conn.jobs
    assert h.submit("1", nonce=1)["result"] is True
    assert error_of(h.submit("1", nonce=1))[0] == 22
    key = h.submitted[0].duplicate_key
    assert type(key) is bytes and len(key) == 4 + 4 + 12 and key.startswith(h.conn.extranonce1)
    book.add(make_job(2))  # a refresh on the same tip keeps job 1's keys
    h.notify(book.current)
    assert error_of(h.submit("1", nonce=1))[0] == 22
    assert h.submit("2", nonce=1)["result"] is True
    book.add(make_job(3, generation=2, clean=True))  # a new tip
    h.notify(book.current)
    assert "1" not in book._seen and "2" not in book._seen
    assert h.submit("1", nonce=1)["result"] is True and h.submitted[-1].stale  # the pool refuses it as stale
    assert h.submit("1", nonce=1)["result"] is True and "1" not in book._seen  # still not remembered
    assert h.submit("3", nonce=1)["result"] is True
    assert error_of(h.submit("3", nonce=1))[0] == 22


def test_stale_share_is_flagged_for_the_pool():
    h = new_harness(SETTINGS)
    h.start()
    h.conn.jobs.add(make_job(2, generation=2, clean=True))
    h.notify(h.conn.jobs.current)
    assert h.submit("1")["result"] is True  # the test pool accepts; it decides stale-vs-block
    assert h.submitted[0].stale
    h.verdict = errors.STALE_JOB
    assert h.submit("1", nonce=2)["error"] == [21, "Stale share: job is from a previous block", None]
    h.verdict = None
    h.submit("2", nonce=3)
    assert not h.submitted[-1].stale


def test_expired_job_is_unknown():
    h = new_harness(SETTINGS, book=JobBook(max_jobs=2))
    h.start()
    for n in (2, 3):
        h.conn.jobs.add(make_job(n))
        h.notify(h.conn.jobs.current)
    assert error_of(h.submit("1"))[:2] == [21, errors.UNKNOWN_JOB.message]


def test_pool_verdicts_pass_through_and_retryable_ones_are_forgotten():
    h = new_harness(SETTINGS)
    h.start()
    h.verdict = errors.LOW_DIFFICULTY
    assert h.submit("1", nonce=1)["error"] == [23, "Low difficulty share", None]
    h.verdict = errors.NODE_UNAVAILABLE
    assert h.submit("1", nonce=2)["error"][0] == 20
    h.verdict = None
    assert h.submit("1", nonce=2)["result"] is True  # judged this time, not a duplicate
    assert error_of(h.submit("1", nonce=1))[0] == 22  # judged (low) before: a duplicate


# --- difficulty rule ----------------------------------------------------------------
def test_job_is_judged_at_the_difficulty_in_force_when_it_was_sent():
    h = new_harness(SETTINGS)
    h.start()
    out = h.process(h.conn._change_difficulty(Fraction(64), h.now))
    assert methods(out) == ["mining.set_difficulty", "mining.notify"]
    reissued = notifies(out)[0][0]
    h.submit("1", nonce=1)
    h.submit(reissued, nonce=2)
    assert [s.difficulty for s in h.submitted] == [16, 64]
    assert h.submitted[1].job.job_id == "1" and h.submitted[1].wire_job_id == reissued


def test_lowered_difficulty_applies_to_jobs_already_sent():
    """Firmware that applies set_difficulty at once (ESP-Miner) must not be refused."""
    h = new_harness(SETTINGS)
    h.start()
    h.process(h.conn._change_difficulty(Fraction(4), h.now))
    h.submit("1", nonce=1)
    assert h.submitted[0].difficulty == 4
    h.process(h.conn._change_difficulty(Fraction(32), h.now))
    h.submit("1", nonce=2)
    assert h.submitted[1].difficulty == 4  # raising never raises an old job


def test_a_job_id_is_never_sent_twice():
    h = new_harness(SETTINGS)
    h.start()
    for d in (32, 8, 64, 2):
        h.process(h.conn._change_difficulty(Fraction(d), h.now))
    h.conn.jobs.add(make_job(2))
    h.notify(h.conn.jobs.current)
    ids = [n[0] for n in notifies(h.out)]
    assert len(ids) == len(set(ids)) == 6
    assert all(n[8] is False for n in notifies(h.out)[1:-1])


def test_network_difficulty_caps_the_difficulty_on_the_next_job():
    h = new_harness(SETTINGS)
    h.start()
    out = h.notify(make_job(2), network_difficulty=Fraction(5))
    assert methods(out) == ["mining.set_difficulty", "mining.notify"]
    assert difficulties(out) == [5] and h.conn.difficulty == 5


def test_set_difficulty_is_written_as_a_plain_decimal():
    h = new_harness(ProtocolSettings(start_difficulty=Fraction(15, 100000), min_difficulty=Fraction(1, 10**6)))
    h.start()
    assert b'"params":[0.00015]' in h.raw[-2]


# --- server-initiated ----------------------------------------------------------------
def test_set_version_mask_when_the_pool_mask_changes():
    h = rolling_harness()
    out = h.process(h.conn.set_pool_version_mask(0x00FFE000))
    assert out == [{"id": None, "method": "mining.set_version_mask", "params": ["00ffe000"]}]
    assert h.process(h.conn.set_pool_version_mask(0x00FFE000)) == []
    assert error_of(h.submit("1", "00000000", NTIME, 1, "10000000"))[0] == 20
    plain = new_harness(SETTINGS)
    plain.start()
    assert plain.conn.set_pool_version_mask(0x00FFE000) == []


def test_reconnect_and_show_message():
    assert json.loads(ServerConnection.reconnect()) == {"id": None, "method": "client.reconnect", "params": []}
    assert json.loads(ServerConnection.reconnect("pool.example", 3334, 5))["params"] == ["pool.example", "3334", 5]
    assert json.loads(ServerConnection.show_message("hi")) == {"id": None, "method": "client.show_message", "params": ["hi"]}


# --- framing, ids, unknown methods -------------------------------------------------
@pytest.mark.parametrize("req_id", [0, 7, "abc", None, 1.5, {"x": 1}])
def test_ids_are_echoed_verbatim(req_id):
    h = new_harness(SETTINGS)
    (reply,) = h.send({"id": req_id, "method": "mining.extranonce.subscribe", "params": []})
    assert reply["id"] == req_id


def test_unknown_method_is_an_error_never_silence():
    h = new_harness(SETTINGS)
    (reply,) = h.call("mining.multi_version", [1], id=5)
    assert reply == {"id": 5, "result": None, "error": [20, "Unknown method: mining.multi_version", None]}
    (reply,) = h.send({"id": None, "method": "mining.ping"})
    assert reply["error"][0] == 20


def test_get_transactions_answers_an_empty_list():
    h = new_harness(SETTINGS)
    assert h.call("mining.get_transactions", ["1"])[0]["result"] == []


@pytest.mark.parametrize("line", [b"not json", b"[1,2]", b'{"id":4}', b'{"id":4,"method":5}', b'{"id":4,"method":"x","params":7}'])
def test_malformed_lines_get_error_20(line):
    h = new_harness(SETTINGS)
    (reply,) = h.send(line)
    assert reply["error"][0] == 20 and reply["result"] is None


def test_too_many_malformed_lines_close_the_connection():
    h = new_harness(ProtocolSettings(max_bad_lines=3))
    for _ in range(3):
        h.send(b"garbage")
    assert h.closed == ["too many malformed messages"]


def test_responses_from_the_client_are_ignored():
    h = new_harness(SETTINGS)
    assert h.send({"id": 99, "result": "cgminer/4.12.1", "error": None}) == []


def test_every_method_is_answered():
    for method in METHODS:
        h = new_harness(SETTINGS)
        replies = [m for m in h.call(method, [], id="q") if "result" in m]
        assert replies and replies[0]["id"] == "q", method


# --- errors ------------------------------------------------------------------------
def test_error_messages_are_distinct_and_documented():
    from tests.conftest import REPO_ROOT

    messages = [e.message for e in errors.ALL_ERRORS]
    assert len(set(messages)) == len(messages)
    assert {int(e.code) for e in errors.ALL_ERRORS} == {20, 21, 22, 23, 24, 25}
    assert len({e.reason for e in errors.ALL_ERRORS}) == len(errors.ALL_ERRORS)
    doc = (REPO_ROOT / "docs" / "stratum.md").read_text()
    for e in errors.ALL_ERRORS:
        assert e.message in doc, e.message
        assert e.reason in doc, e.reason
    for method in METHODS:
        assert method in doc


# --- robustness ----------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
_methods = st.sampled_from([*METHODS, "mining.suggest_difficulty(3)", "client.get_version", "x"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**6), _methods, st.lists(_json, max_size=7)), max_size=25))
def test_any_request_sequence_is_answered_and_never_crashes(requests):
    h = new_harness(SETTINGS)
    for req_id, method, params in requests:
        replies = [m for m in h.call(method, params, id=req_id) if "method" not in m]
        assert len(replies) == 1 and replies[0]["id"] == req_id, (method, params, replies)
        reply = replies[0]
        if reply["error"] is not None:
            assert reply["result"] in (None, False)
            code, message, trace = reply["error"]
            assert code in (20, 21, 22, 23, 24, 25) and isinstance(message, str) and trace is None


# --- fast paths ----------------------------------------------------------------------


def _event_key(event):
    """An event as comparable data (errors by code, message and reason; shares field by field)."""
    if isinstance(event, Send):
        return ("send", event.data)
    if isinstance(event, ShareRejected):
        return ("rejected", repr(event.request_id), event.worker, int(event.error.code), event.error.message, event.error.reason)
    if isinstance(event, ShareSubmitted):
        s = event.share
        return ("share", repr(event.request_id), s, s.duplicate_key, s.version)
    return (type(event).__name__, repr(event))


def _reference_submit(conn: ServerConnection, req: Request) -> list:
    """mining.submit as first written (regexes, properties, the dataclass constructor), on ``sent_job``."""
    import re

    hex8, hexes = re.compile(r"^[0-9a-fA-F]{8}$"), re.compile(r"^(?:[0-9a-fA-F]{2})*$")
    params = req.params
    worker = params[0].strip() if params and isinstance(params[0], str) else None

    def reject(err):
        return [ShareRejected(req.reply_id, worker, err), Send(encode_error(req.reply_id, err))]

    if worker is None or worker not in conn.authorized:
        return reject(errors.UNAUTHORIZED)
    if not conn.subscribed or conn.extranonce1 is None:
        return reject(errors.NOT_SUBSCRIBED)
    if len(params) not in (5, 6):
        return reject(errors.malformed(f"mining.submit takes 5 or 6 params, got {len(params)}"))
    if not all(isinstance(x, str) for x in params[1:5]):
        return reject(errors.malformed("job id, extranonce2, ntime and nonce must be strings"))
    job_id, en2_hex, ntime_hex, nonce_hex = params[1:5]
    size = conn.settings.extranonce2_size
    if not hexes.match(en2_hex) or len(en2_hex) != 2 * size:
        return reject(errors.BAD_EXTRANONCE2.with_detail(f"expected {size} bytes ({2 * size} hex digits)"))
    sent = conn.sent_job(job_id)
    if sent is None or conn.jobs.get(sent.job.job_id) is None:
        return reject(errors.UNKNOWN_JOB)
    job = sent.job
    if not hex8.match(ntime_hex):
        return reject(errors.malformed("ntime must be 8 hex digits"))
    ntime = int(ntime_hex, 16)
    if not job.ntime_min <= ntime <= job.ntime_max:
        return reject(errors.BAD_NTIME)
    if not hex8.match(nonce_hex):
        return reject(errors.malformed("nonce must be 8 hex digits"))
    mask = conn.version_mask
    version_bits = 0
    if len(params) == 6 and params[5] is not None:
        if not isinstance(params[5], str) or not hex8.match(params[5]):
            return reject(errors.malformed("version bits must be 8 hex digits"))
        version_bits = int(params[5], 16)
        if version_bits & ~mask & 0xFFFFFFFF:
            if conn.requested_mask is None:
                return reject(errors.VERSION_ROLLING_OFF)
            return reject(errors.BAD_VERSION_BITS.with_detail(f"mask is {mask:08x}"))
    share = Share(
        worker=worker, job=job, extranonce1=sent.extranonce1, extranonce2=bytes.fromhex(en2_hex), ntime=ntime,
        nonce=int(nonce_hex, 16), version_bits=version_bits, version_mask=mask, difficulty=sent.difficulty,
        stale=conn.jobs.is_stale(job), wire_job_id=job_id,
    )
    if not conn.jobs.first_sighting(job.job_id, share.duplicate_key):
        return reject(errors.DUPLICATE)
    return [ShareSubmitted(req.reply_id, share)]


def _twin_harnesses(rolling: bool, lowered: bool, stale: bool):
    """Two connections in the same state, each with its own job book and registry."""
    twins = []
    for _ in range(2):
        registry = SessionRegistry(ExtranonceAllocator(4, server_id=7))
        registry.allocator._next = 5
        h = new_harness(SETTINGS, registry=registry)
        if rolling:
            h.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "1fffe000"}], id=0)
        h.start()
        h.call("mining.authorize", ["w2", ""], id=3)
        h.conn.jobs.add(make_job(2, generation=2 if stale else 1, clean=stale))
        h.notify(h.conn.jobs.current)
        h.process(h.conn._change_difficulty(Fraction(4 if lowered else 64), h.now))  # re-issues job 2
        twins.append(h)
    return twins


_hexish = st.text(alphabet="0123456789abcdefABCDEFxz \n", min_size=0, max_size=10)
_submit_field = st.one_of(
    _hexish,
    st.sampled_from(["1", "2", "2.1", "3", "00000000", "0000002a", f"{NTIME:08x}", f"{NTIME + 9000:08x}", "1fffe000", "00002000"]),
    st.none(),
    st.integers(0, 10),
    st.just([]),
)


@settings(max_examples=300, deadline=None)
@given(
    rolling=st.booleans(),
    lowered=st.booleans(),
    stale=st.booleans(),
    submits=st.lists(
        st.tuples(
            st.sampled_from(["w", " w2 ", "x", 5, None]),
            st.lists(_submit_field, min_size=0, max_size=6),
            st.sampled_from([7, "id", None, 1.5, True]),
            st.sampled_from(["list", "dict", "null", "no-id"]),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_fast_submit_path_matches_the_general_path_and_the_reference(rolling, lowered, stale, submits):
    fast, general = _twin_harnesses(rolling, lowered, stale)
    reference = _twin_harnesses(rolling, lowered, stale)[0]
    for worker, rest, req_id, shape in submits:
        params: Any = [worker, *rest]
        msg: dict[str, Any] = {"id": req_id, "method": "mining.submit", "params": params}
        if shape == "dict":
            msg["params"] = {str(i): p for i, p in enumerate(params)}
        elif shape == "null":
            msg["params"] = None
        elif shape == "no-id":
            del msg["id"]
        line = json.dumps(msg).encode()
        got = [_event_key(e) for e in fast.conn.receive_line(line, 0.0)]
        req = parse_line(line)
        assert [_event_key(e) for e in general.conn.receive(req, 0.0)] == got, msg
        assert [_event_key(e) for e in _reference_submit(reference.conn, parse_line(line))] == got, msg


@given(st.sampled_from([1, 0, -5, 2**40, "a", "é\n", None, 2.5, True, [1], {"k": None}]))
def test_share_result_reply_is_the_json_encoding(req_id):
    h = new_harness(SETTINGS)
    h.start()
    (event,) = h.conn.receive_line(json.dumps({"id": 1, "method": "mining.submit", "params": ["w", "1", "00000000", f"{NTIME:08x}", "00000001"]}).encode(), 0.0)
    assert isinstance(event, ShareSubmitted)
    out = h.conn.share_result(req_id, event.share, None, 0.0)
    assert out[0] == Send(json.dumps({"id": req_id, "result": True, "error": None}, separators=(",", ":")).encode() + b"\n")


# --- the job book: runs of broadcast jobs, checked against the plain model ------------------


class BookModel:
    """The job book as first written: an ordered map of wire id -> [job, difficulty, extranonce1]."""

    def __init__(self, max_jobs: int) -> None:
        from collections import OrderedDict

        self.max_jobs = max_jobs
        self.sent: OrderedDict = OrderedDict()

    def record(self, wire_id, job, difficulty, extranonce1):
        known = self.sent.pop(wire_id, None)
        if known is not None and known[0] is job and known[2] == extranonce1:
            difficulty = min(difficulty, known[1])
        self.sent[wire_id] = [job, difficulty, extranonce1]
        while len(self.sent) > self.max_jobs:
            self.sent.popitem(last=False)

    def lower(self, new):
        for entry in self.sent.values():
            entry[1] = min(entry[1], new)

    def lookup(self, wire_id, book):
        entry = self.sent.get(wire_id)
        if entry is None or book.get(entry[0].job_id) is None:
            return None
        return (entry[0], entry[1], entry[2])


_book_ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.floats(0, 1)),  # a new job broadcast (to this connection or not)
        st.tuples(st.just("again"), st.integers(0, 8)),  # a live job broadcast again
        st.tuples(st.just("foreign"), st.integers(0, 2)),  # a job the book does not hold
        st.tuples(st.just("difficulty"), st.sampled_from([1, 2, 4, 16, 64, 256])),
        st.tuples(st.just("extranonce"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_book_ops, max_jobs=st.sampled_from([1, 2, 3, 5, 8]), book_jobs=st.sampled_from([2, 4, 64]))
def test_job_book_matches_the_plain_model(ops, max_jobs, book_jobs):
    settings_ = ProtocolSettings(start_difficulty=Fraction(16), min_difficulty=Fraction(1, 1000), max_jobs=max_jobs)
    book = JobBook(max_jobs=book_jobs)
    book.add(make_job(1, clean=True))
    h = new_harness(settings_, book=book)
    h.call("mining.extranonce.subscribe", [], id=0)
    h.start()
    model = BookModel(max_jobs)
    jobs = {"1": book.get("1")}
    seen = ["1"]

    def observe(messages, job_of):
        """Record into the model what the connection sent: set_difficulty lowers, notify records."""
        for m in messages:
            if m.get("method") == "mining.set_difficulty":
                d = Fraction(str(m["params"][0]))
                model.lower(d)
            elif m.get("method") == "mining.notify":
                wire_id = m["params"][0]
                seen.append(wire_id)
                model.record(wire_id, job_of(wire_id), h.conn.difficulty, h.conn.extranonce1)

    model.record("1", jobs["1"], h.conn.difficulty, h.conn.extranonce1)
    n = 1
    for op, arg in ops:
        if op == "new":
            n += 1
            job = make_job(n)
            jobs[job.job_id] = job
            book.add(job)
            if arg < 0.8:
                observe(h.notify(job), lambda wid: jobs[wid])
        elif op == "again":
            live = [j for j in jobs.values() if book.get(j.job_id) is j]
            job = live[arg % len(live)]
            if arg % 2:
                book.add(job)
            observe(h.notify(job), lambda wid: jobs[wid])
        elif op == "foreign":
            job = make_job(0x1000 + arg)
            observe(h.notify(job), lambda wid, job=job: job)
        elif op == "difficulty":
            observe(h.process(h.conn._change_difficulty(Fraction(arg), h.now)), lambda wid: jobs[wid.rsplit(".", 1)[0]])
        else:
            observe(h.process(h.conn.renew_extranonce(h.now)), lambda wid: jobs[wid.rsplit(".", 1)[0]])
        for wire_id in {*seen, "zz"}:
            expected = model.lookup(wire_id, book)
            got = h.conn.sent_job(wire_id)
            assert (None if got is None else (got.job, got.difficulty, got.extranonce1)) == expected, (wire_id, ops)
    assert h.conn._count == len(model.sent)


def test_a_broadcast_adds_nothing_to_a_connection():
    """At one difficulty every broadcast job extends one run: no object per job per connection."""
    h = new_harness(ProtocolSettings(max_jobs=8))
    h.start()
    assert not hasattr(h.conn, "__dict__")
    entry = h.conn._tail
    for n in range(2, 40):
        h.conn.jobs.add(make_job(n))
        assert h.conn.job_notification(h.conn.jobs.current, 0.0, None) is h.conn.jobs.current.notify_line
    assert h.conn._sent == [entry] and h.conn._count == 8
    assert h.conn.sent_job(f"{39 - 8:x}") is None and h.conn.sent_job(f"{39 - 7:x}") is not None


def test_reissued_ids_are_not_reused_after_a_resume():
    registry = SessionRegistry(ExtranonceAllocator(4, server_id=2), resume_window=60)
    book = JobBook()
    book.add(make_job(1))
    a = new_harness(SETTINGS, book=book, registry=registry)
    a.start()
    first = notifies(a.process(a.conn._change_difficulty(Fraction(64), a.now)))[0][0]
    a.conn.connection_closed(1.0)
    b = new_harness(SETTINGS, book=book, registry=registry)
    b.subscribe("cgminer", a.conn.session_id)
    b.authorize()
    second = notifies(b.process(b.conn._change_difficulty(Fraction(128), b.now)))[0][0]
    assert first == "1.1" and second == "1.2"
    assert b.submit(first, nonce=1)["result"] is True and b.submitted[-1].difficulty == 64


def test_network_difficulty_is_checked_again_after_a_difficulty_change():
    """The broadcast compares with the network difficulty once per change of either."""
    h = new_harness(SETTINGS)
    h.start()
    net = Fraction(100)
    assert methods(h.notify(make_job(2), network_difficulty=net)) == ["mining.notify"]
    h.conn._change_difficulty(Fraction(4096), h.now)  # (no clamp here: above the network)
    out = h.notify(make_job(3), network_difficulty=net)  # the same Fraction object
    assert methods(out) == ["mining.set_difficulty", "mining.notify"] and difficulties(out) == [100]
