"""Enough of bitcoind's wallet RPC for the payout job to be tested end to end.

``stope payouts run`` pays miners with ``sendmany`` and, after a crash, finds
its own transaction again with ``listtransactions`` (by the comment it
attached). The devnet answers those calls the way Bitcoin Core does (field
names, signs, error codes and the order ``listtransactions`` pages in), so
the production RPC client path is the one under test.

The wallet is an in-memory ledger, not a key store: it does not sign or
relay real transactions. Its balance is what it was funded with plus every
mature coinbase of the active chain (a devnet's blocks are the operator's),
less what it sent. A sent transaction gains a confirmation with every block
mined after it, as if it had been mined into the next block.
"""

from __future__ import annotations

import hashlib
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from ..bitcoin.script import AddressError, address_to_script
from .chain import COIN, DevnetChain, RPCError

# Bitcoin Core's wallet spends a coinbase from 101 confirmations on.
COINBASE_MATURITY = 100
# A rough payout-transaction size: one input, the outputs and a change output.
_TX_OVERHEAD_VBYTES = 11 + 68 + 31
_OUTPUT_VBYTES = 31


def amount_from_value(value: Any) -> int:
    """Satoshis from a JSON amount as Core's ``AmountFromValue`` reads it.

    Numbers and strings are both accepted; at most 8 decimal places; a
    float is read as the decimal it prints as (the devnet's JSON parser
    hands numbers over as floats).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RPCError(-3, "Amount is not a number or string")
    try:
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise RPCError(-3, "Invalid amount") from exc
    if not exact.is_finite():
        raise RPCError(-3, "Invalid amount")
    sats = exact * COIN
    if sats != sats.to_integral_value():
        raise RPCError(-3, "Invalid amount")
    if sats < 0 or sats > 21_000_000 * COIN:
        raise RPCError(-3, "Amount out of range")
    return int(sats)


def btc(sats: int) -> Decimal:
    """Satoshis as bitcoind prints an amount: a Decimal with 8 places."""
    return (Decimal(sats) / COIN).quantize(Decimal("0.00000001"))


@dataclass
class WalletTx:
    """One transaction the wallet sent."""

    txid: str
    outputs: list[tuple[str, int]]
    fee: int
    comment: str
    time: int
    sent_height: int


@dataclass
class DevnetWallet:
    """The devnet node's wallet (see the module docstring).

    ``fail_next_send`` makes the next ``sendmany`` answer that error without
    sending (a wallet that is locked or short of funds, for tests).
    """

    chain: DevnetChain
    funded: int = 0
    network: str = "regtest"
    owns_coinbases: bool = True
    fee_rate: int = 2  # sat/vB
    clock: Callable[[], float] = _time.time
    txs: list[WalletTx] = field(default_factory=list)
    fail_next_send: RPCError | None = None
    send_calls: int = 0

    # --- state ------------------------------------------------------------------
    def fund(self, sats: int) -> None:
        """Credit the wallet (an operator topping up the hot wallet)."""
        self.funded += sats

    def mature_coinbase_value(self) -> int:
        """Coinbase outputs of active blocks with at least 101 confirmations (genesis excluded)."""
        if not self.owns_coinbases:
            return 0
        last = self.chain.height - COINBASE_MATURITY
        total = 0
        for height in range(1, last + 1):
            coinbase = self.chain.blocks[self.chain.active[height]].block.txs[0]
            total += sum(out.value for out in coinbase.outputs)
        return total

    def spent(self) -> int:
        return sum(sum(amount for _, amount in tx.outputs) + tx.fee for tx in self.txs)

    def balance(self) -> int:
        return self.funded + self.mature_coinbase_value() - self.spent()

    def confirmations(self, tx: WalletTx) -> int:
        return max(0, self.chain.height - tx.sent_height)

    def paid_to(self) -> dict[str, int]:
        """Satoshis sent to each address over all transactions (what tests compare)."""
        totals: dict[str, int] = {}
        for tx in self.txs:
            for address, amount in tx.outputs:
                totals[address] = totals.get(address, 0) + amount
        return totals

    def find(self, txid: str) -> WalletTx:
        for tx in self.txs:
            if tx.txid == txid:
                return tx
        raise RPCError(-5, "Invalid or non-wallet transaction id")

    # --- RPC ------------------------------------------------------------------------
    def sendmany(
        self,
        dummy: str,
        amounts: dict[str, Any],
        minconf: int = 1,
        comment: str = "",
        subtractfeefrom: list[str] | None = None,
        *_ignored: Any,
    ) -> str:
        """Pay several addresses in one transaction; returns the txid."""
        self.send_calls += 1
        if dummy != "":
            raise RPCError(-8, 'Dummy value must be set to ""')
        if not isinstance(amounts, dict) or not amounts:
            raise RPCError(-8, "Invalid parameter, amounts must be a non-empty object")
        if self.fail_next_send is not None:
            error, self.fail_next_send = self.fail_next_send, None
            raise error
        outputs: list[tuple[str, int]] = []
        for address, value in amounts.items():
            try:
                address_to_script(address, self.network)
            except AddressError as exc:
                raise RPCError(-5, f"Invalid Bitcoin address: {address}") from exc
            sats = amount_from_value(value)
            if sats <= 0:
                raise RPCError(-3, "Invalid amount for send")
            outputs.append((address, sats))
        subtract = list(subtractfeefrom or [])
        for address in subtract:
            if address not in amounts:
                raise RPCError(-8, f"Invalid parameter, subtractfeefrom address {address} is not a destination")
        fee = (_TX_OVERHEAD_VBYTES + _OUTPUT_VBYTES * len(outputs)) * self.fee_rate
        if subtract:
            # Core splits the fee equally; the first subtracting output pays the remainder.
            share, rest = divmod(fee, len(subtract))
            first = True
            for i, (address, sats) in enumerate(outputs):
                if address in subtract:
                    cut = share + (rest if first else 0)
                    first = False
                    if sats - cut <= 0:
                        raise RPCError(-4, "The transaction amount is too small to pay the fee")
                    outputs[i] = (address, sats - cut)
        if sum(sats for _, sats in outputs) + fee > self.balance():
            raise RPCError(-6, "Insufficient funds")
        serial = len(self.txs)
        digest = hashlib.sha256(repr((serial, outputs, fee, comment)).encode()).digest()
        txid = hashlib.sha256(digest).digest()[::-1].hex()
        self.txs.append(WalletTx(txid, outputs, fee, str(comment), int(self.clock()), self.chain.height))
        return txid

    def _entries(self, tx: WalletTx) -> list[dict[str, Any]]:
        entries = []
        for vout, (address, sats) in enumerate(tx.outputs):
            entry: dict[str, Any] = {
                "address": address,
                "category": "send",
                "amount": -btc(sats),
                "label": "",
                "vout": vout,
                "fee": -btc(tx.fee),
                "confirmations": self.confirmations(tx),
                "trusted": True,
                "txid": tx.txid,
                "walletconflicts": [],
                "time": tx.time,
                "timereceived": tx.time,
                "bip125-replaceable": "no",
                "abandoned": False,
            }
            if tx.comment:
                entry["comment"] = tx.comment
            entries.append(entry)
        return entries

    def listtransactions(self, label: str = "*", count: int = 10, skip: int = 0, *_ignored: Any) -> list[dict[str, Any]]:
        """The ``count`` most recent entries after skipping ``skip``, oldest first (Core's order)."""
        if not isinstance(count, int) or count < 0:
            raise RPCError(-8, "Negative count")
        if not isinstance(skip, int) or skip < 0:
            raise RPCError(-8, "Negative from")
        entries = [entry for tx in self.txs for entry in self._entries(tx)]
        end = max(0, len(entries) - skip)
        return entries[max(0, end - count):end]

    def gettransaction(self, txid: str, *_ignored: Any) -> dict[str, Any]:
        tx = self.find(txid)
        details = self._entries(tx)
        out: dict[str, Any] = {
            "amount": -btc(sum(sats for _, sats in tx.outputs)),
            "fee": -btc(tx.fee),
            "confirmations": self.confirmations(tx),
            "trusted": True,
            "txid": tx.txid,
            "walletconflicts": [],
            "time": tx.time,
            "timereceived": tx.time,
            "bip125-replaceable": "no",
            "details": [{k: v for k, v in d.items() if k not in ("txid", "time", "timereceived", "walletconflicts",
                                                                   "confirmations", "trusted", "bip125-replaceable")}
                        for d in details],
            "hex": "",
        }
        if tx.comment:
            out["comment"] = tx.comment
        return out

    def getbalance(self, *_ignored: Any) -> Decimal:
        return btc(self.balance())
