"""Scripts the pool writes: BIP34 height pushes and payout scripts."""

from __future__ import annotations

from embit import base58, bech32

OP_0 = 0x00
OP_RETURN = 0x6A

# Address prefixes per network: (bech32 hrp, base58 p2pkh version, base58 p2sh version)
NETWORK_PREFIXES: dict[str, tuple[str, int, int]] = {
    "mainnet": ("bc", 0x00, 0x05),
    "testnet": ("tb", 0x6F, 0xC4),
    "testnet4": ("tb", 0x6F, 0xC4),
    "signet": ("tb", 0x6F, 0xC4),
    "regtest": ("bcrt", 0x6F, 0xC4),
}


# Which networks an address prefix belongs to, for refusals that name it.
_HRP_NETWORKS: dict[str, str] = {"bc": "mainnet", "tb": "testnet/testnet4/signet", "bcrt": "regtest"}
_BASE58_NETWORKS: dict[int, str] = {
    0x00: "mainnet P2PKH",
    0x05: "mainnet P2SH",
    0x6F: "testnet/testnet4/signet/regtest P2PKH",
    0xC4: "testnet/testnet4/signet/regtest P2SH",
}


class AddressError(ValueError):
    """An address that is malformed or belongs to another network."""


def push_data(data: bytes) -> bytes:
    """Minimal push of ``data`` (what CScript << vector produces)."""
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + n.to_bytes(2, "little") + data
    return b"\x4e" + n.to_bytes(4, "little") + data


def script_num(n: int) -> bytes:
    """Minimal little-endian CScriptNum encoding (sign bit in the top byte)."""
    if n == 0:
        return b""
    negative = n < 0
    value = abs(n)
    out = bytearray()
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if negative else 0x00)
    elif negative:
        out[-1] |= 0x80
    return bytes(out)


def bip34_height_push(height: int) -> bytes:
    """``CScript() << nHeight``: the prefix BIP34 requires of the coinbase scriptSig."""
    if height < 0:
        raise ValueError("height cannot be negative")
    if height == 0:
        return bytes([OP_0])
    if height <= 16:
        return bytes([0x50 + height])
    return push_data(script_num(height))


def _witness_script(version: int, program: bytes) -> bytes:
    """``OP_n <program>`` (BIP141 for v0, BIP350 for v1..v16)."""
    if not 0 <= version <= 16:
        raise AddressError(f"witness version {version} is not 0..16")
    if not 2 <= len(program) <= 40:
        raise AddressError(f"witness program is {len(program)} bytes; 2..40 allowed")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError(f"a v0 witness program is 20 or 32 bytes, not {len(program)}")
    op = OP_0 if version == 0 else 0x50 + version
    return bytes([op, len(program)]) + program


def address_to_script(address: str, network: str) -> bytes:
    """scriptPubKey for ``address``, refusing addresses of any other network.

    Accepts base58check P2PKH/P2SH and native segwit of every witness version:
    v0 as bech32 (BIP173), v1..v16 as bech32m (BIP350), so P2TR and future
    versions pay out exactly as Bitcoin Core's ``DecodeDestination`` would.
    A payout to another network's address is refused, naming that network,
    because coins sent there would be unspendable on this one.
    """
    if network not in NETWORK_PREFIXES:
        raise AddressError(f"unknown network {network!r}")
    hrp, p2pkh, p2sh = NETWORK_PREFIXES[network]
    if not isinstance(address, str) or not address:
        raise AddressError("address is empty")
    lowered = address.lower()
    if "1" in lowered and lowered.rsplit("1", 1)[0] in _HRP_NETWORKS:
        addr_hrp = lowered.rsplit("1", 1)[0]
        version, program = bech32.decode(addr_hrp, address)
        if version is None or program is None:
            raise AddressError(
                f"{address!r} is not a valid segwit address (bad checksum or encoding, "
                "bech32 for v0 and bech32m for v1+, wrong program length, or mixed case)"
            )
        if addr_hrp != hrp:
            raise AddressError(
                f"{address!r} is a {_HRP_NETWORKS[addr_hrp]} address, not for {network}"
            )
        return _witness_script(version, bytes(program))
    try:
        payload = base58.decode_check(address)
    except (ValueError, IndexError) as exc:  # embit: bad character or checksum
        raise AddressError(f"{address!r} is not a valid address: {exc}") from exc
    if len(payload) != 21:
        raise AddressError(f"{address!r} decodes to {len(payload)} bytes; a base58 address has 21")
    version, h160 = payload[0], bytes(payload[1:])
    if version == p2pkh:
        return b"\x76\xa9\x14" + h160 + b"\x88\xac"
    if version == p2sh:
        return b"\xa9\x14" + h160 + b"\x87"
    if version in _BASE58_NETWORKS:
        raise AddressError(f"{address!r} is a {_BASE58_NETWORKS[version]} address, not for {network}")
    raise AddressError(f"{address!r} has version byte {version:#04x}, not an address for {network}")
