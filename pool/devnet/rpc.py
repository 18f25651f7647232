"""bitcoind's JSON-RPC methods, answered from a ``DevnetChain``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from ..bitcoin.script import AddressError, address_to_script
from ..bitcoin.serialize import internal_to_display
from ..bitcoin.tx import Tx
from .chain import COIN, DevnetChain, RPCError, StoredBlock
from .wallet import DevnetWallet

# How long a long-poll getblocktemplate is held when nothing changes. bitcoind
# holds it until a new block (or, after a minute, changed transactions); the
# devnet also answers after this long so no request is held forever.
DEFAULT_LONGPOLL_TIMEOUT = 30.0


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
    """Dispatch table from RPC method names to chain queries.

    Everything answers at once except a long-poll ``getblocktemplate``,
    which waits (asynchronously, other requests go on) for the template to
    change, as bitcoind does.
    """

    def __init__(
        self,
        chain: DevnetChain,
        *,
        longpoll_timeout: float = DEFAULT_LONGPOLL_TIMEOUT,
        wallet: DevnetWallet | None = None,
    ) -> None:
        self.chain = chain
        self.wallet = wallet if wallet is not None else DevnetWallet(chain)
        self.longpoll_timeout = longpoll_timeout
        self._changed = trio.Event()
        chain.on_template_change.append(self._on_template_change)

    def close(self) -> None:
        """Stop listening to the chain (the node is going away)."""
        if self._on_template_change in self.chain.on_template_change:
            self.chain.on_template_change.remove(self._on_template_change)

    def _on_template_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def call(self, method: str, params: list[Any]) -> Any:
        handler = getattr(self, f"rpc_{method}", None)
        if handler is None:
            raise RPCError(-32601, "Method not found")
        try:
            return handler(*params)
        except TypeError as exc:
            raise RPCError(-1, f"{method}: wrong parameters ({exc})") from exc

    async def call_async(self, method: str, params: list[Any]) -> Any:
        """``call``, except that a long-poll waits for the template to change first."""
        if method == "getblocktemplate" and params and isinstance(params[0], dict) and "longpollid" in params[0]:
            self._check_gbt_request(params[0])
            await self._wait_for_change(params[0]["longpollid"])
        return self.call(method, params)

    async def _wait_for_change(self, longpollid: Any) -> None:
        if not isinstance(longpollid, str):
            raise RPCError(-8, "longpollid must be a string")
        with trio.move_on_after(self.longpoll_timeout):
            while self.chain.longpoll_id() == longpollid:
                await self._changed.wait()

    # --- mining -----------------------------------------------------------
    @staticmethod
    def _check_gbt_request(request: Any) -> None:
        if request is not None and not isinstance(request, dict):
            raise RPCError(-3, "JSON value of type object expected for template_request")
        rules = (request or {}).get("rules") or []
        if "segwit" not in rules:
            raise RPCError(-8, 'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})')

    def rpc_getblocktemplate(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        self._check_gbt_request(request)
        return self.chain.block_template()

    def rpc_generatetoaddress(self, nblocks: int, address: str, maxtries: int = 1_000_000) -> list[str]:
        """Mine on the devnet's own CPU (real proof of work: only at low devnet difficulty)."""
        try:
            script = address_to_script(address, "regtest")
        except AddressError as exc:
            raise RPCError(-5, "Error: Invalid address") from exc
        try:
            return [internal_to_display(h) for h in self.chain.generate(int(nblocks), script, max_tries=int(maxtries))]
        except RuntimeError as exc:
            raise RPCError(-1, str(exc)) from exc

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

    # --- wallet (pool/devnet/wallet.py) ---------------------------------------------
    def rpc_sendmany(self, *params: Any) -> str:
        return self.wallet.sendmany(*params)

    def rpc_listtransactions(self, *params: Any) -> list[dict[str, Any]]:
        return self.wallet.listtransactions(*params)

    def rpc_gettransaction(self, *params: Any) -> dict[str, Any]:
        return self.wallet.gettransaction(*params)

    def rpc_getbalance(self, *params: Any) -> Decimal:
        return self.wallet.getbalance(*params)
