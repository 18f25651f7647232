"""bitcoind's ZMQ block notifications (``-zmqpubhashblock``) for the devnet.

bitcoind publishes three frames per new tip: the topic ``hashblock``, the
32-byte block hash in display order (byte-reversed, as RPC shows it), and a
4-byte little-endian sequence number that increases per topic so
subscribers can tell they missed one.
"""

from __future__ import annotations

import logging
import struct

import zmq

from ..bitcoin.serialize import internal_to_display

log = logging.getLogger(__name__)

HASHBLOCK = b"hashblock"


def hashblock_frames(block_hash: bytes, sequence: int) -> list[bytes]:
    """The three frames bitcoind sends for ``block_hash`` (internal byte order)."""
    return [HASHBLOCK, bytes.fromhex(internal_to_display(block_hash)), struct.pack("<I", sequence & 0xFFFFFFFF)]


class HashblockPublisher:
    """A PUB socket bound to ``endpoint`` that announces every new tip.

    ``publish`` never blocks: PUB drops messages for slow subscribers (as
    bitcoind's does), which is why the pool keeps its polling fallback.
    """

    def __init__(self, endpoint: str, context: zmq.Context | None = None) -> None:
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)
        # With a wildcard port (tcp://127.0.0.1:*) this is the real one.
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sequence = 0

    def publish(self, block_hash: bytes, _height: int = 0) -> None:
        if self._socket is None:
            return
        try:
            self._socket.send_multipart(hashblock_frames(block_hash, self.sequence), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug("hashblock notification dropped (high-water mark)")
        self.sequence += 1

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
