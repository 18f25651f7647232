"""The payout batch job behind ``stope payouts run``: pay each satoshi once.

A payout is written down before it is sent. In one transaction the job
stores the batch (status ``draft``: prepared, not known to be sent), one item
per miner and the matching ``payout`` debits; only then does it call
``sendmany`` on the node's wallet, with the batch's idempotency key as the
transaction comment, and finally records the txid (status ``sent``).

A crash can therefore leave only one kind of loose end: a ``draft`` batch
without a txid. The next run settles it before anything else by asking the
wallet for a transaction carrying that comment (``listtransactions``): found,
the txid is recorded (reconciled); not found, the batch is sent now. The
debits were written with the batch, so the balances it pays are already
zero and no second batch can pay them again (R-PAY-10; the NOMP double
payouts of reference §11). Runs are serialised by a lock, so two runs cannot
both decide that a draft is unsent.

The idempotency key is derived from the ledger state the batch settles
(the last ledger entry and the amounts), and is unique in the database.

``method="csv"`` writes the batch as ``address,satoshis,btc`` for an
operator to sign instead (status ``exported``); ``stope payouts record-txid``
records the transaction the operator broadcast.

Amounts go to ``sendmany`` as 8-place decimal strings, never floats.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from pool.bitcoin.script import AddressError, address_to_script
from pool.node import NodeError, NodeUnavailable
from pool.storage.models import (
    BATCH_CONFIRMED,
    BATCH_DRAFT,
    BATCH_EXPORTED,
    BATCH_FAILED,
    BATCH_SENT,
    LedgerEntry,
    Miner,
    PayoutBatch,
    PayoutBatchItem,
    utcnow,
)

from .ledger import (
    KIND_PAYOUT,
    KIND_PAYOUT_REVERSAL,
    SHARE_SCHEMES,
    Balance,
    BlockCredit,
    PayoutPolicy,
    Progress,
    ShareCredits,
    add_entry,
    balances,
    committed_share_horizon,
    credit_blocks,
    credit_shares,
    no_progress,
)
from .maturity import MaturityReport, NodeRPC, update_maturity

# "draft" in the storage schema's words: written, not known to be sent.
BATCH_PREPARED = BATCH_DRAFT

KEY_PREFIX = "stope-payout-"
COIN = 100_000_000
# Fault injection for the crash test: "after-prepare" or "after-send" kills
# the process (SIGKILL, no clean-up) at that point of a batch.
FAULT_ENV = "STOPE_PAYOUTS_FAULT"
# listtransactions page size while looking for a batch's transaction.
_WALLET_PAGE = 1000
_PG_LOCK_KEY = 0x53544F50  # "STOP"


class PayoutsBusy(RuntimeError):
    """Another payout run holds the lock."""


def _fault(point: str) -> None:
    """Die here, as a power cut would, when the crash test asks for it."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


# --- amounts and addresses ---------------------------------------------------------------


def sats_to_btc(sats: int) -> str:
    """``123456789`` -> ``"1.23456789"``: what ``sendmany`` gets (exact; no float)."""
    if isinstance(sats, bool) or not isinstance(sats, int) or sats < 0:
        raise ValueError(f"not a satoshi amount: {sats!r}")
    return f"{sats // COIN}.{sats % COIN:08d}"


def btc_to_sats(value: Any) -> int:
    """A wallet's BTC amount (Decimal from the RPC client, str or int) in satoshis, exactly."""
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    sats = exact * COIN
    if sats != sats.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of satoshis")
    return int(sats)


def dust_threshold(script: bytes, dust_relay_fee: int = 3) -> int:
    """Bitcoin Core's dust limit of an output paying ``script`` (sat).

    The cost of creating and later spending the output at ``dust_relay_fee``
    sat/vB: P2PKH 546, P2SH 540, P2WPKH 294, P2WSH/P2TR 330 (reference §8).
    """
    output = 8 + 1 + len(script)
    is_witness = 4 <= len(script) <= 42 and (script[0] == 0 or 0x51 <= script[0] <= 0x60) and script[1] == len(script) - 2
    spend = 32 + 4 + 1 + 107 // 4 + 4 if is_witness else 32 + 4 + 1 + 107 + 4
    return (output + spend) * dust_relay_fee


# --- planning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    miner_id: int
    address: str
    amount: int


@dataclass
class BatchPlan:
    """What a batch would pay now, and who waits and why."""

    key: str
    payments: list[Payment] = field(default_factory=list)
    below_threshold: list[tuple[str, int]] = field(default_factory=list)
    deferred: list[tuple[str, int]] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.amount for p in self.payments)


