"""Attribute network blocks to mining pools, and keep a rolling window of them.

Attribution reproduces mempool.space's ``matchBlockMiner`` (reference §5) over
a table in the format of mempool/mining-pools ``pools-v2.json``:

1. the coinbase scriptSig is decoded one byte per character (mempool's
   ``hex2ascii``, i.e. Latin-1), so *non-ASCII tags can never match* — F2Pool's
   ``七彩神仙鱼`` / ``🐟``, 8baochi's ``/八宝池 8baochi.com/`` and ``🐵🚀`` are
   dead in mempool too, and we keep that so our counts agree with theirs;
2. pools are tried in ascending ``id``; for each pool, first *any* coinbase
   output address in ``pool.addresses`` matches, then any of ``pool.tags``
   matched as a case-insensitive regular expression anywhere in the decoded
   scriptSig (tags are regexes: ``/BTC.COM/`` has a wildcard dot).  Because the
   loop is per pool, an earlier pool's tag beats a later pool's address, and
   TATMAS Pool (``/ViaBTC/TATMAS Pool/``, id 72) is found before ViaBTC (id 73);
3. no match: the block is *unknown* and becomes its own entity,
   ``unknown:<block id>``, so a stretch of unidentified blocks is not merged
   into one fictitious giant pool (the issue's "unknown blocks count as their
   own entity").  ``NetworkWindow`` can instead merge or drop them.

Output addresses are what bitcoind/esplora would print: base58 P2PKH/P2SH and
bech32/bech32m witness programs; bare pubkeys (P2PK), multisig and OP_RETURN
have none.  Like mempool we skip zero-value outputs.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from embit import bech32
from embit.networks import NETWORKS
from embit.script import Script

from .concentration import ConcentrationReport, Guideline, concentration_report

UNKNOWN_PREFIX = "unknown:"
"""Entity prefix for a block no pool could be matched to."""

UNKNOWN_ENTITY = "unknown"
"""Single entity that ``unknown_policy="one"`` folds all unknown blocks into."""

DEFAULT_WINDOW = 1008
"""One week of blocks: the shortest window the reference recommends (§1)."""

_BECH32_PREFIXES = ("bc1", "tb1", "bcrt1")


@dataclass(frozen=True)
class PoolEntry:
    """One row of the identification table."""

    id: int
    name: str
    addresses: frozenset[str]
    tags: tuple[str, ...]
    link: str = ""


@dataclass(frozen=True)
class Attribution:
    """Who mined a block, and on what evidence."""

    entity: str
    """Pool name, or ``unknown:<block id>``."""
    pool: PoolEntry | None
    method: Literal["address", "tag", "unknown"]
    evidence: str | None
    """The matching address or tag; ``None`` for unknown blocks."""

    @property
    def is_unknown(self) -> bool:
        return self.pool is None


def _normalize_address(address: str) -> str:
    """Bech32 is case-insensitive (compare lowercase); base58 is not."""
    lowered = address.lower()
    return lowered if lowered.startswith(_BECH32_PREFIXES) else address


class PoolTable:
    """The pool-identification table, ordered by id with tags compiled once."""

    def __init__(self, pools: Iterable[PoolEntry]) -> None:
        ordered = sorted(pools, key=lambda p: p.id)
        ids = [p.id for p in ordered]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate pool ids in the table")
        self._pools: tuple[PoolEntry, ...] = tuple(ordered)
        self._rules: list[tuple[PoolEntry, frozenset[str], list[tuple[str, re.Pattern[str]]]]] = []
        for pool in ordered:
            patterns = []
            for tag in pool.tags:
                try:
                    patterns.append((tag, re.compile(tag, re.IGNORECASE)))
                except re.error as exc:
                    raise ValueError(
                        f"pool {pool.id} ({pool.name}): tag {tag!r} is not a regex: {exc}"
                    ) from exc
            addresses = frozenset(_normalize_address(a) for a in pool.addresses)
            self._rules.append((pool, addresses, patterns))

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> PoolTable:
        """Build from the parsed ``pools-v2.json`` array."""
        if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
            raise ValueError("pool table must be a JSON array")
        pools = []
        for row in data:
            try:
                pool_id, name = row["id"], row["name"]
                addresses, tags = row.get("addresses", []), row.get("tags", [])
            except (KeyError, TypeError) as exc:
                raise ValueError(f"malformed pool row {row!r}") from exc
            if not isinstance(pool_id, int) or not isinstance(name, str):
                raise ValueError(f"pool row needs an int id and a str name: {row!r}")
            if not isinstance(addresses, list) or not isinstance(tags, list):
                raise ValueError(f"pool {pool_id}: addresses and tags must be JSON arrays")
            if not all(isinstance(x, str) for x in [*addresses, *tags]):
                raise ValueError(f"pool {pool_id}: addresses and tags must be strings")
            pools.append(
                PoolEntry(pool_id, name, frozenset(addresses), tuple(tags), str(row.get("link", "")))
            )
        return cls(pools)

    def __len__(self) -> int:
        return len(self._pools)

    def __iter__(self) -> Iterator[PoolEntry]:
        return iter(self._pools)

    def by_name(self, name: str) -> PoolEntry:
        """The pool called ``name`` (KeyError if none)."""
        for pool in self._pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def match(
        self, script_sig: bytes, addresses: Iterable[str]
    ) -> tuple[PoolEntry, Literal["address", "tag"], str] | None:
        """mempool's ``matchBlockMiner``: (pool, "address"|"tag", evidence) or None."""
        wanted = {_normalize_address(a) for a in addresses}
        text = decode_script_sig(script_sig)
        for pool, pool_addresses, patterns in self._rules:
            hit = pool_addresses & wanted
            if hit:
                return pool, "address", min(hit)
            for tag, pattern in patterns:
                if pattern.search(text):
                    return pool, "tag", tag
        return None


