"""``stope payouts``: operator and miner tools over the payout code.

``simulate`` is pure arithmetic; ``run`` and ``explain`` read the pool's
database, and ``run`` talks to the node's wallet through a ``NodeClient``
wired here (the payout modules themselves never open a socket).
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import click
import trio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pool.config import ConfigError, Settings, load_settings
from pool.node import NodeClient, NodeError, NodeUnavailable
from pool.storage.db import make_engine, upgrade
from pool.storage.models import PayoutBatch

from .batch import (
    BATCH_EXPORTED,
    BATCH_PREPARED,
    PayoutsBusy,
    RunReport,
    record_txid,
    run_payouts,
    sats_to_btc,
)
from .explain import approx, explain
from .ledger import policy_from_settings
from .simulate import SCHEMES, simulate


@click.group()
def payouts() -> None:
    """Payout schemes, batches and explanations."""


@payouts.command("simulate")
@click.argument("scheme", type=click.Choice(SCHEMES))
@click.option("--shares", "shares_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="JSON list of shares (miner, difficulty, [network_difficulty], [time]), oldest first; the last finds the block")
@click.option("--block-value", type=click.IntRange(min=0), required=True, help="block value in satoshis (subsidy + fees)")
@click.option("--fee-bps", type=click.IntRange(0, 10000), required=True, help="pool fee in basis points")
@click.option("--network-difficulty", required=True, help="network difficulty for shares that do not carry one")
@click.option("--window-factor", default="2", show_default=True, help="PPLNS window X (N = X * D)")
@click.option("--subsidy", type=click.IntRange(min=0), default=None, help="block subsidy (default: the whole block value)")
@click.option("--keep-tx-fees", is_flag=True, help="the pool keeps transaction fees instead of sharing them")
@click.option("--unfilled", type=click.Choice(["keep", "normalize"]), default="keep", show_default=True,
              help="PPLNS: what happens to the part of an unfilled window")
def simulate_command(scheme: str, shares_file: Path, block_value: int, fee_bps: int, network_difficulty: str,
                     window_factor: str, subsidy: int | None, keep_tx_fees: bool, unfilled: str) -> None:
    """What-if: each miner's satoshis and the pool fee for one block, as JSON."""
    try:
        shares = json.loads(shares_file.read_text())
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{shares_file}: not JSON: {exc}") from exc
    if not isinstance(shares, list) or not shares:
        raise click.ClickException(f"{shares_file}: expected a non-empty JSON list of shares")
    try:
        result = simulate(scheme, shares, block_value, fee_bps, network_difficulty, window_factor,
                          subsidy=subsidy, share_tx_fees=not keep_tx_fees, unfilled=unfilled)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError) as exc:
        raise click.ClickException(f"cannot simulate: {exc}") from exc
    click.echo(json.dumps(result, indent=2, sort_keys=True))


# --- the batch job and explanations (need the database and, for run, a node) ---------------

_CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False, exists=True), envvar="STOPE_CONFIG",
    default=None, help="pool TOML configuration (default: $STOPE_CONFIG, else the embedded defaults)",
)


def _settings(config_path: Path | None) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc


def _engine(settings: Settings) -> Engine:
    """The pool's database, migrated to the current schema (a no-op when it already is)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        raise click.ClickException(f"no database at {url.database}: has the pool run with this configuration?")
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise click.ClickException(f"database {engine.url!r}: {exc}") from exc
    return engine


def _clients(settings: Settings) -> tuple[NodeClient, NodeClient]:
    """(chain node, wallet): the wallet is the node unless ``wallet_url`` names another."""
    from pool.stats_providers import node_client

    node = node_client(settings)
    if settings.payouts.wallet_url:
        return node, NodeClient(settings.payouts.wallet_url, timeout=settings.node.timeout)
    return node, node


def _btc(sats: int) -> str:
    sign = "-" if sats < 0 else ""
    return sign + sats_to_btc(abs(sats))


class _RichProgress:
    """``payouts.ledger.Progress`` as rich progress bars on stderr (shown only on a terminal)."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console, transient=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.bars.add_task(label, total=total)
        self.bars.update(self.tasks[label], completed=done, total=total)


