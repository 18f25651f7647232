"""The write-ahead spool: framing, group commit, rotation, recovery, failures."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.storage.records import BlockRecord, ShareRecord, ShareRows, share_row
from pool.storage import spool as spool_module
from pool.storage.spool import (
    MAX_PAYLOAD,
    Spool,
    SpoolError,
    SpoolFull,
    decode_segment,
    encode_entry,
    encode_frames,
    frame,
    segment_name,
)
from tests.storage.helpers import make_share

def frame_payloads(data: bytes) -> list[bytes]:
    """The payloads of a segment's frames, read with the framing spelled out here
    (length and CRC32, little-endian) rather than through the spool's reader."""
    out, pos = [], 0
    while pos < len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        payload = data[pos + 8 : pos + 8 + length]
        assert zlib.crc32(payload) == crc
        out.append(payload)
        pos += 8 + length
    return out


fractions = st.fractions(min_value=Fraction(1, 10**12), max_value=Fraction(10**15)).filter(lambda f: f > 0)
names = st.text(min_size=1, max_size=40)
times = st.datetimes(min_value=dt.datetime(2009, 1, 3), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.timezone.utc))

share_records = st.builds(
    ShareRecord,
    share_hash=st.text("0123456789abcdef", min_size=64, max_size=64),
    address=names, worker=names, job_id=st.text("0123456789abcdef", min_size=1, max_size=16),
    height=st.integers(0, 10**7), difficulty=fractions, network_difficulty=fractions,
    is_block=st.booleans(), created_at=times,
)
block_records = st.builds(
    BlockRecord, height=st.integers(0, 10**7), hash=st.text("0123456789abcdef", min_size=64, max_size=64),
    prevhash=st.text("0123456789abcdef", min_size=64, max_size=64), address=names, worker=names,
    reward=st.integers(0, 21 * 10**14), status=st.sampled_from(["pending", "rejected"]),
    submit_result=st.none() | st.text(max_size=30),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(share_records | block_records, max_size=8))
def test_frames_round_trip(entries):
    data = b"".join(frame(encode_entry(e)) for e in entries)
    decoded = decode_segment(data)
    assert decoded.entries == [share_row(e) if isinstance(e, ShareRecord) else e for e in entries]
    assert decoded.good_bytes == len(data) and decoded.torn_bytes == decoded.corrupt_bytes == 0


@settings(max_examples=200, deadline=None)
@given(share_records, st.sampled_from([0, 5, -7, 14]))
def test_share_rows_keep_values_exact(record, offset_hours):
    """The stored form is exact: fractions as n/d, the time in UTC to the microsecond."""
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    local = ShareRecord(**{**record.__dict__, "created_at": record.created_at.astimezone(tz)})
    rows = ShareRows()
    row = rows(local)
    assert Fraction(row.difficulty) == record.difficulty and Fraction(row.network_difficulty) == record.network_difficulty
    assert dt.datetime.fromisoformat(row.created_at).replace(tzinfo=dt.timezone.utc) == record.created_at
    assert rows(local) == row  # the per-second cache gives the same answer


@settings(max_examples=60, deadline=None)
@given(st.lists(share_records | block_records, max_size=12), st.integers(1, 4))
def test_multi_record_frames_round_trip(entries, frame_shares):
    """append_many's encoding: runs of shares as multi-share frames (split every
    ``frame_shares``), blocks as frames of their own, order kept."""
    rows = ShareRows()
    items = [rows(e) if isinstance(e, ShareRecord) else e for e in entries]
    original = spool_module.FRAME_SHARES
    spool_module.FRAME_SHARES = frame_shares
    try:
        data = encode_frames(items)
    finally:
        spool_module.FRAME_SHARES = original
    decoded = decode_segment(data)
    assert decoded.entries == items
    assert decoded.good_bytes == len(data) and decoded.torn_bytes == decoded.corrupt_bytes == 0


def test_old_single_record_frames_and_new_multi_frames_mix():
    """A spool written before multi-share frames (one record a frame) still replays,
    also when a newer run appended multi-share frames to the same directory."""
    rows = ShareRows()
    old = b"".join(frame(encode_entry(make_share(i))) for i in range(3))
    new = encode_frames(rows.many([make_share(i) for i in range(3, 10)]))
    assert len(frame_payloads(new)) == 1  # seven shares, one frame
    decoded = decode_segment(old + new + old[:7])
    assert [e.share_hash for e in decoded.entries] == [make_share(i).share_hash for i in range(10)]
    assert decoded.torn_bytes == 7 and decoded.corrupt_bytes == 0


def test_json_multi_share_frames_of_older_versions_replay():
    """Before pickled frames, many shares were one JSON frame: "S", then each row as a list."""
    rows = ShareRows().many([make_share(i) for i in range(5)])
    old = frame(json.dumps(["S", *map(list, rows)], separators=(",", ":")).encode())
    new = encode_frames(rows)
    assert old != new
    assert decode_segment(old + new).entries == rows + rows


