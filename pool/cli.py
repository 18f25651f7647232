"""The ``stope`` command."""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

import click
import trio

from .config import ConfigError, load_settings


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error")
def main(log_level: str) -> None:
    """Stope: a Bitcoin mining pool (Stratum V1) with exact payouts."""
    _setup_logging(log_level)


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="TOML configuration (default: embedded devnet + SQLite)")
@click.option("--workers", type=click.IntRange(min=1, max=256), default=None,
              help="Stratum worker processes on the one port (default: [stratum] workers, 1)")
def run(config_path: Path | None, workers: int | None) -> None:
    """Run the pool: Stratum server, job manager, storage, metrics (and devnet)."""
    from .hardening import run_until_signalled

    try:
        settings = load_settings(config_path, {"stratum": {"workers": workers}} if workers is not None else None)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
    try:
        # SIGTERM/SIGINT: stop accepting, client.reconnect, commit every accepted share, exit 0.
        if settings.stratum.workers > 1:
            from .workers import run_workers

            trio.run(run_until_signalled, run_workers, settings, settings.stratum.workers)
        else:
            from .service import run_pool

            trio.run(run_until_signalled, run_pool, settings)
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("stopped")


@main.command()
@click.option("--url", default="stratum+tcp://127.0.0.1:3333", show_default=True)
@click.option("--user", default=None, help="payout address[.worker] (default: the devnet address)")
@click.option("--shares", type=int, default=None, help="stop after this many shares")
def mine(url: str, user: str | None, shares: int | None) -> None:
    """A small CPU miner, to try a pool (devnet difficulties only)."""
    from .config import DEVNET_POOL_ADDRESS
    from .cpuminer import CPUMiner

    hostport = url.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    miner = CPUMiner(host or "127.0.0.1", int(port), user or f"{DEVNET_POOL_ADDRESS}.cpu")
    stats = trio.run(partial(miner.run, max_shares=shares))
    click.echo(f"accepted {stats.accepted}, rejected {stats.rejected}")


def _attach_subcommands() -> None:
    from payouts.cli import payouts

    from .stats_providers import wired_stats_group

    from .share_cli import share

    main.add_command(payouts)
    main.add_command(share)
    main.add_command(wired_stats_group())


_attach_subcommands()


def _attach_db() -> None:
    from .storage.cli import db

    main.add_command(db)


_attach_db()

if __name__ == "__main__":
    main()