def _report_json(report: RunReport) -> dict[str, Any]:
    m = report.maturity
    return {
        "dry_run": report.dry_run,
        "maturity": {"confirmed": [h for h, _ in m.confirmed], "orphaned": [h for h, _ in m.orphaned],
                     "pending": [h for h, _, _ in m.pending], "repaired": [h for h, _ in m.repaired],
                     "node_height": m.node_height, "skipped": m.skipped},
        "credits": [{"height": c.height, "hash": c.block_hash, "scheme": c.scheme, "reward": c.reward, "miners": c.miners,
                     "pool_fee": c.pool_fee, "undistributed": c.undistributed, "skipped": c.skipped} for c in report.credits],
        "share_credits": None if report.share_credits is None else {
            "scheme": report.share_credits.scheme, "after": report.share_credits.after, "through": report.share_credits.through,
            "shares": report.share_credits.shares, "miners": {a: str(v) for a, v in sorted(report.share_credits.miners.items())}},
        "batches": [{"key": b.key, "status": b.status, "txid": b.txid, "fee": b.fee, "note": b.note,
                     "payments": {p.address: p.amount for p in b.payments}} for b in report.batches],
        "plan": None if report.plan is None else {
            "key": report.plan.key, "payments": {p.address: p.amount for p in report.plan.payments},
            "below_threshold": dict(report.plan.below_threshold), "deferred": dict(report.plan.deferred),
            "invalid": dict(report.plan.invalid)},
        "open_batches": report.open_batches,
        "confirmed_batches": dict(report.confirmed_batches),
        "balances": {a: {"payable": str(b.payable), "immature": str(b.immature), "paid": b.paid}
                     for a, b in sorted(report.balances.items())},
    }


def _render_report(console: Console, report: RunReport) -> None:
    m = report.maturity
    title = "payout run (DRY RUN: nothing written, nothing sent)" if report.dry_run else "payout run"
    blocks = Table(title=f"{title}: blocks", title_justify="left")
    for column in ("height", "block", "status / scheme", "reward", "miners", "pool fee", "undistributed", "note"):
        blocks.add_column(column, justify="right" if column in ("height", "reward", "miners", "pool fee", "undistributed") else "left")
    for height, block_hash in m.confirmed:
        blocks.add_row(str(height), block_hash[:16], "confirmed", "", "", "", "", "now payable")
    for height, block_hash in m.orphaned:
        blocks.add_row(str(height), block_hash[:16], "orphaned", "", "", "", "", "credits reversed")
    for c in report.credits:
        blocks.add_row(str(c.height), c.block_hash[:16], c.scheme, _btc(c.reward), str(len(c.miners)),
                       _btc(c.pool_fee), _btc(c.undistributed), f"skipped: {c.skipped}" if c.skipped else "credited")
    pending = f"{len(m.pending)} block(s) awaiting maturity" if m.pending else "no block awaiting maturity"
    if blocks.row_count:
        console.print(blocks)
    else:
        console.print(f"{title}: no block confirmed, orphaned or credited")
    console.print(pending + (f" (node height {m.node_height})" if m.node_height is not None else "")
                  + (f"; {m.skipped}" if m.skipped else ""))
    if report.share_credits is not None and report.share_credits.shares:
        s = report.share_credits
        console.print(f"{s.scheme}: credited shares {s.after + 1}..{s.through} ({s.shares} shares) to "
                      f"{len(s.miners)} miner(s), {_btc(int(s.total))} BTC in all")
    if report.open_batches:
        console.print(f"open batches the run would settle first: {', '.join(report.open_batches)}")
    batches = Table(title="batches", title_justify="left")
    for column in ("batch", "status", "txid", "recipients", "total BTC", "note"):
        batches.add_column(column)
    for b in report.batches:
        batches.add_row(b.key, b.status, b.txid or "", str(len(b.payments)), _btc(b.total), b.note)
    if report.dry_run and report.plan is not None and report.plan.payments:
        batches.add_row(report.plan.key, "(would prepare)", "", str(len(report.plan.payments)), _btc(report.plan.total), "dry run")
    if batches.row_count:
        console.print(batches)
    plan = report.plan
    paid = report.paid if not report.dry_run else ({p.address: p.amount for p in plan.payments} if plan else {})
    miners = Table(title="miners", title_justify="left")
    for column in ("address", "paid now BTC", "payable BTC", "immature BTC", "paid in all BTC"):
        miners.add_column(column, justify="left" if column == "address" else "right")
    for address in sorted(set(paid) | set(report.balances)):
        b = report.balances.get(address)
        miners.add_row(address, _btc(paid.get(address, 0)), _btc(int(b.payable)) if b else "", _btc(int(b.immature)) if b else "",
                       _btc(b.paid) if b else "")
    if miners.row_count:
        console.print(miners)
    if plan is not None:
        waits = [f"{len(plan.below_threshold)} below the minimum payout"] if plan.below_threshold else []
        waits += [f"{len(plan.deferred)} deferred (max_recipients)"] if plan.deferred else []
        waits += [f"{len(plan.invalid)} with an invalid address: " + ", ".join(a for a, _ in plan.invalid)] if plan.invalid else []
        if waits:
            console.print("waiting: " + "; ".join(waits))