def test_pickled_frames_build_plain_values_only():
    """A frame naming a class (what a crafted pickle needs to run code) is damage, not a record."""
    rows = ShareRows().many([make_share(i) for i in range(3)])
    good = encode_frames(rows)
    assert decode_segment(good).entries == rows
    assert pickle.loads(frame_payloads(good)[0]) == ("S", [tuple(r) for r in rows])
    for hostile in (
        ("S", [Fraction(1, 3)]),  # any class at all, even a harmless one
        ("S", rows),  # NamedTuples pickle by class too
    ):
        bad = frame(pickle.dumps(hostile, 5))
        decoded = decode_segment(good + bad)
        assert decoded.entries == rows and decoded.corrupt_bytes == len(bad)
    for wrong in (("X", []), ("S", ("a",)), ("S", [("too", "short")])):
        decoded = decode_segment(frame(pickle.dumps(wrong, 5)))
        assert decoded.entries == [] and decoded.corrupt_bytes > 0, wrong


def test_torn_multi_share_frame_drops_the_whole_call():
    """A multi-share frame is one write: cut short, none of its shares come back
    (none of them was acknowledged), the frames before it do."""
    rows = ShareRows()
    first = encode_frames(rows.many([make_share(i) for i in range(4)]))
    second = encode_frames(rows.many([make_share(i) for i in range(4, 8)]))
    decoded = decode_segment(first + second[:-1])
    assert [e.share_hash for e in decoded.entries] == [make_share(i).share_hash for i in range(4)]
    assert decoded.torn_bytes == len(second) - 1


def test_record_over_the_frame_limit_is_refused():
    huge = ShareRows()(make_share(0, worker="w" * (MAX_PAYLOAD + 1)))
    with pytest.raises(SpoolError, match="frame limit"):
        encode_frames([huge])
    # Many shares that together pass the limit are split into frames that fit.
    many = ShareRows().many([make_share(i, worker="w" * 2000) for i in range(1200)])
    data = encode_frames(many)
    decoded = decode_segment(data)
    assert len(decoded.entries) == 1200 and decoded.good_bytes == len(data)


def test_torn_tail_is_not_damage():
    frames = [frame(encode_entry(make_share(i))) for i in range(3)]
    whole = b"".join(frames)
    for cut in range(len(whole) - len(frames[-1]) + 1, len(whole)):
        decoded = decode_segment(whole[:cut])
        assert [e.share_hash for e in decoded.entries] == [make_share(i).share_hash for i in range(2)]
        assert decoded.torn_bytes == cut - len(frames[0]) - len(frames[1]) and decoded.corrupt_bytes == 0


def test_flipped_byte_is_damage():
    frames = [frame(encode_entry(make_share(i))) for i in range(3)]
    data = bytearray(b"".join(frames))
    data[len(frames[0]) + 20] ^= 0x01
    decoded = decode_segment(bytes(data))
    assert len(decoded.entries) == 1 and decoded.corrupt_bytes == len(data) - len(frames[0])


async def _with_spool(spool: Spool, body) -> None:
    await trio.to_thread.run_sync(spool.open)
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        await body()
        nursery.cancel_scope.cancel()


async def test_group_commit_shares_fsyncs(tmp_path: Path):
    durable: list = []
    spool = Spool(tmp_path, fsync_interval=0.005, on_durable=lambda seg, entries: durable.extend(entries))

    async def body() -> None:
        async with trio.open_nursery() as n:
            for i in range(500):
                n.start_soon(spool.append, make_share(i))

    await _with_spool(spool, body)
    assert len(durable) == 500 == spool.appended
    assert spool.fsyncs <= 10, spool.fsyncs  # 500 concurrent appends, a handful of fsyncs
    decoded = decode_segment(b"".join(p.read_bytes() for p in sorted(tmp_path.glob("seg-*"))))
    assert sorted(e.share_hash for e in decoded.entries) == sorted(make_share(i).share_hash for i in range(500))


async def test_append_many_is_one_frame_and_one_wait(tmp_path: Path):
    durable: list = []
    spool = Spool(tmp_path, fsync_interval=0.005, on_durable=lambda seg, entries: durable.extend(entries))

    async def body() -> None:
        async with trio.open_nursery() as n:
            for k in range(50):
                n.start_soon(spool.append_many, [make_share(k * 10 + i) for i in range(10)])
        await spool.append_many([])  # nothing to do, returns at once

    await _with_spool(spool, body)
    assert len(durable) == 500 == spool.appended and spool.fsyncs <= 10
    data = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("seg-*")))
    assert len(frame_payloads(data)) == 50  # one frame per call
    decoded = decode_segment(data)
    assert sorted(e.share_hash for e in decoded.entries) == sorted(make_share(i).share_hash for i in range(500))
    hashes = [e.share_hash for e in decoded.entries]
    for k in range(50):  # each call's shares stay together, in order
        at = hashes.index(make_share(k * 10).share_hash)
        assert hashes[at : at + 10] == [make_share(k * 10 + i).share_hash for i in range(10)]


