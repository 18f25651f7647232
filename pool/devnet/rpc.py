"""bitcoind's JSON-RPC methods, answered from a ``DevnetChain``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ..bitcoin.serialize import internal_to_display
from ..bitcoin.tx import Tx
from .chain import COIN, DevnetChain, RPCError, StoredBlock


def _tx_json(tx: Tx) -> dict[str, Any]:
    vin: list[dict[str, Any]] = []
    for txin in tx.inputs:
        if tx.is_coinbase:
            vin.append({"coinbase": txin.script_sig.hex(), "sequence": txin.sequence})
        else:
            vin.append({"txid": internal_to_display(txin.prev_txid), "vout": txin.prev_index,
                        "scriptSig": {"hex": txin.script_sig.hex()}, "sequence": txin.sequence})
        if txin.witness:
            vin[-1]["txinwitness"] = [w.hex() for w in txin.witness]
    vout = [
        {"value": Decimal(o.value) / COIN, "n": n, "scriptPubKey": {"hex": o.script_pubkey.hex()}}
        for n, o in enumerate(tx.outputs)
    ]
    return {"txid": internal_to_display(tx.txid), "hash": internal_to_display(tx.wtxid),
            "version": tx.version, "locktime": tx.locktime, "vin": vin, "vout": vout,
            "hex": tx.serialize().hex()}


class DevnetRPC:
    """Dispatch table from RPC method names to chain queries."""

    def __init__(self, chain: DevnetChain) -> None:
        self.chain = chain

    def call(self, method: str, params: list[Any]) -> Any:
        handler = getattr(self, f"rpc_{method}", None)
        if handler is None:
            raise RPCError(-32601, "Method not found")
        try:
            return handler(*params)
        except TypeError as exc:
            raise RPCError(-1, f"{method}: wrong parameters ({exc})") from exc

    # --- mining -----------------------------------------------------------
    def rpc_getblocktemplate(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        rules = (request or {}).get("rules") or []
        if "segwit" not in rules:
            raise RPCError(-8, 'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})')
        return self.chain.block_template()

    def rpc_submitblock(self, hexdata: str, dummy: Any = None) -> str | None:
        try:
            raw = bytes.fromhex(hexdata)
        except ValueError as exc:
            raise RPCError(-22, "Block decode failed") from exc
        return self.chain.submit_block(raw)

    def rpc_getmininginfo(self) -> dict[str, Any]:
        return {"blocks": self.chain.height, "difficulty": self.chain.network_difficulty(),
                "networkhashps": 0, "pooledtx": len(self.chain.mempool), "chain": "regtest", "warnings": ""}

    def rpc_getdifficulty(self) -> float:
        return self.chain.network_difficulty()

    # --- chain --------------------------------------------------------------
    def rpc_getbestblockhash(self) -> str:
        return internal_to_display(self.chain.tip.hash)

    def rpc_getblockcount(self) -> int:
        return self.chain.height

    def rpc_getblockhash(self, height: int) -> str:
        if not isinstance(height, int) or not 0 <= height <= self.chain.height:
            raise RPCError(-8, "Block height out of range")
        return internal_to_display(self.chain.active[height])

    def rpc_getblockchaininfo(self) -> dict[str, Any]:
        tip = self.chain.tip
        return {"chain": "regtest", "blocks": self.chain.height, "headers": self.chain.height,
                "bestblockhash": internal_to_display(tip.hash), "difficulty": self.chain.network_difficulty(),
                "mediantime": self.chain.median_time_past(), "initialblockdownload": False,
                "verificationprogress": 1, "pruned": False, "warnings": ""}

    def _header_json(self, stored: StoredBlock) -> dict[str, Any]:
        h = stored.block.header
        out = {
            "hash": internal_to_display(stored.hash), "confirmations": self.chain.confirmations(stored),
            "height": stored.height, "version": h.version, "versionHex": f"{h.version:08x}",
            "merkleroot": internal_to_display(h.merkle_root), "time": h.time, "nonce": h.nonce,
            "bits": f"{h.bits:08x}", "nTx": len(stored.block.txs),
        }
        if stored.height > 0:
            out["previousblockhash"] = internal_to_display(h.prev_hash)
        if stored.height < self.chain.height and self.chain.confirmations(stored) > 0:
            out["nextblockhash"] = internal_to_display(self.chain.active[stored.height + 1])
        return out

    def rpc_getblockheader(self, blockhash: str, verbose: bool = True) -> Any:
        stored = self.chain.lookup(blockhash)
        if not verbose:
            return stored.block.header.serialize().hex()
        return self._header_json(stored)

    def rpc_getblock(self, blockhash: str, verbosity: int = 1) -> Any:
        stored = self.chain.lookup(blockhash)
        if verbosity == 0:
            return stored.block.serialize().hex()
        out = self._header_json(stored)
        out["size"] = stored.raw_size
        if verbosity == 1:
            out["tx"] = [internal_to_display(tx.txid) for tx in stored.block.txs]
        else:
            out["tx"] = [_tx_json(tx) for tx in stored.block.txs]
        return out
