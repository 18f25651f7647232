"""Write-ahead spool: an accepted share is on local disk before the miner hears ``true``.

Records are appended to segment files as CRC-checked frames; one
``append_many`` call (the shares of one read from a miner, say) is one frame
holding all its shares, so encoding and CRC work is per call, not per share.
Appends made while one fsync is running form the next group, so many callers
share one fsync (group commit), with at most one fsync per ``fsync_interval``. Segments
rotate by size and age; the writer deletes a segment only once every record
in it is committed to the database. Whatever is left on disk after a crash is
replayed at the next start (the writer replays with
``ShareStore.write(replay=True)``, which skips shares already stored, so
replaying rows that did reach the database is harmless).

The framing and record encoding are plain functions (no I/O); ``Spool`` does
the file work in worker threads so the event loop never waits on the disk.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import math
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .records import BlockRecord, ShareRecord, ShareRow, ShareRows

log = logging.getLogger(__name__)

# What the spool holds and hands to the writer: shares already in their stored form.
SpoolEntry = ShareRow | BlockRecord

# Frame: payload length, CRC32 of the payload, payload. A payload is one record
# as compact JSON (a list tagged "s" for a share or "b" for a block), or many
# shares: a pickle (protocol 5) of ("S", [row tuples in ``ShareRow`` order]),
# read back by an unpickler that refuses every class, so only tuples, lists,
# strings, ints and bools can come out of it. A pickle because it is the one
# encoder in the standard library that writes a string object shared by many
# rows (the worker's address and name, the difficulty and time texts) once:
# 0.13 us a share against 1.0 for JSON, in half the bytes. Readers also take
# the older JSON forms (a single record a frame; "S" then each share as a
# list), so a spool written by an older version replays as is.
_HEADER = struct.Struct("<II")
MAX_PAYLOAD = 1 << 20
# Shares per multi-share frame at most (~250 bytes each: well under MAX_PAYLOAD;
# a frame that still comes out too big is split further).
FRAME_SHARES = 2000
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".spool"
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_SHARES_TAG = "S"
_PICKLE_PROTOCOL = 5


class SpoolError(RuntimeError):
    """The spool could not make a record durable (disk error): do not acknowledge it."""


class SpoolFull(SpoolError):
    """The spool reached its configured size: the database is not keeping up or is down."""


# --- encoding (sans-I/O) ------------------------------------------------------


def encode_entry(entry: SpoolEntry | ShareRecord, rows: ShareRows | None = None) -> bytes:
    """One record as a compact JSON payload (a list tagged "s" or "b")."""
    if isinstance(entry, ShareRecord):
        entry = (rows or ShareRows())(entry)
    if isinstance(entry, ShareRow):
        row: list[object] = ["s", *entry]
        row[8] = 1 if entry.is_block else 0
    else:
        row = [
            "b", entry.height, entry.hash, entry.prevhash, entry.address, entry.worker,
            entry.reward, entry.status, entry.submit_result,
        ]
    return _dumps(row).encode()


def encode_shares(rows: Sequence[ShareRow]) -> bytes:
    """Many shares as one payload (plain tuples: a NamedTuple would pickle by class)."""
    return pickle.dumps((_SHARES_TAG, list(map(tuple, rows))), _PICKLE_PROTOCOL)


class _PlainUnpickler(pickle.Unpickler):
    """Builds built-in values only: a payload naming any class or function is refused."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"spool frames hold plain values only, not {module}.{name}")


def _decode_shares(payload: bytes) -> list[SpoolEntry]:
    tag, rows = _PlainUnpickler(io.BytesIO(payload)).load()
    if tag != _SHARES_TAG or type(rows) is not list:
        raise ValueError(f"unknown pickled spool payload {tag!r}")
    return [ShareRow(*r) for r in rows]


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _share_frames(rows: Sequence[ShareRow], out: list[bytes]) -> None:
    for i in range(0, len(rows), FRAME_SHARES):
        chunk = rows[i : i + FRAME_SHARES]
        payload = encode_shares(chunk) if len(chunk) > 1 else encode_entry(chunk[0])
        if len(payload) > MAX_PAYLOAD and len(chunk) > 1:
            half = len(chunk) // 2
            _share_frames(chunk[:half], out)
            _share_frames(chunk[half:], out)
        else:
            out.append(_checked_frame(payload))


def _checked_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:  # a reader would take it for damage: refuse it now
        raise SpoolError(f"spool record of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte frame limit")
    return frame(payload)


