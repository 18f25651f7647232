"""stratum+ssl: TLS for the optional second port, as a sans-IO channel.

TLS runs over memory BIOs (``ssl.SSLObject``) instead of ``trio.SSLStream``
so that a TLS connection uses exactly the same write path as a plain one:
a notify is encrypted synchronously into bytes, and those bytes go to the
socket with a non-blocking send (see ``server.py``). There is no writer task
per connection, and a broadcast never awaits one TLS socket.

The server never renegotiates and refuses client-initiated renegotiation
(``OP_NO_RENEGOTIATION``), so after the handshake, writing never needs to
read; TLS 1.2 is the minimum.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsError(Exception):
    """The TLS layer failed (bad handshake, bad record, peer closed)."""


@dataclass(frozen=True)
class TlsSettings:
    """The stratum+ssl listener: certificate chain and key (PEM) and the port."""

    cert_file: Path
    key_file: Path
    port: int = 0
    #: Listen address; None: the plain listener's.
    host: str | None = None

    def context(self) -> ssl.SSLContext:
        """A server context; raises ``OSError``/``ssl.SSLError`` for unusable files."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


class TlsChannel:
    """One server-side TLS session: ciphertext in, plaintext out, and back."""

    __slots__ = ("_incoming", "_obj", "_outgoing", "handshaken")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshaken = False

    def _pending_out(self) -> bytes:
        return self._outgoing.read() if self._outgoing.pending else b""

    def handshake(self, data: bytes) -> tuple[bool, bytes]:
        """Feed ciphertext; returns (handshake done, ciphertext to send)."""
        if data:
            self._incoming.write(data)
        try:
            self._obj.do_handshake()
            self.handshaken = True
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(f"TLS handshake failed: {exc}") from exc
        return self.handshaken, self._pending_out()

    def receive(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Feed ciphertext; returns (plaintext, ciphertext to send, peer closed)."""
        if data:
            self._incoming.write(data)
        chunks = []
        closed = False
        while True:
            try:
                chunk = self._obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                closed = True
                break
            except (ssl.SSLError, ValueError) as exc:
                raise TlsError(f"TLS record error: {exc}") from exc
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks), self._pending_out(), closed

    def encrypt(self, plaintext: bytes) -> bytes:
        """Plaintext to ciphertext, synchronously (memory BIOs never block)."""
        try:
            self._obj.write(plaintext)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(f"TLS write failed: {exc}") from exc
        return self._pending_out()