def idempotency_key(ledger_head: int, payments: Sequence[Payment]) -> str:
    """A name for the batch settling ``payments`` at ledger state ``ledger_head``.

    The same state always gives the same key, and the key column is unique,
    so a batch can never be prepared twice for the same money.
    """
    body = f"{ledger_head}|" + ",".join(f"{p.address}={p.amount}" for p in sorted(payments, key=lambda p: p.address))
    return KEY_PREFIX + hashlib.sha256(body.encode()).hexdigest()[:40]


def plan_batch(session: Session, policy: PayoutPolicy) -> BatchPlan:
    """Every miner whose whole payable satoshis reach the threshold.

    The fraction of a satoshi stays in the balance (carried, never lost);
    a balance below the minimum payout, or below the dust limit of the
    miner's script, waits. Largest amounts first when there are more
    miners than one transaction takes.
    """
    payable: list[Payment] = []
    plan = BatchPlan(key="")
    owed: dict[str, Balance] = balances(session)
    for address, balance in sorted(owed.items()):
        whole = balance.payable.numerator // balance.payable.denominator
        if whole <= 0:
            continue
        try:
            script = address_to_script(address, policy.network)
        except AddressError as exc:
            plan.invalid.append((address, str(exc)))
            continue
        if whole < max(policy.minimum_payout, dust_threshold(script), 1):
            plan.below_threshold.append((address, whole))
            continue
        payable.append(Payment(balance.miner_id, address, whole))
    payable.sort(key=lambda p: (-p.amount, p.address))
    plan.payments = sorted(payable[: policy.max_recipients], key=lambda p: p.address)
    plan.deferred = [(p.address, p.amount) for p in payable[policy.max_recipients :]]
    head = int(session.scalar(select(func.coalesce(func.max(LedgerEntry.id), 0))) or 0)
    plan.key = idempotency_key(head, plan.payments)
    return plan


def prepare_batch(session: Session, plan: BatchPlan) -> PayoutBatch:
    """Write the batch, its items and the debits (the caller commits them together)."""
    batch = PayoutBatch(idempotency_key=plan.key, status=BATCH_PREPARED, fee=0)
    session.add(batch)
    session.flush()
    for payment in plan.payments:
        session.add(PayoutBatchItem(batch_id=batch.id, miner_id=payment.miner_id, amount=payment.amount))
        add_entry(session, payment.miner_id, KIND_PAYOUT, -payment.amount, batch_id=batch.id, memo=plan.key)
    session.flush()
    return batch


def batch_payments(session: Session, batch: PayoutBatch) -> list[Payment]:
    rows = session.execute(
        select(PayoutBatchItem.miner_id, Miner.address, PayoutBatchItem.amount)
        .join(Miner, PayoutBatchItem.miner_id == Miner.id)
        .where(PayoutBatchItem.batch_id == batch.id)
        .order_by(Miner.address)
    ).all()
    return [Payment(mid, address, amount) for mid, address, amount in rows]


# --- the wallet -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WalletTx:
    txid: str
    outputs: dict[str, int]


async def find_wallet_tx(wallet: NodeRPC, key: str) -> WalletTx | None:
    """The wallet's transaction whose comment is ``key``, newest pages first."""
    skip = 0
    while True:
        page = await wallet.call("listtransactions", "*", _WALLET_PAGE, skip)
        txid = None
        for entry in page:
            if entry.get("comment") == key and entry.get("category") == "send":
                txid = str(entry["txid"])
                break
        if txid is not None:
            outputs: dict[str, int] = {}
            for entry in page:
                if entry.get("txid") == txid and entry.get("category") == "send":
                    outputs[str(entry["address"])] = outputs.get(str(entry["address"]), 0) + btc_to_sats(-Decimal(entry["amount"]))
            return WalletTx(txid, outputs)
        if len(page) < _WALLET_PAGE:
            return None
        skip += _WALLET_PAGE


async def send_batch(wallet: NodeRPC, key: str, payments: Sequence[Payment], miners_pay_fee: bool) -> str:
    """One ``sendmany`` for the whole batch; the key goes in as the comment."""
    amounts = {p.address: sats_to_btc(p.amount) for p in payments}
    subtract = [p.address for p in payments] if miners_pay_fee else []
    return str(await wallet.call("sendmany", "", amounts, 1, key, subtract))


async def _tx_fee(wallet: NodeRPC, txid: str) -> int | None:
    """The fee the wallet reports for ``txid`` (best effort: the txid matters, the fee is a figure)."""
    try:
        tx = await wallet.call("gettransaction", txid)
        return abs(btc_to_sats(tx["fee"]))
    except (NodeError, NodeUnavailable, KeyError, TypeError, ValueError):
        return None