def encode_frames(entries: Sequence[SpoolEntry]) -> bytes:
    """Framed bytes for ``entries``, in order: runs of shares as multi-share
    frames, a single share or a block as a frame of its own."""
    out: list[bytes] = []
    if set(map(type, entries)) == {ShareRow}:  # the usual case: shares only
        _share_frames(entries, out)  # type: ignore[arg-type]
        return b"".join(out)
    run_start = 0
    for i, e in enumerate(entries):
        if type(e) is not ShareRow:
            if i > run_start:
                _share_frames(entries[run_start:i], out)
            out.append(_checked_frame(encode_entry(e)))
            run_start = i + 1
    if run_start < len(entries):
        _share_frames(entries[run_start:], out)
    return b"".join(out)


def decode_entry(payload: bytes) -> SpoolEntry:
    """A single-record payload (see ``decode_entries`` for any payload)."""
    entries = decode_entries(payload)
    if len(entries) != 1:
        raise ValueError(f"expected one spool record, found {len(entries)}")
    return entries[0]


def decode_entries(payload: bytes) -> list[SpoolEntry]:
    if payload[:1] == b"\x80":  # pickle's PROTO opcode: a multi-share frame
        return _decode_shares(payload)
    row = json.loads(payload)
    tag = row[0]
    if tag == "S":
        return [ShareRow(*r) for r in row[1:]]
    if tag == "s":
        _, h, address, worker, job_id, height, diff, ndiff, is_block, created_at = row
        return [ShareRow(h, address, worker, job_id, height, diff, ndiff, bool(is_block), created_at)]
    if tag == "b":
        _, height, h, prevhash, address, worker, reward, status, submit_result = row
        return [BlockRecord(height, h, prevhash, address, worker, reward, status, submit_result)]
    raise ValueError(f"unknown spool record tag {tag!r}")


@dataclass(frozen=True)
class Decoded:
    """What a segment file held: its good records and what was wrong after them."""

    entries: list[SpoolEntry]
    good_bytes: int
    # Bytes after the last good frame that are an incomplete frame: a write
    # cut short by a crash. Such a write was never acknowledged.
    torn_bytes: int = 0
    # Bytes from a complete frame that fails its check onwards: damage.
    corrupt_bytes: int = 0


def decode_segment(data: bytes) -> Decoded:
    """Parse frames until the data ends, is cut short, or fails a check."""
    entries: list[SpoolEntry] = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < _HEADER.size:
            return Decoded(entries, pos, torn_bytes=end - pos)
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if length > MAX_PAYLOAD:
            return Decoded(entries, pos, corrupt_bytes=end - pos)
        if start + length > end:
            return Decoded(entries, pos, torn_bytes=end - pos)
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return Decoded(entries, pos, corrupt_bytes=end - pos)
        try:
            entries.extend(decode_entries(payload))
        except (ValueError, TypeError, KeyError, IndexError, EOFError, pickle.UnpicklingError) as exc:
            log.error("undecodable spool record at byte %d: %s", pos, exc)
            return Decoded(entries, pos, corrupt_bytes=end - pos)
        pos = start + length
    return Decoded(entries, pos)


# --- segments and the spool ------------------------------------------------------


@dataclass(eq=False)
class Segment:
    """One spool file and how far its records have got."""

    seq: int
    path: Path
    size: int = 0
    entries: int = 0  # records durably in the file
    committed: int = 0  # of those, committed to the database via the in-memory queue
    sealed: bool = False  # no more appends
    # Rows must be read back from the file: left by a previous run, or some
    # records did not fit in the in-memory queue (database slow or down).
    replay: bool = False
    recovered: bool = False
    spilled: int = 0  # records that went to the file only (not the writer's queue)
    opened_at: float = 0.0
    fd: int | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """Every record is in the database: the file can go."""
        return self.sealed and not self.replay and self.committed >= self.entries


def segment_name(seq: int) -> str:
    return f"{SEGMENT_PREFIX}{seq:012d}{SEGMENT_SUFFIX}"


class _Group:
    __slots__ = ("done", "entries", "error", "frames", "nbytes")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.entries: list[SpoolEntry] = []
        self.nbytes = 0
        self.done = trio.Event()
        self.error: BaseException | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_sync = getattr(os, "fdatasync", os.fsync)


