"""PROXY protocol v1 and v2 (HAProxy's spec), free of I/O.

Behind a TCP load balancer every connection comes from the balancer's
address, which would put every miner under one per-address limit and one
ban. The balancer can prepend a PROXY header naming the real client; the
server believes it **only from configured trusted addresses** (anyone else
could claim any address), and from those it requires it.

``parse(data)`` looks at the first bytes of a connection: it returns None
while the header is incomplete, ``(header, consumed)`` once it is complete,
and raises ``ProxyProtocolError`` for anything that is not a valid header.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = 16
#: TLVs can carry TLS details; more than this is not a header anyone sends.
V2_MAX_PAYLOAD = 4096


class ProxyProtocolError(Exception):
    """The connection did not start with a valid PROXY header."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    #: The real client (host, port); None for LOCAL/UNKNOWN: use the socket's peer.
    source: tuple[str, int] | None
    destination: tuple[str, int] | None = None


def _port(raw: bytes) -> int:
    if not raw.isdigit() or (len(raw) > 1 and raw.startswith(b"0")) or len(raw) > 5:
        raise ProxyProtocolError("bad port in PROXY v1 header")
    port = int(raw)
    if port > 65535:
        raise ProxyProtocolError("port out of range in PROXY v1 header")
    return port


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
        return None
    fields = data[:end].split(b" ")
    if len(fields) < 2:
        raise ProxyProtocolError("empty PROXY v1 header")
    family = fields[1]
    if family == b"UNKNOWN":
        return ProxyHeader(1, None), end + 2
    if family not in (b"TCP4", b"TCP6") or len(fields) != 6:
        raise ProxyProtocolError("PROXY v1 header needs TCP4/TCP6 and four fields")
    try:
        src = ipaddress.ip_address(fields[2].decode("ascii"))
        dst = ipaddress.ip_address(fields[3].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProxyProtocolError(f"bad address in PROXY v1 header: {exc}") from exc
    want = 4 if family == b"TCP4" else 6
    if src.version != want or dst.version != want:
        raise ProxyProtocolError("PROXY v1 address does not match its family")
    return ProxyHeader(1, (str(src), _port(fields[4])), (str(dst), _port(fields[5]))), end + 2


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if len(data) < V2_HEADER:
        return None
    version_command, family, length = data[12], data[13], int.from_bytes(data[14:16], "big")
    if version_command >> 4 != 2:
        raise ProxyProtocolError("PROXY v2 header with an unknown version")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError("PROXY v2 header with an unknown command")
    if length > V2_MAX_PAYLOAD:
        raise ProxyProtocolError("PROXY v2 header too long")
    total = V2_HEADER + length
    if len(data) < total:
        return None
    payload = data[V2_HEADER:total]
    if command == 0:  # LOCAL: the balancer's own health check
        return ProxyHeader(2, None), total
    if family in (0x11, 0x12):  # TCP/UDP over IPv4
        if length < 12:
            raise ProxyProtocolError("PROXY v2 IPv4 addresses truncated")
        src4 = ipaddress.IPv4Address(payload[0:4])
        dst4 = ipaddress.IPv4Address(payload[4:8])
        sport, dport = int.from_bytes(payload[8:10], "big"), int.from_bytes(payload[10:12], "big")
        return ProxyHeader(2, (str(src4), sport), (str(dst4), dport)), total
    if family in (0x21, 0x22):  # TCP/UDP over IPv6
        if length < 36:
            raise ProxyProtocolError("PROXY v2 IPv6 addresses truncated")
        src6 = ipaddress.IPv6Address(payload[0:16])
        dst6 = ipaddress.IPv6Address(payload[16:32])
        sport, dport = int.from_bytes(payload[32:34], "big"), int.from_bytes(payload[34:36], "big")
        return ProxyHeader(2, (str(src6), sport), (str(dst6), dport)), total
    if family >> 4 in (0, 3) and family & 0x0F in (0, 1, 2):  # UNSPEC or unix sockets: no address
        return ProxyHeader(2, None), total
    raise ProxyProtocolError("PROXY v2 header with an unknown address family")


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse a PROXY v1/v2 header at the start of ``data`` (see module docstring)."""
    probe = data[: len(V2_SIGNATURE)]
    if V2_SIGNATURE.startswith(probe) and len(probe) < len(V2_SIGNATURE):
        return None
    if probe == V2_SIGNATURE:
        return _parse_v2(data)
    probe = data[: len(V1_PREFIX)]
    if V1_PREFIX.startswith(probe) and len(probe) < len(V1_PREFIX):
        return None
    if probe == V1_PREFIX:
        return _parse_v1(data)
    raise ProxyProtocolError("connection from a trusted proxy did not start with a PROXY header")


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header (for tests and for chaining behind this server)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {source[1]} {destination[1]}\r\n".encode()


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None, tlvs: bytes = b"") -> bytes:
    """A v2 header; ``source=None`` gives a LOCAL command (a health check)."""
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + len(tlvs).to_bytes(2, "big") + tlvs
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0]) if destination else type(src)(0)
    dport = destination[1] if destination else 0
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + source[1].to_bytes(2, "big") + dport.to_bytes(2, "big") + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + len(body).to_bytes(2, "big") + body