def load_pool_table(path: str | os.PathLike[str]) -> PoolTable:
    """Read a ``pools-v2.json`` file (mempool/mining-pools format)."""
    with open(path, encoding="utf-8") as fh:
        return PoolTable.from_json(json.load(fh))


def decode_script_sig(script_sig: bytes) -> str:
    """One character per byte, as mempool's ``hex2ascii`` (``String.fromCharCode``)."""
    return bytes(script_sig).decode("latin-1")


def _witness_program(script: bytes) -> tuple[int, bytes] | None:
    """(version, program) if ``script`` is a BIP141 witness output."""
    if not 4 <= len(script) <= 42 or script[1] != len(script) - 2:
        return None
    if script[0] == 0:
        version = 0
    elif 0x51 <= script[0] <= 0x60:
        version = script[0] - 0x50
    else:
        return None
    return version, script[2:]


def script_address(script_pubkey: bytes, network: str = "main") -> str | None:
    """Address bitcoind would show for an output script, or None if it has none.

    ``network`` is an embit network name: main, test, regtest, signet.
    P2PKH/P2SH/P2WPKH/P2WSH/P2TR come from embit; other witness programs of
    version 1-16 (future soft forks) are encoded as bech32m like Core does;
    witness v0 of another length, P2PK, multisig and OP_RETURN have no address.
    """
    try:
        net = NETWORKS[network]
    except KeyError:
        raise ValueError(f"unknown network {network!r}; use one of {sorted(NETWORKS)}") from None
    script = bytes(script_pubkey)
    try:
        return str(Script(script).address(net))
    except ValueError:
        pass
    program = _witness_program(script)
    if program is None or program[0] == 0:
        return None
    return str(bech32.encode(net["bech32"], program[0], program[1]))


class OutputLike(Protocol):
    """Anything with a value and a scriptPubKey (``pool.bitcoin.tx.TxOut``)."""

    @property
    def value(self) -> int: ...

    @property
    def script_pubkey(self) -> bytes: ...


class CoinbaseLike(Protocol):
    """Anything shaped like ``pool.bitcoin.tx.Tx`` for a coinbase."""

    @property
    def inputs(self) -> Sequence[Any]: ...

    @property
    def outputs(self) -> Sequence[OutputLike]: ...


def coinbase_addresses(outputs: Iterable[OutputLike], network: str = "main") -> list[str]:
    """Addresses of the coinbase outputs mempool would compare against the table.

    Zero-value outputs are skipped (mempool's ``stripCoinbaseTransaction``
    drops them), as are scripts without an address.
    """
    found = []
    for out in outputs:
        if out.value == 0:
            continue
        address = script_address(out.script_pubkey, network)
        if address is not None:
            found.append(address)
    return found


def unknown_entity(block_id: str | int) -> str:
    """The entity of an unattributed block: stable for that block, distinct from others."""
    key = str(block_id)
    if not key:
        raise ValueError("block_id must be non-empty (use the block hash)")
    return UNKNOWN_PREFIX + key