class Spool:
    """Append-only segment files with group-committed fsync.

    ``on_durable(segment, entries)`` is called on the event loop once a group
    is on disk; ``on_sealed(segment)`` once a segment takes no more appends.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync_interval: float = 0.002,
        segment_bytes: int = 8 << 20,
        segment_age: float = 2.0,
        max_bytes: int = 1 << 30,
        on_durable: Callable[[Segment, Sequence[SpoolEntry]], None] | None = None,
        on_sealed: Callable[[Segment], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.segment_age = segment_age
        self.max_bytes = max_bytes
        self.on_durable = on_durable
        self.on_sealed = on_sealed
        self.segments: list[Segment] = []
        self.size_bytes = 0  # bytes in segment files not yet deleted
        self.fsyncs = 0
        self.appended = 0
        self.refused = 0
        self.full = False
        self.in_flight = 0  # records being written and fsynced right now
        self._flushing: _Group | None = None
        self._closed = False
        self._rows = ShareRows()
        self._next_seq = 1
        self._active: Segment | None = None
        self._group = _Group()
        self._wake = trio.Event()
        self._seal_requested = False
        self._lock_fd: int | None = None
        self._last_full_log = -math.inf

    # --- start-up ----------------------------------------------------------
    def open(self) -> list[Segment]:
        """Lock the directory and list the segments a previous run left (blocking I/O)."""
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            _fsync_dir(self.directory.parent)  # the new directory itself survives a power cut
        lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(lock_fd)
            raise SpoolError(f"spool directory {self.directory} is in use by another pool process") from exc
        self._lock_fd = lock_fd
        found: list[Segment] = []
        for path in sorted(self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")):
            try:
                seq = int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])
            except ValueError:
                log.warning("ignoring unexpected file in spool directory: %s", path)
                continue
            size = path.stat().st_size
            found.append(Segment(seq, path, size=size, sealed=True, replay=True, recovered=True))
        found.sort(key=lambda s: s.seq)
        self.segments = found
        self.size_bytes = sum(s.size for s in found)
        self._next_seq = (found[-1].seq + 1) if found else 1
        if found:
            log.warning(
                "spool %s: %d segment(s), %d bytes left by a previous run; replaying them into the database",
                self.directory, len(found), self.size_bytes,
            )
        return found

    def close(self) -> None:
        """Close file handles (the files stay; the next start replays what is left)."""
        for seg in self.segments:
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the hot path ----------------------------------------------------------
    @property
    def buffered_bytes(self) -> int:
        return self._group.nbytes

    async def append(self, entry: SpoolEntry | ShareRecord) -> None:
        """Return once ``entry`` is fsynced; raise ``SpoolFull``/``SpoolError`` if it is not."""
        await self.append_many((entry,))

    async def append_many(self, entries: Sequence[SpoolEntry | ShareRecord]) -> None:
        """Return once every one of ``entries`` is fsynced (one frame, one wait).

        All or nothing: ``SpoolFull`` refuses the whole call before anything is
        written; ``SpoolError`` (the disk failed) means none may be acknowledged.
        """
        if self._closed:
            raise SpoolError("spool stopped: the pool is shutting down")
        if not entries:
            return
        convert = self._rows
        items: list[SpoolEntry] = [convert(e) if isinstance(e, ShareRecord) else e for e in entries]
        data = encode_frames(items)
        group = self._group
        if self.size_bytes + group.nbytes + len(data) > self.max_bytes:
            self._refuse(len(items))
        group.frames.append(data)
        group.entries.extend(items)
        group.nbytes += len(data)
        self._wake.set()
        await group.done.wait()
        if group.error is not None:
            raise SpoolError(f"spool write failed: {group.error}") from group.error

    async def flushed(self) -> None:
        """Wait until every record appended before this call is written (or refused)."""
        for group in (self._flushing, self._group):
            if group is not None and group.entries:
                await group.done.wait()

    def _refuse(self, records: int = 1) -> None:
        self.refused += records
        self.full = True
        now = trio.current_time()
        if now - self._last_full_log >= 5.0:
            self._last_full_log = now
            log.critical(
                "SPOOL FULL: %d bytes in %s reached spool_max_bytes=%d; shares are being REFUSED "
                "(%d so far) until the database catches up",
                self.size_bytes, self.directory, self.max_bytes, self.refused,
            )
        raise SpoolFull(f"share spool full ({self.size_bytes} bytes): database not keeping up")

    def request_seal(self) -> None:
        """Ask the flusher to seal the active segment soon (the writer wants to replay it)."""
        self._seal_requested = True
        self._wake.set()

    # --- the flusher ------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write and fsync groups of appended records until cancelled."""
        task_status.started()
        last_sync = -math.inf
        try:
            while True:
                if not self._group.entries:
                    self._wake = trio.Event()
                    with trio.move_on_after(self._idle_timeout()):
                        await self._wake.wait()
                    if not self._group.entries:
                        await self._seal_if_due(idle=True)
                        continue
                wait = last_sync + self.fsync_interval - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
                group, self._group = self._group, _Group()
                last_sync = trio.current_time()
                self.in_flight = len(group.entries)
                self._flushing = group
                try:
                    await self._flush(group)
                finally:
                    self.in_flight = 0
                    self._flushing = None
                await self._seal_if_due(idle=False)
        finally:
            # Appenders still waiting (a shielded caller, during shutdown) must not
            # wait forever: their records were never written, so they are refused.
            self._closed = True
            group, self._group = self._group, _Group()
            if group.entries:
                group.error = SpoolError("spool stopped before the write")
            group.done.set()
            self.close()

    def _idle_timeout(self) -> float:
        seg = self._active
        if seg is None or seg.sealed:
            return math.inf
        if self._seal_requested:
            return 0
        return max(0.0, seg.opened_at + self.segment_age - trio.current_time())

    async def _seal_if_due(self, *, idle: bool) -> None:
        seg = self._active
        if seg is None or seg.sealed:
            self._seal_requested = False
            return
        aged = trio.current_time() - seg.opened_at >= self.segment_age
        if self._seal_requested or seg.size >= self.segment_bytes or aged:
            await self._seal(seg)

    async def _seal(self, seg: Segment) -> None:
        self._seal_requested = False
        if seg.fd is not None:
            fd, seg.fd = seg.fd, None
            await trio.to_thread.run_sync(os.close, fd)
        seg.sealed = True
        if self._active is seg:
            self._active = None
        if self.on_sealed is not None:
            self.on_sealed(seg)

    def _new_segment(self) -> Segment:
        seg = Segment(self._next_seq, self.directory / segment_name(self._next_seq), opened_at=trio.current_time())
        self._next_seq += 1
        self.segments.append(seg)
        self._active = seg
        return seg

    @staticmethod
    def _write(seg: Segment, data: bytes) -> None:
        """Append and fsync (worker thread). A new file's directory entry is fsynced too."""
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _fsync_dir(seg.path.parent)
        view = memoryview(data)
        while view:
            written = os.write(seg.fd, view)
            view = view[written:]
        _sync(seg.fd)

    @staticmethod
    def _truncate(seg: Segment) -> None:
        """After a failed write, cut the file back to its last good frame (best effort)."""
        try:
            os.truncate(seg.path, seg.size)
        except OSError as exc:
            log.error("spool segment %s: could not truncate after a failed write: %s", seg.path, exc)

    async def _flush(self, group: _Group) -> None:
        try:
            await self._flush_group(group)
        finally:
            if not group.done.is_set():  # an unexpected failure: its waiters must not hang
                group.error = group.error or SpoolError("spool write interrupted")
                group.done.set()

    async def _flush_group(self, group: _Group) -> None:
        seg = self._active
        if seg is None or seg.sealed:
            seg = self._new_segment()
        data = b"".join(group.frames)
        # Shielded: the thread runs to completion anyway, and its waiters must hear how it went.
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(self._write, seg, data)
            except OSError as exc:
                group.error = exc
                log.error(
                    "spool write of %d record(s) to %s failed: %s; they are refused, the segment is sealed",
                    len(group.entries), seg.path, exc,
                )
                await trio.to_thread.run_sync(self._truncate, seg)
                await self._seal(seg)
                group.done.set()
                return
        self.fsyncs += 1
        self.appended += len(group.entries)
        seg.size += len(data)
        seg.entries += len(group.entries)
        self.size_bytes += len(data)
        if self.on_durable is not None:
            self.on_durable(seg, group.entries)
        group.done.set()

    # --- the writer's side ----------------------------------------------------------
    @staticmethod
    def read(seg: Segment) -> Decoded:
        """Read a sealed segment back (worker thread)."""
        return decode_segment(seg.path.read_bytes())

    @staticmethod
    def remove_file(seg: Segment, keep_as: str | None = None) -> None:
        """Delete a segment's file (blocking; call from a thread); ``keep_as``
        renames it with that suffix instead (a damaged file kept for inspection)."""
        if keep_as is not None:
            seg.path.rename(seg.path.with_name(seg.path.name + keep_as))
        else:
            seg.path.unlink(missing_ok=True)

    def forget(self, seg: Segment) -> None:
        """Drop a removed segment from the books (event loop)."""
        if seg in self.segments:
            self.segments.remove(seg)
            self.size_bytes -= seg.size
        if self.full and self.size_bytes < self.max_bytes:
            self.full = False
            log.warning("spool below its limit again (%d bytes); accepting shares", self.size_bytes)