async def test_append_many_is_refused_whole_when_full(tmp_path: Path):
    spool = Spool(tmp_path, max_bytes=4000, fsync_interval=0)

    async def body() -> None:
        await spool.append_many([make_share(i) for i in range(5)])
        with pytest.raises(SpoolFull):
            await spool.append_many([make_share(i) for i in range(5, 100)])  # would not fit: none written
        await spool.append_many([make_share(100)])

    await _with_spool(spool, body)
    assert spool.refused == 95 and spool.appended == 6
    decoded = decode_segment(b"".join(p.read_bytes() for p in sorted(tmp_path.glob("seg-*"))))
    assert [e.share_hash for e in decoded.entries] == [make_share(i).share_hash for i in [0, 1, 2, 3, 4, 100]]


async def test_segments_rotate_by_size_and_age(tmp_path: Path):
    sealed: list = []
    spool = Spool(tmp_path, fsync_interval=0, segment_bytes=2000, segment_age=0.2, on_sealed=sealed.append)

    async def body() -> None:
        for i in range(40):
            await spool.append(make_share(i))
        assert len(sealed) >= 3  # ~250 bytes a frame: several 2000-byte segments
        with trio.fail_after(2):
            while spool.segments[-1] not in sealed:  # the last one seals once it is 0.2 s old
                await trio.sleep(0.02)

    await _with_spool(spool, body)
    assert all(s.sealed for s in spool.segments)
    assert sum(s.entries for s in spool.segments) == 40


async def test_reopen_recovers_segments_and_continues_numbering(tmp_path: Path):
    spool = Spool(tmp_path)

    async def body() -> None:
        for i in range(5):
            await spool.append(make_share(i))

    await _with_spool(spool, body)
    again = Spool(tmp_path)
    found = again.open()
    try:
        assert [s.recovered and s.replay and s.sealed for s in found] == [True]
        assert again.size_bytes == found[0].size > 0
        assert again._next_seq == found[0].seq + 1
    finally:
        again.close()


def test_one_process_per_spool_directory(tmp_path: Path):
    first = Spool(tmp_path)
    first.open()
    try:
        with pytest.raises(SpoolError, match="in use"):
            Spool(tmp_path).open()
    finally:
        first.close()


async def test_full_spool_refuses_loudly(tmp_path: Path, caplog):
    spool = Spool(tmp_path, max_bytes=2500, fsync_interval=0)
    refused = 0

    async def body() -> None:
        nonlocal refused
        for i in range(30):
            try:
                await spool.append(make_share(i))
            except SpoolFull:
                refused += 1

    await _with_spool(spool, body)
    assert refused > 0 and spool.full and spool.refused == refused
    assert spool.size_bytes <= 2500
    assert "SPOOL FULL" in caplog.text


async def test_write_failure_refuses_and_seals(tmp_path: Path, monkeypatch):
    spool = Spool(tmp_path, fsync_interval=0)
    real_write = Spool._write
    fail = False

    def flaky(seg, data):  # type: ignore[no-untyped-def]
        if fail:
            real_write(seg, data[: len(data) // 2])  # a torn write, then the error
            raise OSError(28, "No space left on device")
        real_write(seg, data)

    monkeypatch.setattr(Spool, "_write", staticmethod(flaky))

    async def body() -> None:
        nonlocal fail
        await spool.append(make_share(0))
        fail = True
        with pytest.raises(SpoolError, match="No space"):
            await spool.append(make_share(1))
        fail = False
        await spool.append(make_share(2))

    await _with_spool(spool, body)
    files = sorted(tmp_path.glob("seg-*"))
    assert [f.name for f in files] == [segment_name(1), segment_name(2)]
    first = decode_segment(files[0].read_bytes())
    assert [e.share_hash for e in first.entries] == [make_share(0).share_hash]
    assert first.torn_bytes == first.corrupt_bytes == 0  # truncated back to the good frame
    assert [e.share_hash for e in decode_segment(files[1].read_bytes()).entries] == [make_share(2).share_hash]


async def test_stopping_refuses_waiting_appends_instead_of_hanging(tmp_path: Path):
    """A shielded caller (block submission) appending while the pool stops gets an error, not a hang."""
    spool = Spool(tmp_path, fsync_interval=10)  # the next group would wait 10 s
    await trio.to_thread.run_sync(spool.open)
    outcome: list[object] = []

    async def shielded_append() -> None:
        with trio.CancelScope(shield=True):
            try:
                await spool.append(make_share(2))
                outcome.append("written")
            except SpoolError as exc:
                outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(spool.run)
            await spool.append(make_share(1))  # sets the 10 s fsync spacing
            nursery.start_soon(shielded_append)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert len(outcome) == 1 and isinstance(outcome[0], SpoolError)
    with pytest.raises(SpoolError, match="shutting down"):
        await spool.append(make_share(3))
