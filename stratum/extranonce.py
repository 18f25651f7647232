"""Extranonce1 allocation: unique per connection across the whole pool.

The first byte is the server id, so several servers (or ``--workers``
processes) sharing one database never hand out the same extranonce1.
"""

from __future__ import annotations

import secrets


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
        self._next = secrets.randbelow(self._space)

    def _encode(self, n: int) -> bytes:
        return bytes([self.server_id]) + n.to_bytes(self.size - 1, "big")

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
        """Take a specific extranonce1 (session resume); False if not ours or busy."""
        if len(extranonce1) != self.size or extranonce1[0] != self.server_id:
            return False
        n = int.from_bytes(extranonce1[1:], "big")
        if n in self._in_use:
            return False
        self._in_use.add(n)
        return True

    def release(self, extranonce1: bytes) -> None:
        self._in_use.discard(int.from_bytes(extranonce1[1:], "big"))