@payouts.command("run")
@_CONFIG_OPTION
@click.option("--dry-run", is_flag=True, help="compute and show everything; write nothing, send nothing")
@click.option("--json", "as_json", is_flag=True, help="print the run's report as JSON instead of tables")
def run_command(config_path: Path | None, dry_run: bool, as_json: bool) -> None:
    """The batch job: mature blocks, credit them, pay balances above the threshold.

    Safe to rerun at any time, also after a crash: a batch written but not
    known to be sent is first reconciled with the wallet, never paid twice.
    Exits with status 2 when a batch is left unresolved (wallet unreachable).
    """
    settings = _settings(config_path)
    policy = policy_from_settings(settings)
    engine = _engine(settings)
    node, wallet = _clients(settings)
    console = Console()
    progress = _RichProgress(Console(stderr=True))
    try:
        with progress.bars:
            report = trio.run(partial(
                run_payouts, engine, node, policy, wallet=wallet, method=settings.payouts.method,
                export_dir=settings.payouts.export_path(settings.pool.data_dir), dry_run=dry_run, progress=progress,
            ))
    except PayoutsBusy as exc:
        raise click.ClickException(str(exc)) from exc
    except (NodeError, NodeUnavailable) as exc:
        raise click.ClickException(f"node: {exc}; nothing more was done (rerun when it answers)") from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database: {exc}") from exc
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(_report_json(report), indent=2, sort_keys=True))
    else:
        _render_report(console, report)
    if report.unresolved and not dry_run:
        click.echo("a payout batch is unresolved: rerun `stope payouts run` once the wallet answers", err=True)
        raise SystemExit(2)


