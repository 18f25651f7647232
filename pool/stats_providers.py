"""Data sources for ``stope stats concentration --pool`` and ``--network``.

Both read the same configuration as ``stope run`` (``--config`` on the
command, or ``$STOPE_CONFIG``) so the CLI shows the figures the running pool
exports:

* ``--pool``: accepted difficulty per miner (payout address) over
  ``[concentration] pool_window`` seconds, from the shares table.  Difficulty
  is stored exactly as "num/den" text, so the sum is grouped by that text in
  SQL and multiplied out in Python: exact, and one row per (miner,
  difficulty) rather than one per share.
* ``--network``: the last ``network_window`` blocks of the configured node
  (or of a running pool's embedded devnet), attributed with ``pools_file``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from fractions import Fraction
from functools import partial
from pathlib import Path

import click
import trio
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .attribution import load_pool_table
from .concentration import Weight
from .config import ConfigError, Settings, load_settings
from .network_stats import read_network_window
from .node import NodeClient, NodeError, NodeUnavailable
from .stats_cli import StatsProviders, make_stats_group
from .storage.db import make_engine
from .storage.models import Miner, Share, Worker

CONFIG_KEY = "stope.config_path"
"""Where the ``--config`` option leaves its value in ``click.Context.meta``."""


def pool_weights(engine: Engine, *, since: dt.datetime) -> dict[str, Fraction]:
    """Exact accepted difficulty per miner address for shares created at or after ``since``."""
    query = (
        select(Miner.address, Share.difficulty, func.count())
        .join(Worker, Share.worker_id == Worker.id)
        .join(Miner, Worker.miner_id == Miner.id)
        .where(Share.created_at >= since)
        .group_by(Miner.address, Share.difficulty)
    )
    weights: dict[str, Fraction] = {}
    with Session(engine) as session:
        for address, difficulty, count in session.execute(query):
            weights[address] = weights.get(address, Fraction(0)) + Fraction(difficulty) * count
    return weights


def node_client(settings: Settings) -> NodeClient:
    """The first configured node, or a running pool's embedded devnet."""
    endpoints = settings.node.node_endpoints()
    if endpoints:
        first = endpoints[0]
        return NodeClient(first.url, timeout=settings.node.timeout, cookie_file=first.cookie_file or settings.node.cookie_file)
    d = settings.devnet
    creds = f"{d.rpc_user}:{d.rpc_password}@" if d.rpc_user else ""
    return NodeClient(f"http://{creds}{d.host}:{d.port}/", timeout=settings.node.timeout)


def _settings(ctx: click.Context) -> Settings:
    path: Path | None = ctx.meta.get(CONFIG_KEY)
    try:
        return load_settings(path)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc


def pool_provider(ctx: click.Context) -> Mapping[str, Weight]:
    """``--pool``: miners' accepted difficulty over the configured window."""
    settings = _settings(ctx)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        # make_engine would create an empty database file; there is nothing to read.
        raise click.ClickException(f"no database at {url.database}: has the pool run with this configuration?")
    engine = make_engine(settings.database_url)
    try:
        if not inspect(engine).has_table(Share.__tablename__):
            raise click.ClickException(f"no shares table in {engine.url!r}: has the pool run with this configuration?")
        now = dt.datetime.now(dt.timezone.utc)
        try:
            since = now - dt.timedelta(seconds=settings.concentration.pool_window)
        except OverflowError:  # a window longer than the calendar: every share
            since = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        return pool_weights(engine, since=since)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database {engine.url!r}: {exc}") from exc
    finally:
        engine.dispose()


def network_provider(ctx: click.Context) -> Mapping[str, Weight]:
    """``--network``: blocks per pool over the node's last ``network_window`` blocks."""
    settings = _settings(ctx)
    c = settings.concentration
    if c.pools_file is None:
        raise click.UsageError("set [concentration] pools_file (a pools-v2.json) to attribute network blocks")
    try:
        table = load_pool_table(c.pools_file)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{c.pools_file}: {exc}") from exc
    node = node_client(settings)
    read = partial(
        read_network_window,
        node,
        table,
        size=c.network_window,
        unknown_policy=c.unknown_policy,
        network=settings.pool.network,
    )
    try:
        return dict(trio.run(read))
    except (NodeError, NodeUnavailable) as exc:
        raise click.ClickException(f"node {node.name}: {exc}") from exc


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.meta[CONFIG_KEY] = value


def wired_stats_group() -> click.Group:
    """The ``stats`` group with both providers and a ``--config`` option on ``concentration``."""
    group = make_stats_group(StatsProviders(network=network_provider, pool=pool_provider))
    command = group.commands["concentration"]
    command.params.append(
        click.Option(
            ["--config", "config_path"],
            type=click.Path(path_type=Path, dir_okay=False, exists=True),
            envvar="STOPE_CONFIG",
            expose_value=False,
            callback=_remember_config,
            help="Pool TOML configuration for --pool/--network (default: embedded devnet + SQLite).",
        )
    )
    return group