# --- settling a batch ---------------------------------------------------------------------


@dataclass
class BatchOutcome:
    """Where one batch ended up in this run."""

    batch_id: int
    key: str
    status: str
    txid: str | None
    payments: list[Payment]
    note: str
    fee: int = 0

    @property
    def total(self) -> int:
        return sum(p.amount for p in self.payments)


def record_txid(session: Session, batch: PayoutBatch, txid: str) -> None:
    batch.txid = txid
    batch.status = BATCH_SENT
    batch.sent_at = utcnow()


def fail_batch(session: Session, batch: PayoutBatch, reason: str) -> None:
    """The wallet refused the batch: mark it failed and give the money back (new entries)."""
    batch.status = BATCH_FAILED
    for payment in batch_payments(session, batch):
        add_entry(session, payment.miner_id, KIND_PAYOUT_REVERSAL, payment.amount, batch_id=batch.id,
                  memo=f"{batch.idempotency_key} refused: {reason}")


def export_csv(directory: Path, key: str, payments: Sequence[Payment]) -> Path:
    """``<key>.csv`` with ``address,satoshis,btc`` rows, written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.csv"
    lines = ["address,satoshis,btc"] + [f"{p.address},{p.amount},{sats_to_btc(p.amount)}" for p in payments]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", encoding="ascii") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    return path


async def settle_batch(
    session: Session,
    wallet: NodeRPC | None,
    batch: PayoutBatch,
    policy: PayoutPolicy,
    *,
    method: str = "sendmany",
    export_dir: Path | None = None,
) -> BatchOutcome:
    """Take a prepared batch to sent (or exported), reconciling with the wallet first.

    Commits after every decision. A wallet that cannot be reached leaves the
    batch prepared: whether it was sent is unknown, and the next run asks
    again rather than guess.
    """
    key = batch.idempotency_key
    payments = batch_payments(session, batch)

    def outcome(note: str) -> BatchOutcome:
        return BatchOutcome(batch.id, key, batch.status, batch.txid, payments, note, batch.fee or 0)

    if method == "csv":
        if export_dir is None:
            raise ValueError("csv payouts need an export directory")
        path = export_csv(export_dir, key, payments)
        batch.status = BATCH_EXPORTED
        session.commit()
        return outcome(f"exported to {path}")
    if wallet is None:
        raise ValueError("sendmany payouts need a wallet")
    try:
        found = await find_wallet_tx(wallet, key)
    except NodeUnavailable as exc:
        return outcome(f"unresolved: wallet unavailable ({exc}); the next run reconciles")
    if found is not None:
        record_txid(session, batch, found.txid)
        session.commit()
        expected = {p.address: p.amount for p in payments}
        same = found.outputs == expected or (policy.miners_pay_tx_fee and set(found.outputs) == set(expected))
        note = "reconciled with the wallet" + ("" if same else f" (WARNING: wallet outputs {found.outputs} differ from the batch)")
        return await _with_fee(session, wallet, batch, outcome, note)
    try:
        txid = await send_batch(wallet, key, payments, policy.miners_pay_tx_fee)
    except NodeUnavailable as exc:
        return outcome(f"unresolved: no answer to sendmany ({exc}); the next run reconciles")
    except NodeError as exc:
        # A refusal is an answer: nothing was sent. Check anyway before giving the money back.
        try:
            again = await find_wallet_tx(wallet, key)
        except NodeUnavailable:
            return outcome(f"unresolved: sendmany refused ({exc.message}) and the wallet could not be checked")
        if again is not None:
            record_txid(session, batch, again.txid)
            session.commit()
            return outcome("reconciled with the wallet")
        fail_batch(session, batch, exc.message)
        session.commit()
        return outcome(f"refused by the wallet: {exc.message}; balances restored")
    _fault("after-send")
    record_txid(session, batch, txid)
    session.commit()
    return await _with_fee(session, wallet, batch, outcome, "sent")


async def _with_fee(
    session: Session, wallet: NodeRPC, batch: PayoutBatch, outcome: Callable[[str], BatchOutcome], note: str
) -> BatchOutcome:
    """Record the fee the wallet paid (after the txid: the txid is what prevents a second payment)."""
    fee = await _tx_fee(wallet, batch.txid or "")
    if fee is not None:
        batch.fee = fee
        session.commit()
    return outcome(note)


async def confirm_sent(session: Session, wallet: NodeRPC) -> list[tuple[str, int]]:
    """Sent batches whose transaction has a confirmation become confirmed; returns (key, confirmations)."""
    seen = []
    for batch in session.scalars(select(PayoutBatch).where(PayoutBatch.status == BATCH_SENT, PayoutBatch.txid.is_not(None))):
        try:
            tx = await wallet.call("gettransaction", batch.txid)
        except (NodeError, NodeUnavailable):
            continue
        confirmations = int(tx.get("confirmations", 0))
        if confirmations >= 1:
            batch.status = BATCH_CONFIRMED
        seen.append((batch.idempotency_key, confirmations))
    session.commit()
    return seen


# --- the run --------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(engine: Engine) -> Iterator[None]:
    """One payout run at a time per database.

    PostgreSQL: a session advisory lock (works across hosts). SQLite: an
    exclusive ``flock`` on a file beside the database (SQLite is one host).
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY}):
                raise PayoutsBusy("another payout run holds the lock")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    path = Path(f"{database}.payouts.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PayoutsBusy("another payout run holds the lock") from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass
class RunReport:
    """Everything one ``stope payouts run`` did (or, dry, would do)."""

    dry_run: bool
    maturity: MaturityReport = field(default_factory=MaturityReport)
    credits: list[BlockCredit] = field(default_factory=list)
    share_credits: ShareCredits | None = None
    batches: list[BatchOutcome] = field(default_factory=list)
    confirmed_batches: list[tuple[str, int]] = field(default_factory=list)
    plan: BatchPlan | None = None
    open_batches: list[str] = field(default_factory=list)
    balances: dict[str, Balance] = field(default_factory=dict)

    @property
    def unresolved(self) -> bool:
        return any(b.status == BATCH_PREPARED for b in self.batches) or (self.dry_run and bool(self.open_batches))

    @property
    def paid(self) -> dict[str, int]:
        """Satoshis this run sent (or recorded as sent) per address."""
        out: dict[str, int] = {}
        for batch in self.batches:
            if batch.status in (BATCH_SENT, BATCH_CONFIRMED, BATCH_EXPORTED):
                for p in batch.payments:
                    out[p.address] = out.get(p.address, 0) + p.amount
        return out


def open_batches(session: Session) -> list[PayoutBatch]:
    return list(session.scalars(select(PayoutBatch).where(PayoutBatch.status == BATCH_PREPARED).order_by(PayoutBatch.id)))


async def run_payouts(
    engine: Engine,
    node: NodeRPC,
    policy: PayoutPolicy,
    *,
    wallet: NodeRPC | None = None,
    method: str = "sendmany",
    export_dir: Path | None = None,
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> RunReport:
    """Settle loose batches, mature blocks, credit, then pay one new batch.

    ``node`` answers chain questions and ``wallet`` pays (the same client
    unless the wallet has its own URL). A dry run does all the arithmetic in
    a transaction it rolls back, and sends nothing.
    """
    wallet = wallet if wallet is not None else node
    report = RunReport(dry_run=dry_run)
    with run_lock(engine):
        if dry_run:
            with Session(engine) as session:
                report.open_batches = [b.idempotency_key for b in open_batches(session)]
                report.maturity = await update_maturity(session, node, policy.maturity, progress=progress, commit=False)
                report.credits = credit_blocks(engine, policy, progress=progress, session=session)
                if policy.scheme in SHARE_SCHEMES:
                    report.share_credits = credit_shares(session, policy, committed_share_horizon(session))
                    session.flush()
                report.plan = plan_batch(session, policy)
                report.balances = balances(session)
                session.rollback()
            return report

        with Session(engine) as session:
            for batch in open_batches(session):
                report.batches.append(await settle_batch(session, wallet, batch, policy, method=method, export_dir=export_dir))
            if method == "sendmany":
                report.confirmed_batches = await confirm_sent(session, wallet)
            report.maturity = await update_maturity(session, node, policy.maturity, progress=progress)
        report.credits = credit_blocks(engine, policy, progress=progress)
        if policy.scheme in SHARE_SCHEMES:
            with Session(engine) as session:
                horizon = committed_share_horizon(session)
                session.commit()
                report.share_credits = credit_shares(session, policy, horizon)
                session.commit()
        if report.unresolved:
            # Money whose fate is unknown must be settled before any more is sent.
            with Session(engine) as session:
                report.balances = balances(session)
            return report
        with Session(engine) as session:
            plan = plan_batch(session, policy)
            report.plan = plan
            if plan.payments:
                batch = prepare_batch(session, plan)
                session.commit()
                _fault("after-prepare")
                report.batches.append(await settle_batch(session, wallet, batch, policy, method=method, export_dir=export_dir))
            report.balances = balances(session)
    return report