def attribute_block(
    table: PoolTable, script_sig: bytes, addresses: Iterable[str], *, block_id: str | int
) -> Attribution:
    """Attribute one block from its coinbase scriptSig and output addresses.

    ``block_id`` (the block hash in display hex, or its height if that is all
    the caller has) names the entity when the block is unknown.
    """
    entity_if_unknown = unknown_entity(block_id)
    found = table.match(script_sig, addresses)
    if found is None:
        return Attribution(entity_if_unknown, None, "unknown", None)
    pool, method, evidence = found
    return Attribution(pool.name, pool, method, evidence)


def attribute_coinbase(
    table: PoolTable, coinbase: CoinbaseLike, *, block_id: str | int, network: str = "main"
) -> Attribution:
    """``attribute_block`` for a parsed coinbase transaction."""
    if len(coinbase.inputs) != 1:
        raise ValueError("a coinbase transaction has exactly one input")
    return attribute_block(
        table,
        coinbase.inputs[0].script_sig,
        coinbase_addresses(coinbase.outputs, network),
        block_id=block_id,
    )


UnknownPolicy = Literal["each", "one", "exclude"]
"""How unknown blocks enter the distribution: each its own entity (default),
all as one ``"unknown"`` entity, or left out of the counts."""


class NetworkWindow:
    """The last ``size`` attributed blocks by height, updated incrementally.

    ``add`` appends the next height; adding a height at or below the tip is a
    reorg and first drops every block at that height and above.  Heights must
    be contiguous: skipping one raises ``ValueError`` (a silent gap would
    shrink the sample).  Blocks that slid out of the window are gone, so after
    a reorg deeper than the tip the window holds fewer than ``size`` blocks
    until refilled.
    """

    def __init__(self, size: int = DEFAULT_WINDOW, *, unknown_policy: UnknownPolicy = "each") -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"window size must be a positive int, got {size!r}")
        if unknown_policy not in ("each", "one", "exclude"):
            raise ValueError(f"unknown_policy must be each, one or exclude, not {unknown_policy!r}")
        self._size = size
        self._policy: UnknownPolicy = unknown_policy
        self._blocks: deque[tuple[int, str, str | None]] = deque()  # height, entity, counted key
        self._counts: Counter[str] = Counter()

    @property
    def size(self) -> int:
        return self._size

    @property
    def unknown_policy(self) -> UnknownPolicy:
        return self._policy

    @property
    def tip(self) -> int | None:
        """Highest height held, or None when empty."""
        return self._blocks[-1][0] if self._blocks else None

    def __len__(self) -> int:
        return len(self._blocks)

    def _key(self, entity: str) -> str | None:
        if not entity.startswith(UNKNOWN_PREFIX):
            return entity
        if self._policy == "each":
            return entity
        return UNKNOWN_ENTITY if self._policy == "one" else None

    def _uncount(self, key: str | None) -> None:
        if key is not None:
            self._counts[key] -= 1
            if not self._counts[key]:
                del self._counts[key]

    def disconnect_from(self, height: int) -> int:
        """Drop every block at ``height`` and above; return how many were dropped."""
        dropped = 0
        while self._blocks and self._blocks[-1][0] >= height:
            self._uncount(self._blocks.pop()[2])
            dropped += 1
        return dropped

    def add(self, height: int, block: Attribution | str) -> None:
        """Record the block at ``height`` (an ``Attribution`` or an entity name)."""
        if isinstance(height, bool) or not isinstance(height, int) or height < 0:
            raise ValueError(f"height must be a non-negative int, got {height!r}")
        entity = block.entity if isinstance(block, Attribution) else block
        if not isinstance(entity, str) or not entity:
            raise ValueError(f"entity must be a non-empty str, got {entity!r}")
        tip = self.tip
        if tip is not None and height > tip + 1:
            raise ValueError(f"height {height} leaves a gap after tip {tip}")
        if tip is not None and height <= tip:
            self.disconnect_from(height)
        key = self._key(entity)
        self._blocks.append((height, entity, key))
        if key is not None:
            self._counts[key] += 1
        while self._blocks[0][0] <= height - self._size:
            self._uncount(self._blocks.popleft()[2])

    def blocks(self) -> list[tuple[int, str]]:
        """(height, entity) in height order, unknown blocks under their own names."""
        return [(height, entity) for height, entity, _ in self._blocks]

    def counts(self) -> dict[str, int]:
        """Blocks per entity in the window, with the unknown policy applied."""
        return dict(self._counts)

    def report(self, *, guideline: Guideline = "2010") -> ConcentrationReport:
        """Concentration of the window's block counts."""
        return concentration_report(self.counts(), guideline=guideline)
