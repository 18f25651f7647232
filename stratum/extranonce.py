"""Extranonce1 allocation and session resume, free of I/O.

Layout of an extranonce1 of ``size`` bytes::

    [server_id: 1 byte][counter: size-1 bytes, big-endian]

The first byte is the configured server id, so several servers (or worker
processes) behind one database never hand out the same extranonce1; the
counter is unique among the live and parked sessions of this server.

A session that disconnects is *parked* for ``resume_window`` seconds: its
extranonce1 is kept out of circulation and its protocol state (difficulty,
jobs sent) is remembered under its session id.  A miner that subscribes
again offering that id (cgminer's ``mining.subscribe [agent, session_id]``)
gets the same extranonce1 back and can keep submitting shares for the jobs
it already had.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any


class ExtranonceExhausted(Exception):
    pass


class ExtranonceAllocator:
    def __init__(self, size: int = 4, server_id: int = 0) -> None:
        if not 2 <= size <= 8:
            raise ValueError("extranonce1 size must be 2..8 bytes")
        if not 0 <= server_id <= 255:
            raise ValueError("server id must fit in one byte")
        self.size = size
        self.server_id = server_id
        self._space = 1 << (8 * (size - 1))
        self._in_use: set[int] = set()
        # Start at a random point: a restarted server does not reissue the
        # extranonce1s it gave out just before (their shares may still be in
        # the duplicate book of another server sharing the database).
        self._next = secrets.randbelow(self._space)

    def _encode(self, n: int) -> bytes:
        return bytes([self.server_id]) + n.to_bytes(self.size - 1, "big")

    def _decode(self, extranonce1: bytes) -> int | None:
        if len(extranonce1) != self.size or extranonce1[0] != self.server_id:
            return None
        return int.from_bytes(extranonce1[1:], "big")

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self) -> bytes:
        if len(self._in_use) >= self._space:
            raise ExtranonceExhausted("every extranonce1 of this server is in use")
        while self._next in self._in_use:
            self._next = (self._next + 1) % self._space
        n = self._next
        self._in_use.add(n)
        self._next = (n + 1) % self._space
        return self._encode(n)

    def claim(self, extranonce1: bytes) -> bool:
        """Take a specific extranonce1; False if it is not ours or already taken."""
        n = self._decode(extranonce1)
        if n is None or n in self._in_use:
            return False
        self._in_use.add(n)
        return True

    def is_allocated(self, extranonce1: bytes) -> bool:
        n = self._decode(extranonce1)
        return n is not None and n in self._in_use

    def release(self, extranonce1: bytes) -> None:
        n = self._decode(extranonce1)
        if n is not None:
            self._in_use.discard(n)


@dataclass
class ParkedSession:
    """What a disconnected session leaves behind for its resumption."""

    session_id: str
    extranonce1s: tuple[bytes, ...]
    state: Any  # opaque to the registry: the protocol's carry-over state
    expires_at: float


class SessionRegistry:
    """Session ids, the extranonce1s they own, and parked sessions.

    ``owner`` is any object identifying a live connection (the protocol
    passes itself).  Ownership moves on resume; a connection whose session
    was taken over by a newer connection releases nothing when it closes.
    """

    def __init__(self, allocator: ExtranonceAllocator | None = None, resume_window: float = 300.0) -> None:
        self.allocator = allocator or ExtranonceAllocator()
        self.resume_window = resume_window
        self._live: dict[str, object] = {}
        self._parked: dict[str, ParkedSession] = {}

    def _new_id(self) -> str:
        while True:
            sid = secrets.token_hex(8)
            if sid not in self._live and sid not in self._parked:
                return sid

    def open(self, owner: object) -> tuple[str, bytes]:
        """A fresh session: (session id, extranonce1)."""
        extranonce1 = self.allocator.allocate()
        sid = self._new_id()
        self._live[sid] = owner
        return sid, extranonce1

    def extra_extranonce(self) -> bytes:
        """Another extranonce1 for a live session (mining.set_extranonce)."""
        return self.allocator.allocate()

    def resume(self, session_id: str, owner: object, now: float) -> tuple[ParkedSession | None, object | None]:
        """Claim ``session_id`` for ``owner``.

        Returns (parked, None) when the session was parked, (None, previous
        owner) when it is still attached to another live connection (the
        miner reconnected before the server noticed the old socket died: the
        caller takes the state over and the old connection must be closed),
        or (None, None) when the id is unknown or expired.
        """
        self.expire(now)
        parked = self._parked.pop(session_id, None)
        if parked is not None:
            self._live[session_id] = owner
            return parked, None
        previous = self._live.get(session_id)
        if previous is not None and previous is not owner:
            self._live[session_id] = owner
            return None, previous
        return None, None

    def owns(self, session_id: str, owner: object) -> bool:
        return self._live.get(session_id) is owner

    def close(self, session_id: str, owner: object, extranonce1s: tuple[bytes, ...], state: Any, now: float) -> None:
        """A connection ended: park its session, or release at once if resume is off."""
        if self._live.get(session_id) is not owner:
            return  # taken over: the extranonce1s belong to the new connection now
        del self._live[session_id]
        if self.resume_window > 0:
            self._parked[session_id] = ParkedSession(session_id, extranonce1s, state, now + self.resume_window)
        else:
            for extranonce1 in extranonce1s:
                self.allocator.release(extranonce1)

    def expire(self, now: float) -> int:
        """Release the extranonce1s of sessions parked for longer than the window."""
        # Parked in time order with one window for all, so the oldest come first.
        expired = []
        for sid, parked in self._parked.items():
            if parked.expires_at > now:
                break
            expired.append(sid)
        for sid in expired:
            for extranonce1 in self._parked.pop(sid).extranonce1s:
                self.allocator.release(extranonce1)
        return len(expired)

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def parked(self) -> int:
        return len(self._parked)
