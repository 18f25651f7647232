"""``stope payouts``: operator and miner tools over the payout code."""

from __future__ import annotations

import json
from pathlib import Path

import click

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