def _render_explain(console: Console, data: dict[str, Any], max_rows: int) -> None:
    head = Table(title=f"miner {data['address']}", title_justify="left", show_header=False)
    head.add_row("payable", f"{_btc(data['payable_sats'])} BTC", f"exact {data['payable']} sat")
    head.add_row("immature", f"{_btc(data['immature_sats'])} BTC", "credits of blocks awaiting maturity")
    head.add_row("paid", f"{_btc(data['paid_sats'])} BTC", "")
    console.print(head)
    for block in data["blocks"]:
        t = Table(title=f"block {block['height']} {block['hash'][:16]}… ({block['status']}, {block['confirmations']} conf.)",
                  title_justify="left", show_header=False)
        t.add_row("scheme", str(block.get("scheme", "")), " ".join(f"{k}={v}" for k, v in block.get("params", {}).items()))
        if "pot" in block:
            t.add_row("block value", f"{block['block_value']} sat", f"pool fee {block['pool_fee']} sat, undistributed {block['undistributed']} sat")
            t.add_row("pot", f"{block['pot']} sat", "what miners' scores share")
            window = block.get("window", {})
            t.add_row("window", " ".join(f"{k}={v}" for k, v in window.items()), f"{block['miners_in_window']} miner(s)")
            t.add_row("your score", approx(Fraction(block["miner_score"])), f"of {approx(Fraction(block['score_total']))} (exact {block['miner_score']} / {block['score_total']})")
            t.add_row("entitlement", f"{approx(Fraction(block['entitlement']))} sat", "pot × your score / total, exact: " + block["entitlement"])
            t.add_row("rounded", f"{block['computed_sats']} sat", "largest remainder: no satoshi created or lost")
        t.add_row("ledger", f"{block['ledger_sats']} sat", ("matches" if block.get("matches") else "DIFFERS from the recomputation")
                  if "matches" in block else block.get("note", ""))
        if block.get("reversed_sats"):
            t.add_row("reversed", f"{block['reversed_sats']} sat", "orphaned: credits cancelled")
        console.print(t)
        if block["shares"]:
            s = Table(title="your shares in the window", title_justify="left")
            for column in ("share", "time", "difficulty", "network difficulty", "score d/D", "counted"):
                s.add_column(column, justify="left" if column == "time" else "right")
            for share in block["shares"][:max_rows]:
                s.add_row(str(share["id"]), share["time"] or "", approx(Fraction(share["difficulty"])),
                          approx(Fraction(share["network_difficulty"])), approx(Fraction(share["score"])), approx(Fraction(share["counted"])))
            if len(block["shares"]) > max_rows:
                s.add_row("…", f"{len(block['shares']) - max_rows} more (--json lists them all)", "", "", "", "")
            console.print(s)
    if data["share_credits"]:
        c = Table(title=f"per-share credits (total {approx(Fraction(data['share_credits_total']))} sat)", title_justify="left")
        for column in ("kind", "through share", "amount sat", "detail"):
            c.add_column(column)
        for credit in data["share_credits"][-max_rows:]:
            c.add_row(credit["kind"], str(credit["through_share"]), approx(Fraction(credit["amount"])), credit["memo"] or "")
        console.print(c)
    if data["payouts"]:
        p = Table(title="payouts", title_justify="left")
        for column in ("batch", "status", "txid", "amount BTC"):
            p.add_column(column)
        for payout in data["payouts"]:
            p.add_row(payout["batch"], payout["status"] + (" (returned)" if payout["kind"] == "payout-reversal" else ""),
                      payout["txid"] or "", _btc(payout["amount_sats"]))
        console.print(p)


@payouts.command("explain")
@click.argument("address")
@_CONFIG_OPTION
@click.option("--block", "height", type=int, default=None, help="only the block the pool found at this height")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="most recent blocks shown")
@click.option("--rows", type=click.IntRange(min=1), default=50, show_default=True, help="share rows per table")
@click.option("--json", "as_json", is_flag=True, help="everything, exactly (fractions as strings), as JSON")
def explain_command(address: str, config_path: Path | None, height: int | None, limit: int, rows: int, as_json: bool) -> None:
    """How ADDRESS's amounts were computed, share by share, so a miner can check them."""
    settings = _settings(config_path)
    policy = policy_from_settings(settings)
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            data = explain(session, address, policy, height=height, limit=limit)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database: {exc}") from exc
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        _render_explain(Console(), data, rows)


@payouts.command("record-txid")
@click.argument("key")
@click.argument("txid")
@_CONFIG_OPTION
def record_txid_command(key: str, txid: str, config_path: Path | None) -> None:
    """Record the transaction an operator broadcast for an exported (CSV) batch KEY."""
    if len(txid) != 64 or any(c not in "0123456789abcdef" for c in txid.lower()):
        raise click.BadParameter("a txid is 64 hex digits", param_hint="TXID")
    settings = _settings(config_path)
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            batch = session.scalar(select(PayoutBatch).where(PayoutBatch.idempotency_key == key))
            if batch is None:
                raise click.ClickException(f"no payout batch {key!r}")
            if batch.status not in (BATCH_EXPORTED, BATCH_PREPARED):
                raise click.ClickException(f"batch {key} is {batch.status}{' with txid ' + batch.txid if batch.txid else ''}; not changed")
            record_txid(session, batch, txid.lower())
            session.commit()
    finally:
        engine.dispose()
    click.echo(f"batch {key}: sent in {txid.lower()}")
